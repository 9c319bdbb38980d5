"""A local index of fake vLLM and torch releases for `builder suggest` (tiny real wheels: real
ELF extensions linking stub libcudart.so.12/.13 with nvcc banners, a main extension with real
fatbin containers, torch wheels whose Requires-Dist pins the CUDA runtime), served over HTTP
as PEP 691 JSON with upload times, a yanked release and a pre-release.

The releases, newest first, and what the operator's host (driver 550.107.02, 2x cc 8.9,
glibc 2.35) makes of them:

====================  ==============  ====================================================
vLLM                  torch (CUDA)    on driver 550.107.02
====================  ==============  ====================================================
0.20.0                2.11.0 (13.0)   skipped by data: CUDA 13 needs >= 580.65.06
0.14.0rc1 (pre)       2.9.0 (12.8)    left out unless --pre
0.13.1 (yanked)       2.9.0 (12.8)    left out unless --include-yanked
0.13.0                2.9.0 (12.8)    WARN: minor-version compatibility (the default answer)
0.12.0                2.9.0 (12.8)    FAIL: its kernels link libcudart.so.13 (cuda-major)
0.9.0                 2.6.0 (12.4)    kernels built with 12.8: native floor 570.124.06
0.8.5                 2.6.0 (12.4)    native (built with 12.4): the --native answer; --deep: PASS
0.7.0                 2.6.0 (12.4)    CPython 3.11 only (requires-python < 3.12)
====================  ==============  ====================================================
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import httpserver, projects, wheels

LINUX = projects.LINUX
TORCH = {  # version -> Requires-Dist
    "2.11.0": [f"nvidia-cuda-runtime==13.0.96; {LINUX}", f"nvidia-cublas==13.1.0.3; {LINUX}"],
    "2.9.0": [f"nvidia-cuda-runtime-cu12==12.8.90; {LINUX}", f"nvidia-cublas-cu12==12.8.4.1; {LINUX}"],
    "2.6.0": [f"nvidia-cuda-runtime-cu12==12.4.127; {LINUX}", f"nvidia-cublas-cu12==12.4.5.8; {LINUX}"],
}
NVIDIA = [("nvidia-cuda-runtime", "13.0.96"), ("nvidia-cublas", "13.1.0.3"),
          ("nvidia-cuda-runtime-cu12", "12.8.90"), ("nvidia-cublas-cu12", "12.8.4.1"),
          ("nvidia-cuda-runtime-cu12", "12.4.127"), ("nvidia-cublas-cu12", "12.4.5.8")]
#: vLLM version -> (torch pin, extension key, tag)
VLLM = {
    "0.20.0": ("2.11.0", "13.0.88", "cp38-abi3-manylinux_2_35_x86_64"),
    "0.14.0rc1": ("2.9.0", "12.9.86", "cp38-abi3-manylinux_2_31_x86_64"),
    "0.13.1": ("2.9.0", "12.9.86", "cp38-abi3-manylinux_2_31_x86_64"),
    "0.13.0": ("2.9.0", "12.9.86", "cp38-abi3-manylinux_2_31_x86_64"),
    "0.12.0": ("2.9.0", "13.0.88", "cp38-abi3-manylinux_2_31_x86_64"),
    "0.9.0": ("2.6.0", "12.8.93", "cp38-abi3-manylinux1_x86_64"),
    "0.8.5": ("2.6.0", "12.4.131", "cp38-abi3-manylinux1_x86_64"),
    "0.7.0": ("2.6.0", "12.4.131", "cp38-abi3-manylinux1_x86_64"),
}
YANKED = {"vllm-0.13.1-cp38-abi3-manylinux_2_31_x86_64.whl": "broken kernels"}
REQUIRES_PYTHON = {"vllm-0.7.0-cp38-abi3-manylinux1_x86_64.whl": ">=3.9,<3.12"}

#: The operator's host as a test host (envs/host.toml's facts, fixed here).
HOST = projects.TEST_HOST


def build_wheelhouse(d: Path) -> Path:
    so = d.parent / f"{d.name}-so"
    cudart = {12: wheels.stub_cudart(so / "12", 12), 13: wheels.stub_cudart(so / "13", 13)}
    ext = {}
    for tk in ("13.0.88", "12.9.86", "12.8.93", "12.4.131"):
        major = int(tk.split(".")[0])
        ext[tk] = wheels.cuda_extension(so / tk, "_moe_C.abi3.so", cudart[major], tk).read_bytes()
    # vLLM 0.8.5's main extension: real fatbin containers (SASS sm_80/sm_89, PTX 8.9 of ISA 8.4 =
    # CUDA 12.4), read only by --deep.
    main = wheels.fatbin_extension(so / "main", "_C.abi3.so", cudart[12],
                                   [wheels.fatbin_container(["sm_80", "sm_89", "compute_89"], isa=(8, 4))] * 3,
                                   b"Cuda compilation tools, release 12.4, V12.4.131\0")
    for v, (torch, tk, tag) in VLLM.items():
        files = {"vllm/__init__.py": f'__version__ = "{v}"\n', "vllm/_moe_C.abi3.so": ext[tk]}
        if v == "0.8.5":
            files["vllm/_C.abi3.so"] = main.read_bytes()
        wheels.make_wheel(d, "vllm", v, tag=tag, requires=[f"torch=={torch}"], files=files)
    for v, reqs in TORCH.items():
        for py in ("cp311", "cp312"):
            wheels.make_wheel(d, "torch", v, requires=reqs, tag=f"{py}-{py}-manylinux_2_28_x86_64")
    for name, v in NVIDIA:
        wheels.make_wheel(d, name, v, tag="py3-none-manylinux_2_27_x86_64")
    return d


@contextlib.contextmanager
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, httpserver.Stats]]:
    """The index URL (``.../simple``) and the server's counters, while it is served."""
    house = build_wheelhouse(tmp_path_factory.mktemp("suggest-house"))
    root = tmp_path_factory.mktemp("suggest-index")
    httpserver.write_simple_index(root, house, yanked=YANKED, requires_python=REQUIRES_PYTHON)
    with httpserver.serve(root) as (url, stats):
        yield f"{url}/simple", stats


def write_project(root: Path) -> Path:
    """A project with the test host and one shipped-like matrix (suggest needs no matrix, a
    project needs one)."""
    return projects.write_project(root, {"a": projects.matrix_toml("a", "https://pypi.org/simple",
                                                                   title="unrelated matrix")}, host=HOST)


def snapshot(template: Path, dest: Path, *, driver: str, cc: str, glibc: str = "2.35",
             machine: str = "x86_64") -> Path:
    """A host snapshot from a real one, with its GPU's driver and compute capability, glibc and
    machine replaced (the probes' texts in the form nvidia-smi, getconf and uname print them)."""
    d = json.loads(template.read_text())
    for r in d["probes"]:
        if r["id"] == "nvidia-smi-gpus":
            head = r["stdout"].splitlines()[0]
            r["stdout"] = (f"{head}\n0, NVIDIA Test GPU, {driver}, {cc}, 49140, 00000000:00:06.0, "
                           "GPU-00000000-0000-0000-0000-000000000000\n")
        elif r["id"] == "glibc":
            r["stdout"] = f"glibc {glibc}\n"
        elif r["id"] == "machine":
            r["stdout"] = f"{machine}\n"
    dest.write_text(json.dumps(d))
    return dest
