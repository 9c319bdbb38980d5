"""``check --lock --arch aarch64``: a lock is judged for the host's architecture, and a torch
that is a CPU build (PyPI's aarch64 torch 2.9.1: no ``torch/lib/libtorch_cuda.so``, its nvidia-*
requirements only for x86_64) is identified as one; a CUDA vLLM beside it fails
``cuda-identity``.  Small real wheels (real ELF extensions), a local index, real uv."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import _proc, tools
from tests.helpers import httpserver
from tests.helpers import wheels as hw
from tests.helpers.cli import builder_cmd

AARCH64 = "cp312-cp312-manylinux_2_28_aarch64"
HOST = ("--driver", "580.95.05", "--gpu-cc", "9.0", "--glibc", "2.35")
# torch 2.9.1's own requirements on aarch64 (METADATA): the CUDA wheels only for x86_64
X86_ONLY = 'platform_system == "Linux" and platform_machine == "x86_64"'


@pytest.fixture(scope="module")
def locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    d = tmp_path_factory.mktemp("wheels")
    so = tmp_path_factory.mktemp("so")
    rt = hw.stub_cudart(so, 12)
    cpu = hw.compile_shared_object(so / "libtorch_cpu.so", c_source="int at_cpu(void){return 0;}\n")
    gpu = hw.compile_shared_object(so / "libtorch_cuda.so", c_source="int at_cuda(void){return 0;}\n", link=[rt])
    py_ext = hw.compile_shared_object(so / "_C.so", c_source="int torch_c(void){return 0;}\n")
    reqs = [f"nvidia-cuda-runtime-cu12==12.8.90; {X86_ONLY}", "filelock"]
    hw.make_wheel(d, "torch", "2.9.1", tag=AARCH64, requires=reqs, files={
        "torch/__init__.py": "", "torch/_C.cpython-312-aarch64-linux-gnu.so": py_ext.read_bytes(),
        "torch/lib/libtorch_cpu.so": cpu.read_bytes()})
    hw.make_wheel(d / "cuda", "torch", "2.9.1", tag=AARCH64, requires=reqs, files={
        "torch/__init__.py": "", "torch/_C.cpython-312-aarch64-linux-gnu.so": py_ext.read_bytes(),
        "torch/lib/libtorch_cpu.so": cpu.read_bytes(), "torch/lib/libtorch_cuda.so": gpu.read_bytes()})
    vext = hw.cuda_extension(so / "v", "_C.abi3.so", rt, "12.9.86")
    hw.make_wheel(d, "vllm", "0.16.0", tag="cp38-abi3-manylinux_2_31_aarch64", requires=["torch==2.9.1"],
                  files={"vllm/__init__.py": "", "vllm/_C.abi3.so": vext.read_bytes()})
    hw.make_wheel(d, "nvidia-cuda-runtime-cu12", "12.8.90", tag="py3-none-manylinux_2_27_x86_64")
    hw.make_wheel(d, "filelock", "3.20.0")
    out: dict[str, Path] = {}
    for name, house in (("cpu", d), ("cuda", None)):
        if house is None:  # the same world with torch's CUDA build in place of the CPU one
            house = tmp_path_factory.mktemp("wheels-cuda")
            for f in d.glob("*.whl"):
                if not f.name.startswith("torch-"):
                    (house / f.name).write_bytes(f.read_bytes())
            (house / "torch-2.9.1-" f"{AARCH64}.whl").write_bytes(
                next((d / "cuda").glob("torch-*.whl")).read_bytes())
        root = tmp_path_factory.mktemp(f"index-{name}")
        httpserver.write_simple_index(root, house)
        with httpserver.serve(root) as (url, _stats):
            work = tmp_path_factory.mktemp(f"lock-{name}")
            (work / "req.in").write_text("vllm==0.16.0\n")
            res = _proc.run([tools.uv_bin(), "pip", "compile", str(work / "req.in"), "--format", "pylock.toml",
                             "--output-file", str(work / "pylock.toml"), "--no-config", "--quiet",
                             "--index-url", f"{url}/simple", "--python-version", "3.12",
                             "--python-platform", "aarch64-manylinux_2_35"], timeout=120, env=_proc.clean_env())
            assert res.returncode == 0, res.stderr
            # wheel URLs point at the index: copy them beside the lock (check reads them by path)
            files = work / "files"
            files.mkdir()
            for f in (root / "files").iterdir():
                (files / f.name).write_bytes(f.read_bytes())
            text = (work / "pylock.toml").read_text().replace(f"{url}/files/", "files/")
            (work / "pylock.toml").write_text(text.replace('url = "files/', 'path = "files/'))
            out[name] = work / "pylock.toml"
    yield out


def _check(lock: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = builder_cmd("check", "--lock", str(lock), *HOST, "--json", *args, cwd=lock.parent)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def _finding(rep: dict, rule: str) -> dict:  # type: ignore[type-arg]
    return next(f for f in rep["findings"] if f["id"] == rule)


def test_a_cuda_vllm_beside_a_cpu_torch_fails_cuda_identity(locks: dict[str, Path]) -> None:
    rc, rep = _check(locks["cpu"], "--arch", "aarch64")
    assert rc == 1 and rep["arch"] == "aarch64"
    torch = rep["packages"]["torch"]["cuda"]
    assert torch["evidence_kind"] == "cpu-build" and torch["major"] is None
    assert torch["cpu_build"].startswith("no torch/lib/libtorch_cuda.so among the 2 shared objects of "
                                         "torch-2.9.1-cp312-cp312-manylinux_2_28_aarch64.whl")
    ident = _finding(rep, "cuda-identity")
    assert ident["level"] == "fail"
    assert ident["message"].startswith("torch 2.9.1 is a CPU build (no torch/lib/libtorch_cuda.so")
    assert "vllm 0.16.0 (libcudart.so.12, built with 12.9.86; binary) is a CUDA build that needs torch's CUDA " \
           "library (libtorch_cuda.so): it cannot import" in ident["message"]
    assert "aarch64" in _finding(rep, "platform-tag")["message"]


def test_the_cuda_build_of_torch_is_not_taken_for_a_cpu_one(locks: dict[str, Path]) -> None:
    _rc, rep = _check(locks["cuda"], "--arch", "aarch64")
    torch = rep["packages"]["torch"]["cuda"]
    assert torch["cpu_build"] is None and torch["evidence_kind"] != "cpu-build"
    assert not _finding(rep, "cuda-identity")["message"].startswith("torch 2.9.1 is a CPU build")


def test_without_arch_the_lock_is_judged_for_x86_64(locks: dict[str, Path]) -> None:
    # The default is unchanged: an aarch64 lock judged as x86_64 finds no wheel of torch or vLLM
    # that installs there, so nothing is called a CPU build.
    _rc, rep = _check(locks["cpu"])
    assert rep["arch"] == "x86_64"
    assert _finding(rep, "platform-tag")["level"] == "fail"
    assert (rep["packages"].get("torch") or {}).get("cuda", {}).get("cpu_build") is None


def test_arch_of_a_matrix_is_its_platform(tmp_path: Path) -> None:
    from builder.check.pipeline import CheckRequest, run_check
    from builder.errors import UsageError
    from builder.project import Project
    from tests.helpers import projects

    spec = projects.matrix_toml("t", "http://127.0.0.1:9/simple", title="t")
    root = projects.write_project(tmp_path / "p", {"t": spec}, host=projects.TEST_HOST)
    with pytest.raises(UsageError, match=r"matrix-t locks for x86_64-manylinux_2_35, not aarch64"):
        run_check(Project(root), CheckRequest(selectors=("t",), arch="aarch64"))
    with pytest.raises(UsageError, match="not a machine architecture builder judges: 'riscv64'"):
        run_check(None, CheckRequest(lock=tmp_path / "x.toml", arch="riscv64"))
