"""A project's releases from a PEP 691 JSON simple page (pure).

The page lists files; a release is the files of one version.  What uv would see at a date
is what :func:`select` keeps: files uploaded before the cut-off (PEP 700 ``upload-time``; a
file without one is left out, as uv leaves it out under ``--exclude-newer``), yanked files
(PEP 592) only when asked, pre-releases only when asked, newest first by PEP 440 order.
Which wheel of a release a target installs is :func:`pick_wheel` (packaging's tags, best
first, and the file's ``requires-python``).

Why JSON only: the HTML form (PEP 503) carries no upload time, so a search at a date could
not tell which files existed then.  PyPI, devpi and uv's own indexes serve PEP 691 JSON.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

#: What builder asks an index for: PEP 691 JSON (``Accept`` header).
ACCEPT = "application/vnd.pypi.simple.v1+json"
PEP691 = "https://peps.python.org/pep-0691/"


class PageError(ValueError):
    """The page is not a PEP 691 JSON project page (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class IndexFile:
    """One file of a simple page."""

    filename: str
    url: str  # absolute
    sha256: str | None
    size: int | None
    upload_time: str | None  # RFC 3339, as the index wrote it
    yanked: bool
    yanked_reason: str = ""
    requires_python: str | None = None
    # PEP 714 ``core-metadata`` (PEP 658's ``data-dist-info-metadata``): in PEP 691 JSON the key is
    # present exactly when the index serves the file's METADATA separately.
    metadata_file: bool | None = None

    @property
    def uploaded(self) -> dt.datetime | None:
        return _time(self.upload_time)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    def tags(self) -> frozenset[Tag]:
        return _wheel_tags(self.filename)


@dataclass(frozen=True, kw_only=True)
class Release:
    """The files of one version of a project, as selected."""

    project: str
    version: str
    files: tuple[IndexFile, ...]

    @property
    def key(self) -> Version:
        return Version(self.version)

    @property
    def prerelease(self) -> bool:
        return self.key.is_prerelease

    @property
    def yanked(self) -> bool:
        return bool(self.files) and all(f.yanked for f in self.files)


@dataclass(frozen=True, kw_only=True)
class LeftOut:
    """A release the search does not try, and why (``--pre``, ``--include-yanked``, ``--vllm``)."""

    version: str
    why: str


@functools.lru_cache(maxsize=4096)
def _wheel_tags(filename: str) -> frozenset[Tag]:
    if not filename.endswith(".whl"):
        return frozenset()
    try:
        return parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return frozenset()


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def cutoff(exclude_newer: str) -> dt.datetime:
    """The instant ``exclude-newer = DATE`` stands for: the end of that day, UTC (builder runs
    uv with ``TZ=UTC``, and uv reads a date as its whole day)."""
    day = dt.date.fromisoformat(exclude_newer)
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)


def _file(d: Any, page_url: str, i: int) -> IndexFile:
    if not isinstance(d, dict):
        raise PageError(f"files[{i}]: must be an object")
    name, url = d.get("filename"), d.get("url")
    if not isinstance(name, str) or not isinstance(url, str):
        raise PageError(f"files[{i}]: needs a filename and a url")
    hashes = d.get("hashes")
    sha = hashes.get("sha256") if isinstance(hashes, dict) else None
    size = d.get("size")
    yanked = d.get("yanked", False)
    rp = d.get("requires-python")
    up = d.get("upload-time")
    meta = d.get("core-metadata", d.get("data-dist-info-metadata", False))
    return IndexFile(
        filename=name, url=url if url.startswith(("https://", "http://")) else urllib.parse.urljoin(page_url, url),
        sha256=sha.lower() if isinstance(sha, str) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        upload_time=up if isinstance(up, str) else None,
        yanked=bool(yanked), yanked_reason=yanked if isinstance(yanked, str) else "",
        requires_python=rp if isinstance(rp, str) and rp.strip() else None,
        metadata_file=bool(meta))


def parse_page(raw: bytes, page_url: str) -> tuple[IndexFile, ...]:
    """The files of a PEP 691 JSON project page; PageError when it is not one."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise PageError("not JSON (the index answered HTML? builder needs the PEP 691 JSON form, "
                        "which carries upload times)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise PageError("no 'files' list: not a PEP 691 project page")
    meta = doc.get("meta")
    api = meta.get("api-version") if isinstance(meta, dict) else None
    if not isinstance(api, str) or not api.startswith("1."):
        raise PageError(f"unsupported api-version {api!r} (PEP 691 1.x expected)")
    return tuple(_file(f, page_url, i) for i, f in enumerate(doc["files"]))


def version_of(filename: str, project: str) -> str | None:
    """The version a wheel or sdist file name carries for ``project``, or None."""
    want = canonicalize_name(project)
    try:
        if filename.endswith(".whl"):
            name, ver, *_ = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            name, ver = parse_sdist_filename(filename)
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return str(ver) if name == want else None


def group(files: Iterable[IndexFile], project: str) -> list[Release]:
    """Files grouped into releases (any order in, PEP 440 order out, newest first)."""
    by: dict[str, list[IndexFile]] = {}
    seen: set[tuple[str, str | None]] = set()
    for f in files:
        v = version_of(f.filename, project)
        if v is None or (f.filename, f.sha256) in seen:
            continue
        seen.add((f.filename, f.sha256))
        by.setdefault(v, []).append(f)
    out = [Release(project=canonicalize_name(project), version=v, files=tuple(fs)) for v, fs in by.items()]
    return sorted(out, key=lambda r: r.key, reverse=True)


def spec_set(text: str | None, option: str) -> SpecifierSet | None:
    """``--vllm '>=0.10,<0.14'`` as a specifier set; ValueError names the option."""
    if text is None or not text.strip():
        return None
    try:
        return SpecifierSet(text.strip())
    except InvalidSpecifier:
        raise ValueError(f"{option}: not a version specifier: {text!r} (e.g. '>=0.10,<0.14')") from None


def visible(f: IndexFile, until: dt.datetime) -> bool:
    """Whether uv sees ``f`` under ``--exclude-newer`` at ``until``."""
    t = f.uploaded
    return t is not None and t < until


def select(releases: Sequence[Release], *, until: dt.datetime, pre: bool = False, yanked: bool = False,
           spec: SpecifierSet | None = None) -> tuple[list[Release], list[LeftOut]]:
    """The releases to try, newest first, and those left out with why.

    Files uploaded after ``until`` do not exist for the search (not reported); a release
    left with no file is not listed.  Yanked files count only with ``yanked``; a release
    whose every visible file is yanked is left out without it.  Pre-releases (``rc``,
    ``dev``, ``a``/``b``) only with ``pre`` or when ``spec`` names one.
    """
    keep: list[Release] = []
    left: list[LeftOut] = []
    for r in sorted(releases, key=lambda r: r.key, reverse=True):
        files = tuple(f for f in r.files if visible(f, until))
        if not files:
            continue
        if spec is not None and not spec.contains(r.key, prereleases=True):
            left.append(LeftOut(version=r.version, why="outside --vllm " + str(spec)))
            continue
        if r.prerelease and not pre and not (spec is not None and spec.prereleases):
            left.append(LeftOut(version=r.version, why="pre-release (--pre tries it)"))
            continue
        live = files if yanked else tuple(f for f in files if not f.yanked)
        if not live:
            reason = next((f.yanked_reason for f in files if f.yanked_reason), "")
            left.append(LeftOut(version=r.version, why="yanked" + (f" ({reason})" if reason else "")
                                + " (--include-yanked tries it)"))
            continue
        keep.append(Release(project=r.project, version=r.version, files=live))
    return keep, left


def python_ok(f: IndexFile, python: str) -> bool:
    """The file's ``requires-python`` admits ``python`` (3.12 is read as 3.12.0)."""
    return f.requires_python is None or _admits(f.requires_python, python)


@functools.lru_cache(maxsize=1024)
def _admits(requires_python: str, python: str) -> bool:
    try:
        return SpecifierSet(requires_python).contains(Version(python), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True  # unreadable metadata is uv's to judge, not a reason to skip


@functools.lru_cache(maxsize=16)
def _rank(tags: tuple[Tag, ...]) -> dict[Tag, int]:
    return {t: i for i, t in enumerate(tags)}


def pick_wheel(release: Release, tags: tuple[Tag, ...], python: str) -> IndexFile | None:
    """The wheel of ``release`` an installer on the target picks: the best tag (``tags`` is
    best first), among wheels whose ``requires-python`` admits ``python``."""
    rank = _rank(tags)
    best: tuple[int, IndexFile] | None = None
    for f in release.files:
        if not f.is_wheel or not python_ok(f, python):
            continue
        hits = [rank[t] for t in f.tags() if t in rank]
        if hits and (best is None or min(hits) < best[0]):
            best = (min(hits), f)
    return best[1] if best else None


def newest_matching(releases: Sequence[Release], spec: SpecifierSet) -> Release | None:
    """The newest release ``spec`` admits (pre-releases only if ``spec`` names one), for a torch
    requirement that is a range rather than a pin."""
    for r in sorted(releases, key=lambda r: r.key, reverse=True):  # prereleases=None admits them (packaging 26)
        if spec.contains(r.key, prereleases=bool(spec.prereleases)):
            return r
    return None
