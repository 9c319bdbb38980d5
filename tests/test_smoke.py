"""Smoke classification: pure rules, and real runs inside a built runtime."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder import _proc
from builder.runtime import smoke
from builder.runtime.smoke import FAIL, PASS, SKIP, Expected
from tests.helpers.runtimes import World

# torch 2.9.0+cu128's arch list (no sm_89: Ada runs the sm_86 cubins).
CU128 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


def _res(rc: int | None, stderr: str = "", *, timed_out: bool = False, missing: bool = False) -> _proc.Result:
    return _proc.Result(("vllm", "--help"), rc, "", stderr, 0.1, timed_out=timed_out, missing=missing)


@pytest.mark.parametrize(("res", "gpu", "status"), [
    (_res(0), False, PASS),
    (_res(0), True, PASS),
    (_res(1, "RuntimeError: Failed to infer device type"), False, SKIP),
    (_res(1, "RuntimeError: Failed to infer device type"), True, FAIL),  # a GPU host must infer it
    (_res(1, "ImportError: libcudart.so.13: cannot open shared object file"), False, FAIL),
    (_res(None, timed_out=True), False, FAIL),
    (_res(None, missing=True), False, FAIL),
])
def test_vllm_help_classification(res: _proc.Result, gpu: bool, status: str) -> None:
    step = smoke.classify_vllm_help(res, gpu)
    assert step.status == status
    if status == SKIP:
        assert step.reason.startswith("no GPU")


@pytest.mark.parametrize(("cc", "archs", "ok", "why"), [
    ("8.9", ["sm_80", "sm_89", "sm_90"], True, "sm_89 in torch.cuda.get_arch_list()"),
    ("8.9", CU128, True, "runs sm_86 code"),
    ("8.9", ["sm_90", "compute_80"], True, "only PTX compute_80"),
    ("8.9", ["sm_90", "sm_90a", "compute_90"], False, "no code for sm_89"),
    ("7.0", CU128, False, "no code for sm_70"),
    ("12.0", CU128, True, "sm_120 in"),
    # Arch-specific cubins run on exactly their architecture (the two former copies of
    # this rule disagreed here; builder.versions.runs_on is now the only one).
    ("9.0", ["sm_90a"], True, "runs sm_90a code"),
    ("10.0", ["sm_90a"], False, "no code"),
    ("10.3", ["sm_100f"], True, "runs sm_100f code"),
    ("12.0", ["sm_100f"], False, "no code"),
    # The newest PTX is named by architecture number, not string order ("compute_86" > "compute_120").
    ("12.1", ["sm_90", "compute_86", "compute_120"], True, "only PTX compute_120"),
])
def test_arch_support(cc: str, archs: list[str], ok: bool, why: str) -> None:
    got, reason = smoke.arch_supported(cc, archs)
    assert got is ok and why in reason


def test_versions_agree_with_local_labels() -> None:
    assert smoke.same_version("2.9.0+cu128", "2.9.0")
    assert smoke.same_version("2.9.0+cu128", "2.9.0+cu128")
    assert not smoke.same_version("2.9.0+cu130", "2.9.0+cu128")
    assert not smoke.same_version("2.8.0+cu128", "2.9.0")


def test_expected_from_lock_reads_cudart_from_the_runtime_wheel(w: World) -> None:
    from builder.project import Project

    m = Project(w.project).matrix("t")
    e = smoke.expected_from_lock(m, {"torch": "2.9.0", "vllm": "0.13.0", "nvidia-cuda-runtime-cu12": "12.8.90"})
    assert (e.torch_cudart, e.vllm_cudart, e.vllm_toolkit, e.torch_cuda) == (
        "libcudart.so.12", "libcudart.so.12", "12.9", "12.8")
    e13 = smoke.expected_from_lock(m, {"torch": "2.9.0", "nvidia-cuda-runtime": "13.0.96"})
    assert e13.torch_cudart == "libcudart.so.13"


def _by_name(rep: smoke.SmokeReport) -> dict[str, smoke.Step]:
    return {s.name: s for s in rep.steps}


def test_run_in_runtime_without_gpu(w: World) -> None:
    exp = Expected("2.9.0", "12.8", "0.13.0", "libcudart.so.12", "libcudart.so.12", "12.9")
    rep = smoke.run_smoke(w.runtime / "bin" / "python", exp, gpu=False)
    steps = _by_name(rep)
    assert rep.ok, rep.as_dict()
    assert steps["torch.__version__"].reason == "2.9.0+cu128"
    assert steps["vllm build toolkit"].status == PASS and steps["vllm build toolkit"].reason == "12.9"
    assert steps["vllm --help"].status == SKIP
    assert all(steps[n].status == SKIP and steps[n].reason == "no GPU" for n in steps if "GEMM" in n)


def test_identity_mismatches_fail_naming_both_sides(w: World) -> None:
    exp = Expected("2.9.0", "13.0", "0.13.0", "libcudart.so.13", "libcudart.so.13", "13.0")
    rep = smoke.run_smoke(w.runtime / "bin" / "python", exp, gpu=False)
    steps = _by_name(rep)
    assert not rep.ok
    assert steps["torch.version.cuda"].status == FAIL and steps["torch.version.cuda"].reason == "12.8, expected 13.0"
    assert steps["vllm cudart"].reason == "libcudart.so.12, expected libcudart.so.13"
    assert steps["vllm build toolkit"].status == FAIL
    assert steps["import torch"].status == PASS


def test_on_a_gpu_host_device_errors_fail_and_gpu_steps_run(w: World) -> None:
    # The fake torch sees no device: on a GPU host that is a failure, not a skip.
    rep = smoke.run_smoke(w.runtime / "bin" / "python", None, gpu=True)
    steps = _by_name(rep)
    assert steps["vllm --help"].status == FAIL and "exit 1" in steps["vllm --help"].reason
    assert steps["torch.cuda.is_available()"].status == FAIL
    assert "False on a GPU host" in steps["torch.cuda.is_available()"].reason


def test_vllm_help_passes_when_the_cli_works(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_GPU", "1")  # the fake CLI prints usage, like vLLM on a GPU host
    rep = smoke.run_smoke(w.runtime / "bin" / "python", None, gpu=False)
    assert _by_name(rep)["vllm --help"].status == PASS


def test_env_without_vllm_skips_vllm_steps(w: World, tmp_path: Path) -> None:
    from builder import tools

    uv = tools.uv_bin()
    py = os.path.realpath(w.runtime / "bin" / "python")
    _proc.run([uv, "venv", str(tmp_path / "v"), "--python", py, "--no-config", "-q"], timeout=60, check=True)
    torch = next((w.index_root / "files").glob("torch-*.whl"))
    _proc.run([uv, "pip", "install", "--python", str(tmp_path / "v" / "bin" / "python"), "--no-deps",
               "--no-config", "--cache-dir", str(w.cache), "-q", str(torch)], timeout=60, check=True)
    rep = smoke.run_smoke(tmp_path / "v" / "bin" / "python", None, gpu=False)
    steps = _by_name(rep)
    assert rep.ok and steps["import torch"].status == PASS
    assert steps["import vllm"].status == SKIP and steps["vllm --help"].status == SKIP
