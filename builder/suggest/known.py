"""Shipped wheel facts: ``builder/data/requires.toml`` (pure loader).

For every CUDA vLLM wheel on PyPI (the wheels of ``builder/data/kernels.toml``) and every
PyPI torch wheel those pin, the ``Requires-Dist`` entries the search reads from the wheel's
METADATA: those naming a package of cuda.toml's ``[packages] gpu`` list (torch's pin, the
exact pins the search's read-ahead follows), ``cuda-toolkit``, or a package of the CUDA
runtime (torch's CUDA line, :mod:`builder.suggest.cudaline`).  Read from the real wheels by
``scripts/requires_data.py`` with builder's own METADATA reader.

A row applies only to a file whose sha256 the index page lists and the row names: another
index's file, or a file replaced on PyPI, is read as before.  The facts are partial (the
entries kept, nothing else), so they serve the search only and never enter the wheel cache,
whose facts the checker takes as a wheel's whole METADATA.  A file generated while cuda.toml's
GPU list was shorter than today's is not used at all (:func:`usable`): it would miss pins.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import data as datafiles
from builder.suggest import releases as rel

ANY_TIME = "1970-01-01T00:00:00Z"  # the rows carry no upload time: :func:`releases` lists their files at any date
SCHEMA = 1  # as builder/data/__init__.py's layout of requires.toml requires


@dataclass(frozen=True, kw_only=True)
class KnownWheel:
    """What the search reads of one wheel's METADATA, known by its sha256."""

    package: str
    version: str
    filename: str
    sha256: str
    requires: tuple[str, ...]  # the Requires-Dist entries kept, in METADATA's order


@dataclass(frozen=True, kw_only=True)
class Known:
    gpu: frozenset[str]  # cuda.toml's GPU list when the file was made: the names it kept
    by_sha256: Mapping[str, KnownWheel]

    def get(self, sha256: str | None) -> KnownWheel | None:
        return self.by_sha256.get(sha256) if sha256 else None


def wheel_entry(value: str) -> tuple[str, str] | None:
    """``"<sha256> <filename>"`` as (sha256, filename), or None."""
    m = datafiles.WHEEL_ENTRY.fullmatch(value)
    return (m.group(1), m.group(2)) if m else None


def from_mapping(data: Mapping[str, Any]) -> Known:
    """The rows of a requires.toml that :func:`builder.data.read` validated."""
    out: dict[str, KnownWheel] = {}
    for row in data["release"]:
        reqs = tuple(row["requires"])
        for w in row["wheels"]:
            sha, name = wheel_entry(w) or ("", "")  # the layout's check has refused a bad entry
            out[sha] = KnownWheel(package=row["package"], version=row["version"], filename=name, sha256=sha,
                                  requires=reqs)
    return Known(gpu=frozenset(data["gpu"]), by_sha256=out)


@functools.cache
def load(path: Path = datafiles.REQUIRES) -> Known:
    """The shipped rows (cached)."""
    return from_mapping(datafiles.read(path))


def usable(known: Known, gpu: frozenset[str]) -> bool:
    """Whether the file kept every entry the search reads today: it was filtered with a GPU
    list that holds every name of ``gpu`` (cuda.toml's, now)."""
    return gpu <= known.gpu


def releases(known: Known, package: str) -> list[rel.Release]:
    """The releases of ``package`` the rows name, newest first, as if an index listed just their
    wheels: no URL, size or ``requires-python``, never yanked, uploaded at :data:`ANY_TIME`.  For
    a guess only (builder.suggest.search's, checked against the index before anything is judged)."""
    files = [rel.IndexFile(filename=w.filename, url="", sha256=w.sha256, size=None, upload_time=ANY_TIME, yanked=False)
             for w in known.by_sha256.values() if w.package == package]
    return rel.group(files, package)
