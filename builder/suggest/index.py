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
from collections.abc import Iterable
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
WORKERS = 16  # concurrent METADATA reads (each a few small range requests)


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
                   {"read_at": page.read_at, "files": [asdict(f) for f in files]})
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
