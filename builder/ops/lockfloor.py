"""The native driver floor of a matrix's lock, for preflight and the runbook.

The floor comes from the checker itself (``builder.check.pipeline.check_lock``
on the matrix's committed locks), run **offline** from the check cache: no
network from preflight.  When the cache is cold, a lower bound comes from data
alone: the lock's CUDA component packages (``nvidia-cuda-runtime-cu12``,
``nvidia-cublas-cu12`` ...) placed in ``builder/data/cuda.toml``; the wheels'
own kernels (vLLM's nvcc build toolkit) are then not known and the result says
so.  Nothing here is hard-coded per matrix.
"""

from __future__ import annotations

from pathlib import Path

from builder import pylock
from builder.check import knowledge as cuda
from builder.check.pipeline import CheckOptions, check_lock
from builder.driver.branches import LockFloor
from builder.driver.facts import HostFacts
from builder.errors import BuilderError, ProtectedEnvError, Unavailable
from builder.project import Project, lock_path
from builder.spec import Matrix
from builder.versions import DriverVersion


def floor_from_data(lock: pylock.Lock, python: str, arch: str = "x86_64") -> tuple[str, str] | None:
    """(driver, what) from the lock's CUDA component packages alone, or None."""
    k = cuda.load()
    cands = []
    for p in lock.applicable(pylock.target_env(python, arch)):
        comp = cuda.package_component(k, p.name)
        pl = cuda.place(k, comp, p.version) if comp else None
        if pl is not None:
            cands.append((pl.driver, f"{p.name} {p.version} ({comp} of CUDA {pl.label})"))
    if not cands:
        return None
    return max(cands, key=lambda c: DriverVersion.parse(c[0]))


def lock_floor(project: Project, matrix: Matrix, *, cache_dir: Path | None = None) -> LockFloor | None:
    """The highest native floor over the matrix's locks (exact ones preferred), or None without locks."""
    found: list[LockFloor] = []
    for py in matrix.pythons:
        path = lock_path(project.locks, matrix, py)
        if not path.is_file():
            continue
        rel = str(path.relative_to(project.root))
        try:
            lock = pylock.read(path)
        except BuilderError:
            continue  # `builder lock --check` reports a bad lock; preflight only loses the note
        try:
            rep = check_lock(lock, matrix=matrix, host=HostFacts(origin="preflight"),
                             opts=CheckOptions(python=py, cache_dir=cache_dir, offline=True))
        except ProtectedEnvError:
            raise  # the check cache it would fill is protected: refuse, never degrade silently
        except Unavailable:
            data = floor_from_data(lock, py)
            if data is not None:
                found.append(LockFloor(data[0], data[1], rel, "the lock's CUDA packages in builder/data/cuda.toml "
                                       f"because the check cache is cold; `builder check --matrix {matrix.id}` "
                                       "once online gives the exact floor", exact=False))
            continue
        except BuilderError:
            continue
        native = rep.driver.get("native_min")
        if native:
            found.append(LockFloor(str(native), str(rep.driver.get("native_from", "")), rel,
                                   f"`builder check` on {rel}, offline from its cache"))
    if not found:
        return None
    return max(found, key=lambda lf: (DriverVersion.parse(lf.driver), lf.exact))
