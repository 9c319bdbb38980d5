"""``check --deep``: read one large member of a remote wheel as a stream and report
its GPU architectures, without downloading the wheel or holding the member.

The zip's central directory comes from HTTP Range requests on its tail (read
through :class:`builder.check.wheelread.RangeFile`, as ``check`` reads METADATA);
then the member's local header; then its compressed bytes, in windows of
:data:`WINDOW` bytes, inflated incrementally (``zlib.decompressobj``) and fed to
:class:`builder.binaries.fatbin.Reader`.  Memory stays at a few MiB whatever the
member's size.  Every request goes through :mod:`builder._http`, the one
bounded reader; one :class:`_http.Budget` gives the whole read its deadline
and byte cap.

What is verified: the size the server reports equals the lock's wheel size, and
the inflated member matches the CRC-32 and size in the zip directory.  The
wheel's sha256 cannot be checked without reading all of it; it is the cache key
(the lock's hash names the artifact the result belongs to).

Results are cached as JSON, ``DIR/kernels/<wheel sha256>.json``::

    {"schema": 1, "members": {"vllm/_C.abi3.so": {<DeepResult.to_json()>}}}
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from builder import _http
from builder.binaries import fatbin
from builder.binaries.archcompat import KernelArchs
from builder.check.wheelread import RangeFile, reported_size
from builder.errors import Unavailable

CACHE_SCHEMA = 1
TAIL = 64 * 1024  # first read: the zip's last 64 KiB
WINDOW = 16 * 1024 * 1024  # bytes per Range request while streaming the member
PIECE = 1024 * 1024  # socket read size
INFLATE_OUT = 4 * 1024 * 1024  # most inflated bytes per decompress call
DEADLINE_S = 600.0
MAX_BYTES = 512 * 1024 * 1024
HTTP_TIMEOUT = _http.READ_TIMEOUT  # one socket read may stall this long
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes


@dataclass(frozen=True, kw_only=True)
class MemberRef:
    """One member of one locked wheel: where the wheel is and what it must be."""

    filename: str
    sha256: str
    member: str
    url: str | None = None
    size: int | None = None  # the wheel's size in bytes, from the lock
    path: str | None = None  # a local wheel instead of a URL


@dataclass(frozen=True)
class DeepResult:
    """What the fatbin headers of one wheel member say, and what reading it cost."""

    filename: str
    sha256: str
    member: str
    member_size: int
    compress_size: int
    crc32: int
    archs: KernelArchs
    ptx_isa: str | None
    containers: int
    entries: int
    region: str
    outside: int
    bytes_transferred: int
    requests: int
    seconds: float
    read_at: str  # ISO date
    reader_version: int = fatbin.READER_VERSION
    origin: str = "http"  # http | file | cache

    def to_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename, "sha256": self.sha256, "member": self.member,
            "member_size": self.member_size, "compress_size": self.compress_size, "crc32": self.crc32,
            **self.archs.to_dict(), "ptx_isa": self.ptx_isa,
            "containers": self.containers, "entries": self.entries, "region": self.region,
            "outside": self.outside, "bytes_transferred": self.bytes_transferred, "requests": self.requests,
            "seconds": round(self.seconds, 3), "read_at": self.read_at, "reader_version": self.reader_version,
            "produced_by": fatbin.PRODUCED_BY,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DeepResult:
        return cls(
            filename=str(d["filename"]), sha256=str(d["sha256"]), member=str(d["member"]),
            member_size=int(d["member_size"]), compress_size=int(d["compress_size"]), crc32=int(d["crc32"]),
            archs=KernelArchs.from_dict(d), ptx_isa=d.get("ptx_isa"),
            containers=int(d["containers"]), entries=int(d["entries"]), region=str(d["region"]),
            outside=int(d["outside"]), bytes_transferred=int(d["bytes_transferred"]),
            requests=int(d["requests"]), seconds=float(d["seconds"]), read_at=str(d["read_at"]),
            reader_version=int(d["reader_version"]), origin="cache",
        )


class DeepCache:
    """Deep-read results per wheel sha256 under ``DIR/kernels/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        return self.root / "kernels" / f"{sha256}.json"

    def _load(self, sha256: str) -> dict[str, Any]:
        try:
            d = json.loads(self._path(sha256).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return d if isinstance(d, dict) and d.get("schema") == CACHE_SCHEMA else {}

    def get(self, sha256: str, member: str) -> DeepResult | None:
        d = self._load(sha256).get("members", {}).get(member)
        try:
            hit = DeepResult.from_json(d) if isinstance(d, dict) else None
        except (KeyError, TypeError, ValueError):
            return None
        return hit if hit is not None and hit.reader_version == fatbin.READER_VERSION else None

    def put(self, result: DeepResult) -> None:
        from builder.files.fsio import atomic_write

        d = self._load(result.sha256) or {"schema": CACHE_SCHEMA, "members": {}}
        d.setdefault("members", {})[result.member] = result.to_json()
        try:
            atomic_write(self._path(result.sha256), json.dumps(d, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only cache only costs the next run a read


class _Budget(_http.Budget):
    """Deadline and byte cap of one deep read (shared by all its requests), and its request count.

    Its own messages: the operator raises these bounds, not the per-request ones.
    """

    def __init__(self, ref: MemberRef, deadline_s: float, max_bytes: int) -> None:
        super().__init__(deadline_s, max_bytes, f"{ref.filename}: deep read of {ref.member}")
        self.t0 = time.monotonic()
        self.requests = 0

    def late(self) -> Unavailable:
        return Unavailable(f"{self.what} took over {self.seconds:.0f} s ({self.spent / 1e6:.0f} MB read)",
                           "retry on a faster link or raise the deadline")

    def over(self) -> Unavailable:
        return Unavailable(f"{self.what} passed its cap of {self.max_bytes / 1e6:.1f} MB", "raise the byte cap")


class _Remote:
    """Range requests on one wheel URL through :mod:`builder._http`, checked against the lock's size.

    Every request may take what is left of the budget's deadline (each socket
    read at most :data:`HTTP_TIMEOUT`); every byte counts against its cap.
    """

    def __init__(self, ref: MemberRef, budget: _Budget) -> None:
        assert ref.url
        self.ref, self.url, self.budget = ref, ref.url, budget
        self.what = f"{ref.filename} (deep read)"
        self.total = 0

    def tail(self, n: int) -> tuple[int, bytes]:
        """(offset, bytes) of the last ``n`` bytes; sets :attr:`total` from the reply."""
        self.budget.requests += 1
        reply = _http.fetch(self.url, what=self.what, max_bytes=n, rng=f"bytes=-{n}", deadline=self.budget.seconds,
                            read_timeout=HTTP_TIMEOUT, budget=self.budget)
        if reply.status != 206:
            raise Unavailable(f"{self.what}: no range reply (HTTP {reply.status}) from {_http.host_of(self.url)}",
                              "the index must honour HTTP Range requests")
        self.total = reported_size(self.ref.filename, reply.headers, self.ref.size)
        return self.total - len(reply.body), reply.body

    def stream(self, start: int, stop: int) -> Iterator[bytes]:
        """Bytes [start, stop) in pieces, one Range request per :data:`WINDOW`."""
        for pos in range(start, stop, WINDOW):
            self.budget.requests += 1
            yield from _http.iter_range(self.url, pos, min(stop, pos + WINDOW), what=self.what, max_bytes=WINDOW,
                                        deadline=self.budget.seconds, read_timeout=HTTP_TIMEOUT, chunk=PIECE,
                                        expect_total=self.total, budget=self.budget)

    def read(self, start: int, stop: int) -> bytes:
        return b"".join(self.stream(start, stop))


def _inflate(info: zipfile.ZipInfo, compressed: Iterator[bytes], feed: Callable[[bytes], None],
             *, what: str) -> None:
    """Inflate ``compressed`` into ``feed``, checking the directory's size and CRC-32."""
    crc = size = 0

    def emit(data: bytes) -> None:
        nonlocal crc, size
        if data:
            crc, size = zlib.crc32(data, crc), size + len(data)
            feed(data)

    if info.compress_type == zipfile.ZIP_STORED:
        for piece in compressed:
            emit(piece)
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        d = zlib.decompressobj(-15)
        try:
            for piece in compressed:
                emit(d.decompress(piece, INFLATE_OUT))
                while d.unconsumed_tail:
                    emit(d.decompress(d.unconsumed_tail, INFLATE_OUT))
            emit(d.flush())
        except zlib.error as exc:
            raise Unavailable(f"{what}: corrupt deflate data: {exc}", "re-lock or check the index") from None
        if not d.eof:
            raise Unavailable(f"{what}: deflate stream ends early", "re-lock or check the index")
    else:
        raise Unavailable(f"{what}: zip compression method {info.compress_type} is not supported",
                          "builder reads stored and deflated members")
    if size != info.file_size or crc != info.CRC:
        raise Unavailable(f"{what}: inflated bytes differ from the zip directory (size {size} vs {info.file_size})",
                          "the file changed since it was locked; re-lock or check the index")


def _member_info(zf: zipfile.ZipFile, ref: MemberRef) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(ref.member)
    except KeyError:
        raise Unavailable(f"{ref.filename}: no member {ref.member}",
                          "the lock names another wheel than the data expects") from None


def _result(ref: MemberRef, info: zipfile.ZipInfo, report: fatbin.FatbinReport, *, budget: _Budget,
            origin: str) -> DeepResult:
    return DeepResult(
        filename=ref.filename, sha256=ref.sha256, member=ref.member, member_size=info.file_size,
        compress_size=info.compress_size, crc32=info.CRC, archs=report.archs, ptx_isa=report.ptx_isa,
        containers=report.containers, entries=report.entries, region=report.region, outside=report.outside,
        bytes_transferred=budget.spent, requests=budget.requests, seconds=time.monotonic() - budget.t0,
        read_at=_dt.date.today().isoformat(), origin=origin,
    )


def _read_http(ref: MemberRef, budget: _Budget) -> DeepResult:
    remote = _Remote(ref, budget)
    tail = remote.tail(TAIL)
    try:
        with zipfile.ZipFile(RangeFile(remote.read, remote.total, [tail], wheel=ref.filename)) as zf:
            info = _member_info(zf, ref)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise Unavailable(f"{ref.filename}: not a readable wheel: {exc}", "re-lock") from None
    need = budget.spent + 30 + len(info.filename.encode()) + 1024 + info.compress_size
    if need > budget.max_bytes:
        raise Unavailable(f"{ref.filename}: {ref.member} is {info.compress_size / 1e6:.1f} MB compressed, over the "
                          f"deep-read cap of {budget.max_bytes / 1e6:.1f} MB", "raise the byte cap")
    head = remote.read(info.header_offset, info.header_offset + _LOCAL.size)
    sig, *_x, name_len, extra_len = _LOCAL.unpack(head)
    if sig != b"PK\x03\x04":
        raise Unavailable(f"{ref.filename}: no local header for {ref.member}", "re-lock or check the index")
    start = info.header_offset + _LOCAL.size + name_len + extra_len
    reader = fatbin.Reader()
    _inflate(info, remote.stream(start, start + info.compress_size), reader.feed, what=f"{ref.filename}: {ref.member}")
    return _result(ref, info, reader.finish(), budget=budget, origin="http")


def _read_file(ref: MemberRef, budget: _Budget) -> DeepResult:
    assert ref.path
    try:
        with _http.open_regular(Path(ref.path), what=ref.filename) as raw:
            digest = hashlib.sha256()
            while block := raw.read(INFLATE_OUT):
                digest.update(block)
            if digest.hexdigest() != ref.sha256:
                raise Unavailable(f"{ref.filename}: sha256 differs from the lock", "re-lock or restore the file")
            raw.seek(0)
            with zipfile.ZipFile(raw) as zf:
                info = _member_info(zf, ref)
                reader = fatbin.Reader()
                with zf.open(info) as f:  # zipfile inflates and checks the CRC-32 itself
                    while piece := f.read(INFLATE_OUT):
                        if budget.remaining() <= 0:
                            raise budget.late()
                        reader.feed(piece)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise Unavailable(f"{ref.filename}: cannot read {ref.member} from {ref.path}: {exc}",
                          "restore the file or re-lock") from None
    return _result(ref, info, reader.finish(), budget=budget, origin="file")


def deep_read(ref: MemberRef, *, cache: DeepCache | None = None, offline: bool = False,
              deadline_s: float = DEADLINE_S, max_bytes: int = MAX_BYTES) -> DeepResult:
    """GPU architectures of ``ref.member``: from the cache, a local wheel, or HTTP ranges."""
    if cache is not None:
        hit = cache.get(ref.sha256, ref.member)
        if hit is not None:
            return replace(hit, origin="cache")
    budget = _Budget(ref, deadline_s, max_bytes)
    if ref.path:
        result = _read_file(ref, budget)
    elif offline:
        raise Unavailable(f"{ref.filename}: {ref.member} is not in the deep-read cache and --offline was given",
                          "run check --deep once online")
    elif not ref.url:
        raise Unavailable(f"{ref.filename}: the lock gives no URL or path", "re-lock")
    else:
        result = _read_http(ref, budget)
    if cache is not None:
        cache.put(result)
    return result
