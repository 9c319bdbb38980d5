"""Benchmark `builder lock` against plain `uv pip compile`, and the cheap commands against plain Python.

    python benchmarks/bench_lock.py [--offline] [--repeat 3] [--cheap-only] [--runs 21]

In one run, on one machine, with the same warm caches for both sides:
  * resolve: plain `uv pip compile` of each of the four locks, one after another, vs
    `builder lock --all` (all four, in parallel).  Target (issue 2): <= 1.3x the slowest
    single raw compile.  Needs PyPI (or --offline with uv's cache warm).  Skipped by --cheap-only.
  * `builder --help` vs `python -c "import click"` (click must load to print help), with
    bare Python start-up beside them.  Budget (issue 9): <= 0.1 s.
  * `builder lock --check` (four locks) vs reading and sha256-hashing the same four files in
    plain Python.  Budget (issue 9): <= 0.1 s.
Wall and CPU times are medians of --runs runs; instruction counts (valgrind, when installed)
do not depend on the load at all.  Ratios are given for all three.  The budgets are absolute,
and on a shared machine even CPU time moves with the load (Python's own start-up has measured
20 to 45 ms on the same box), so they are judged on an idle estimate: the command's
instructions over bare Python start-up's, times 20 ms (the fast end of issue 9's "Python itself
starts in 0.02-0.1 s").
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _measure as M  # noqa: E402

HELP_BUDGET, CHECK_BUDGET, LOCK_RATIO = 0.1, 0.1, 1.3

HASH_FILES = """
import hashlib, sys
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        hashlib.sha256(f.read()).hexdigest()
"""


def builder_argv() -> list[str]:
    """The console script an operator runs (``builder``), else ``python -m builder``."""
    script = Path(sys.executable).with_name("builder")
    return [str(script)] if script.exists() else [sys.executable, "-m", "builder"]


def cheap(proj: Path, runs: int) -> dict[str, object]:
    py, b = sys.executable, builder_argv()
    locks = sorted(str(p) for p in (proj / "locks").glob("matrix-*/pylock.*.toml"))
    cases = {
        "python_startup": [py, "-c", "pass"],
        "raw_import_click": [py, "-c", "import click"],
        "builder_help": [*b, "--help"],
        "raw_read_hash_locks": [py, "-c", HASH_FILES, *locks],
        "builder_lock_check": [*b, "lock", "--check"],
    }
    walls, cpus = {}, {}
    for k, argv in cases.items():
        walls[k], cpus[k] = M.wall_cpu(argv, n=runs, cwd=proj)
    ins = {k: M.instructions(argv, cwd=proj) for k, argv in cases.items()}
    out: dict[str, object] = {
        "locks_checked": len(locks),
        "wall": {k: M.summary(v) for k, v in walls.items()},
        "cpu": {k: M.summary(v) for k, v in cpus.items()},
        "instructions_millions": {k: (round(v / 1e6) if v else None) for k, v in ins.items()},
    }
    wm = {k: M.med(v) for k, v in walls.items()}
    cm = {k: M.med(v) for k, v in cpus.items()}

    def ratios(ours: str, raw: str) -> dict[str, float | None]:
        return {"wall": M.ratio(wm[ours], wm[raw]), "cpu": M.ratio(cm[ours], cm[raw]),
                "instructions": M.ratio(ins[ours], ins[raw])}

    out["ratios"] = {"help_vs_import_click": ratios("builder_help", "raw_import_click"),
                     "lock_check_vs_read_hash": ratios("builder_lock_check", "raw_read_hash_locks")}
    est = {k: M.idle_estimate(ins[k], ins["python_startup"]) for k in ("builder_help", "builder_lock_check")}
    out["idle_estimate_s"] = est
    out["budgets_s"] = {"help": HELP_BUDGET, "lock_check": CHECK_BUDGET}
    out["within_budgets"] = {"help": (est["builder_help"] or cm["builder_help"]) <= HELP_BUDGET,
                             "lock_check": (est["builder_lock_check"] or cm["builder_lock_check"]) <= CHECK_BUDGET}
    return out


def resolve(proj: Path, tmp: Path, offline: bool, repeat: int) -> dict[str, object]:
    from builder import tools
    from builder.lock import uv as uv_backend
    from builder.project import Project

    uv = tools.uv_bin()
    b = builder_argv()
    project = Project(proj)
    extra = ["--offline"] if offline else []
    M.run([*b, "-q", "lock", *extra], cwd=proj)  # warm the cache
    raw: dict[str, list[float]] = {}
    ours: list[float] = []
    for _ in range(repeat):
        for m in project.matrices():
            for py in m.pythons:
                work = tmp / f"raw-{m.id}-{py}"
                work.mkdir(exist_ok=True)
                argv = uv_backend.compile_argv(uv, m, py, workdir=work, offline=offline)
                t = time.perf_counter()
                M.run(argv)
                raw.setdefault(f"{m.name}/py{py}", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        M.run([*b, "-q", "lock", *extra], cwd=proj)
        ours.append(time.perf_counter() - t)
    raw_med = {k: statistics.median(v) for k, v in raw.items()}
    slowest, total = max(raw_med.values()), sum(raw_med.values())
    lock_all = statistics.median(ours)
    return {
        "mode": "offline" if offline else "online, warm cache",
        "raw_uv_each_s": {k: round(v, 3) for k, v in raw_med.items()},
        "raw_uv_slowest_s": round(slowest, 3),
        "raw_uv_sequential_sum_s": round(total, 3),
        "builder_lock_all_s": round(lock_all, 3),
        "ratio_vs_slowest_single": round(lock_all / slowest, 2),
        "ratio_vs_sequential_sum": round(lock_all / total, 2),
        "target_ratio": LOCK_RATIO,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--offline", action="store_true", help="resolve from the warm cache only (both sides)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the resolve comparison")
    ap.add_argument("--runs", type=int, default=21, help="runs of each cheap command")
    ap.add_argument("--cheap-only", action="store_true", help="only --help and lock --check (no uv, no network)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proj = Path(tmp) / "p"
        shutil.copytree(ROOT / "envs", proj / "envs")
        shutil.copytree(ROOT / "locks", proj / "locks")
        result: dict[str, object] = {"cheap": cheap(proj, args.runs)}
        if not args.cheap_only:
            result["resolve"] = resolve(proj, Path(tmp), args.offline, args.repeat)
    c = result["cheap"]
    assert isinstance(c, dict)
    for key, label, budget, rkey, raw in (
            ("builder_help", "builder --help", HELP_BUDGET, "help_vs_import_click", "`import click`"),
            ("builder_lock_check", "builder lock --check", CHECK_BUDGET, "lock_check_vs_read_hash",
             "reading+hashing the 4 locks")):
        cpu, w, r, est = c["cpu"][key], c["wall"][key], c["ratios"][rkey], c["idle_estimate_s"][key]
        print(f"{label}: {cpu['median_ms']} ms CPU, {w['median_ms']} ms wall (medians here), idle estimate "
              f"{est} s (budget {budget} s); vs {raw}: {r['cpu']}x CPU, {r['wall']}x wall, "
              f"{r['instructions']}x instructions", file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
