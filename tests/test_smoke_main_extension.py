"""The smoke step ``import vllm main extension``: a GPU step; with the GPU steps on, skipped only
without libcuda.so.1, never passed by default; it imports whichever main extension the install has
(``vllm/_C.abi3.so`` alone up to 0.18.1, both in 0.19.0-0.23.0, only ``vllm/_C_stable_libtorch.abi3.so`` from
0.24.0), tested on fake vLLMs of each shape whose extensions are real CPython extension modules."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from builder import _proc
from builder.check import knowledge
from builder.runtime import smoke
from builder.runtime.smoke import FAIL, PASS, SKIP
from tests.helpers import fake_envs, wheels
from tests.helpers.runtimes import PY312, World


def _has_libcuda() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _step(rep: smoke.SmokeReport) -> smoke.Step:
    return next(s for s in rep.steps if s.name == "import vllm main extension")


def test_without_libcuda_the_step_is_skipped_with_that_reason(w: World) -> None:
    step = _step(smoke.run_smoke(w.runtime / "bin" / "python", None, gpu=True))
    if _has_libcuda():  # a host with the driver: the fake vLLM has no compiled ops, so it fails
        assert step.status == FAIL and "none of its main extensions" in step.reason
    else:
        assert step.status == SKIP and step.reason.startswith("no libcuda.so.1 on this host")


def test_with_a_driver_library_a_missing_extension_fails(w: World, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lib = wheels.compile_shared_object(tmp_path / "driver" / "libcuda.so.1", c_source="int cuInit(int f){return 0;}\n",
                                       soname="libcuda.so.1")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    step = _step(smoke.run_smoke(w.runtime / "bin" / "python", None, gpu=True))
    assert step.status == FAIL and step.reason == ("ImportError: vllm has none of its main extensions "
                                                   "(vllm/_C.abi3.so, vllm/_C_stable_libtorch.abi3.so)")


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
    ok = {"skipped": None, "module": "vllm._C_stable_libtorch", "member": "vllm/_C_stable_libtorch.abi3.so"}
    assert smoke._vllm_c_step({"ok": True, "value": ok}, res, not_installed=False) == smoke.Step(
        "import vllm main extension", PASS, "vllm._C_stable_libtorch loaded (vllm/_C_stable_libtorch.abi3.so)")
    assert smoke._vllm_c_step({"ok": True, "value": {"skipped": "no libcuda.so.1 on this host (x)"}}, res,
                              not_installed=False).status == SKIP
    assert smoke._vllm_c_step(None, res, not_installed=False) == smoke.Step("import vllm main extension", FAIL,
                                                                 "exit 1: Segmentation fault")
    assert smoke._vllm_c_step(None, res,
                              not_installed=True).status == SKIP  # vllm not installed (an env builder did not build)


def test_the_candidates_are_cuda_tomls_main_extension_members_in_order() -> None:
    assert smoke.main_extensions() == knowledge.load().main_extensions["vllm"]
    assert smoke.main_extensions()[:2] == ("vllm/_C.abi3.so", "vllm/_C_stable_libtorch.abi3.so")


@pytest.fixture(scope="module")
def shapes(w: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One venv per shape of vLLM: 0.19 (only ``_C``), 0.22 (both), 0.24 (only ``_C_stable_libtorch``)."""
    from builder import tools
    from builder.runtime import interpreters

    base = tmp_path_factory.mktemp("shapes")
    uv = tools.uv_bin()
    py = interpreters.find(PY312, uv=uv).path
    include = fake_envs.include_dir(py)
    torch = fake_envs.torch_wheel(base / "torch")
    out = {}
    for version, exts in (("0.19.1", ("_C",)), ("0.22.0", ("_C", "_C_stable_libtorch")),
                          ("0.24.0", ("_C_stable_libtorch",))):
        vllm = fake_envs.vllm_wheel(base / "wheels" / version, version, exts, include, base / "build")
        out[version] = fake_envs.make_env(base / f"env-{version}", [torch, vllm], uv=uv, python=py, cache=w.cache)
    return out


@pytest.mark.parametrize("version,module", [("0.19.1", "vllm._C"), ("0.22.0", "vllm._C"),
                                            ("0.24.0", "vllm._C_stable_libtorch")])
def test_the_first_main_extension_the_install_has_is_imported(shapes: dict[str, Path], version: str, module: str,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = wheels.compile_shared_object(tmp_path / "driver" / "libcuda.so.1", c_source="int cuInit(int f){return 0;}\n",
                                       soname="libcuda.so.1")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    rep = smoke.run_smoke(shapes[version], None, gpu=True)
    member = module.replace(".", "/") + ".abi3.so"
    assert _step(rep) == smoke.Step("import vllm main extension", PASS, f"{module} loaded ({member})")
    assert [s.status for s in rep.steps if s.name.startswith("import ")] == [PASS] * 4


@pytest.mark.parametrize("version", ["0.19.1", "0.22.0", "0.24.0"])
def test_without_libcuda_every_shape_is_skipped_never_passed(shapes: dict[str, Path], version: str) -> None:
    if _has_libcuda():
        pytest.skip("this host has libcuda.so.1: the step runs (the test above covers it)")
    step = _step(smoke.run_smoke(shapes[version], None, gpu=True))
    assert step.status == SKIP and step.reason.startswith("no libcuda.so.1 on this host")
