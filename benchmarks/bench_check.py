"""Benchmark `builder check` on matrix A: cold (empty cache) vs warm, bytes and time.

Needs PyPI.  Targets (issue 3): cold <= 2 MB and 5 s per lock; warm <= 0.5 s and
zero network.  Run: .venv/bin/python benchmarks/bench_check.py [--matrix a]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from builder.check.pipeline import CheckRequest, run_check
from builder.project import Project, find_root

COLD_BYTES, COLD_S, WARM_S = 2_000_000, 5.0, 0.5


def one(project: Project, matrix: str, python: str | None, cache: Path) -> dict[str, object]:
    t = time.perf_counter()
    res = run_check(project, CheckRequest(selectors=(matrix,), python=python, cache_dir=cache))
    return {"seconds": round(time.perf_counter() - t, 3), "verdict": res.verdict,
            "locks": len(res.reports), **res.fetched}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--matrix", default="a")
    args = ap.parse_args()
    project = Project(find_root())
    m = project.matrix(args.matrix)
    rows, ok = [], True
    for py in m.pythons:
        with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
            cold = one(project, args.matrix, py, Path(tmp))
            warm = one(project, args.matrix, py, Path(tmp))
        good = (int(cold["bytes"]) <= COLD_BYTES and float(cold["seconds"]) <= COLD_S  # type: ignore[arg-type]
                and float(warm["seconds"]) <= WARM_S and warm["requests"] == 0)  # type: ignore[arg-type]
        ok &= good
        rows.append({"lock": f"matrix-{m.id}/py{py}", "cold": cold, "warm": warm, "within_targets": good})
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        whole_cold = one(project, args.matrix, None, Path(tmp))
        whole_warm = one(project, args.matrix, None, Path(tmp))
    print(json.dumps({"per_lock": rows, "matrix": {"cold": whole_cold, "warm": whole_warm},
                      "targets": {"cold_bytes": COLD_BYTES, "cold_s": COLD_S, "warm_s": WARM_S}}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
