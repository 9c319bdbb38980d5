"""Which GPU architectures a CUDA binary carries, from its fatbin headers (pure).

nvcc embeds device code in an ELF section ``.nv_fatbin`` (the section names are
in CUDA's own ``include/fatbinary_section.h``) as one or more *fatbin
containers*.  Each container is a 16-byte header followed by entries; each entry
is a header and its payload (a cubin = SASS, or PTX, or LTO IR), optionally
compressed.  This module reads the headers only and never decompresses a
payload, so the answer comes from what the CUDA driver itself reads, not from
``sm_NN`` strings that happen to be in the file.

Layout (little-endian; NVIDIA does not publish the entry header, the fields below
are from public reverse engineering and were cross-checked against NVIDIA's
``cuobjdump --list-elf --list-ptx`` in tests/test_fatbin.py):

container header, 16 bytes (``fatBinaryHeader`` in CUDA <= 10's ``fatbinary.h``)::

    u32 magic = 0xBA55ED50   u16 version = 1   u16 header_size = 16   u64 fat_size

entry header, ``header_size`` >= 64 bytes, payload follows, next entry at
``entry + header_size + size``; the entries fill ``fat_size`` exactly::

    0  u16 kind (1 PTX, 2 ELF/cubin, 8 LTO IR)   2  u16 (0x0101)   4  u32 header_size
    8  u64 size (payload, padded)                16 u32 compressed_size   20 u32 options offset
    24 u16 minor  26 u16 major (PTX: the PTX ISA version, e.g. 8.8)       28 u32 arch (89, 90, 100)
    32 u32 name offset  36 u32 name size        40 u64 flags
    flags: 0x1 64-bit, 0x10 Linux, 0x2000 / 0x8000 compressed (LZ4-style / zstd),
           0x100000 arch-specific ("a", sm_90a), 0x200000 family-specific ("f", sm_100f)

Sources: n-eiling/cuda-fatbin-decompression (``fatbin-decompress.h``, Apache-2.0),
jiegec/fatbinary (``fatbinary/src/lib.rs``), GrigoryEvko/nvopen-tools
(``fatbin/FORMAT_SPECIFICATION.md``); the ``a``/``f`` flag bits were read off
nvcc 13.0 output in this project (tests compile kernels for those targets).

Two ways in, one answer: :func:`read_bytes` (a whole file in memory) and
:class:`Reader` / :func:`read_stream` (chunks of any size, e.g. an inflating zip
member, memory bounded by the chunk size).  Both run the same scanner: every
occurrence of the magic is a candidate, walked entry by entry in file order,
and counted only when version, header size and entry sizes add up exactly to
the container size, so random bytes or a truncated container give nothing.  In
an ELF, only containers inside ``.nv_fatbin`` count (cuobjdump reads that
section too, and falls back to the ``.nvFatBinSegment`` wrappers only when it is
absent, which nvcc-built objects never are); a stream keeps a window before the
section header table to learn the section names at the end of the file.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from builder.binaries import elf
from builder.binaries.archcompat import Arch, CodeGroup, KernelArchs

#: Bump when what the reader reports changes: cached results and shipped data name it.
READER_VERSION = 1
PRODUCED_BY = "builder fatbin reader"
MAGIC = 0xBA55ED50
_MAGIC = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQIIHHIIIQ")  # the first 48 bytes of an entry header
HEADER_SIZE = 16
ENTRY_MIN = 64
ENTRY_MAX = 4096  # largest entry header accepted (nvcc 13 writes 64..120)
FAT_MAX = 1 << 32  # largest container accepted
KIND_PTX, KIND_ELF, KIND_LTO = 1, 2, 8
FLAG_COMPRESSED = 0x2000 | 0x8000
FLAG_ARCH_SPECIFIC = 0x100000
FLAG_FAMILY_SPECIFIC = 0x200000
MAX_ACTIVE = 64  # candidate containers walked at once; more are hostile input, counted in ``dropped``
MAX_ENTRIES = 1 << 20  # entries kept per scan (libcublasLt.so.13 has about 5,400): bounds memory
SECTION = ".nv_fatbin"
NAMES_WINDOW = 1 << 20  # bytes kept before the section header table (where .shstrtab lives)


@dataclass(frozen=True)
class Entry:
    kind: int
    arch: Arch | None  # None for kinds other than PTX and ELF
    version: tuple[int, int]  # PTX: ISA version; ELF: cubin format version
    flags: int
    header_size: int
    size: int

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)


@dataclass(frozen=True)
class Container:
    offset: int  # of the container header, from the start of the scanned bytes
    size: int  # header included
    entries: tuple[Entry, ...]


@dataclass
class _Walk:
    start: int
    need: int  # absolute position of the next header to read
    end: int | None = None
    entries: list[Entry] = field(default_factory=list)


def _entry(buf: bytes, i: int, at: int, *, end: int) -> tuple[Entry, int] | None:
    """Parse the entry header at ``buf[i]`` (absolute position ``at``): (entry, next) or None."""
    kind, _u, hs, size, csize, _opt, minor, major, arch, _no, _nl, flags = _ENTRY.unpack_from(buf, i)
    nxt = at + hs + size
    if not ENTRY_MIN <= hs <= ENTRY_MAX or hs % 8 or nxt > end:
        return None
    if kind == 0 or kind & (kind - 1) or kind > 0x80:
        return None
    if flags & FLAG_COMPRESSED and csize > size:
        return None
    target = None
    if kind in (KIND_PTX, KIND_ELF):
        if not 10 <= arch <= 999:
            return None
        variant = "a" if flags & FLAG_ARCH_SPECIFIC else "f" if flags & FLAG_FAMILY_SPECIFIC else ""
        target = Arch(arch, variant)
    return Entry(kind, target, (major, minor), flags, hs, size), nxt


class Scanner:
    """Finds valid fatbin containers in bytes fed in order (any chunking, same result)."""

    def __init__(self) -> None:
        self._buf = b""
        self._base = 0  # absolute position of _buf[0]
        self._search = 0  # next absolute position to look for the magic
        self._walks: list[_Walk] = []
        self.containers: list[Container] = []
        self.dropped = 0
        self.scanned = 0
        self._kept = 0

    def feed(self, chunk: bytes) -> None:
        self.scanned += len(chunk)
        buf = self._buf + chunk if self._buf else chunk
        base, end = self._base, self._base + len(buf)
        found = -2  # cached position of the next magic (-2: not searched yet)
        while True:
            if found == -2 or (found >= 0 and found < self._search):
                i = buf.find(_MAGIC, self._search - base)
                found = base + i if i >= 0 else -1
            magic = found if found >= 0 else None
            walk = min(self._walks, key=lambda w: w.need) if self._walks else None
            if walk is not None and (magic is None or walk.need <= magic):
                if walk.need + self._wants(walk) > end:
                    break
                self._step(walk, buf, walk.need - base)
                continue
            if magic is None:
                break
            self._search = magic + 1
            if len(self._walks) >= MAX_ACTIVE:
                self.dropped += 1
            else:
                self._walks.append(_Walk(start=magic, need=magic))
        self._search = max(self._search, min(end - 3, walk.need if walk is not None else end))
        keep = min([self._search] + [w.need for w in self._walks if w.need < end])
        self._buf, self._base = buf[keep - base:], keep

    @staticmethod
    def _wants(walk: _Walk) -> int:
        """Bytes needed at ``walk.need``: a container header, an entry header, or none
        (the container is complete once the data reaches its end)."""
        return HEADER_SIZE if walk.end is None else 0 if walk.need == walk.end else ENTRY_MIN

    def _step(self, walk: _Walk, buf: bytes, i: int) -> None:
        if walk.need == walk.end:  # every byte of the container has been seen
            self._walks.remove(walk)
            self.containers.append(Container(walk.start, walk.end - walk.start, tuple(walk.entries)))
            return
        if walk.end is None:
            _m, version, hsize, fat = _HEADER.unpack_from(buf, i)
            if version != 1 or hsize != HEADER_SIZE or not ENTRY_MIN <= fat <= FAT_MAX:
                self._walks.remove(walk)
                return
            walk.end, walk.need = walk.start + HEADER_SIZE + fat, walk.start + HEADER_SIZE
            return
        parsed = _entry(buf, i, walk.need, end=walk.end)
        if parsed is None:
            self._walks.remove(walk)
            return
        entry, nxt = parsed
        if self._kept >= MAX_ENTRIES:
            self._walks.remove(walk)
            self.dropped += 1
            return
        self._kept += 1
        walk.entries.append(entry)
        if nxt != walk.end and nxt + ENTRY_MIN > walk.end:
            self._walks.remove(walk)
        else:
            walk.need = nxt

    def finish(self) -> list[Container]:
        """Containers found; candidates still open at the end were truncated: dropped."""
        self._walks.clear()
        self._buf = b""
        return sorted(self.containers, key=lambda c: c.offset)


class _SectionTap:
    """Keeps an ELF's header, its section header table and the window before it."""

    def __init__(self) -> None:
        self.head = b""
        self.table: elf.SectionTable | None = None
        self.lo = self.hi = 0
        self.kept = bytearray()
        self._pos = 0

    def feed(self, chunk: bytes) -> None:
        start, self._pos = self._pos, self._pos + len(chunk)
        if len(self.head) < 64:
            self.head += chunk[: 64 - len(self.head)]
            if len(self.head) == 64:
                self.table = elf.section_table(self.head)
                if self.table is not None:
                    self.lo, self.hi = max(0, self.table.shoff - NAMES_WINDOW), self.table.end
                    self.kept += self.head[self.lo: self.hi]  # the window may begin inside the header
        if self.table is None:
            return
        a, b = max(start, self.lo + len(self.kept)), min(self._pos, self.hi)
        if a < b and a == self.lo + len(self.kept):
            self.kept += chunk[a - start: b - start]

    def sections(self) -> list[elf.Section] | None:
        if self.table is None:
            return None

        def read(offset: int, n: int) -> bytes | None:
            if offset < self.lo or offset + n > self.lo + len(self.kept):
                return None
            return bytes(self.kept[offset - self.lo: offset - self.lo + n])

        return elf.read_sections(self.table, read)


@dataclass(frozen=True)
class FatbinReport:
    """What the fatbin headers of one binary say."""

    archs: KernelArchs
    containers: int  # counted (inside the region)
    entries: int  # PTX and ELF entries counted
    other_entries: int  # e.g. LTO IR: not runnable by the driver, not counted in archs
    ptx_isa: str | None  # highest PTX ISA version among counted PTX entries, e.g. "8.8"
    region: str  # ".nv_fatbin", "whole file" (not an ELF) or "whole file (no section names)"
    outside: int  # valid containers outside the region (e.g. embedded for cuModuleLoadData), not counted
    scanned: int  # bytes read
    dropped: int  # candidates not walked (hostile input only)
    listing: tuple[str, ...] = ()  # every counted entry in file order: "sm_89" (SASS), "compute_80" (PTX)

    @property
    def is_elf_region(self) -> bool:
        return self.region == SECTION


def _groups(signatures: Counter[tuple[frozenset[Arch], frozenset[Arch]]]) -> tuple[CodeGroup, ...]:
    groups = [CodeGroup(n, sass, ptx) for (sass, ptx), n in signatures.items()]
    return tuple(sorted(groups, key=lambda g: (-g.containers, [(a.number, a.variant) for a in sorted(g.sass)],
                                               [(a.number, a.variant) for a in sorted(g.ptx)])))


def _report(containers: list[Container], scanned: int, dropped: int, *, tap: _SectionTap | None) -> FatbinReport:
    ranges: list[tuple[int, int]] | None = None
    region = "whole file"
    if tap is not None and tap.table is not None:
        secs = tap.sections()
        if secs is None:
            region = "whole file (no section names)"
        else:
            region = SECTION
            ranges = [(s.offset, s.offset + s.size) for s in secs if s.name == SECTION]
    inside = [c for c in containers
              if ranges is None or any(a <= c.offset and c.offset + c.size <= b for a, b in ranges)]
    sass: set[Arch] = set()
    ptx: set[Arch] = set()
    isa: tuple[int, int] | None = None
    listing: list[str] = []
    other = 0
    signatures: Counter[tuple[frozenset[Arch], frozenset[Arch]]] = Counter()
    for c in inside:
        kinds = [(e.kind, e.arch) for e in c.entries if e.arch is not None]
        if kinds:
            signatures[(frozenset(a for k, a in kinds if k == KIND_ELF),
                        frozenset(a for k, a in kinds if k != KIND_ELF))] += 1
        for e in c.entries:
            if e.arch is None:
                other += 1
            elif e.kind == KIND_ELF:
                sass.add(e.arch)
                listing.append(e.arch.sm)
            else:
                ptx.add(e.arch)
                listing.append(e.arch.compute)
                isa = max(isa or e.version, e.version)
    return FatbinReport(
        archs=KernelArchs(frozenset(sass), frozenset(ptx), _groups(signatures)), containers=len(inside),
        entries=len(listing), other_entries=other, ptx_isa=f"{isa[0]}.{isa[1]}" if isa else None, region=region,
        outside=len(containers) - len(inside), scanned=scanned, dropped=dropped, listing=tuple(listing))


class Reader:
    """Feed a binary's bytes in order (any chunk sizes); :meth:`finish` gives the report."""

    def __init__(self) -> None:
        self._scan = Scanner()
        self._tap = _SectionTap()

    def feed(self, chunk: bytes) -> None:
        self._tap.feed(chunk)
        self._scan.feed(chunk)

    def finish(self) -> FatbinReport:
        containers = self._scan.finish()
        return _report(containers, self._scan.scanned, self._scan.dropped, tap=self._tap)


def read_stream(chunks: Iterable[bytes]) -> FatbinReport:
    """Report for a binary given as consecutive chunks (an inflating zip member, a file read in parts)."""
    r = Reader()
    for chunk in chunks:
        r.feed(chunk)
    return r.finish()


def read_bytes(data: bytes) -> FatbinReport:
    """Report for a whole binary in memory: an ELF (its ``.nv_fatbin``) or a bare ``.fatbin``."""
    return read_stream([data])


def kernel_archs(data: bytes) -> KernelArchs:
    """SASS and PTX architectures in a whole ELF's ``.nv_fatbin`` (or a bare fatbin)."""
    return read_bytes(data).archs
