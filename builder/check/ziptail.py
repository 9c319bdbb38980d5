"""A wheel's METADATA from the zip's tail alone (pure: bytes in, facts out).

:mod:`zipfile` reads the whole central directory before it opens any member, and a
wheel of thousands of files has a directory of megabytes (flashinfer-cubin 0.6.8:
2.5 MB).  Wheels write their ``.dist-info`` files last (PEP 427: "the .dist-info
directory should be placed at the end of the archive"), so the directory's last
records, inside the zip's last 64 KiB, name METADATA's offset and sizes.  This module
finds them there: it locates the end-of-central-directory record (zip64 aware), then the
first offset in the tail from which central-directory records chain exactly to the
directory's end (a false start cannot end exactly there), and returns METADATA's entry.
When the tail does not hold it, the directory's first records may (:func:`head_metadata`);
else the caller falls back to :mod:`zipfile`.
"""

from __future__ import annotations

import bisect
import re
import struct
import zlib
from dataclasses import dataclass

_EOCD = b"PK\x05\x06"
_Z64_LOCATOR = b"PK\x06\x07"
_Z64_EOCD = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_CENTRAL_HEAD = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_LOCAL_HEAD = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_METADATA_BYTES = re.compile(rb"[^/]+\.dist-info/METADATA")  # on the raw name: a byte that is not "/" decodes to no "/"
_METADATA_TAIL = b".dist-info/METADATA"
_CHAIN_HEAD = struct.Struct("<4s24xHHH")  # a central record's signature, then its name, extra and comment lengths


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of its local header
    compress_size: int
    file_size: int
    method: int
    crc: int


def directory(tail: bytes, base: int) -> tuple[int, int] | None:
    """(offset, end) of the central directory, from a tail read at file offset ``base``."""
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        return None
    cd_size, cd_off = struct.unpack_from("<II", tail, at + 12)
    end = base + at
    if 0xFFFFFFFF in (cd_size, cd_off):
        loc = at - 20
        if loc < 0 or tail[loc:loc + 4] != _Z64_LOCATOR:
            return None
        (z64,) = struct.unpack_from("<Q", tail, loc + 8)
        rec = tail[z64 - base: z64 - base + 56] if z64 >= base else b""
        if len(rec) < 56 or rec[:4] != _Z64_EOCD:
            return None
        cd_size, cd_off = struct.unpack_from("<QQ", rec, 40)
        end = z64
    return (int(cd_off), int(end)) if cd_off + cd_size == end else None


def _record(buf: bytes, at: int) -> tuple[Member, int] | None:
    if at + 46 > len(buf):
        return None
    (sig, _made, _need, _flags, method, _t, _d, crc, csize, usize, nlen, elen, clen, _disk, _ia, _ea,
     offset) = _CENTRAL_HEAD.unpack_from(buf, at)
    end = at + 46 + nlen + elen + clen
    if sig != _CENTRAL or end > len(buf):
        return None
    name = buf[at + 46: at + 46 + nlen].decode("utf-8", "replace")
    extra = buf[at + 46 + nlen: at + 46 + nlen + elen]
    sizes = [usize, csize, offset]
    if 0xFFFFFFFF in sizes:  # zip64: the extra field 0x0001 holds the fields set to 0xFFFFFFFF, in this order
        pos = 0
        while pos + 4 <= len(extra):
            tag, size = struct.unpack_from("<HH", extra, pos)
            if tag == 1:
                vals = extra[pos + 4: pos + 4 + size]
                k = 0
                for i, v in enumerate(sizes):
                    if v == 0xFFFFFFFF and k + 8 <= len(vals):
                        sizes[i] = struct.unpack_from("<Q", vals, k)[0]
                        k += 8
                break
            pos += 4 + size
    return Member(name, sizes[2], sizes[1], sizes[0], method, crc), end


def _chain(seg: bytes, at: int) -> list[int] | None:
    """The offsets of the records that chain from ``at`` exactly to the end of ``seg``, or None.
    Only each record's signature and lengths are read: a tail holds hundreds of records and
    the search reads dozens of tails."""
    starts, n, head = [], len(seg), _CHAIN_HEAD.unpack_from
    while at < n:
        if at + 46 > n:
            return None
        sig, nlen, elen, clen = head(seg, at)
        if sig != _CENTRAL:
            return None
        starts.append(at)
        at += 46 + nlen + elen + clen
    return starts if at == n and starts else None


def _trusted(tail: bytes, base: int) -> tuple[bytes, list[int]] | None:
    """(the directory's part in the tail, its record offsets) when the tail holds records we can trust."""
    cd = directory(tail, base)
    if cd is None:
        return None
    start, end = max(cd[0], base), cd[1]
    seg = tail[start - base: end - base]
    candidates = [0] if start == cd[0] else [m.start() for m in re.finditer(re.escape(_CENTRAL), seg)]
    for c in candidates:
        starts = _chain(seg, c)
        if starts is not None:
            return seg, starts
    return None


def tail_members(tail: bytes, base: int) -> list[Member] | None:
    """The central-directory records the tail holds, or None when it holds none we can trust."""
    found = _trusted(tail, base)
    if found is None:
        return None
    seg, starts = found
    out = [_record(seg, at) for at in starts]
    return [r[0] for r in out if r is not None]


def metadata_member(tail: bytes, base: int) -> Member | None:
    """METADATA's directory entry, if the tail holds it."""
    found = _trusted(tail, base)
    if found is None:
        return None
    seg, starts = found
    pos = seg.find(_METADATA_TAIL)
    while pos >= 0:  # each place the name could end in, in order: the record whose name holds it
        at = starts[bisect.bisect_right(starts, pos) - 1] if pos >= starts[0] else -1
        if at >= 0:
            nlen = _CHAIN_HEAD.unpack_from(seg, at)[1]
            if _METADATA_BYTES.fullmatch(seg, at + 46, at + 46 + nlen):
                rec = _record(seg, at)
                return rec[0] if rec is not None else None
        pos = seg.find(_METADATA_TAIL, pos + 1)
    return None


def head_metadata(head: bytes) -> Member | None:
    """METADATA's entry among the records at the start of a central directory (``head``: the
    directory's first bytes, read from the offset its end record names).  For wheels that write
    ``.dist-info`` first (torch 2.4 to 2.7.0: METADATA is the 3rd of about 15,000 records), whose directory's
    tail does not hold it: the records are walked from the directory's start, which the end
    record vouches for, as far as whole records go."""
    at, n = 0, len(head)
    while at + 46 <= n:
        sig, nlen, elen, clen = _CHAIN_HEAD.unpack_from(head, at)
        end = at + 46 + nlen + elen + clen
        if sig != _CENTRAL or end > n:
            return None
        if _METADATA_BYTES.fullmatch(head, at + 46, at + 46 + nlen):
            rec = _record(head, at)
            return rec[0] if rec is not None else None
        at = end
    return None


def local_span(m: Member) -> tuple[int, int]:
    """The byte range to read for ``m``: its local header, a name and extra field of up to
    1 KiB, and its data."""
    return m.offset, m.offset + _LOCAL_HEAD.size + 1024 + len(m.name.encode()) + m.compress_size


def extract(m: Member, data: bytes) -> bytes | None:
    """The member's bytes from a read of :func:`local_span` (None when it does not check out)."""
    if len(data) < _LOCAL_HEAD.size:
        return None
    sig, _need, _flags, _method, _t, _d, _crc, _cs, _us, nlen, elen = _LOCAL_HEAD.unpack_from(data, 0)
    start = _LOCAL_HEAD.size + nlen + elen
    raw = data[start: start + m.compress_size]
    if sig != _LOCAL or len(raw) != m.compress_size:
        return None
    try:
        out = raw if m.method == 0 else zlib.decompress(raw, -15) if m.method == 8 else None
    except zlib.error:
        return None
    if out is None or len(out) != m.file_size or zlib.crc32(out) != m.crc:
        return None
    return out
