"""Reading a wheel's METADATA and CUDA binaries: from a local file, or by HTTP
range requests from the URL in a lock, never downloading a large wheel whole.

Remote reads fetch the zip's tail (end-of-central-directory and usually the
central directory), then METADATA, then the smallest extension modules until
one links ``libcudart``.  The total size the server reports must equal the size
in the lock; a small wheel is fetched whole and its sha256 checked.  Results are
cached as JSON keyed by the wheel's sha256, so a second check is offline.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from builder import elf
from builder.check.model import CACHE_SCHEMA, Binary, WheelFacts, WheelRef
from builder.errors import Unavailable

TAIL = 64 * 1024  # first read: the zip's last 64 KiB (EOCD + most central directories)
READAHEAD = 64 * 1024  # a miss fetches at least this much (local header + small member)
SMALL_WHEEL = 256 * 1024  # wheels up to this size are fetched whole and hash-checked
BINARY_BUDGET = 2 * 1024 * 1024  # compressed bytes of extension members read per wheel
MAX_MEMBERS = 6
HTTP_TIMEOUT = 30.0
_SO = re.compile(r"\.so(\.\d+)*$")


@dataclass
class FetchStats:
    """Network use of one check (thread-safe counters)."""

    requests: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += n


def default_cache_dir() -> Path:
    """$BUILDER_CACHE_DIR, else $XDG_CACHE_HOME/builder, else ~/.cache/builder."""
    explicit = os.environ.get("BUILDER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "builder"


class WheelCache:
    """JSON facts per wheel sha256 under ``DIR/wheels/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        return self.root / "wheels" / f"{sha256}.json"

    def get(self, sha256: str | None, want_binary: bool) -> WheelFacts | None:
        if not sha256:
            return None
        try:
            d = json.loads(self._path(sha256).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if d.get("schema") != CACHE_SCHEMA or (want_binary and not d.get("binary_scanned")):
            return None
        try:
            return WheelFacts.from_json(d)
        except (KeyError, TypeError):
            return None

    def put(self, facts: WheelFacts) -> None:
        if not facts.sha256:
            return
        from builder.fsio import atomic_write

        try:
            atomic_write(self._path(facts.sha256), json.dumps(facts.to_json(), indent=1))
        except OSError:
            pass  # a read-only cache only costs the next run a fetch


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


def _metadata_member(zf: zipfile.ZipFile) -> str:
    names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
    if not names:
        raise zipfile.BadZipFile("no *.dist-info/METADATA")
    return names[0]


def _scan_binaries(zf: zipfile.ZipFile) -> tuple[Binary | None, tuple[str, ...], int]:
    """Read extension modules, smallest first, until one links libcudart."""
    exts = [i for i in zf.infolist() if _SO.search(i.filename) and ".libs/" not in i.filename
            and "libcudart" not in os.path.basename(i.filename)]
    exts.sort(key=lambda i: i.compress_size)
    read: list[str] = []
    spent = 0
    for info in exts:
        if len(read) >= MAX_MEMBERS or (read and spent + info.compress_size > BINARY_BUDGET):
            break
        spent += info.compress_size
        read.append(info.filename)
        data = zf.read(info)
        try:
            facts = elf.facts(data)
        except elf.ElfError:
            continue
        if facts.cudart_soname:
            return Binary(info.filename, facts.needed, facts.toolkit, tuple(elf.sm_archs(data))), \
                tuple(read), len(exts)
    return None, tuple(read), len(exts)


class _RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches missing byte ranges
    on demand (so :mod:`zipfile` can read only what it needs)."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, segments: list[tuple[int, bytes]]):
        super().__init__()
        self._fetch, self._size, self._segs, self._pos = fetch, size, segments, 0

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
            self._segs.append((pos, self._fetch(pos, stop)))
        self._pos = end
        return bytes(out)


class HttpReader:
    """Fetches byte ranges of one wheel URL and checks them against the lock."""

    def __init__(self, ref: WheelRef, stats: FetchStats, timeout: float = HTTP_TIMEOUT) -> None:
        self.ref, self.stats, self.timeout = ref, stats, timeout

    def _open(self, url: str, rng: str | None) -> tuple[int, dict[str, str], bytes]:
        import urllib.error  # here: a warm check reads only the cache and need not load http.client
        import urllib.request

        headers = {"User-Agent": "builder-check/0.1"}
        if rng:
            headers["Range"] = rng
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (http/https only)
                body = resp.read()
                self.stats.add(len(body))
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
        except urllib.error.HTTPError as exc:
            self.stats.add(0)
            exc.close()  # its response holds the socket
            raise Unavailable(f"{self.ref.filename}: HTTP {exc.code} from {_host(url)}",
                              "check the network or the index; the cache has no entry for this wheel") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"{self.ref.filename}: cannot reach {_host(url)}: {reason}",
                              "check the network; the cache has no entry for this wheel") from None

    def _check_total(self, headers: dict[str, str]) -> int:
        m = re.search(r"/(\d+)$", headers.get("content-range", ""))
        if not m:
            raise Unavailable(f"{self.ref.filename}: server did not report the file size",
                              "the index must honour HTTP Range requests")
        total = int(m.group(1))
        if self.ref.size is not None and total != self.ref.size:
            raise Unavailable(f"{self.ref.filename}: server has {total} bytes, the lock says {self.ref.size}",
                              "the file changed since it was locked; re-lock or check the index")
        return total

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
            _st, _h, body = self._open(self.ref.url + ".metadata", None)
        except Unavailable as exc:
            if "HTTP 404" in exc.message:
                return None
            raise
        return body

    def zipfile(self, small: int = SMALL_WHEEL) -> zipfile.ZipFile:
        url = self.ref.url
        assert url
        if self.ref.size is not None and self.ref.size <= small:
            _st, _h, body = self._open(url, None)
            self._verify_whole(body)
            return zipfile.ZipFile(io.BytesIO(body))
        status, headers, body = self._open(url, f"bytes=-{TAIL}")
        if status == 200:  # no range support: we got it all, so check it all
            self._verify_whole(body)
            return zipfile.ZipFile(io.BytesIO(body))
        total = self._check_total(headers)

        def fetch(a: int, b: int) -> bytes:
            st, h, data = self._open(url, f"bytes={a}-{b - 1}")
            if st != 206 or self._check_total(h) != total or len(data) != b - a:
                raise Unavailable(f"{self.ref.filename}: bad range reply from {_host(url)}",
                                  "the index must honour HTTP Range requests")
            return data

        raw = _RangeFile(fetch, total, [(total - len(body), body)])
        return zipfile.ZipFile(raw)


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _local_path(ref: WheelRef) -> Path | None:
    if ref.path:
        return Path(ref.path)
    if ref.url and ref.url.startswith("file://"):
        from urllib.request import url2pathname

        return Path(url2pathname(urllib.parse.urlsplit(ref.url).path))
    return None


def read_local(path: Path, want_binary: bool = True) -> WheelFacts:
    """Facts of a wheel file on disk."""
    return read_wheel(WheelRef(name="", version="", filename=path.name, path=str(path)),
                      want_binary=want_binary)


NeedBinary = bool | Callable[[tuple[str, ...]], bool]
"""Read binaries always, never, or as decided from the wheel's Requires-Dist."""


def _wants(need: NeedBinary, reqs: tuple[str, ...]) -> bool:
    return need(reqs) if callable(need) else need


def read_wheel(ref: WheelRef, *, want_binary: NeedBinary, cache: WheelCache | None = None,
               offline: bool = False, stats: FetchStats | None = None,
               small: int = SMALL_WHEEL) -> WheelFacts:
    """Facts of one locked wheel: from the cache, a local file or HTTP ranges."""
    if cache is not None:
        hit = cache.get(ref.sha256, want_binary=False)
        if hit is not None and (hit.binary_scanned or not _wants(want_binary, hit.requires_dist)):
            return hit
    facts: WheelFacts | None = None
    local = _local_path(ref)
    if local is not None:
        try:
            data = local.read_bytes()
        except OSError as exc:
            raise Unavailable(f"{ref.filename}: cannot read {local}: {exc.strerror}",
                              "restore the file or re-lock") from None
        sha = hashlib.sha256(data).hexdigest()
        if ref.sha256 and ref.sha256 != sha:
            raise Unavailable(f"{local.name}: sha256 differs from the lock", "re-lock or restore the file")
        ref = WheelRef(ref.name, ref.version, ref.filename, ref.url, str(local), sha, len(data))
        facts = _from_zip(lambda: zipfile.ZipFile(io.BytesIO(data)), ref, want_binary, "file")
    else:
        if offline:
            raise Unavailable(f"{ref.filename}: not in the check cache and --offline was given",
                              "run the check once online to fill the cache")
        if not ref.url:
            raise Unavailable(f"{ref.filename}: the lock gives no URL or path", "re-lock")
        reader = HttpReader(ref, stats or FetchStats())
        if want_binary is not True:
            meta = reader.metadata_pep658()
            if meta is not None:
                name, version, reqs = parse_metadata(meta)
                if not _wants(want_binary, reqs):
                    facts = WheelFacts(ref.filename, ref.sha256, name or ref.name, version or ref.version,
                                       reqs, origin="http")
        if facts is None:
            facts = _from_zip(lambda: reader.zipfile(small), ref, want_binary, "http")
    assert facts is not None
    if cache is not None:
        cache.put(facts)
    return facts


def _from_zip(opener: Callable[[], zipfile.ZipFile], ref: WheelRef, need: NeedBinary,
              origin: str) -> WheelFacts:
    try:
        with opener() as zf:
            name, version, reqs = parse_metadata(zf.read(_metadata_member(zf)))
            scan = _wants(need, reqs)
            binary, read, n = _scan_binaries(zf) if scan else (None, (), 0)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise Unavailable(f"{ref.filename}: not a readable wheel: {exc}", "re-lock") from None
    return WheelFacts(ref.filename, ref.sha256, name or ref.name, version or ref.version, reqs,
                      scan, binary, read, n, origin)


def read_wheels(jobs: Iterable[tuple[WheelRef, NeedBinary]], *, cache: WheelCache | None, offline: bool,
                stats: FetchStats, workers: int = 8, small: int = SMALL_WHEEL) -> dict[str, WheelFacts]:
    """Read many wheels concurrently; returns filename -> facts.  The first error is raised."""
    todo = list(jobs)
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
        futs = [(ref, pool.submit(read_wheel, ref, want_binary=wb, cache=cache, offline=offline,
                                  stats=stats, small=small)) for ref, wb in todo]
        return {ref.filename: f.result() for ref, f in futs}
