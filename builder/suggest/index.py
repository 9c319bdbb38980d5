"""Reading the index for a search: PEP 691 project pages through the one bounded reader
(:mod:`builder._http`), and wheel METADATA through the checker's wheel cache (range reads of
the zip's tail, kept by the wheel's sha256: PyPI serves vLLM no PEP 658 metadata), or, for a
wheel whose sha256 on the page is one that builder ships facts for
(:mod:`builder.suggest.known`), from those facts without a request.

A page is kept in builder's cache with the time it was read.  A page read after the search's
cut-off (the end of the ``exclude-newer`` day) lists every file uploaded before it, so a later
search at that date reads no page at all (files yanked or deleted since are not seen then; a
search at a later date reads the page again).  ``--offline`` takes whatever page is kept.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from builder import memo
from builder.check import wheels
from builder.check.fetchplan import FetchStats
from builder.check.model import WheelFacts, WheelRef
from builder.errors import Unavailable
from builder.suggest.known import Known
from builder.suggest.releases import ACCEPT, IndexFile, PageError, parse_page

if TYPE_CHECKING:
    from builder import _http

PAGE_MAX = 64 * 1024 * 1024  # bytes of one project page (PyPI's torch page: about 0.4 MB)
PAGE_KIND = "simple-pages"
PAGE_FORMAT = 1
SHIPPED = "shipped data"  # WheelFacts.origin of facts from builder/data/requires.toml
WORKERS = 8  # concurrent METADATA reads per stage (vLLM, then torch), as many as a check makes


@dataclass(frozen=True, kw_only=True)
class Page:
    url: str
    files: tuple[IndexFile, ...]
    read_at: str  # RFC 3339, UTC
    kept: bool  # answered from builder's cache


def page_url(index_url: str, project: str) -> str:
    return f"{index_url.rstrip('/')}/{canonicalize_name(project)}/"


def _kept(cache: Path, url: str) -> Page | None:
    d = memo.get_json(cache, PAGE_KIND, f"{PAGE_FORMAT}|{url}")
    if not isinstance(d, dict):
        return None
    try:
        files = tuple(IndexFile(**f) for f in d["files"])
        return Page(url=url, files=files, read_at=str(d["read_at"]), kept=True)
    except (KeyError, TypeError):
        return None


def read_page(index_url: str, project: str, *, cache: Path, until: dt.datetime, offline: bool,
              now: dt.datetime | None = None, cancel: _http.Cancel | None = None) -> Page:
    """The files of ``project`` on ``index_url``, from the cache when that answers for ``until``."""
    url = page_url(index_url, project)
    kept = _kept(cache, url)
    if kept is not None and (offline or dt.datetime.fromisoformat(kept.read_at) >= until):
        return kept
    if offline:
        raise Unavailable(f"{project}: no page of {url} in builder's cache and --offline forbids the network",
                          "run `builder suggest` online once")
    from builder import _http

    read_at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    with _http.open_url(url, what=f"{project} index page", max_bytes=PAGE_MAX, headers={"Accept": ACCEPT},
                        cancel=cancel) as r:
        raw = r.read()
        final = r.url
    try:
        files = parse_page(raw, final)
    except PageError as exc:
        raise Unavailable(f"{url}: {exc}", "point --index-url at an index that serves PEP 691 JSON") from None
    page = Page(url=url, files=files, read_at=read_at.isoformat(), kept=False)
    names = [x.name for x in fields(IndexFile)]  # flat: not dataclasses.asdict, which deep-copies every value
    memo.keep_json(cache, PAGE_KIND, f"{PAGE_FORMAT}|{url}",
                   value={"read_at": page.read_at, "files": [{n: getattr(f, n) for n in names} for f in files]})
    return page


def shipped(ref: WheelRef, known: Known | None) -> WheelFacts | None:
    """What builder ships of ``ref``'s METADATA, when ``ref``'s sha256 (the index page's) is one a
    row names: the Requires-Dist entries the search reads (partial: never for the wheel cache)."""
    row = known.get(ref.sha256) if known is not None else None
    if row is None:
        return None
    return WheelFacts(ref.filename, ref.sha256, ref.name, ref.version, row.requires, origin=SHIPPED)


def ref(f: IndexFile, name: str, version: str) -> WheelRef:
    return WheelRef(name=name, version=version, filename=f.filename, url=f.url, sha256=f.sha256, size=f.size,
                    platform=not f.filename.endswith("-any.whl"), metadata_file=f.metadata_file)


class MetadataReader:
    """METADATA read ahead in search order: the vLLM wheels :meth:`ask` names, and as soon as one
    is read, the wheels ``then`` names for it (the torch wheels it pins), each read once.

    The search waits for one candidate's wheels at a time (:meth:`wait`), so it examines a
    candidate as soon as its own reads are in, while the reads of the next ones go on (also while
    the search decides); a read error is raised to the search when it waits for that wheel, never
    for a wheel it does not reach.  :meth:`hold` keeps queued reads from starting (while uv
    resolves a candidate, the reads for the next ones would only take CPU from it) until
    :meth:`resume`.  The wheel cache answers first; ``offline``: the cache alone (a wheel it
    lacks is absent from the answer).  Not ``eager`` (the index pages came from the cache: a
    search repeated), a wheel the cache lacks is read ahead only once the search has waited for
    one the cache lacked: a repeated search reads nothing beyond its answer.  :meth:`close`
    cancels what is still in flight.  Each read ends within ``deadline`` seconds of being asked
    for (and its own bounds).  A wheel ``known`` has facts for (by the page's sha256) is not read
    at all, online or offline: its facts answer as a cache hit would, and are not cached; online
    they answer on the search's own thread when it waits for them (there is nothing to read ahead).
    """

    def __init__(self, then: Callable[[WheelRef, WheelFacts], Iterable[WheelRef]], *, cache_dir: Path,
                 offline: bool, stats: FetchStats, eager: bool = True, deadline: float = wheels.CHECK_DEADLINE,
                 known: Known | None = None) -> None:
        import threading

        self._then, self._offline, self._stats, self._deadline = then, offline, stats, deadline
        self._known = known
        self._cache = wheels.WheelCache(cache_dir)
        self._lock = threading.Lock()
        self._futs: dict[str, Future[WheelFacts | None]] = {}
        self._later: dict[str, tuple[WheelRef, bool]] = {}  # not eager: misses asked for, not yet read
        self._eager = eager
        self._pools: list[ThreadPoolExecutor] = []  # vLLM reads; the reads they name (never behind them)
        self._cancel: _http.Cancel | None = None
        self._closed = False
        self._go = threading.Event()
        self._go.set()

    def ask(self, refs: Iterable[WheelRef]) -> None:
        """Start reading ``refs`` and, once each is read, the wheels ``then`` names for it."""
        for r in refs:
            self._start(r, first=True)

    def wait(self, refs: Iterable[WheelRef]) -> dict[str, WheelFacts]:
        """The METADATA of ``refs`` by file name, once read (a ref not asked for yet is read now);
        the first read error among them is raised."""
        todo = list(refs)
        futs = [self._start(r, first=False, needed=True) for r in todo]
        out = {}
        for r, f in zip(todo, futs, strict=True):
            facts = f.result() if f is not None else None
            if facts is not None:
                out[r.filename] = facts
        return out

    def hold(self) -> None:
        """Let no queued read start (those in flight finish) until :meth:`resume`."""
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def close(self) -> None:
        """Cancel the reads in flight and drop the queued ones (what was read is in the cache)."""
        with self._lock:
            self._closed = True
        if self._cancel is not None:
            self._cancel.cancel()
        self._go.set()
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)

    def _start(self, ref: WheelRef, *, first: bool, needed: bool = False) -> Future[WheelFacts | None] | None:
        lazy = not self._offline and not self._eager
        hit = shipped(ref, self._known)
        if hit is not None and not self._offline:
            return self._answer(ref, hit) if needed else None
        if hit is None and (lazy or self._offline):
            hit = wheels.cached(ref, want_binary=False, cache=self._cache)
        later: list[tuple[WheelRef, bool]] = []
        with self._lock:
            fut = self._futs.get(ref.filename)
            if fut is not None:
                return fut
            if self._offline or self._closed:
                fut = Future()
                self._futs[ref.filename] = fut
            else:
                if lazy and hit is None:
                    if not needed:  # a miss nobody waits for yet: read once the search meets one
                        self._later.setdefault(ref.filename, (ref, first))
                        return None
                    self._eager = True  # the search waits for a miss: read ahead from now on
                    later = [x for x in self._later.values() if x[0].filename != ref.filename]
                    self._later.clear()
                first = self._later.pop(ref.filename, (ref, first))[1]
                fut = self._submit(ref, first=first, hit=hit)  # a hit's follow-ups start in the pool
                for r, f in later:
                    if r.filename not in self._futs:
                        self._submit(r, first=f)
                return fut
        # offline (or closed): the cache alone, and what it names, at once
        fut.set_result(hit if self._offline else None)
        if hit is not None and not self._closed:
            for t in self._then(ref, hit):
                self._start(t, first=False)
        return fut

    def _answer(self, ref: WheelRef, facts: WheelFacts) -> Future[WheelFacts | None]:
        """Shipped facts, online: there is nothing to read, so nothing is read ahead (:meth:`ask`
        passes them by); when the search waits for them they answer here, on its thread, and
        what they name starts (the search waits only once torch's page is in)."""
        with self._lock:
            fut = self._futs.get(ref.filename)
            if fut is not None:
                return fut
            fut = Future()
            fut.set_result(facts)
            self._futs[ref.filename] = fut
        if not self._closed:
            for t in self._then(ref, facts):
                self._start(t, first=False)
        return fut

    def _submit(self, ref: WheelRef, *, first: bool,
                hit: WheelFacts | None = None) -> Future[WheelFacts | None]:  # under the lock
        if not self._pools:
            from builder import _http

            self._cancel = _http.Cancel()
            self._pools = [ThreadPoolExecutor(max_workers=WORKERS) for _ in range(2)]
        fut = self._pools[0 if first else 1].submit(self._read, ref, time.monotonic() + self._deadline, hit)
        self._futs[ref.filename] = fut
        return fut

    def _read(self, ref: WheelRef, not_after: float, hit: WheelFacts | None) -> WheelFacts | None:
        facts = hit  # shipped, or in the cache already (not eager): what it names is still to start
        if facts is None:
            self._go.wait()
            if self._closed:
                raise Unavailable(f"{ref.filename}: cancelled", "the search ended before this read")
            facts = wheels.read_wheel(ref, want_binary=False, cache=self._cache, stats=self._stats,
                                      cancel=self._cancel, not_after=not_after)
        for t in self._then(ref, facts):
            self._start(t, first=False)
        return facts
