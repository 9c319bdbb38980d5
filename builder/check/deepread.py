"""``check --deep``: read one large member of a remote wheel as a stream and report
its GPU architectures, without downloading the wheel or holding the member.

The zip's central directory comes from HTTP Range requests on its tail (as in
:mod:`builder.wheels`); then the member's local header; then its compressed bytes,
in windows of :data:`WINDOW` bytes, inflated incrementally (``zlib.decompressobj``)
and fed to :class:`builder.fatbin.Reader`.  Memory stays at a few MiB whatever
the member's size; the whole read has a deadline and a byte cap.

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
import io
import json
import re
import struct
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from builder import fatbin
from builder.archcompat import KernelArchs
from builder.errors import Unavailable

CACHE_SCHEMA = 1
TAIL = 64 * 1024  # first read: the zip's last 64 KiB
WINDOW = 16 * 1024 * 1024  # bytes per Range request while streaming the member
PIECE = 1024 * 1024  # socket read size
INFLATE_OUT = 4 * 1024 * 1024  # most inflated bytes per decompress call
DEADLINE_S = 600.0
MAX_BYTES = 512 * 1024 * 1024
HTTP_TIMEOUT = 30.0
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
        from builder.fsio import atomic_write

        d = self._load(result.sha256) or {"schema": CACHE_SCHEMA, "members": {}}
        d.setdefault("members", {})[result.member] = result.to_json()
        try:
            atomic_write(self._path(result.sha256), json.dumps(d, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only cache only costs the next run a read


class _Budget:
    """Deadline, byte cap and counters of one deep read."""

    def __init__(self, ref: MemberRef, deadline_s: float, max_bytes: int) -> None:
        self.ref, self.max_bytes = ref, max_bytes
        self.t0 = time.monotonic()
        self.deadline = self.t0 + deadline_s
        self.deadline_s = deadline_s
        self.bytes = self.requests = 0

    def timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Unavailable(f"{self.ref.filename}: deep read of {self.ref.member} took over {self.deadline_s:.0f} s "
                              f"({self.bytes / 1e6:.0f} MB read)", "retry on a faster link or raise the deadline")
        return min(HTTP_TIMEOUT, left)

    def spend(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise Unavailable(f"{self.ref.filename}: deep read of {self.ref.member} passed its cap of "
                              f"{self.max_bytes / 1e6:.1f} MB", "raise the byte cap")


class _Http:
    """Range requests on one wheel URL, checked against the lock's size."""

    def __init__(self, ref: MemberRef, budget: _Budget) -> None:
        assert ref.url
        self.ref, self.url, self.budget = ref, ref.url, budget
        self.total: int | None = None

    def _fail(self, what: str, hint: str = "check the network or the index") -> Unavailable:
        host = urllib.parse.urlsplit(self.url).netloc or self.url
        return Unavailable(f"{self.ref.filename}: {what} ({host})", hint)

    def open(self, rng: str) -> IO[bytes]:
        import urllib.error  # here: a check that reads nothing over HTTP need not load http.client and ssl
        import urllib.request

        self.budget.requests += 1
        req = urllib.request.Request(self.url, headers={"User-Agent": "builder-check/0.1", "Range": rng})
        try:
            resp = urllib.request.urlopen(req, timeout=self.budget.timeout())  # noqa: S310 (http/https only)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise self._fail(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._fail(f"cannot read: {getattr(exc, 'reason', exc)}") from None
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", "").strip())
        if resp.status != 206 or not m:
            resp.close()
            raise self._fail(f"no range reply (HTTP {resp.status})", "the index must honour HTTP Range requests")
        total = int(m.group(3))
        if (self.ref.size is not None and total != self.ref.size) or (self.total not in (None, total)):
            resp.close()
            raise self._fail(f"server has {total} bytes, the lock says {self.ref.size}",
                             "the file changed since it was locked; re-lock or check the index")
        self.total = total
        return resp  # type: ignore[no-any-return]

    def read(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) in one request."""
        return b"".join(self.stream(start, stop))

    def tail(self, n: int) -> tuple[int, bytes]:
        """(offset, bytes) of the last ``n`` bytes, which also tells the total size."""
        with self.open(f"bytes=-{n}") as resp:
            body = self._drain(resp, None)
        assert self.total is not None
        return self.total - len(body), body

    def _drain(self, resp: IO[bytes], want: int | None) -> bytes:
        out = bytearray()
        while want is None or len(out) < want:
            self.budget.timeout()
            try:
                piece = resp.read(PIECE if want is None else min(PIECE, want - len(out)))
            except (OSError, ValueError) as exc:
                raise self._fail(f"read failed: {exc}") from None
            if not piece:
                break
            self.budget.spend(len(piece))
            out += piece
        return bytes(out)

    def stream(self, start: int, stop: int) -> Iterator[bytes]:
        """Bytes [start, stop) in pieces, one Range request per :data:`WINDOW`."""
        pos = start
        while pos < stop:
            hi = min(stop, pos + WINDOW)
            with self.open(f"bytes={pos}-{hi - 1}") as resp:
                while pos < hi:
                    self.budget.timeout()
                    try:
                        piece = resp.read(min(PIECE, hi - pos))
                    except (OSError, ValueError) as exc:
                        raise self._fail(f"read failed at byte {pos}: {exc}") from None
                    if not piece:
                        raise self._fail(f"short read at byte {pos} of {stop}")
                    self.budget.spend(len(piece))
                    pos += len(piece)
                    yield piece


class _RangeFile(io.RawIOBase):
    """Seekable view of the remote wheel for :mod:`zipfile` (central directory only)."""

    def __init__(self, http: _Http, size: int, tail: tuple[int, bytes]) -> None:
        super().__init__()
        self._http, self._size, self._pos = http, size, 0
        self._segs = [tail]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = max(0, {0: 0, 1: self._pos, 2: self._size}[whence] + offset)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        if end <= self._pos:
            return b""
        seg = next(((s, d) for s, d in self._segs if s <= self._pos and end <= s + len(d)), None)
        if seg is None:
            lo = self._pos
            seg = (lo, self._http.read(lo, max(end, min(self._size, lo + TAIL))))
            self._segs.append(seg)
        s, d = seg
        out = d[self._pos - s: end - s]
        self._pos = end
        return out


def _inflate(info: zipfile.ZipInfo, compressed: Iterator[bytes], feed: Callable[[bytes], None],
             what: str) -> None:
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


def _result(ref: MemberRef, info: zipfile.ZipInfo, report: fatbin.FatbinReport, budget: _Budget,
            origin: str) -> DeepResult:
    return DeepResult(
        filename=ref.filename, sha256=ref.sha256, member=ref.member, member_size=info.file_size,
        compress_size=info.compress_size, crc32=info.CRC, archs=report.archs, ptx_isa=report.ptx_isa,
        containers=report.containers, entries=report.entries, region=report.region, outside=report.outside,
        bytes_transferred=budget.bytes, requests=budget.requests, seconds=time.monotonic() - budget.t0,
        read_at=_dt.date.today().isoformat(), origin=origin,
    )


def _read_http(ref: MemberRef, budget: _Budget) -> DeepResult:
    http = _Http(ref, budget)
    tail = http.tail(TAIL)
    assert http.total is not None
    try:
        with zipfile.ZipFile(_RangeFile(http, http.total, tail)) as zf:
            info = _member_info(zf, ref)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise Unavailable(f"{ref.filename}: not a readable wheel: {exc}", "re-lock") from None
    need = budget.bytes + 30 + len(info.filename.encode()) + 1024 + info.compress_size
    if need > budget.max_bytes:
        raise Unavailable(f"{ref.filename}: {ref.member} is {info.compress_size / 1e6:.1f} MB compressed, over the "
                          f"deep-read cap of {budget.max_bytes / 1e6:.1f} MB", "raise the byte cap")
    head = http.read(info.header_offset, info.header_offset + _LOCAL.size)
    sig, *_x, name_len, extra_len = _LOCAL.unpack(head)
    if sig != b"PK\x03\x04":
        raise Unavailable(f"{ref.filename}: no local header for {ref.member}", "re-lock or check the index")
    start = info.header_offset + _LOCAL.size + name_len + extra_len
    reader = fatbin.Reader()
    _inflate(info, http.stream(start, start + info.compress_size), reader.feed, f"{ref.filename}: {ref.member}")
    return _result(ref, info, reader.finish(), budget, "http")


def _read_file(ref: MemberRef, budget: _Budget) -> DeepResult:
    assert ref.path
    try:
        digest = hashlib.sha256()
        with open(ref.path, "rb") as raw:
            while block := raw.read(INFLATE_OUT):
                digest.update(block)
        if digest.hexdigest() != ref.sha256:
            raise Unavailable(f"{ref.filename}: sha256 differs from the lock", "re-lock or restore the file")
        with zipfile.ZipFile(ref.path) as zf:
            info = _member_info(zf, ref)
            reader = fatbin.Reader()
            with zf.open(info) as f:  # zipfile inflates and checks the CRC-32 itself
                while piece := f.read(INFLATE_OUT):
                    budget.timeout()
                    reader.feed(piece)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise Unavailable(f"{ref.filename}: cannot read {ref.member} from {ref.path}: {exc}",
                          "restore the file or re-lock") from None
    return _result(ref, info, reader.finish(), budget, "file")


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
