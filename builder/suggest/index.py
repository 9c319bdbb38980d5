"""Reading the index for a search: PEP 691 project pages through the one bounded reader
(:mod:`builder._http`), and wheel METADATA through the checker's wheel cache (range reads of
the zip's tail, kept by the wheel's sha256: PyPI serves vLLM no PEP 658 metadata).

A page is kept in builder's cache with the time it was read.  A page read after the search's
cut-off (the end of the ``exclude-newer`` day) lists every file uploaded before it, so a later
search at that date reads no page at all (files yanked or deleted since are not seen then; a
search at a later date reads the page again).  ``--offline`` takes whatever page is kept.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from builder import memo
from builder.check import wheels
from builder.check.fetchplan import FetchStats
from builder.check.model import WheelFacts, WheelRef
from builder.errors import Unavailable
from builder.suggest.releases import ACCEPT, IndexFile, PageError, parse_page

PAGE_MAX = 64 * 1024 * 1024  # bytes of one project page (PyPI's torch page: about 0.4 MB)
PAGE_KIND = "simple-pages"
PAGE_FORMAT = 1
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
              now: dt.datetime | None = None) -> Page:
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
    with _http.open_url(url, what=f"{project} index page", max_bytes=PAGE_MAX, headers={"Accept": ACCEPT}) as r:
        raw = r.read()
        final = r.url
    try:
        files = parse_page(raw, final)
    except PageError as exc:
        raise Unavailable(f"{url}: {exc}", "point --index-url at an index that serves PEP 691 JSON") from None
    page = Page(url=url, files=files, read_at=read_at.isoformat(), kept=False)
    memo.keep_json(cache, PAGE_KIND, f"{PAGE_FORMAT}|{url}",
                   value={"read_at": page.read_at, "files": [asdict(f) for f in files]})
    return page


def ref(f: IndexFile, name: str, version: str) -> WheelRef:
    return WheelRef(name=name, version=version, filename=f.filename, url=f.url, sha256=f.sha256, size=f.size,
                    platform=not f.filename.endswith("-any.whl"), metadata_file=f.metadata_file)


def metadata(refs: Iterable[WheelRef], *, cache_dir: Path, offline: bool,
             stats: FetchStats) -> dict[str, WheelFacts]:
    """METADATA (Requires-Dist) of each wheel by file name: the wheel cache first, then range
    reads, concurrently.  ``offline``: the cache alone; a wheel it lacks is absent from the answer."""
    cache = wheels.WheelCache(cache_dir)
    todo = list(refs)
    if offline:
        out = {}
        for r in todo:
            hit = wheels.cached(r, want_binary=False, cache=cache)
            if hit is not None:
                out[r.filename] = hit
        return out
    return wheels.read_wheels([(r, False) for r in todo], cache=cache, offline=False, stats=stats, workers=WORKERS)


def metadata_chained(first: Iterable[WheelRef], then: Callable[[WheelRef, WheelFacts], Iterable[WheelRef]], *,
                     cache_dir: Path, offline: bool, stats: FetchStats,
                     deadline: float = wheels.CHECK_DEADLINE) -> dict[str, WheelFacts]:
    """METADATA of ``first`` and of what ``then`` names for each of them (vLLM wheels, then the
    torch wheels they pin): a follow-up read starts as soon as the read that names it ends, and
    each wheel is read once.  The wheel cache answers first; ``offline``: the cache alone (a
    wheel it lacks is absent).  The first error is raised after every read in flight is cancelled.
    """
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    cache = wheels.WheelCache(cache_dir)
    out: dict[str, WheelFacts] = {}
    if offline:
        for r in first:
            hit = wheels.cached(r, want_binary=False, cache=cache)
            if hit is not None:
                out[r.filename] = hit
                for t in then(r, hit):
                    th = wheels.cached(t, want_binary=False, cache=cache)
                    if th is not None:
                        out[t.filename] = th
        return out
    from builder import _http

    cancel = _http.Cancel()
    not_after = time.monotonic() + deadline
    lock = threading.Lock()
    futs: dict[str, Future[WheelFacts]] = {}
    second = ThreadPoolExecutor(max_workers=WORKERS)  # follow-ups never wait behind the reads that name them

    def read(ref: WheelRef) -> WheelFacts:
        return wheels.read_wheel(ref, want_binary=False, cache=cache, stats=stats, cancel=cancel,
                                 not_after=not_after)

    def chain(ref: WheelRef) -> WheelFacts:
        facts = read(ref)
        for t in then(ref, facts):
            with lock:
                if t.filename not in futs:
                    futs[t.filename] = second.submit(read, t)
        return facts

    pool = ThreadPoolExecutor(max_workers=WORKERS)
    try:
        heads = [(r, pool.submit(chain, r)) for r in {r.filename: r for r in first}.values()]
        for r, f in heads:
            out[r.filename] = f.result()
        pool.shutdown(wait=True)  # every follow-up is submitted by now
        with lock:
            tails = dict(futs)
        for name, f in tails.items():
            out[name] = f.result()
    except BaseException:
        cancel.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        second.shutdown(wait=True, cancel_futures=True)
    return out
