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

DATA = datafiles.KERNELS
SCHEMA = 1
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


def from_mapping(data: Mapping[str, Any]) -> tuple[KernelRow, ...]:
    """Validate a parsed kernels.toml; every problem is named by its dotted path."""
    problems: list[str] = []
    if data.get("schema") != SCHEMA:
        problems.append(f"schema: expected {SCHEMA}, got {data.get('schema')!r}")
    rows: list[KernelRow] = []
    for i, raw in enumerate(data.get("kernels", [])):
        where = f"kernels[{i}]"
        bad = [f"{where}.{k}: expected a string" for k in _STR if not isinstance(raw.get(k), str)]
        bad += [f"{where}.{k}: expected an integer" for k in _INT if not isinstance(raw.get(k), int)]
        isa = raw.get("ptx_isa")
        if isa is not None and not isinstance(isa, str):
            bad.append(f"{where}.ptx_isa: expected a string")
        try:
            archs = KernelArchs.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            bad.append(f"{where}: bad sass/ptx/groups: {exc}")
        if bad:
            problems += bad
            continue
        rows.append(KernelRow(archs=archs, ptx_isa=isa, **{k: raw[k] for k in _STR + _INT}))
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(rows)


def load(path: Path = DATA) -> tuple[KernelRow, ...]:
    return from_mapping(datafiles.read(path))


def find(rows: Iterable[KernelRow], *, sha256: str, member: str) -> KernelRow | None:
    """The row for exactly this wheel (by sha256) and member, if builder ships one."""
    return next((r for r in rows if r.wheel_sha256 == sha256 and r.member == member), None)
