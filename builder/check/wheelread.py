"""Reading a wheel's METADATA and CUDA binaries: from a local file, or by HTTP
range requests from the URL in a lock, never downloading a large wheel whole.

This is the reading half of :mod:`builder.check.wheels` (which answers from its
cache first and only imports this module on a miss, so a warm check loads no
zip, socket or ELF code).

Remote reads fetch the zip's tail (end-of-central-directory and usually the
central directory), then METADATA, then the smallest extension modules until
one links ``libcudart``, within a byte budget per wheel: a member that does not fit
is not read and is named in the facts (``skipped``).  The total size the server reports must equal the size
in the lock; a small wheel is fetched whole and its sha256 checked.  Results are
cached as JSON keyed by the wheel's sha256, so a second check is offline.

Every read is bounded (through :mod:`builder._http`, the one reader): a total
deadline per request and per wheel, a byte cap per kind of read (zip tail and
directory, METADATA, ELF member, whole small wheel), an inflated-size cap and a
compression-ratio cap per member, regular files only for local paths, and
https/http/file URLs only.  Every failure is Unavailable (exit 3) with one
line; a lock naming another URL scheme is a LockFileError (exit 2).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from builder import _http
from builder.binaries import elf
from builder.check import ziptail
from builder.check.fetchplan import SMALL_WHEEL, FetchStats, NeedBinary, wants
from builder.check.model import Binary, WheelFacts, WheelRef
from builder.errors import LockFileError, Unavailable

TAIL = 64 * 1024  # first read: the zip's last 64 KiB (EOCD + most central directories)
HEAD = 64 * 1024  # when METADATA's record is not in the tail: the directory's first 64 KiB
READAHEAD = 64 * 1024  # a miss fetches at least this much (local header + small member)
BINARY_BUDGET = 2 * 1024 * 1024  # compressed bytes of extension members read per wheel
MEMBER_MAX = 32 * 1024 * 1024  # uncompressed bytes of one member held in memory to parse its ELF
MAX_MEMBERS = 6
HTTP_TIMEOUT = _http.READ_TIMEOUT  # one socket read may stall this long
#: Caps per kind of read (bytes).  A read past its cap is Unavailable, never a
#: MemoryError: the zip central directory, METADATA (inflated), one ELF member
#: (inflated), and a whole wheel (small wheels, or a server without Range support).
DIR_MAX = 16 * 1024 * 1024
METADATA_MAX = 16 * 1024 * 1024
ELF_MAX = 64 * 1024 * 1024
WHOLE_MAX = 64 * 1024 * 1024
#: Inflated/compressed ratio above which a member is refused as a zip bomb
#: (only for members inflating past RATIO_FLOOR: small members may compress well).
RATIO_MAX = 100
RATIO_FLOOR = 1024 * 1024
#: Seconds and bytes all requests for one wheel may take together (each one also
#: within _http.DEADLINE and its own cap).
WHEEL_DEADLINE = 120.0
WHEEL_BYTES = WHOLE_MAX + DIR_MAX + METADATA_MAX + 4 * BINARY_BUDGET
_SO = re.compile(r"\.so(\.\d+)*$")


def parse_metadata(data: bytes) -> tuple[str, str, tuple[str, ...]]:
    """(Name, Version, Requires-Dist) from METADATA.

    The stdlib header parser rather than ``packaging.metadata``: that one rejects
    real-world METADATA with unknown fields, and we need three headers.
    """
    from email.parser import BytesHeaderParser  # here: a warm check reads facts from the cache

    msg = BytesHeaderParser().parsebytes(data)
    return str(msg.get("Name", "")), str(msg.get("Version", "")), tuple(
        str(r) for r in (msg.get_all("Requires-Dist") or [])
    )


def _metadata_member(zf: zipfile.ZipFile) -> zipfile.ZipInfo:
    names = [i for i in zf.infolist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", i.filename)]
    if not names:
        raise zipfile.BadZipFile("no *.dist-info/METADATA")
    return names[0]


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, wheel: str, cap: int) -> bytes:
    """One member, inflated, refused past ``cap`` bytes or a zip-bomb ratio.

    The declared sizes are checked before anything is inflated; the inflated
    bytes are counted while reading too (zipfile stops at the declared size and
    checks the CRC, so a lying header ends in an error, not in a large buffer).
    """
    name = info.filename
    if info.file_size > cap:
        raise Unavailable(f"{wheel}: {name} inflates to {info.file_size} bytes, more than the "
                          f"{cap // (1024 * 1024)} MiB cap for this member", "the wheel is not what builder can "
                          "check; check its source")
    if info.file_size > RATIO_FLOOR and info.file_size > RATIO_MAX * max(info.compress_size, 1):
        raise Unavailable(f"{wheel}: {name} inflates {info.file_size // max(info.compress_size, 1)}:1 "
                          f"(cap {RATIO_MAX}:1): refused as a zip bomb", "check the wheel's source")
    out = bytearray()
    with zf.open(info) as fh:
        while True:
            chunk = fh.read(_http.CHUNK)
            if not chunk:
                break
            out += chunk
            if len(out) > cap:
                raise Unavailable(f"{wheel}: {name} inflates past the {cap // (1024 * 1024)} MiB cap",
                                  "check the wheel's source")
    return bytes(out)


@dataclass(frozen=True)
class Scan:
    """What reading a wheel's extension modules found, and what it left unread."""

    binary: Binary | None
    read: tuple[str, ...]
    extensions: int
    skipped: tuple[str, ...]
    sizes: tuple[tuple[str, int], ...]


def _scan_binaries(zf: zipfile.ZipFile, wheel: str, phase: Callable[[str, int], object] | None = None,
                   *, budget: int = BINARY_BUDGET) -> Scan:
    """Read extension modules, smallest first, until one links libcudart.

    Never more than ``budget`` compressed bytes per wheel, nor a member over
    :data:`MEMBER_MAX` uncompressed: a member that does not fit is skipped and named
    (xformers 0.0.31 has one extension, ``_C.so``, 13.6 MB compressed).  Each member
    read is bounded by :func:`read_member` (inflated-size and ratio caps).
    """
    exts = [i for i in zf.infolist() if _SO.search(i.filename) and ".libs/" not in i.filename
            and "libcudart" not in os.path.basename(i.filename)]
    exts.sort(key=lambda i: (i.compress_size, i.filename))
    read: list[str] = []
    skipped: list[str] = []
    spent = 0
    sizes = tuple(sorted((i.filename, i.file_size) for i in exts))
    if phase is not None:
        phase("ELF members", budget + (MAX_MEMBERS + 1) * READAHEAD)
    for info in exts:
        if len(read) >= MAX_MEMBERS:
            break
        if spent + info.compress_size > budget or info.file_size > MEMBER_MAX:
            skipped.append(f"{info.filename} ({info.compress_size:,} bytes compressed)")
            continue
        spent += info.compress_size
        read.append(info.filename)
        data = read_member(zf, info, wheel=wheel, cap=ELF_MAX)
        try:
            facts = elf.facts(data)
        except elf.ElfError:
            continue
        if facts.cudart_soname:
            binary = Binary(info.filename, facts.needed, facts.toolkit, tuple(elf.sm_archs(data)))
            return Scan(binary, tuple(read), len(exts), _named(skipped), sizes)
    return Scan(None, tuple(read), len(exts), _named(skipped), sizes)


def _named(items: list[str], most: int = 6) -> tuple[str, ...]:
    return tuple(items) if len(items) <= most else (*items[:most], f"{len(items) - most} more")


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches missing byte ranges
    on demand (so :mod:`zipfile` can read only what it needs).

    Fetches are charged to the current *phase* (zip directory, METADATA, ELF
    members), each with its own byte budget: a central directory or a local
    header that claims more than its kind may take ends in Unavailable.
    """

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, segments: list[tuple[int, bytes]],
                 *, wheel: str = "") -> None:
        super().__init__()
        self._fetch, self._size, self._segs, self._pos = fetch, size, segments, 0
        self._wheel, self._phase, self._left = wheel, "zip directory", DIR_MAX

    def phase(self, name: str, budget: int) -> None:
        self._phase, self._left = name, budget

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        out = bytearray()
        pos = self._pos
        while pos < end:
            seg = next(((s, d) for s, d in self._segs if s <= pos < s + len(d)), None)
            if seg is not None:
                s, d = seg
                take = min(end, s + len(d)) - pos
                out += d[pos - s: pos - s + take]
                pos += take
                continue
            nxt = min((s for s, _ in self._segs if s > pos), default=self._size)
            stop = min(nxt, max(end, pos + READAHEAD), self._size)
            if stop - pos > self._left:
                raise Unavailable(f"{self._wheel}: reading the {self._phase} needs more than its "
                                  f"{self._budget_label()} budget", "the wheel is not what builder can check "
                                  "by range requests; check its source")
            self._left -= stop - pos
            self._segs.append((pos, self._fetch(pos, stop)))
        self._pos = end
        return bytes(out)

    def _budget_label(self) -> str:
        return f"{(self._left + 1023) // 1024} KiB remaining"


def reported_size(filename: str, headers: Mapping[str, str], locked: int | None) -> int:
    """The file size a range reply's ``Content-Range`` reports; Unavailable when it
    reports none, or another size than the lock's (``locked``)."""
    m = re.search(r"/(\d+)$", headers.get("content-range", ""))
    if not m:
        raise Unavailable(f"{filename}: server did not report the file size",
                          "the index must honour HTTP Range requests")
    total = int(m.group(1))
    if locked is not None and total != locked:
        raise Unavailable(f"{filename}: server has {total} bytes, the lock says {locked}",
                          "the file changed since it was locked; re-lock or check the index")
    return total


class HttpReader:
    """Fetches byte ranges of one wheel URL through :mod:`builder._http` and checks
    them against the lock.  All its requests share ``budget`` seconds; each one is
    also bounded by ``_http.DEADLINE``."""

    def __init__(self, ref: WheelRef, stats: FetchStats, timeout: float = HTTP_TIMEOUT, *,
                 budget: float = WHEEL_DEADLINE, cancel: _http.Cancel | None = None) -> None:
        self.ref, self.stats, self.timeout, self.cancel = ref, stats, timeout, cancel
        self.budget = _http.Budget(budget, WHEEL_BYTES, ref.filename)
        self._first: tuple[int, bytes, int, bool] | None = None

    def _get(self, url: str, rng: str | None, cap: int, *, what: str) -> _http.Reply:
        try:
            reply = _http.fetch(url, what=f"{self.ref.filename} ({what})", max_bytes=cap, rng=rng,
                                read_timeout=self.timeout, cancel=self.cancel, budget=self.budget)
        except Unavailable:
            self.stats.add(0)
            raise
        self.stats.add(len(reply.body))
        return reply

    def _check_total(self, headers: Mapping[str, str]) -> int:
        return reported_size(self.ref.filename, headers, self.ref.size)

    def _verify_whole(self, body: bytes) -> None:
        if self.ref.size is not None and len(body) != self.ref.size:
            raise Unavailable(f"{self.ref.filename}: got {len(body)} bytes, the lock says {self.ref.size}",
                              "the file changed since it was locked; re-lock or check the index")
        if self.ref.sha256 and hashlib.sha256(body).hexdigest() != self.ref.sha256:
            raise Unavailable(f"{self.ref.filename}: sha256 differs from the lock",
                              "the file changed since it was locked; re-lock or check the index")

    def metadata_pep658(self) -> bytes | None:
        """PEP 658 ``URL.metadata`` if the index serves it, else None."""
        assert self.ref.url
        try:
            reply = self._get(self.ref.url + ".metadata", None, METADATA_MAX, what="PEP 658 metadata")
        except Unavailable as exc:
            if "HTTP 404" in exc.message:
                return None
            raise
        return reply.body

    def _tail(self) -> tuple[int, bytes, int, bool]:
        """(offset, bytes, total size, whole file?) of the first read, made once per reader.

        A server without Range support answers 200 with the whole file: allowed up
        to WHOLE_MAX (then checked whole), refused beyond by Content-Length.
        """
        if self._first is None:
            url = self.ref.url
            assert url
            reply = self._get(url, f"bytes=-{TAIL}", max(TAIL, min(self.ref.size or WHOLE_MAX, WHOLE_MAX)),
                              what="zip tail")
            if reply.status == 200:
                self._verify_whole(reply.body)
                self._first = (0, reply.body, len(reply.body), True)
            else:
                total = self._check_total(reply.headers)
                if reply.status != 206 or len(reply.body) > TAIL or len(reply.body) > total:
                    raise Unavailable(f"{self.ref.filename}: bad range reply from {_http.host_of(url)}",
                                      "the index must honour HTTP Range requests")
                self._first = (total - len(reply.body), reply.body, total, False)
        return self._first

    def _range(self, a: int, b: int, total: int) -> bytes:
        url = self.ref.url
        assert url
        r = self._get(url, f"bytes={a}-{b - 1}", b - a, what="byte range")
        if r.status != 206 or self._check_total(r.headers) != total or len(r.body) != b - a:
            raise Unavailable(f"{self.ref.filename}: bad range reply from {_http.host_of(url)}",
                              "the index must honour HTTP Range requests")
        return r.body

    def metadata_from_tail(self, small: int = SMALL_WHEEL) -> bytes | None:
        """METADATA located through the zip's last 64 KiB, or else the central directory's first
        64 KiB (:mod:`builder.check.ziptail`), without reading a large central directory; None
        when neither tells."""
        if self.ref.size is not None and self.ref.size <= small:
            return None
        base, body, total, whole = self._tail()
        if whole:
            return None
        m = ziptail.metadata_member(body, base)
        cd = ziptail.directory(body, base) if m is None else None
        if cd is not None and cd[0] < base:  # not in the tail: maybe among the directory's first records
            m = ziptail.head_metadata(self._range(cd[0], min(base, cd[0] + HEAD), total))
        if m is None:
            return None
        if m.file_size > METADATA_MAX:
            raise Unavailable(f"{self.ref.filename}: METADATA inflates to {m.file_size} bytes, more than "
                              f"the {METADATA_MAX // (1024 * 1024)} MiB cap", "check the wheel's source")
        a, b = ziptail.local_span(m)
        b = min(b, total)
        if b - a > METADATA_MAX + 2 * READAHEAD:
            raise Unavailable(f"{self.ref.filename}: METADATA's local entry spans {b - a} bytes",
                              "check the wheel's source")
        data = body[a - base: b - base] if a >= base else self._range(a, b, total)
        return ziptail.extract(m, data)

    def zipfile(self, small: int = SMALL_WHEEL) -> tuple[zipfile.ZipFile, Callable[[str, int], object] | None]:
        """The wheel as a ZipFile (whole when small, else by ranges) and its phase setter."""
        url = self.ref.url
        assert url
        if self.ref.size is not None and self.ref.size <= small:
            reply = self._get(url, None, min(self.ref.size, WHOLE_MAX), what="whole wheel")
            self._verify_whole(reply.body)
            return zipfile.ZipFile(io.BytesIO(reply.body)), None
        base, body, total, whole = self._tail()
        if whole:
            return zipfile.ZipFile(io.BytesIO(body)), None
        raw = RangeFile(lambda a, b: self._range(a, b, total), total, [(base, body)], wheel=self.ref.filename)
        return zipfile.ZipFile(raw), raw.phase


def _local_path(ref: WheelRef) -> Path | None:
    if ref.path:
        return Path(ref.path)
    if ref.url and _http.scheme_of(ref.url) == "file":
        return _http.local_path(ref.url)
    return None


def _check_url(ref: WheelRef) -> None:
    """A lock may name https, http or file URLs only (exit 2 otherwise: the lock is bad)."""
    if ref.url and not _http.supported(ref.url):
        raise LockFileError(f"{ref.filename}: the lock's URL {ref.url[:80]!r} uses "
                            f"{_http.scheme_of(ref.url) or 'no'} scheme; builder reads https, http and file "
                            "URLs only", "re-lock from an https index")


def read_local(path: Path, *, want_binary: bool = True) -> WheelFacts:
    """Facts of a wheel file on disk."""
    return fetch(WheelRef(name="", version="", filename=path.name, path=str(path)),
                 want_binary=want_binary)


def _read_file(ref: WheelRef, local: Path, want_binary: NeedBinary, *, want_files: bool = False) -> WheelFacts:
    """A local wheel: regular file only, size then sha256 checked (streamed), read in place."""
    with _http.open_regular(local, what=ref.filename) as fh:
        size = os.fstat(fh.fileno()).st_size
        if ref.size is not None and size != ref.size:
            raise Unavailable(f"{local.name}: the file has {size} bytes, the lock says {ref.size}",
                              "re-lock or restore the file")
        h = hashlib.sha256()
        while True:
            block = fh.read(1024 * 1024)
            if not block:
                break
            h.update(block)
        sha = h.hexdigest()
        if ref.sha256 and ref.sha256 != sha:
            raise Unavailable(f"{local.name}: sha256 differs from the lock", "re-lock or restore the file")
        ref = WheelRef(ref.name, ref.version, ref.filename, ref.url, str(local), sha, size)
        fh.seek(0)
        return _from_zip(lambda: (zipfile.ZipFile(fh), None), ref, want_binary, origin="file", want_files=want_files)


def fetch(ref: WheelRef, *, want_binary: NeedBinary, offline: bool = False, stats: FetchStats | None = None,
          small: int = SMALL_WHEEL, cancel: _http.Cancel | None = None, not_after: float | None = None,
          want_files: bool = False) -> WheelFacts:
    """Facts of one locked wheel read from a local file or by HTTP ranges (no cache: see
    :func:`builder.check.wheels.read_wheel`).

    ``not_after`` (a ``time.monotonic()`` value) ends the wheel's reads early
    when a whole check's time is running out.  ``want_files``: also keep the
    wheel's file list (its zip directory, read by range).
    """
    facts: WheelFacts | None = None
    _check_url(ref)
    local = _local_path(ref)
    if local is not None:
        facts = _read_file(ref, local, want_binary, want_files=want_files)
    else:
        if offline:
            raise Unavailable(f"{ref.filename}: not in the check cache and --offline was given",
                              "run the check once online to fill the cache")
        if not ref.url:
            raise Unavailable(f"{ref.filename}: the lock gives no URL or path", "re-lock")
        seconds = WHEEL_DEADLINE
        if not_after is not None:
            seconds = min(seconds, not_after - time.monotonic())
            if seconds <= 0:
                raise Unavailable(f"{ref.filename}: the check's time for reading wheels is spent",
                                  "the index is too slow; retry, or check the network")
        reader = HttpReader(ref, stats or FetchStats(), cancel=cancel, budget=seconds)
        if want_binary is not True and not want_files:
            # An index page that says the file has no PEP 658 metadata spares the request.
            meta = (reader.metadata_pep658() if ref.metadata_file is not False else None) \
                or reader.metadata_from_tail(small)
            if meta is not None:
                name, version, reqs = parse_metadata(meta)
                if not wants(want_binary, reqs):
                    facts = WheelFacts(ref.filename, ref.sha256, name or ref.name, version or ref.version,
                                       reqs, origin="http")
        if facts is None:
            facts = _from_zip(lambda: reader.zipfile(small), ref, want_binary, origin="http", want_files=want_files)
    assert facts is not None
    return facts


#: What a malformed or hostile zip raises inside zipfile/zlib, besides BadZipFile.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, zlib.error, struct.error,
               NotImplementedError, RuntimeError, OSError, OverflowError)


def _from_zip(opener: Callable[[], tuple[zipfile.ZipFile, Callable[[str, int], object] | None]], ref: WheelRef,
              need: NeedBinary, *, origin: str, want_files: bool = False) -> WheelFacts:
    try:
        zf, phase = opener()
        with zf:
            info = _metadata_member(zf)
            if phase is not None:
                phase("METADATA", METADATA_MAX + 2 * READAHEAD)
            name, version, reqs = parse_metadata(read_member(zf, info, wheel=ref.filename, cap=METADATA_MAX))
            scan = wants(need, reqs)
            found = _scan_binaries(zf, ref.filename, phase) if scan else Scan(None, (), 0, (), ())
            files = tuple(zf.namelist()) if want_files else None
    except Unavailable:
        raise
    except _ZIP_ERRORS as exc:
        raise Unavailable(f"{ref.filename}: not a readable wheel: {type(exc).__name__}: {str(exc)[:200]}",
                          "re-lock") from None
    return WheelFacts(ref.filename, ref.sha256, name or ref.name, version or ref.version, reqs,
                      scan, found.binary, found.read, found.extensions, origin, found.skipped, found.sizes, files)


