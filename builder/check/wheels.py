"""Wheel facts for the checker: answered from a cache keyed by the wheel's sha256, read
(:mod:`builder.check.wheelread`: a local file, or HTTP range requests, every read bounded)
only on a miss.

A warm check reads JSON files and imports nothing of the reader, the zip or socket
machinery; the first check of a lock reads about 1 MB per lock, concurrently.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from builder.check.fetchplan import SMALL_WHEEL, FetchStats, NeedBinary, wants
from builder.check.model import CACHE_SCHEMA, WheelFacts, WheelRef
from builder.errors import FilesystemRefused, UsageError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from builder import _http

#: Seconds all wheel reads of one `builder check` may take together.
CHECK_DEADLINE = 300.0

def default_cache_dir() -> Path:
    """$BUILDER_CACHE_DIR, else $XDG_CACHE_HOME/builder, else ~/.cache/builder."""
    explicit = os.environ.get("BUILDER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "builder"


class WheelCache:
    """JSON facts per wheel sha256 under ``DIR/wheels/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        return self.root / "wheels" / f"{sha256}.json"

    def get(self, sha256: str | None, *, want_binary: bool) -> WheelFacts | None:
        if not sha256:
            return None
        try:
            d = json.loads(self._path(sha256).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if d.get("schema") != CACHE_SCHEMA or (want_binary and not d.get("binary_scanned")):
            return None
        try:
            return WheelFacts.from_json(d)
        except (KeyError, TypeError):
            return None

    def put(self, facts: WheelFacts) -> None:
        if not facts.sha256:
            return
        from builder.files.fsio import atomic_write

        try:
            atomic_write(self._path(facts.sha256), json.dumps(facts.to_json(), indent=1))
        except (OSError, FilesystemRefused, UsageError):
            pass  # a read-only (full, odd) cache only costs the next run a fetch


def read_wheel(ref: WheelRef, *, want_binary: NeedBinary, cache: WheelCache | None = None,
               offline: bool = False, stats: FetchStats | None = None,
               small: int = SMALL_WHEEL, cancel: _http.Cancel | None = None,
               not_after: float | None = None, want_files: bool = False) -> WheelFacts:
    """Facts of one locked wheel: from the cache, else read (a local file or HTTP ranges,
    :func:`builder.check.wheelread.fetch`) and cached.

    ``not_after`` (a ``time.monotonic()`` value) ends the wheel's reads early
    when a whole check's time is running out.  ``want_files``: also keep the
    wheel's file list (its zip directory, read by range).
    """
    hit = cached(ref, want_binary=want_binary, cache=cache, want_files=want_files)
    if hit is not None:
        return hit
    from builder.check import wheelread

    facts = wheelread.fetch(ref, want_binary=want_binary, offline=offline, stats=stats, small=small,
                            cancel=cancel, not_after=not_after, want_files=want_files)
    if cache is not None:
        cache.put(facts)
    return facts


def cached(ref: WheelRef, *, want_binary: NeedBinary, cache: WheelCache | None,
           want_files: bool = False) -> WheelFacts | None:
    """The cached facts of ``ref`` if they answer everything asked, else None."""
    if cache is None:
        return None
    hit = cache.get(ref.sha256, want_binary=False)
    if (hit is not None and (hit.binary_scanned or not wants(want_binary, hit.requires_dist))
            and (hit.files is not None or not want_files)):
        return hit
    return None


def read_wheels(jobs: Iterable[tuple[WheelRef, NeedBinary]], *, cache: WheelCache | None, offline: bool,
                stats: FetchStats, workers: int = 8, small: int = SMALL_WHEEL,
                deadline: float = CHECK_DEADLINE, files: frozenset[str] = frozenset()) -> dict[str, WheelFacts]:
    """Read many wheels concurrently; returns filename -> facts.  The first error is raised.

    ``files``: filenames whose file lists are wanted too.

    All reads together end within ``deadline`` seconds (each wheel's own bound
    is cut to what is left).

    On any error or interrupt (Ctrl-C) every in-flight request is cancelled (its
    socket shut down) and queued reads are dropped, so builder exits at once
    instead of waiting for slow servers.
    """
    out: dict[str, WheelFacts] = {}
    todo = []
    for ref, wb in jobs:
        hit = cached(ref, want_binary=wb, cache=cache, want_files=ref.filename in files)
        if hit is not None:
            out[ref.filename] = hit
        else:
            todo.append((ref, wb))
    if not todo:
        return out  # warm: no threads, no reader, no sockets
    from concurrent.futures import ThreadPoolExecutor

    from builder import _http

    cancel = _http.Cancel()
    not_after = time.monotonic() + deadline
    pool = ThreadPoolExecutor(max_workers=min(workers, len(todo)))
    futs: list[tuple[WheelRef, Future[WheelFacts]]] = []
    try:
        futs = [(ref, pool.submit(read_wheel, ref, want_binary=wb, cache=cache, offline=offline,
                                  stats=stats, small=small, cancel=cancel, not_after=not_after,
                                  want_files=ref.filename in files))
                for ref, wb in todo]
        out.update((ref.filename, f.result()) for ref, f in futs)
    except BaseException:
        cancel.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out
