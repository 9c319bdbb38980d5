"""Reading CUDA identity out of ELF shared objects (pure, bytes in, facts out).

Only what builder needs: the ``DT_NEEDED`` entries of a 64-bit little-endian
ELF (``libcudart.so.12`` vs ``.so.13``) and the toolkit banner nvcc embeds
(``Cuda compilation tools, release 12.9, V12.9.86``).  Hand-written with
``struct`` because pyelftools would be a dependency for ~50 lines of parsing,
and because we parse partial files fetched by HTTP range requests.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

_TOOLKIT_RE = re.compile(rb"Cuda compilation tools, release (\d+\.\d+), V(\d+\.\d+\.\d+)")
_SM_RE = re.compile(rb"\bsm_(\d{2,3})[a-z]?\b")

DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ = 0, 1, 5, 10
PT_LOAD, PT_DYNAMIC = 1, 2


class ElfError(ValueError):
    """Not a readable 64-bit little-endian ELF object."""


@dataclass(frozen=True)
class ElfFacts:
    needed: tuple[str, ...]
    toolkit: str | None  # e.g. "12.9.86"
    toolkit_release: str | None  # e.g. "12.9"

    @property
    def cudart_soname(self) -> str | None:
        return next((n for n in self.needed if n.startswith("libcudart.so")), None)


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _vaddr_to_offset(data: bytes, phoff: int, phnum: int, *, phentsize: int, vaddr: int) -> int:
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, off)
        if p_type == PT_LOAD and p_vaddr <= vaddr < p_vaddr + p_filesz:
            return int(vaddr - p_vaddr + p_offset)
    return vaddr  # unrelocated objects: addresses are file offsets


def dt_needed(data: bytes) -> list[str]:
    """The ``DT_NEEDED`` sonames of an ELF64 LE object given as its full bytes."""
    if not is_elf(data):
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only 64-bit little-endian ELF is supported")
    try:
        phoff = struct.unpack_from("<Q", data, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        dyn = None
        for i in range(phnum):
            off = phoff + i * phentsize
            p_type, _f, p_offset, _v, _p, p_filesz = struct.unpack_from("<IIQQQQ", data, off)
            if p_type == PT_DYNAMIC:
                dyn = (p_offset, p_filesz)
        if dyn is None:
            return []
        entries: list[tuple[int, int]] = []
        for pos in range(dyn[0], dyn[0] + dyn[1], 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == DT_NULL:
                break
            entries.append((tag, val))
        strtab = next((v for t, v in entries if t == DT_STRTAB), None)
        if strtab is None:
            raise ElfError("dynamic section has no string table")
        stroff = _vaddr_to_offset(data, phoff, phnum, phentsize=phentsize, vaddr=strtab)
        names = []
        for tag, val in entries:
            if tag == DT_NEEDED:
                end = data.index(b"\0", stroff + val)
                names.append(data[stroff + val : end].decode("utf-8", "replace"))
        return names
    except (struct.error, ValueError, IndexError) as exc:
        if isinstance(exc, ElfError):
            raise
        raise ElfError(f"truncated or corrupt ELF: {exc}") from None


def cuda_toolkit(data: bytes) -> tuple[str, str] | None:
    """(release, full version) from nvcc's banner, e.g. ("12.9", "12.9.86")."""
    m = _TOOLKIT_RE.search(data)
    return (m.group(1).decode(), m.group(2).decode()) if m else None


def sm_archs(data: bytes) -> list[str]:
    """Architectures named in the binary (``sm_89`` ...), best effort."""
    return sorted({f"sm_{m.group(1).decode()}" for m in _SM_RE.finditer(data)}, key=lambda s: int(s[3:]))


def facts(data: bytes) -> ElfFacts:
    needed = tuple(dt_needed(data))
    tk = cuda_toolkit(data)
    return ElfFacts(needed=needed, toolkit=tk[1] if tk else None, toolkit_release=tk[0] if tk else None)


# --- section headers (added for the fatbin reader; works on partial data) -------------

SHN_XINDEX = 0xFFFF


@dataclass(frozen=True)
class Section:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class SectionTable:
    """Where an ELF64 LE file keeps its section header table (from the first 64 bytes)."""

    shoff: int
    shentsize: int
    shnum: int
    shstrndx: int

    @property
    def end(self) -> int:
        return self.shoff + self.shentsize * self.shnum


def section_table(header: bytes) -> SectionTable | None:
    """The section header table's place, from an ELF64 LE header; None when it has none
    or uses the extended numbering (``e_shnum == 0``), which no CUDA binary here needs."""
    if len(header) < 64 or not is_elf(header) or header[4] != 2 or header[5] != 1:
        return None
    shoff = struct.unpack_from("<Q", header, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", header, 0x3A)
    if shoff == 0 or shnum == 0 or shentsize != 64 or shstrndx == SHN_XINDEX or shstrndx >= shnum:
        return None
    return SectionTable(shoff, shentsize, shnum, shstrndx)


def read_sections(table: SectionTable, read: Callable[[int, int], bytes | None]) -> list[Section] | None:
    """Section names, offsets and sizes; ``read(offset, n)`` returns those bytes or None
    when it does not have them (a stream keeps only a window).  None if unreadable."""
    raw = read(table.shoff, table.shentsize * table.shnum)
    if raw is None or len(raw) != table.shentsize * table.shnum:
        return None
    heads = []
    for i in range(table.shnum):
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", raw, i * table.shentsize)
        heads.append((name, offset, size))
    _n, str_off, str_size = heads[table.shstrndx]
    names = read(str_off, str_size)
    if names is None or len(names) != str_size:
        return None
    out = []
    for name, offset, size in heads:
        end = names.find(b"\0", name)
        if name >= len(names) or end < 0:
            return None
        out.append(Section(names[name:end].decode("utf-8", "replace"), offset, size))
    return out


def sections(data: bytes) -> list[Section]:
    """Every section of a whole ELF64 LE file (empty when it has no section table)."""
    table = section_table(data[:64])
    if table is None:
        return []

    def read(offset: int, n: int) -> bytes | None:
        return data[offset: offset + n] if offset + n <= len(data) else None

    return read_sections(table, read) or []
