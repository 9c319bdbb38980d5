"""Benchmark `builder check`: cold (empty cache) vs warm, and the warm CLI against reading the lock.

    python benchmarks/bench_check.py [--matrix a] [--runs 11] [--cache-dir DIR]

Needs PyPI for the cold run (a given --cache-dir that is already warm skips it).
  * In process, per lock of the matrix: cold (bytes and requests fetched, seconds) and warm
    (must fetch nothing).  Targets (issue 3): cold <= 2 MB and 5 s per lock; warm <= 0.5 s.
  * The CLI on the warm cache, in one run: `builder check -m A -p 3.12` (one lock) and
    `builder check` (every lock: the matrix chooser), against the raw reading of the same
    locks (tomllib + `packaging.pylock.Pylock.from_dict`, the least any PEP 751 consumer
    does).  Budget (issue 9): <= 0.15 s per lock.  Wall and CPU medians, instruction counts
    and the idle estimate the budget is judged on, as in bench_lock.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _measure as M  # noqa: E402
from benchmarks.bench_lock import builder_argv  # noqa: E402
from builder.check.pipeline import CheckRequest, run_check  # noqa: E402
from builder.project import Project, find_root, lock_path  # noqa: E402

COLD_BYTES, COLD_S, WARM_S, CLI_PER_LOCK = 2_000_000, 5.0, 0.5, 0.15

READ_LOCKS = """
import sys, tomllib
from packaging.pylock import Pylock
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        Pylock.from_dict(tomllib.load(f))
"""


def one(project: Project, matrix: str, python: str | None, cache: Path) -> dict[str, object]:
    t = time.perf_counter()
    res = run_check(project, CheckRequest(selectors=(matrix,), python=python, cache_dir=cache))
    return {"seconds": round(time.perf_counter() - t, 3), "verdict": res.verdict,
            "locks": len(res.reports), **res.fetched}


def in_process(project: Project, matrix: str, cache: Path) -> tuple[list[dict[str, object]], bool]:
    m = project.matrix(matrix)
    rows, ok = [], True
    for py in m.pythons:
        cold = one(project, matrix, py, cache)
        warm = one(project, matrix, py, cache)
        good = (int(cold["bytes"]) <= COLD_BYTES and float(cold["seconds"]) <= COLD_S  # type: ignore[arg-type]
                and float(warm["seconds"]) <= WARM_S and warm["requests"] == 0)  # type: ignore[arg-type]
        ok &= good
        rows.append({"lock": f"matrix-{m.id}/py{py}", "cold": cold, "warm": warm, "within_targets": good})
    return rows, ok


def cli(project: Project, matrix: str, python: str, cache: Path, runs: int) -> dict[str, object]:
    b, cd = builder_argv(), ["--cache-dir", str(cache)]
    m = project.matrix(matrix)
    one_lock = str(lock_path(project.locks, m, python))
    every = [str(lock_path(project.locks, x, py)) for x in project.matrices() for py in x.pythons]
    run_check(project, CheckRequest(cache_dir=cache))  # every lock's wheels in the cache
    cases = {  # (argv, exit codes that mean "ran": check exits 1 when a matrix fails on the host)
        "python_startup": ([sys.executable, "-c", "pass"], (0,)),
        "raw_read_one_lock": ([sys.executable, "-c", READ_LOCKS, one_lock], (0,)),
        "builder_check_one_lock": ([*b, "check", "-m", matrix, "-p", python, *cd], (0, 1)),
        "raw_read_every_lock": ([sys.executable, "-c", READ_LOCKS, *every], (0,)),
        "builder_check_every_lock": ([*b, "check", *cd], (0, 1)),
    }
    walls, cpus, ins = {}, {}, {}
    for k, (argv, ok) in cases.items():
        walls[k], cpus[k] = M.wall_cpu(argv, n=runs, cwd=project.root, ok=ok)
        ins[k] = M.instructions(argv, cwd=project.root)
    cm = {k: M.med(v) for k, v in cpus.items()}
    wm = {k: M.med(v) for k, v in walls.items()}

    def ratios(ours: str, raw: str) -> dict[str, float | None]:
        return {"wall": M.ratio(wm[ours], wm[raw]), "cpu": M.ratio(cm[ours], cm[raw]),
                "instructions": M.ratio(ins[ours], ins[raw])}

    n = len(every)
    one_est = M.idle_estimate(ins["builder_check_one_lock"], ins["python_startup"])
    every_est = M.idle_estimate(ins["builder_check_every_lock"], ins["python_startup"])
    est = {"one_lock": one_est, "every_lock": round(every_est / n, 3) if every_est else None}
    return {
        "locks": n,
        "wall": {k: M.summary(v) for k, v in walls.items()},
        "cpu": {k: M.summary(v) for k, v in cpus.items()},
        "instructions_millions": {k: (round(v / 1e6) if v else None) for k, v in ins.items()},
        "ratios": {"one_lock": ratios("builder_check_one_lock", "raw_read_one_lock"),
                   "every_lock": ratios("builder_check_every_lock", "raw_read_every_lock")},
        "cpu_per_lock_ms": {"one_lock": round(cm["builder_check_one_lock"] * 1000, 1),
                            "every_lock": round(cm["builder_check_every_lock"] / n * 1000, 1)},
        "idle_estimate_per_lock_s": est,
        "budget_per_lock_s": CLI_PER_LOCK,
        "within_budget": {k: v is not None and v <= CLI_PER_LOCK for k, v in est.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--matrix", default="a")
    ap.add_argument("--python", default="3.12", help="the Python of the one-lock CLI case")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--cache-dir", type=Path, help="a wheel-facts cache to reuse (default: a fresh one)")
    args = ap.parse_args()
    project = Project(find_root())
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        cache = args.cache_dir or Path(tmp)
        rows, ok = in_process(project, args.matrix, cache)
        out = {"per_lock_in_process": rows, "cli_warm": cli(project, args.matrix, args.python, cache, args.runs),
               "targets": {"cold_bytes": COLD_BYTES, "cold_s": COLD_S, "warm_s": WARM_S}}
    c = out["cli_warm"]
    assert isinstance(c, dict)
    e = c["idle_estimate_per_lock_s"]
    print(f"warm builder check: one lock {c['cpu_per_lock_ms']['one_lock']} ms CPU here, idle estimate "
          f"{e['one_lock']} s ({c['ratios']['one_lock']['instructions']}x the instructions of reading it with "
          f"tomllib + packaging.pylock); {c['locks']} locks {c['cpu_per_lock_ms']['every_lock']} ms CPU per lock, "
          f"idle estimate {e['every_lock']} s ({c['ratios']['every_lock']['instructions']}x); "
          f"budget {CLI_PER_LOCK} s per lock", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
