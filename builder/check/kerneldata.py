"""Shipped GPU-architecture evidence: ``builder/data/kernels.toml`` (pure loader).

One row per wheel: the SASS/PTX targets that builder's own fatbin reader
(:mod:`builder.binaries.fatbin`, through :mod:`builder.check.deepread`) found in its main
extension (``vllm/_C.abi3.so``, from vLLM 0.24 ``vllm/_C_stable_libtorch.abi3.so``),
the nvcc banner it carries, the wheel's sha256, URL, architecture and upload time.
A default ``check`` answers from here (no member download); a row applies only to
the exact wheel whose sha256 it names.  Regenerate with ``scripts/kernel_data.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import data as datafiles
from builder.binaries.archcompat import KernelArchs

SCHEMA = 2  # as builder/data/__init__.py's layout of kernels.toml requires (2: arch, uploaded, nvcc)
_STR = ("package", "version", "arch", "wheel", "wheel_sha256", "uploaded", "member", "produced_by", "date",
        "source")
_INT = ("wheel_size", "member_size", "member_crc32", "containers", "entries", "reader_version",
        "bytes_transferred", "nvcc_banners")
_OPT_STR = ("ptx_isa", "nvcc", "nvcc_release")


@dataclass(frozen=True, kw_only=True)
class KernelRow:
    package: str
    version: str
    arch: str  # x86_64 | aarch64, from the wheel's platform tag
    wheel: str
    wheel_sha256: str
    wheel_size: int
    uploaded: str  # the wheel's upload time on the index (PEP 700), ISO 8601
    member: str
    member_size: int
    member_crc32: int
    archs: KernelArchs
    ptx_isa: str | None
    nvcc: str | None  # the member's nvcc banner, full version ("12.9.86"), when intact and unique
    nvcc_release: str | None  # the CUDA release its banners name ("13.0"), when unique
    nvcc_banners: int
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
        rows.append(KernelRow(archs=archs, **{k: raw.get(k) for k in _OPT_STR}, **{k: raw[k] for k in _STR + _INT}))
    if problems:
        raise datafiles.invalid(path, problems)
    return tuple(rows)


def load(path: Path = datafiles.KERNELS) -> tuple[KernelRow, ...]:
    """The shipped rows, validated."""
    return from_mapping(datafiles.read(path), path)


def find(rows: Iterable[KernelRow], *, sha256: str, member: str) -> KernelRow | None:
    """The row for exactly this wheel (by sha256) and member, if builder ships one."""
    return next((r for r in rows if r.wheel_sha256 == sha256 and r.member == member), None)
