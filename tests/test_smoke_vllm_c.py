"""The smoke step ``import vllm._C``: a GPU step; with the GPU steps on, skipped only without
libcuda.so.1, never passed by default."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from builder import _proc
from builder.runtime import smoke
from builder.runtime.smoke import FAIL, PASS, SKIP
from tests.helpers import wheels
from tests.helpers.runtimes import World


def _has_libcuda() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _step(rep: smoke.SmokeReport) -> smoke.Step:
    return next(s for s in rep.steps if s.name == "import vllm._C")


def test_without_libcuda_the_step_is_skipped_with_that_reason(w: World) -> None:
    step = _step(smoke.run_smoke(w.runtime / "bin" / "python", None, gpu=True))
    if _has_libcuda():  # a host with the driver: the fake vLLM has no compiled ops, so it fails
        assert step.status == FAIL and "vllm._C" in step.reason
    else:
        assert step.status == SKIP and step.reason.startswith("no libcuda.so.1 on this host")


def test_with_a_driver_library_a_missing_extension_fails(w: World, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lib = wheels.compile_shared_object(tmp_path / "driver" / "libcuda.so.1", c_source="int cuInit(int f){return 0;}\n",
                                       soname="libcuda.so.1")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    step = _step(smoke.run_smoke(w.runtime / "bin" / "python", None, gpu=True))
    assert step.status == FAIL and "No module named 'vllm._C'" in step.reason


def test_with_the_gpu_steps_off_the_step_is_skipped_even_with_a_driver(w: World, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--no-gpu`` turns off every GPU step, loading the compiled ops included, on any host: the
    fake vLLM (no ``_C``) would fail here if the step ran."""
    lib = wheels.compile_shared_object(tmp_path / "driver" / "libcuda.so.1", c_source="int cuInit(int f){return 0;}\n",
                                       soname="libcuda.so.1")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    step = _step(smoke.run_smoke(w.runtime / "bin" / "python", None, gpu=False))
    assert (step.status, step.reason) == (SKIP, "GPU steps not run (--no-gpu)")


def test_step_classification() -> None:
    res = _proc.Result(("python",), 1, "", "Segmentation fault", 0.1)
    assert smoke._vllm_c_step({"ok": True, "value": {"skipped": None}}, res, False).status == PASS
    assert smoke._vllm_c_step({"ok": True, "value": {"skipped": "no libcuda.so.1 on this host (x)"}}, res,
                              False).status == SKIP
    assert smoke._vllm_c_step(None, res, False) == smoke.Step("import vllm._C", FAIL, "exit 1: Segmentation fault")
    assert smoke._vllm_c_step(None, res, True).status == SKIP  # vllm not installed (an env builder did not build)
