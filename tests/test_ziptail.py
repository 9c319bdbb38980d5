"""builder/check/ziptail.py: METADATA's entry from a zip's tail, against zips written by zipfile."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import pytest

from builder.check import ziptail

META = b"Metadata-Version: 2.1\nName: big\nVersion: 1.0\nRequires-Dist: torch==2.9.0\n"


def _zip(n: int, *, meta_last: bool = True, name: str = "big-1.0.dist-info/METADATA") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if not meta_last:
            zf.writestr(name, META)
        for i in range(n):
            zf.writestr(f"big/pkg/module_{i:05d}_{'p' * 40}.py", f"# {i}\n")
        zf.writestr("big/blob.bin", os.urandom(200_000), compress_type=zipfile.ZIP_STORED)
        if meta_last:
            zf.writestr(name, META)
        zf.writestr("big-1.0.dist-info/RECORD", "")
    return buf.getvalue()


@pytest.mark.parametrize("tail", [1024, 4096, 65536])
def test_metadata_found_from_a_tail_cut_inside_the_directory(tail: int) -> None:
    data = _zip(3000)  # a directory of about 300 KiB
    base = len(data) - tail
    m = ziptail.metadata_member(data[base:], base)
    assert m is not None and m.name == "big-1.0.dist-info/METADATA"
    a, b = ziptail.local_span(m)
    assert ziptail.extract(m, data[a:b]) == META
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(m.name)
    assert (m.offset, m.compress_size, m.file_size, m.crc) == (info.header_offset, info.compress_size,
                                                               info.file_size, info.CRC)


def test_whole_directory_in_the_tail() -> None:
    data = _zip(3)
    members = ziptail.tail_members(data[-65536:], len(data) - 65536)
    assert members is not None and [m.name for m in members][-2:] == ["big-1.0.dist-info/METADATA",
                                                                       "big-1.0.dist-info/RECORD"]
    assert len(members) == len(zipfile.ZipFile(io.BytesIO(data)).infolist())


def test_metadata_written_first_is_not_in_the_tail() -> None:
    data = _zip(3000, meta_last=False)
    assert ziptail.metadata_member(data[-4096:], len(data) - 4096) is None  # the caller reads the directory


def test_not_a_zip_and_broken_members_give_nothing() -> None:
    assert ziptail.metadata_member(os.urandom(4096), 0) is None
    data = _zip(10)
    m = ziptail.metadata_member(data, 0)
    assert m is not None
    a, b = ziptail.local_span(m)
    blob = bytearray(data[a:b])
    blob[-(len(blob) - 30 - len(m.name) - 1)] ^= 0xFF  # corrupt the compressed bytes: CRC or inflate fails
    assert ziptail.extract(m, bytes(blob)) is None
    assert ziptail.extract(m, data[a:a + 20]) is None


def test_a_directory_offset_that_does_not_add_up_is_refused() -> None:
    data = bytearray(_zip(10))
    at = data.rfind(b"PK\x05\x06")
    size, off = struct.unpack_from("<II", data, at + 12)
    struct.pack_into("<I", data, at + 16, off + 1)  # prepended bytes or a damaged record
    assert ziptail.directory(bytes(data), 0) is None


def test_zip64_extra_field_sizes_are_read() -> None:
    # A central record whose offset is in the zip64 extra field (as zip writers do past 4 GiB).
    name = b"x-1.0.dist-info/METADATA"
    extra = struct.pack("<HHQ", 1, 8, 5_000_000_000)
    rec = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 8, 0, 0, 7, 10, 20, len(name), len(extra),
                      0, 0, 0, 0, 0xFFFFFFFF) + name + extra
    parsed = ziptail._record(rec, 0)
    assert parsed is not None and parsed[0].offset == 5_000_000_000 and parsed[1] == len(rec)
