"""Resolving a candidate with uv, kept by content in builder's cache.

One ``uv pip compile --format pylock.toml`` per Python, built by :mod:`builder.lock.uv` from
the candidate's matrix (the same command ``builder lock`` runs for the written spec), the
Pythons in parallel.  A resolution is kept under :func:`builder.suggest.stack.resolution_key`:
a later search at the same date runs no uv.
So is a resolution uv refused (no solution, source distributions only): at a past date the
index cannot change, so the answer repeats.  A timeout or an unreachable index is never kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder import memo
from builder.errors import SdistOnly, ToolFailed, ToolTimeout
from builder.spec import Matrix
from builder.suggest import stack

KIND = "suggest-resolutions"


@dataclass(frozen=True, kw_only=True)
class Resolution:
    python: str
    body: str  # uv's pylock.toml output
    argv: tuple[str, ...]
    seconds: float
    kept: bool  # answered from builder's cache


@dataclass
class Counter:
    uv_runs: int = 0
    kept: int = 0


def kept(cache: Path, key: str, python: str) -> Resolution | None:
    """A kept resolution; a kept failure is raised again (uv's answer at a past date repeats)."""
    d = memo.get_json(cache, KIND, key)
    if not isinstance(d, dict):
        return None
    if isinstance(d.get("failed"), str):
        cls = SdistOnly if d.get("error") == "SdistOnly" else ToolFailed
        raise cls(d["failed"] + " (kept from an earlier search)", str(d.get("hint") or "") or None)
    if not isinstance(d.get("body"), str):
        return None
    return Resolution(python=python, body=d["body"], argv=tuple(d.get("argv", ())),
                      seconds=float(d.get("seconds", 0.0)), kept=True)


def all_kept(m: Matrix, pythons: Sequence[str], *, uv_version: str, wheels: Mapping[str, str | None],
             cache: Path) -> bool:
    """Whether every Python's resolution of ``m`` (or uv's refusal) is kept: no uv would run."""
    return all(memo.get_json(cache, KIND, stack.resolution_key(m, py, uv_version=uv_version, wheels=wheels)) is not None
               for py in pythons)


def resolve(m: Matrix, pythons: Sequence[str], *, uv: str, uv_version: str, wheels: Mapping[str, str | None],
            cache: Path, uv_cache: Path, offline: bool, counter: Counter,
            then: Callable[[str, str], None] | None = None) -> dict[str, Resolution | None]:
    """Each Python's resolution of ``m``: kept, or resolved now (None: ``offline`` and not kept).
    ``then(python, body)`` runs on a fresh resolution's own thread as soon as it is in (it must
    not raise: its work is the caller's, done early).

    The Pythons that need uv resolve in parallel (uv's cache takes concurrent runs; torch's
    wheels differ per Python, so one run's fetches would not spare another's).  Raises what
    :func:`builder.lock.uv.compile_lock` raises (ToolFailed, SdistOnly: the candidate cannot
    be locked; Unavailable: the index cannot be reached), the first Python's error first.
    """
    from concurrent.futures import ThreadPoolExecutor

    from builder.lock import uv as uv_backend

    out: dict[str, Resolution | None] = {}
    todo: list[tuple[str, str]] = []
    for py in pythons:
        key = stack.resolution_key(m, py, uv_version=uv_version, wheels=wheels)
        hit = kept(cache, key, py)
        if hit is not None:
            counter.kept += 1
            out[py] = hit
        elif offline:
            out[py] = None
        else:
            todo.append((py, key))

    def one(py: str, key: str) -> Resolution:
        try:
            res = uv_backend.compile_lock(uv, m, py, offline=False, cache_dir=uv_cache)
        except (SdistOnly, ToolFailed) as exc:
            if not isinstance(exc, ToolTimeout) and "did not finish" not in exc.message:
                memo.keep_json(cache, KIND, key, value={"failed": exc.message, "hint": exc.hint or "",
                                                  "error": type(exc).__name__})
            raise
        memo.keep_json(cache, KIND, key, value={"body": res.body, "argv": list(res.argv), "seconds": res.seconds})
        if then is not None:
            then(py, res.body)
        return Resolution(python=py, body=res.body, argv=res.argv, seconds=res.seconds, kept=False)

    if todo:
        counter.uv_runs += len(todo)
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futs = [(py, pool.submit(one, py, key)) for py, key in todo]
            for py, fut in futs:
                out[py] = fut.result()
    return {py: out[py] for py in pythons}
