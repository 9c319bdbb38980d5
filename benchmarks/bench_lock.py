"""Benchmark `builder lock` against plain `uv pip compile`, in one run.

    python benchmarks/bench_lock.py [--offline] [--repeat 3]

Times, on the same machine and the same warm uv cache:
  * plain `uv pip compile` for each of the four locks, one after another;
  * `builder lock --all` (all four locks, in parallel);
  * `builder lock --check` and `builder --help`.
Targets (issue 2): all four locks <= 1.3x the slowest single raw compile;
`--check` < 0.3 s; `--help` < 0.15 s.  Prints ratios and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder import tools  # noqa: E402
from builder.lock import uv as uv_backend  # noqa: E402
from builder.project import Project  # noqa: E402


def timed(argv: list[str], cwd: Path | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{r.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offline", action="store_true", help="resolve from the warm cache only (both sides)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    uv = tools.uv_bin()
    builder = [sys.executable, "-m", "builder"]
    with tempfile.TemporaryDirectory() as tmp:
        proj = Path(tmp) / "p"
        shutil.copytree(ROOT / "envs", proj / "envs")
        shutil.copytree(ROOT / "locks", proj / "locks")
        project = Project(proj)
        extra = ["--offline"] if args.offline else []
        timed([*builder, "-q", "lock", *extra], cwd=proj)  # warm the cache
        raw: dict[str, list[float]] = {}
        ours: list[float] = []
        for _ in range(args.repeat):
            for m in project.matrices():
                for py in m.pythons:
                    work = Path(tmp) / f"raw-{m.id}-{py}"
                    work.mkdir(exist_ok=True)
                    argv = uv_backend.compile_argv(uv, m, py, work, offline=args.offline)
                    raw.setdefault(f"{m.name}/py{py}", []).append(timed(argv))
            ours.append(timed([*builder, "-q", "lock", *extra], cwd=proj))
        check = [timed([*builder, "lock", "--check"], cwd=proj) for _ in range(5)]
        helps = [timed([*builder, "--help"]) for _ in range(5)]
    raw_med = {k: statistics.median(v) for k, v in raw.items()}
    slowest = max(raw_med.values())
    total_raw = sum(raw_med.values())
    lock_all = statistics.median(ours)
    result = {
        "mode": "offline" if args.offline else "online, warm cache",
        "raw_uv_each_s": {k: round(v, 3) for k, v in raw_med.items()},
        "raw_uv_slowest_s": round(slowest, 3),
        "raw_uv_sequential_sum_s": round(total_raw, 3),
        "builder_lock_all_s": round(lock_all, 3),
        "ratio_vs_slowest_single": round(lock_all / slowest, 2),
        "ratio_vs_sequential_sum": round(lock_all / total_raw, 2),
        "lock_check_s": round(statistics.median(check), 3),
        "help_s": round(statistics.median(helps), 3),
    }
    print(f"builder lock (4 locks): {lock_all:.2f}s = {lock_all / slowest:.2f}x the slowest raw uv compile "
          f"({slowest:.2f}s), {lock_all / total_raw:.2f}x raw uv in sequence ({total_raw:.2f}s); target <= 1.3x")
    print(f"builder lock --check: {result['lock_check_s']}s (target < 0.3)")
    print(f"builder --help: {result['help_s']}s (target < 0.15)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
