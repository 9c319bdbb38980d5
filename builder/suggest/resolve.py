"""Resolving a candidate with uv, kept by content in builder's cache.

One ``uv pip compile --format pylock.toml`` per Python, built by :mod:`builder.lock.uv` from
the candidate's matrix (the same command ``builder lock`` runs for the written spec), the
Pythons in parallel.  A resolution is kept under :func:`builder.suggest.stack.resolution_key`:
a later search at the same date runs no uv.
So is a resolution uv refused (no solution, source distributions only): at a past date the
index cannot change, so the answer repeats.  A timeout or an unreachable index is never kept.

uv may start before the search knows it needs it (:class:`Ahead`): the search guesses its first
candidate from builder's shipped data while the index pages are still being read, and starts
uv for it; when the pages confirm the guess (the same matrix, so the same uv command), its
resolution takes those runs, and otherwise they are killed.  Either way the search's answer is
what uv said for the matrix the search itself built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import memo, pylock
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


@dataclass
class _Run:
    """One Python's uv run started ahead."""

    running: threading.Event  # set once uv runs (or its thread ended first)
    stop: threading.Event  # set: kill it
    future: Future[Any] | None = None  # builder.lock.uv.compile_lock's CompileResult, or its error


class Ahead:
    """uv resolving ``matrix`` for ``pythons`` before the search reaches it (see the module's
    docstring).  :func:`resolve` takes a Python's run when it resolves the same matrix for it;
    :meth:`drop` kills every run not taken (each within :data:`builder._proc.POLL`), and
    :meth:`close` waits until they have ended."""

    def __init__(self, matrix: Matrix, pythons: Sequence[str], *, uv: str, uv_cache: Path) -> None:
        from builder.lock import uv as uv_backend

        self.matrix = matrix
        self.started, self.taken = len(pythons), 0
        self._pool = ThreadPoolExecutor(max_workers=len(pythons))
        self._runs: dict[str, _Run] = {}
        for py in pythons:
            run = _Run(running=threading.Event(), stop=threading.Event())
            run.future = self._pool.submit(self._resolve, uv_backend.compile_lock, uv, matrix, py=py,
                                           uv_cache=uv_cache, run=run)
            self._runs[py] = run

    @staticmethod
    def _resolve(compile_lock: Callable[..., Any], uv: str, m: Matrix, *, py: str, uv_cache: Path, run: _Run) -> Any:
        try:
            return compile_lock(uv, m, py, offline=False, cache_dir=uv_cache, started=run.running, stop=run.stop)
        finally:
            run.running.set()

    def wait_started(self) -> None:
        """Return once every run's uv runs (or its thread ended first): the caller's next work
        then takes no CPU, and no GIL, from uv's start."""
        for run in self._runs.values():
            run.running.wait()

    def take(self, m: Matrix, python: str) -> _Run | None:
        """``python``'s run when it resolves ``m`` (it is the taker's from then on), else None."""
        run = self._runs.pop(python, None) if m == self.matrix else None
        self.taken += run is not None
        return run

    def drop(self) -> int:
        """Kill the runs not taken; how many that was (once each)."""
        dropped = [run for run in self._runs.values() if not run.stop.is_set()]
        for run in dropped:
            run.stop.set()
        return len(dropped)

    def close(self) -> None:
        """Drop the runs not taken, and wait until every run has ended."""
        self.drop()
        self._pool.shutdown(wait=True)


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


def needs_uv(m: Matrix, pythons: Sequence[str], *, uv_version: str, wheels: Mapping[str, str | None],
             cache: Path) -> list[str]:
    """The Pythons whose resolution of ``m`` (or uv's refusal) is not kept: uv would run for them."""
    return [py for py in pythons
            if memo.get_json(cache, KIND, stack.resolution_key(m, py, uv_version=uv_version, wheels=wheels)) is None]


def resolve(m: Matrix, pythons: Sequence[str], *, uv: str, uv_version: str, wheels: Mapping[str, str | None],
            cache: Path, uv_cache: Path, offline: bool, counter: Counter,
            then: Callable[[str, str, pylock.Lock], None] | None = None,
            started: Callable[[], None] | None = None, ahead: Ahead | None = None) -> dict[str, Resolution | None]:
    """Each Python's resolution of ``m``: kept, or resolved now (None: ``offline`` and not kept).
    ``then(python, body, lock)`` runs on a fresh resolution's own thread as soon as it is in,
    with the lock model uv's output was checked with (it must not raise: its work is the
    caller's, done early).  ``started()`` runs here once every uv this call needs is running
    (not at all when none is): work the caller does beside uv starts after uv, not before it.
    ``ahead``: uv runs started for a guessed matrix, taken where they resolve ``m`` for a Python
    that needs uv (the caller drops the others).

    The Pythons that need uv resolve in parallel (uv's cache takes concurrent runs; torch's
    wheels differ per Python, so one run's fetches would not spare another's).  Raises what
    :func:`builder.lock.uv.compile_lock` raises (ToolFailed, SdistOnly: the candidate cannot
    be locked; Unavailable: the index cannot be reached), the first Python's error first.
    """
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

    def one(py: str, key: str, running: threading.Event) -> Resolution:
        run = ahead.take(m, py) if ahead is not None else None
        try:
            if run is not None and run.future is not None:
                run.running.wait()
                running.set()
                res = run.future.result()
            else:
                res = uv_backend.compile_lock(uv, m, py, offline=False, cache_dir=uv_cache, started=running)
        except (SdistOnly, ToolFailed) as exc:
            if not isinstance(exc, ToolTimeout) and "did not finish" not in exc.message:
                memo.keep_json(cache, KIND, key, value={"failed": exc.message, "hint": exc.hint or "",
                                                  "error": type(exc).__name__})
            raise
        memo.keep_json(cache, KIND, key, value={"body": res.body, "argv": list(res.argv), "seconds": res.seconds})
        if then is not None:
            then(py, res.body, res.lock)
        return Resolution(python=py, body=res.body, argv=res.argv, seconds=res.seconds, kept=False)

    def each(py: str, key: str, running: threading.Event) -> Resolution:
        try:
            return one(py, key, running)
        finally:
            running.set()  # uv never started (an error): nobody waits for it

    if todo:
        counter.uv_runs += len(todo)
        runs = [threading.Event() for _ in todo]
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futs = [(py, pool.submit(each, py, key, run)) for (py, key), run in zip(todo, runs, strict=True)]
            if started is not None:
                for run in runs:
                    run.wait()
                started()
            for py, fut in futs:
                out[py] = fut.result()
    return {py: out[py] for py in pythons}
