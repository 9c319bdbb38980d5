"""Shipped GPU-architecture evidence: ``builder/data/kernels.toml`` (pure loader).

One row per (wheel, member): the SASS/PTX targets that builder's own fatbin
reader (:mod:`builder.binaries.fatbin`, through :mod:`builder.check.deepread`) found in a large
extension such as ``vllm/_C.abi3.so``, with the wheel's sha256 and URL.  A
default ``check`` answers from here (no member download); a row applies only to
the exact wheel whose sha256 it names.  Regenerate with ``scripts/kernel_data.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import data as datafiles
from builder.binaries.archcompat import KernelArchs

SCHEMA = 1  # as builder/data/__init__.py's layout of kernels.toml requires
_STR = ("package", "version", "wheel", "wheel_sha256", "member", "produced_by", "date", "source")
_INT = ("wheel_size", "member_size", "member_crc32", "containers", "entries", "reader_version",
        "bytes_transferred")


@dataclass(frozen=True, kw_only=True)
class KernelRow:
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    wheel_size: int
    member: str
    member_size: int
    member_crc32: int
    archs: KernelArchs
    ptx_isa: str | None
    containers: int
    entries: int
    produced_by: str
    reader_version: int
    date: str
    source: str
    bytes_transferred: int


def from_mapping(data: Mapping[str, Any], path: Path = datafiles.KERNELS) -> tuple[KernelRow, ...]:
    """The rows of a kernels.toml that :func:`builder.data.read` validated (keys and kinds); what
    is left to judge here is whether ``sass``/``ptx``/``groups`` name GPU architectures.  A bad
    row raises :class:`~builder.errors.DataFileError` naming the file and the row."""
    problems: list[str] = []
    rows: list[KernelRow] = []
    for i, raw in enumerate(data["kernels"]):
        try:
            archs = KernelArchs.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{datafiles.display(path)}: kernels[{i}]: bad sass/ptx/groups: {exc}")
            continue
        rows.append(KernelRow(archs=archs, ptx_isa=raw.get("ptx_isa"), **{k: raw[k] for k in _STR + _INT}))
    if problems:
        raise datafiles.invalid(path, problems)
    return tuple(rows)


def load(path: Path = datafiles.KERNELS) -> tuple[KernelRow, ...]:
    """The shipped rows, validated."""
    return from_mapping(datafiles.read(path), path)


def find(rows: Iterable[KernelRow], *, sha256: str, member: str) -> KernelRow | None:
    """The row for exactly this wheel (by sha256) and member, if builder ships one."""
    return next((r for r in rows if r.wheel_sha256 == sha256 and r.member == member), None)
