"""Benchmark `builder suggest` against the raw `uv pip compile` runs it needs (network, PyPI).

    python benchmarks/bench_suggest.py [--native] [--python 3.12]... [--repeat 3] [--warm-runs 5]

In one run, on one machine, side by side:
  * cold: `builder suggest` with an empty builder cache and an empty uv cache, vs the raw uv
    commands it ran (read from its --json: the candidates it resolved, built by builder's own
    `compile_argv`, the Pythons of a candidate in parallel as suggest runs them, candidates one
    after another), also from an empty uv cache: the same cache state on both sides.  The
    order of the two sides alternates between rounds.  Target (issue 19): <= 1.2x.
  * warm: `builder suggest` again with both caches filled (no uv, no index read).  Budget
    (issue 19): <= 5 s for the host in envs/host.toml.
Wall times are medians of the rounds; CPU times (user + system of the command and its
children) are reported beside them, because this machine is shared and its load moves wall
times.  The search's own phases (--json stats) say where the rest goes.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _measure as M  # noqa: E402

RATIO, WARM_BUDGET = 1.2, 5.0


def builder_argv() -> list[str]:
    """``python -m builder``: the entry the ``builder`` script runs (builder.cli.app.run), from
    this interpreter's path, so that ``PYTHONPATH=CHECKOUT`` measures another version side by side
    (run in the temp project: ``-m`` puts the current directory first on the path)."""
    return [sys.executable, "-m", "builder"]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ours(proj: Path, flags: list[str], bcache: Path, uvcache: Path) -> tuple[float, float, dict[str, object]]:
    env = M.env({"BUILDER_CACHE_DIR": str(bcache), "UV_CACHE_DIR": str(uvcache)})
    c, t = _cpu(), time.perf_counter()
    r = M.run([*builder_argv(), "-q", "--project", str(proj), "suggest", "--json", *flags], cwd=proj, environ=env,
              ok=(0, 1))
    return time.perf_counter() - t, _cpu() - c, json.loads(r.stdout)


def raw(result: dict[str, object], uvcache: Path, work: Path) -> tuple[float, float, int]:
    """The uv runs suggest needed, as builder builds them, from ``uvcache``."""
    from builder import tools
    from builder.lock import uv as uv_backend
    from builder.suggest import stack

    uv = tools.uv_bin()
    env = M.env({"TZ": "UTC", "NO_COLOR": "1"})
    runs = 0
    c, t = _cpu(), time.perf_counter()
    for row in result["candidates"]:  # type: ignore[union-attr]
        if not row["lock_hashes"] and not any(o["status"] == "unresolvable" for o in row["outcomes"]):
            continue
        m = stack.candidate_matrix(vllm=row["vllm"], torch=row["torch"], torch_cuda=row["cuda"]["release"],
                                   pythons=result["pythons"], platform=str(result["platform"]),  # type: ignore[arg-type]
                                   exclude_newer=str(result["exclude_newer"]), index_url=str(result["index_url"]))
        argvs = []
        for py in m.pythons:
            d = work / f"{row['vllm']}-{py}"
            d.mkdir(parents=True, exist_ok=True)
            argvs.append(uv_backend.compile_argv(uv, m, py, workdir=d, cache_dir=str(uvcache)))
        with ThreadPoolExecutor(max_workers=len(argvs)) as pool:
            list(pool.map(lambda a: M.run(a, environ=env, ok=(0, 1, 2)), argvs))
        runs += len(argvs)
    return time.perf_counter() - t, _cpu() - c, runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--python", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=3, help="cold rounds")
    ap.add_argument("--warm-runs", type=int, default=5)
    args = ap.parse_args()
    flags = (["--native"] if args.native else []) + [x for p in args.python for x in ("--python", p)]
    out: dict[str, object] = {"flags": flags}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        proj = base / "p"
        shutil.copytree(ROOT / "envs", proj / "envs")
        (proj / "locks").mkdir()
        cold_ours, cold_raw, cpu_ours, cpu_raw, stats = [], [], [], [], []
        result: dict[str, object] = {}
        for i in range(args.repeat):
            bc, uo, ur = base / f"bc{i}", base / f"uv-ours{i}", base / f"uv-raw{i}"
            sides = ["ours", "raw"] if i % 2 == 0 else ["raw", "ours"]
            for side in sides:
                if side == "ours":
                    w, c, result = ours(proj, flags, bc, uo)
                    cold_ours.append(w)
                    cpu_ours.append(c)
                    stats.append(result["stats"])
                else:
                    if not result:  # raw first: learn the runs from a throwaway search
                        _w, _c, result = ours(proj, flags, base / f"probe{i}", base / f"uv-probe{i}")
                    w, c, n = raw(result, ur, base / f"raw{i}")
                    cold_raw.append(w)
                    cpu_raw.append(c)
                    out["raw_uv_runs"] = n
            shutil.rmtree(ur, ignore_errors=True)
        warm = M.wall([*builder_argv(), "-q", "--project", str(proj), "suggest", "--json", *flags],
                      n=args.warm_runs, environ=M.env({"BUILDER_CACHE_DIR": str(base / f"bc{args.repeat - 1}"),
                                                       "UV_CACHE_DIR": str(base / f"uv-ours{args.repeat - 1}")}),
                      cwd=proj, ok=(0, 1))
        ans = result.get("answer")
        out.update({
            "answer": ans, "exit_code": result.get("exit_code"),
            "cold_builder_s": [round(x, 2) for x in cold_ours], "cold_raw_uv_s": [round(x, 2) for x in cold_raw],
            "cold_builder_cpu_s": [round(x, 2) for x in cpu_ours], "cold_raw_uv_cpu_s": [round(x, 2) for x in cpu_raw],
            "cold_ratio": round(statistics.median(cold_ours) / statistics.median(cold_raw), 2),
            "target_ratio": RATIO, "search_stats": stats,
            "warm_s": M.summary(warm), "warm_budget_s": WARM_BUDGET,
        })
    print(f"cold: builder suggest {statistics.median(cold_ours):.2f} s vs raw uv {statistics.median(cold_raw):.2f} s "
          f"({out['cold_ratio']}x, target {RATIO}x); warm {statistics.median(warm):.2f} s (budget {WARM_BUDGET} s); "
          f"answer {ans}", file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
