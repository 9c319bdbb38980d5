"""A small CUDA-flavoured package world for `builder check` tests: torch-like,
vLLM-like (real ELF extensions linking stub libcudart.so.12/.13 with nvcc banners, and a
main extension whose `.nv_fatbin` holds real-format fatbin containers),
nvidia-* runtime wheels, a local index over HTTP and matrices locked by real uv."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import httpserver, projects, wheels


def build_wheelhouse(d: Path) -> Path:
    """Write the wheels (and stub CUDA objects) into ``d``; returns ``d``."""
    so = d.parent / f"{d.name}-so"
    cudart12, cudart13 = wheels.stub_cudart(so / "12", 12), wheels.stub_cudart(so / "13", 13)
    plain = wheels.compile_shared_object(so / "cumem_allocator.abi3.so", c_source="int cumem(void){return 0;}\n")
    ext12 = wheels.cuda_extension(so / "12", "_flash_ext.abi3.so", cudart12, "12.9.86", archs=("sm_80", "sm_89"))
    ext13 = wheels.cuda_extension(so / "13", "_flash_ext.abi3.so", cudart13, "13.0.88", archs=("sm_90",))
    filler = os.urandom(600_000)  # incompressible: makes vLLM a wheel read by ranges
    # The main extensions: fatbins whose main arch list covers 8.9 (0.13.0) and 9.0 only (0.20.0).
    main12 = wheels.fatbin_extension(so / "12", "_C.abi3.so", cudart12,
                                     [wheels.fatbin_container(["sm_80", "sm_89", "compute_89"])] * 3
                                     + [wheels.fatbin_container(["sm_90a"])], filler)
    main13 = wheels.fatbin_extension(so / "13", "_C.abi3.so", cudart13,
                                     [wheels.fatbin_container(["sm_90", "compute_90"], isa=(9, 0))] * 2, filler)
    wheels.make_wheel(d, "torch", "2.9.0", requires=projects.TORCH_REQUIRES, tag="cp312-cp312-manylinux_2_28_x86_64")
    wheels.make_wheel(d, "torchvision", "0.24.0", requires=["torch (==2.9.0)"],
                      tag="cp312-cp312-manylinux_2_28_x86_64")
    wheels.make_wheel(d, "vllm", "0.13.0", tag="cp38-abi3-manylinux_2_31_x86_64",
                      requires=["torch==2.9.0", "torchvision==0.24.0", "flashinfer-python==0.5.3"],
                      files={"vllm/__init__.py": "", "vllm/_C.abi3.so": main12.read_bytes(),
                             "vllm/cumem_allocator.abi3.so": plain.read_bytes(),
                             "vllm/_flash_ext.abi3.so": ext12.read_bytes()})
    wheels.make_wheel(d, "vllm", "0.20.0", tag="cp38-abi3-manylinux_2_35_x86_64",
                      requires=["torch==2.11.0", "flashinfer-python==0.5.3"],
                      files={"vllm/__init__.py": "", "vllm/_C.abi3.so": main13.read_bytes(),
                             "vllm/_flash_ext.abi3.so": ext13.read_bytes()})
    wheels.make_wheel(d, "flashinfer-python", "0.5.3", requires=["torch"])
    wheels.make_wheel(d, "nvidia-cuda-runtime-cu12", "12.8.90", tag="py3-none-manylinux_2_27_x86_64")
    for v in ("12.8.4.1", "12.9.1.4"):
        wheels.make_wheel(d, "nvidia-cublas-cu12", v, tag="py3-none-manylinux_2_27_x86_64")
    wheels.make_wheel(d, "filelock", "3.20.0")
    return d


def write_project(root: Path, index: str) -> Path:
    """Matrices a (575.57.08 + cuBLAS override), b (570.26, as published) and
    c (vLLM 0.20.0 forced onto torch 2.9.0 by an override)."""
    specs = {
        "a": ("575.57.08", "0.13.0", "12.9", '["nvidia-cublas-cu12>=12.9,<12.10"]'),
        "b": ("570.26", "0.13.0", "12.9", "[]"),
        "c": ("580.65.06", "0.20.0", "13.0", '["torch==2.9.0"]'),
    }
    return projects.write_project(root, {
        mid: projects.matrix_toml(mid, index, title=f"check test matrix {mid}", floor=floor, vllm=vllm,
                                  vllm_cuda=vcuda, packages={"overrides": ov})
        for mid, (floor, vllm, vcuda, ov) in specs.items()}, host=projects.TEST_HOST)


def lock_all(root: Path) -> None:
    """Lock every matrix of the project with real uv (raises on any failure)."""
    from builder.lock.resolve import LockRequest, run_lock
    from builder.project import Project

    outcomes = run_lock(Project(root), LockRequest())
    errors = [o.error for o in outcomes if o.error is not None]
    if errors:
        raise errors[0]


@contextlib.contextmanager
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, httpserver.Stats]]:
    """The whole world: wheelhouse, a local range-serving index and a locked project.

    Yields (project root, server stats) while the index is served.
    """
    house = build_wheelhouse(tmp_path_factory.mktemp("house"))
    root = tmp_path_factory.mktemp("index")
    httpserver.write_simple_index(root, house)
    with httpserver.serve(root) as (url, stats):
        proj = write_project(tmp_path_factory.mktemp("proj"), f"{url}/simple")
        lock_all(proj)
        yield proj, stats
