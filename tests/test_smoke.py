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
    step = smoke.classify_vllm_help(res, gpu=gpu)
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


# --------------------------------------------------------------------------- side by side


def _report(rep: smoke.SmokeReport) -> list[tuple[str, str, str]]:
    return [(s.name, s.status, s.reason) for s in rep.steps]


@pytest.mark.parametrize("gpu,expected", [(False, True), (True, False), (False, False)])
def test_the_report_does_not_depend_on_how_many_steps_run_at_once(w: World, gpu: bool, expected: bool) -> None:
    exp = Expected("2.9.0", "12.8", "0.13.0", "libcudart.so.12", "libcudart.so.12", "12.9") if expected else None
    python = w.runtime / "bin" / "python"
    one = smoke.run_smoke(python, exp, gpu=gpu, jobs=1)
    many = smoke.run_smoke(python, exp, gpu=gpu, jobs=4)
    assert _report(one) == _report(many) and one.ok == many.ok
    assert one.as_dict() | {"seconds": 0} == many.as_dict() | {"seconds": 0}


SLOW_CLI = """\
import os, sys, time
def main():
    with open(os.environ["FAKE_SMOKE_LOG"], "a") as f:
        f.write("help start %r\\n" % time.time())
    time.sleep(1.5)
    with open(os.environ["FAKE_SMOKE_LOG"], "a") as f:
        f.write("help end %r\\n" % time.time())
    print("usage: vllm [-h] {serve,chat}")
    return 0
"""
SLOW_INIT = """\
import os, time
with open(os.environ["FAKE_SMOKE_LOG"], "a") as f:
    f.write("import start %r\\n" % time.time())
time.sleep(1.5)
with open(os.environ["FAKE_SMOKE_LOG"], "a") as f:
    f.write("import end %r\\n" % time.time())
__version__ = "0.13.0"
"""


@pytest.fixture(scope="module")
def slow_env(w: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv whose vLLM takes 1.5 s to import and 1.5 s to print its help, noting when in $FAKE_SMOKE_LOG."""
    from builder import tools
    from tests.helpers import fake_envs, wheels

    base = tmp_path_factory.mktemp("slow")
    torch = next((w.index_root / "files").glob("torch-*.whl"))
    vllm = wheels.make_wheel(base / "wheels", "vllm", "0.13.0", tag="cp38-abi3-manylinux_2_31_x86_64",
                             files={"vllm/__init__.py": SLOW_INIT, "vllm/engine/__init__.py": "",
                                    "vllm/engine/async_llm_engine.py": "class AsyncLLMEngine:\n    pass\n",
                                    # outside the package: the help step must not import vllm's slow init
                                    "slow_vllm_cli.py": SLOW_CLI}, console_scripts={"vllm": "slow_vllm_cli:main"})
    return fake_envs.make_env(base / "env", [torch, vllm], uv=tools.uv_bin(),
                              python=os.path.realpath(w.runtime / "bin" / "python"), cache=w.cache)


def _spans(log: Path) -> dict[str, tuple[float, float]]:
    seen: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        what, _edge, at = line.split()
        seen.setdefault(what, []).append(float(at))
    return {k: (v[0], v[1]) for k, v in seen.items()}


def test_independent_steps_run_side_by_side_up_to_the_cores(slow_env: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The import steps and ``vllm --help`` overlap with two workers and do not with one; without
    ``jobs`` the bound is the CPUs this process may use (its affinity mask)."""
    for jobs, cpus, overlap in ((2, None, True), (1, None, False), (None, {0}, False), (None, {0, 1}, True)):
        log = tmp_path / f"log-{jobs}-{cpus}"
        monkeypatch.setenv("FAKE_SMOKE_LOG", str(log))
        if cpus is not None:
            monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, c=cpus: set(c))
        rep = smoke.run_smoke(slow_env, None, gpu=False, jobs=jobs)
        assert rep.ok and {s.name: s.status for s in rep.steps}["vllm --help"] == PASS, rep.as_dict()
        spans = _spans(log)
        (i0, i1), (h0, h1) = spans["import"], spans["help"]
        assert (h0 < i1 and i0 < h1) == overlap, (jobs, cpus, spans)
    assert smoke.cores() == 2  # the patched affinity mask, not os.cpu_count()
