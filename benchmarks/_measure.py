"""Measuring helpers shared by the benchmarks (not part of builder; subprocess is fine here).

The machines these run on are shared, so every number is a median of repeated
runs.  Besides wall time, each run's CPU time (user + system of the child and
the children it waited for, from ``getrusage``) is recorded: on a loaded machine
wall time includes waiting for a core, CPU time does not, and for a
single-threaded command that does no network I/O it is what the wall time is on
an idle machine.  A command's own work is also counted in instructions when
valgrind is installed (``callgrind``: deterministic; children are not
counted).  Bytecode caching is left on (an installed builder has its .pyc
files): ``PYTHONDONTWRITEBYTECODE`` is removed.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    e.update(extra or {})
    return e


def run(argv: Sequence[str], *, cwd: Path | None = None, environ: Mapping[str, str] | None = None,
        ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), cwd=cwd, env=dict(environ or env()), capture_output=True, text=True)
    if r.returncode not in ok:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(argv)}\n{r.stderr[-3000:]}")
    return r


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wall_cpu(argv: Sequence[str], *, n: int, cwd: Path | None = None, environ: Mapping[str, str] | None = None,
             ok: Sequence[int] = (0,)) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of ``n`` runs, after one untimed warm-up run."""
    run(argv, cwd=cwd, environ=environ, ok=ok)
    walls, cpus = [], []
    for _ in range(n):
        c, t = _cpu(), time.perf_counter()
        run(argv, cwd=cwd, environ=environ, ok=ok)
        walls.append(time.perf_counter() - t)
        cpus.append(_cpu() - c)
    return walls, cpus


def wall(argv: Sequence[str], *, n: int, cwd: Path | None = None, environ: Mapping[str, str] | None = None,
         ok: Sequence[int] = (0,)) -> list[float]:
    """Wall seconds of ``n`` runs (after one untimed warm-up run)."""
    return wall_cpu(argv, n=n, cwd=cwd, environ=environ, ok=ok)[0]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def instructions(argv: Sequence[str], *, cwd: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> int | None:
    """Instructions the process itself executed (valgrind callgrind), or None without valgrind."""
    vg = shutil.which("valgrind")
    if vg is None:
        return None
    r = subprocess.run([vg, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv], cwd=cwd,
                       env=dict(environ or env()), capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    return int(m.group(1)) if m else None


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def summary(xs: Sequence[float]) -> dict[str, float]:
    """median, min and max in milliseconds."""
    return {"median_ms": round(med(xs) * 1000, 1), "min_ms": round(min(xs) * 1000, 1),
            "max_ms": round(max(xs) * 1000, 1)}


def ratio(a: float | int | None, b: float | int | None) -> float | None:
    return round(a / b, 2) if a and b else None


#: Python's own start-up on an idle machine of the kind these budgets were set on
#: (issue 9: "Python itself starts in 0.02-0.1 s here"): the fast end.
PYTHON_START_S = 0.02


def idle_estimate(instr: int | None, instr_python_start: int | None) -> float | None:
    """Seconds on an idle machine where Python starts in :data:`PYTHON_START_S`, scaled by
    instruction counts (which the load does not change)."""
    if not instr or not instr_python_start:
        return None
    return round(instr / instr_python_start * PYTHON_START_S, 3)
