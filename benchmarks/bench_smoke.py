"""Benchmark ``builder smoke``: its steps side by side against the same steps one after the other.

    python benchmarks/bench_smoke.py --matrix a --python 3.12 [--rounds 3] [--root DIR] [--gpu/--no-gpu]

Smoke starts an interpreter per independent step (the import steps, ``vllm --help``, the GPU
steps), each loading torch and vLLM; it runs them at most one per CPU this process may use
(:func:`builder.runtime.smoke.cores`).  Both sides run :func:`builder.runtime.smoke.run_smoke`
on the same built runtime with the same prediction (``builder check``'s, computed once,
untimed): one with ``jobs=1`` (one step after the other, in report order: the sequential
smoke test), one with the default bound.  One untimed run of each warms the page cache; then
the two alternate, ``--rounds`` times, and each round checks that both reports are the same
step for step.  The target (issue 21): side by side <= 0.65x one after the other.

Each run's CPU time (user + system of the interpreters smoke starts, from ``getrusage``) is
recorded beside its wall time: both sides do the same work, so their CPU times agree, and
CPU / wall says how many cores a run actually got.  On a shared machine whose other load
leaves fewer than two cores free, the side-by-side run cannot get its second core and the
ratio rises toward 1.0x; the JSON carries what is needed to see that (``cores_used``).

Needs a runtime built from the current lock (``builder build --matrix a --python 3.12``,
about 9.6 GB on disk, 5 GB downloaded on a cold uv cache).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.project import Project, select_pythons  # noqa: E402
from builder.runtime import build, smoke  # noqa: E402

TARGET = 0.65


def _steps(rep: smoke.SmokeReport) -> list[tuple[str, str, str]]:
    return [(s.name, s.status, s.reason) for s in rep.steps]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--matrix", default="a")
    ap.add_argument("--python", default="3.12")
    ap.add_argument("--root", help="runtimes root (default: $BUILDER_RUNTIMES, else <project>/runtimes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                    help="run the GPU steps (default: detect an NVIDIA GPU)")
    args = ap.parse_args()

    project = Project(ROOT)
    py = select_pythons(project.matrix(args.matrix), args.python)[0]
    matrix, lock, path = build.locate(project, args.matrix, py, root=args.root)
    python = path / "bin" / "python"
    expected = smoke.expected_for(matrix, lock)
    workers = smoke.cores()
    print(f"{path.name}: {len(lock.packages)} packages; prediction from {expected.source}; "
          f"side by side: up to {workers} step(s) at once", file=sys.stderr)

    cpu: dict[str, list[float]] = {"sequential": [], "side_by_side": []}

    def children_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    steps_cpu: list[tuple[float, float, float]] = []  # (imports, probe, help) of each sequential run

    def one(jobs: int | None) -> tuple[float, smoke.SmokeReport]:
        marks: list[float] = []

        def mark(message: str) -> None:  # one worker: each step starts after the one before was waited for
            if message in ("reading the installed packages and their CUDA binaries ...", "vllm --help ..."):
                marks.append(children_cpu())

        c, t = children_cpu(), time.perf_counter()
        rep = smoke.run_smoke(python, expected, gpu=args.gpu, jobs=jobs, progress=mark if jobs == 1 else None)
        end = children_cpu()
        cpu["sequential" if jobs == 1 else "side_by_side"].append(end - c)
        if jobs == 1 and len(marks) == 2:
            steps_cpu.append((marks[0] - c, marks[1] - marks[0], end - marks[1]))
        return time.perf_counter() - t, rep

    _t, first = one(1)  # warm-up: the page cache holds torch and vLLM from here on
    one(None)
    for side in cpu.values():
        side.clear()
    steps_cpu.clear()
    seq: list[float] = []
    par: list[float] = []
    for i in range(args.rounds):
        ts, a = one(1)
        tp, b = one(None)
        if _steps(a) != _steps(b) or _steps(a) != _steps(first):
            print(f"round {i + 1}: the reports differ:\n{json.dumps([_steps(a), _steps(b)], indent=1)}",
                  file=sys.stderr)
            return 1
        seq.append(ts)
        par.append(tp)
        print(f"round {i + 1}: one after the other {ts:.1f}s ({cpu['sequential'][-1]:.1f}s CPU), side by side "
              f"{tp:.1f}s ({cpu['side_by_side'][-1]:.1f}s CPU): {tp / ts:.2f}x", file=sys.stderr)
    s, p = statistics.median(seq), statistics.median(par)
    ratio = p / s
    out = {"runtime": path.name, "cores": workers, "rounds": args.rounds, "gpu": first.gpu,
           "steps": len(first.steps), "ok": first.ok,
           "sequential_s": [round(x, 2) for x in seq], "side_by_side_s": [round(x, 2) for x in par],
           "sequential_median_s": round(s, 2), "side_by_side_median_s": round(p, 2),
           "sequential_cpu_s": [round(x, 1) for x in cpu["sequential"]],
           "side_by_side_cpu_s": [round(x, 1) for x in cpu["side_by_side"]],
           "cores_used": {"sequential": round(statistics.median(cpu["sequential"]) / s, 2),
                          "side_by_side": round(statistics.median(cpu["side_by_side"]) / p, 2)},
           "round_ratios": [round(b / a, 3) for a, b in zip(seq, par, strict=True)],
           "steps_cpu_s": [[round(x, 1) for x in st] for st in steps_cpu],
           "ratio": round(ratio, 3), "target_ratio": TARGET, "within_target": ratio <= TARGET}
    if steps_cpu and not first.gpu:
        imp, prb, hlp = (statistics.median(x[i] for x in steps_cpu) for i in range(3))
        out["idle_estimate"] = {"imports_cpu_s": round(imp, 1), "probe_cpu_s": round(prb, 1),
                                "help_cpu_s": round(hlp, 1),
                                "ratio_two_free_cores": round(max(imp, prb + hlp) / (imp + prb + hlp), 3)}
    print(f"smoke of {path.name}: side by side {p:.1f}s vs one after the other {s:.1f}s = {ratio:.2f}x "
          f"(target <= {TARGET}x; medians of {args.rounds})"
          + (f"; two free cores would give {out['idle_estimate']['ratio_two_free_cores']:.2f}x"
             if "idle_estimate" in out else ""), file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
