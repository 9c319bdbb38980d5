"""A package world that moves in time, for ``lock --refresh``, ``lock --verify`` and ``lock diff``.

Real tiny wheels (torch-like with cudart/cuBLAS pins, vLLM-like with real ELF
extensions linking a stub ``libcudart.so.12`` and carrying nvcc's banner),
served by a local index whose PEP 691 JSON gives each file an ``upload-time``,
so uv's ``--exclude-newer`` sees some files appear after the specs' date:

* before 2025-12-30 (the specs' date): filelock 3.19.1, cuBLAS 12.8.4.1, and the rest;
* 2026-01-15: filelock 3.20.0 and cuBLAS 12.9.1.4 (a newer cuBLAS line);
* ``lateextra`` 1.0 appears on 2025-09-01 (a refresh to an earlier date cannot resolve it);
* ``tzprobe`` 2.0 appears at 2025-12-30T20:00Z: within the specs' date in UTC, not in Tokyo.

Matrices (Python 3.12): ``k`` (vLLM built with CUDA 12.9.86, floor 575.57.08:
the newer cuBLAS matches its build toolkit) and ``r`` (a vLLM built with CUDA
12.8.93, floor 570.124.06: cuBLAS 12.9 raises the native driver floor above
the declared one).  Both let cuBLAS float within 12.8-12.9 by an override.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import httpserver, projects, wheels

OLD_TIME = "2025-06-01T00:00:00Z"
NEW_TIME = "2026-01-15T10:00:00Z"
LATE_EXTRA_TIME = "2025-09-01T00:00:00Z"
TZ_PROBE_TIME = "2025-12-30T20:00:00Z"  # inside 2025-12-30 in UTC, after its end in Tokyo

#: id -> (driver floor, vLLM version, vLLM CUDA)
SPECS = {"k": ("575.57.08", "0.13.0", "12.9"), "r": ("570.124.06", "0.12.0", "12.8")}


def build_wheelhouse(d: Path) -> tuple[Path, dict[str, str]]:
    """The wheels, and their upload times (file name -> time)."""
    so = d.parent / f"{d.name}-so"
    cudart = wheels.stub_cudart(so, 12)
    ext129 = wheels.cuda_extension(so / "129", "_flash_ext.abi3.so", cudart, "12.9.86", archs=("sm_89",))
    ext128 = wheels.cuda_extension(so / "128", "_flash_ext.abi3.so", cudart, "12.8.93", archs=("sm_89",))
    times: dict[str, str] = {}

    def add(path: Path, when: str = OLD_TIME) -> None:
        times[path.name] = when

    add(wheels.make_wheel(d, "torch", "2.9.0", requires=projects.TORCH_REQUIRES,
                          tag="cp312-cp312-manylinux_2_28_x86_64"))
    for version, ext in (("0.13.0", ext129), ("0.12.0", ext128)):
        add(wheels.make_wheel(d, "vllm", version, tag="cp38-abi3-manylinux_2_31_x86_64", requires=["torch==2.9.0"],
                              files={"vllm/__init__.py": "", "vllm/_flash_ext.abi3.so": ext.read_bytes()}))
    add(wheels.make_wheel(d, "nvidia-cuda-runtime-cu12", "12.8.90", tag="py3-none-manylinux_2_27_x86_64"))
    add(wheels.make_wheel(d, "nvidia-cublas-cu12", "12.8.4.1", tag="py3-none-manylinux_2_27_x86_64"))
    add(wheels.make_wheel(d, "nvidia-cublas-cu12", "12.9.1.4", tag="py3-none-manylinux_2_27_x86_64"), NEW_TIME)
    add(wheels.make_wheel(d, "filelock", "3.19.1"))
    add(wheels.make_wheel(d, "filelock", "3.20.0"), NEW_TIME)
    add(wheels.make_wheel(d, "lateextra", "1.0"), LATE_EXTRA_TIME)
    add(wheels.make_wheel(d, "tzprobe", "1.0"))
    add(wheels.make_wheel(d, "tzprobe", "2.0"), TZ_PROBE_TIME)
    return d, times


@dataclass
class World:
    """One served index over a copy of the wheelhouse, and a project locked against it."""

    house: Path  # this world's own copy of the wheels (tests may re-upload one)
    index_root: Path
    times: dict[str, str]
    url: str
    project: Path
    stats: httpserver.Stats  # set ``stats.fail_with`` to make the index fail

    def republish(self) -> None:
        """Rewrite the index from ``house`` (after a test changed a wheel)."""
        httpserver.write_simple_index(self.index_root, self.house, upload_times=self.times)


def write_project(root: Path, index: str, matrices: dict[str, dict[str, str]] | None = None,
                  date: str = '"2025-12-30"') -> Path:
    """A project with ``envs/host.toml`` and the given matrices (default: ``k``); a matrix
    not in :data:`SPECS` is ``k`` with its own id.  Per matrix, ``extra`` sets
    [packages].extra; other keys are keywords of :func:`projects.matrix_toml`."""
    texts = {}
    for mid, opts in (matrices or {"k": {}}).items():
        floor, vllm, vcuda = SPECS[mid if mid in SPECS else "k"]
        kw = {"floor": floor, "vllm": vllm, "vllm_cuda": vcuda, **{k: v for k, v in opts.items() if k != "extra"}}
        texts[mid] = projects.matrix_toml(
            mid, index, title=f"refresh test matrix {mid}", track="12.9",
            comment=f"# refresh test matrix {mid}: this comment must survive a refresh\n",
            exclude_newer=f"{date}   # the resolution date",
            packages={"extra": opts.get("extra", "[]"), "overrides": '["nvidia-cublas-cu12>=12.8,<12.10"]'}, **kw)
    return projects.write_project(root, texts, host=projects.TEST_HOST)


@contextlib.contextmanager
def served(house: tuple[Path, dict[str, str]], tmp: Path, matrices: dict[str, dict[str, str]] | None = None,
           date: str = '"2025-12-30"') -> Iterator[World]:
    """Serve a fresh copy of ``house`` and write (not lock) a project against it, its specs
    resolving as of ``date`` (a TOML value)."""
    src, times = house
    copy = tmp / "house"
    shutil.copytree(src, copy)
    index_root = tmp / "index"
    httpserver.write_simple_index(index_root, copy, upload_times=times)
    with httpserver.serve(index_root) as (url, stats):
        proj = write_project(tmp / "proj", f"{url}/simple", matrices, date=date)
        yield World(house=copy, index_root=index_root, times=dict(times), url=url, project=proj, stats=stats)
