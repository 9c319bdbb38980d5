"""builder/_http.py and the wheel reads built on it: every read is bounded in time
and bytes, against REAL slow, huge and lying local servers (tests/helpers/httpserver.py),
real zip bombs built here, real FIFOs and device files.  Bounds are asserted in
seconds, bytes and the peak memory (VmHWM) of a real `builder check` process."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import _http
from builder.check import wheels
from builder.errors import LockFileError, Unavailable
from tests.helpers import httpserver, rss
from tests.helpers import wheels as hw
from tests.helpers.httpserver import Misbehave

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, httpserver.Stats, Path]]:
    d = tmp_path / "www"
    d.mkdir()
    (d / "small.bin").write_bytes(os.urandom(5000))
    with httpserver.serve(d) as (url, stats):
        yield url, stats, d


def _timed(fn: object, *args: object, **kw: object) -> tuple[float, BaseException | None]:
    t = time.monotonic()
    try:
        fn(*args, **kw)  # type: ignore[operator]
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        return time.monotonic() - t, exc
    return time.monotonic() - t, None


# --------------------------------------------------------------------------- time bounds
def test_drip_fed_body_is_cut_at_the_total_deadline(site) -> None:
    url, stats, _ = site
    stats.misbehave["/small.bin"] = Misbehave(drip=0.2)  # 5000 bytes at 5 B/s: 1000 s
    took, exc = _timed(_http.fetch, f"{url}/small.bin", what="w", max_bytes=10_000, deadline=1.5,
                       read_timeout=1.0)
    assert isinstance(exc, Unavailable) and "no complete answer within 1.5s" in exc.message
    assert 1.4 < took < 3.0  # each byte arrived well within the per-read timeout: only the total bound bites


def test_drip_fed_headers_are_cut_at_the_total_deadline(site) -> None:
    url, stats, _ = site
    stats.misbehave["/small.bin"] = Misbehave(drip_headers=0.2)
    took, exc = _timed(_http.fetch, f"{url}/small.bin", what="w", max_bytes=10_000, deadline=1.0)
    assert isinstance(exc, Unavailable) and "within 1s" in exc.message
    assert took < 2.5


def test_cancel_wakes_a_blocked_reader_at_once(site) -> None:
    import threading

    url, stats, _ = site
    stats.misbehave["/small.bin"] = Misbehave(drip=5.0)
    cancel = _http.Cancel()
    threading.Timer(0.5, cancel.cancel).start()
    took, exc = _timed(_http.fetch, f"{url}/small.bin", what="w", max_bytes=10_000, deadline=60,
                       cancel=cancel)
    assert isinstance(exc, Unavailable) and "cancelled" in exc.message and took < 2.0


# --------------------------------------------------------------------------- byte bounds
def test_huge_content_length_is_refused_before_the_body(site) -> None:
    url, stats, _ = site
    stats.misbehave["/small.bin"] = Misbehave(content_length=10**12)
    took, exc = _timed(_http.fetch, f"{url}/small.bin", what="w", max_bytes=1 << 20)
    assert isinstance(exc, Unavailable) and "announces 1000000000000 bytes" in exc.message and took < 2


def test_endless_body_is_cut_at_the_cap(site) -> None:
    url, stats, _ = site
    stats.misbehave["/small.bin"] = Misbehave(endless=True)
    got = 0
    with pytest.raises(Unavailable, match="sent more than the 1 MiB cap"):
        with _http.open_url(f"{url}/small.bin", what="w", max_bytes=1 << 20) as r:
            for chunk in r.chunks():
                got += len(chunk)
    assert got <= 1 << 20


def test_redirect_to_ftp_and_https_downgrade_are_refused(site) -> None:
    url, stats, _ = site
    stats.misbehave["/a.whl"] = Misbehave(redirect="ftp://example.org/a.whl")
    with pytest.raises(Unavailable, match="redirected to 'ftp://example.org/a.whl'"):
        _http.fetch(f"{url}/a.whl", what="w", max_bytes=100)
    stats.misbehave["/b.whl"] = Misbehave(redirect="/small.bin")  # http -> http is followed
    assert len(_http.fetch(f"{url}/b.whl", what="w", max_bytes=10_000).body) == 5000


@pytest.mark.parametrize("url", ["ftp://example.org/x.whl", "data:application/zip;base64,UEsFBg==",
                                 "gopher://x/y"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(Unavailable, match="only https, http and file"):
        _http.fetch(url, what="w", max_bytes=10)
    ref = wheels.WheelRef(name="torch", version="1", filename="torch-1-py3-none-any.whl", url=url)
    with pytest.raises(LockFileError, match="builder reads https, http and file URLs only"):
        wheels.read_wheel(ref, want_binary=False)


# --------------------------------------------------------------------------- exchange (serve endpoints)
def test_exchange_returns_any_status_and_is_bounded_like_every_read(site) -> None:
    """The serve probe's request: the status is data (404 is no error), the total deadline cuts
    dripped headers and a dripped body, the cap an endless one; a refused connect is NoConnection."""
    url, stats, _ = site
    reply = _http.exchange(f"{url}/nothing-here", what="w", deadline=5, max_bytes=10_000)
    assert reply.status == 404
    reply = _http.exchange(f"{url}/small.bin", method="POST", body=b"{}", what="w", deadline=5, max_bytes=10_000)
    assert reply.status in (404, 405, 501)  # the test server has no POST: still an answer, not an error
    stats.misbehave["/small.bin"] = Misbehave(drip_headers=0.2)
    took, exc = _timed(_http.exchange, f"{url}/small.bin", what="w", deadline=1.0, max_bytes=10_000)
    assert isinstance(exc, _http.Incomplete) and exc.reason == "no response within 1.0s" and took < 2.0
    stats.misbehave["/small.bin"] = Misbehave(drip=0.2)
    took, exc = _timed(_http.exchange, f"{url}/small.bin", what="w", deadline=1.0, max_bytes=10_000)
    assert isinstance(exc, _http.Incomplete) and took < 2.0
    assert exc.reason.startswith("HTTP 200 but the body stalled after ") and " of 5000 bytes" in exc.reason
    stats.misbehave["/small.bin"] = Misbehave(endless=True)
    with pytest.raises(_http.Incomplete, match="larger than the 1 MiB cap"):
        _http.exchange(f"{url}/small.bin", what="w", deadline=10, max_bytes=1 << 20)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(_http.NoConnection) as ei:
            _http.exchange(f"http://127.0.0.1:{port}/health", what="w", deadline=5, max_bytes=10)
    assert ei.value.reason == "connection refused"


# --------------------------------------------------------------------------- streaming ranges
def test_iter_range_streams_http_and_file_ranges(site, tmp_path: Path) -> None:
    url, stats, d = site
    data = (d / "small.bin").read_bytes()
    got = list(_http.iter_range(f"{url}/small.bin", 100, 4100, what="m", max_bytes=4000, chunk=1000,
                                expect_total=5000))
    assert b"".join(got) == data[100:4100] and max(len(c) for c in got) <= 1000
    assert stats.ranges[-1] == "bytes=100-4099"
    assert b"".join(_http.iter_range(d / "small.bin", 10, 20, what="m", max_bytes=10)) == data[10:20]
    assert b"".join(_http.iter_range((d / "small.bin").as_uri(), 0, 5, what="m", max_bytes=5)) == data[:5]
    with pytest.raises(Unavailable, match="more than the"):
        list(_http.iter_range(f"{url}/small.bin", 0, 5000, what="m", max_bytes=100))
    with pytest.raises(Unavailable, match="expected 4999"):
        list(_http.iter_range(f"{url}/small.bin", 0, 10, what="m", max_bytes=100, expect_total=4999))
    stats.misbehave["/small.bin"] = Misbehave(drip=0.3)
    took, exc = _timed(lambda: list(_http.iter_range(f"{url}/small.bin", 0, 5000, what="m", max_bytes=5000,
                                                     deadline=1.0)))
    assert isinstance(exc, Unavailable) and took < 2.5


# --------------------------------------------------------------------------- local files
def test_dev_zero_fifo_and_directory_are_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "w.whl"
    os.mkfifo(fifo)
    for path, kind in (("/dev/zero", "a device"), (str(fifo), "a FIFO"), (str(tmp_path), "a directory")):
        ref = wheels.WheelRef(name="torch", version="1", filename="torch-1-py3-none-any.whl", path=path)
        took, exc = _timed(wheels.read_wheel, ref, want_binary=True)
        assert isinstance(exc, Unavailable) and f"is {kind}, not a regular file" in exc.message, exc
        assert took < 1.0  # a FIFO without a writer does not block the open


def test_local_wheel_size_is_checked_before_hashing(tmp_path: Path) -> None:
    whl = hw.make_wheel(tmp_path, "pure", "1.0")
    ref = wheels.WheelRef(name="pure", version="1.0", filename=whl.name, path=str(whl), size=10**9)
    with pytest.raises(Unavailable, match=r"the file has \d+ bytes, the lock says 1000000000"):
        wheels.read_wheel(ref, want_binary=False)


# --------------------------------------------------------------------------- zip bombs
def _bomb(dest: Path, inflated: int, *, lie: int | None = None, name: str = "bomb", version: str = "1.0",
          tag: str = "py3-none-any") -> Path:
    """A real wheel whose METADATA is ``inflated`` bytes (headers first, then zeros).

    With ``lie`` the central directory and local header claim that size instead
    (zipfile stops there and the CRC fails).
    """
    dest.mkdir(parents=True, exist_ok=True)
    whl = dest / f"{name}-{version}-{tag}.whl"
    head = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{name}/__init__.py", "")
        with zf.open(f"{name}-{version}.dist-info/METADATA", "w", force_zip64=inflated > zipfile.ZIP64_LIMIT) as fh:
            fh.write(head)
            block, left = bytes(1 << 22), inflated - len(head)
            while left > 0:
                fh.write(block[:left])
                left -= len(block)
    if lie is not None:
        raw = bytearray(whl.read_bytes())
        member = f"{name}-{version}.dist-info/METADATA".encode()
        local, central = raw.index(member) - 30, raw.rindex(member) - 46  # the local header, the directory entry
        assert raw[local:local + 4] == b"PK\x03\x04" and raw[central:central + 4] == b"PK\x01\x02"
        for start, off in ((local, 22), (central, 24)):  # their uncompressed-size fields
            raw[start + off:start + off + 4] = lie.to_bytes(4, "little")
        whl.write_bytes(bytes(raw))
    return whl


GIB2 = 2 << 30


def _big_bomb(dest: Path, name: str, version: str, tag: str, blocks: int) -> Path:
    """Like :func:`_bomb`, for gigabytes: the deflate stream is one 16 MiB block of zeros,
    compressed once and ended with a full flush (so it needs no earlier history), repeated
    ``blocks`` times; the zip is written by hand (zipfile cannot store pre-compressed data)."""
    import struct
    import zlib

    size = 16 << 20
    head = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
    first = head + bytes(size - len(head))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(first) + c.flush(zlib.Z_FULL_FLUSH)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = c.compress(bytes(size)) + c.flush(zlib.Z_FULL_FLUSH)
    stream = data + zeros * (blocks - 1) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = zlib.crc32(first)
    z = bytes(size)
    for _ in range(blocks - 1):
        crc = zlib.crc32(z, crc)
    members = [(f"{name}/__init__.py", b"", 0, 0, 0), (f"{name}-{version}.dist-info/METADATA", stream, crc,
                                                          size * blocks, 8)]
    out, cd = bytearray(), bytearray()
    for member, blob, mcrc, usize, method in members:
        nb, off = member.encode(), len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, mcrc, len(blob), usize,
                           len(nb), 0) + nb + blob
        cd += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, mcrc, len(blob),
                          usize, len(nb), 0, 0, 0, 0, 0, off) + nb
    out += cd + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(cd),
                            len(out), 0)
    dest.mkdir(parents=True, exist_ok=True)
    whl = dest / f"{name}-{version}-{tag}.whl"
    whl.write_bytes(bytes(out))
    return whl


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-2.9.0 whose METADATA inflates to 2 GiB, in a wheel of about 2 MB (built once)."""
    whl = _big_bomb(tmp_path_factory.mktemp("bomb"), "torch", "2.9.0", "cp312-cp312-manylinux_2_28_x86_64", 128)
    with zipfile.ZipFile(whl) as zf:  # a valid zip whose member says what it inflates to
        info = zf.getinfo("torch-2.9.0.dist-info/METADATA")
        assert info.file_size == GIB2 and info.compress_size < 4 << 20
        with zf.open(info) as fh:
            assert fh.read(13) == b"Metadata-Vers"
    return whl


def test_metadata_bomb_over_the_inflated_cap_is_refused_without_inflating(bomb: Path) -> None:
    assert bomb.stat().st_size < 4 << 20
    ref = wheels.WheelRef(name="torch", version="2.9.0", filename=bomb.name, path=str(bomb))
    took, exc = _timed(wheels.read_wheel, ref, want_binary=False)
    assert isinstance(exc, Unavailable) and "inflates to 2147483648 bytes, more than the 16 MiB cap" in exc.message
    assert took < 2.0


def test_metadata_bomb_under_the_cap_is_refused_by_ratio(tmp_path: Path) -> None:
    whl = _bomb(tmp_path, 8 << 20)  # 8 MiB of zeros: ~1000:1
    ref = wheels.WheelRef(name="bomb", version="1.0", filename=whl.name, path=str(whl))
    with pytest.raises(Unavailable, match=r"inflates \d+:1 \(cap 100:1\): refused as a zip bomb"):
        wheels.read_wheel(ref, want_binary=False)


def test_metadata_that_lies_about_its_size_is_an_unreadable_wheel(tmp_path: Path) -> None:
    whl = _bomb(tmp_path, 64 << 20, lie=200)
    ref = wheels.WheelRef(name="bomb", version="1.0", filename=whl.name, path=str(whl))
    with pytest.raises(Unavailable, match="not a readable wheel: BadZipFile: Bad CRC-32"):
        wheels.read_wheel(ref, want_binary=False)


def test_metadata_bomb_over_http_ranges(bomb: Path) -> None:
    whl = bomb
    data = whl.read_bytes()
    with httpserver.serve(whl.parent) as (url, stats):
        ref = wheels.WheelRef(name="torch", version="2.9.0", filename=whl.name, url=f"{url}/{whl.name}",
                              sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        with pytest.raises(Unavailable, match="more than the 16 MiB cap"):
            wheels.read_wheel(ref, want_binary=False, small=0)
        assert stats.bytes_sent < 2 * 64 * 1024 + 100  # tail and the METADATA header, not the member


# --------------------------------------------------------------------------- the real command
LOCK = """\
lock-version = "1.0"
created-by = "test"
requires-python = ">=3.12"

[[packages]]
name = "torch"
version = "2.9.0"
wheels = [{{ url = "{url}", size = {size}, hashes = {{ sha256 = "{sha}" }} }}]
"""


def _check(lock: Path, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "BUILDER_PROJECT": "", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "builder", "check", "--lock", str(lock), "--python", "3.12",
                             "--driver", "575.57.08", "--gpu-cc", "8.9", "--glibc", "2.35",
                             "--cache-dir", str(tmp_path / "cache")], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _lock(tmp_path: Path, url: str, size: int = 400_000_000, sha: str = "0" * 64) -> Path:
    lock = tmp_path / "pylock.toml"
    lock.write_text(LOCK.format(url=url, size=size, sha=sha))
    return lock


def test_sigint_interrupts_check_on_a_drip_feeding_server(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    name = "torch-2.9.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    with httpserver.serve(www) as (url, stats):
        stats.misbehave[f"/{name}"] = Misbehave(drip=2.0)
        proc = _check(_lock(tmp_path, f"{url}/{name}"), tmp_path)
        until = time.monotonic() + 60
        while stats.bytes_sent < 2 and time.monotonic() < until:  # builder is inside the drip-fed read
            time.sleep(0.05)
        assert stats.bytes_sent >= 2
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
        took = time.monotonic() - t
    assert proc.returncode == 130 and "interrupted" in err, err
    assert took < 2.0


def _rss_of(lock: Path, tmp_path: Path) -> tuple[int, str, int]:
    """Run the same check as :func:`_check`, measuring its own peak memory (VmHWM)."""
    env = {**os.environ, "BUILDER_PROJECT": "", "PYTHONPATH": str(ROOT)}
    m = rss.run_builder(["check", "--lock", str(lock), "--python", "3.12", "--driver", "575.57.08", "--gpu-cc",
                         "8.9", "--glibc", "2.35", "--cache-dir", str(tmp_path / "cache")], cwd=tmp_path, env=env)
    return m.returncode, m.stdout + m.stderr, m.peak_bytes


@pytest.mark.parametrize("bad", [Misbehave(content_length=50 * 10**9), Misbehave(endless=True)],
                         ids=["huge-content-length", "endless-body"])
def test_check_against_a_huge_or_endless_reply_exits_3_in_bounded_memory(tmp_path: Path, bad: Misbehave) -> None:
    www = tmp_path / "www"
    www.mkdir()
    name = "torch-2.9.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    with httpserver.serve(www) as (url, stats):
        stats.misbehave[f"/{name}"] = bad
        t = time.monotonic()
        code, text, peak = _rss_of(_lock(tmp_path, f"{url}/{name}"), tmp_path)
        took = time.monotonic() - t
    assert code == 3 and text.count("\n") == 1 and "builder: error:" in text and "cap" in text, text
    assert took < 10 and peak < 150 * 2**20, (took, peak)


def test_check_of_a_metadata_bomb_and_of_dev_zero(bomb: Path, tmp_path: Path) -> None:
    data = bomb.read_bytes()
    with httpserver.serve(bomb.parent) as (url, _stats):
        code, text, peak = _rss_of(_lock(tmp_path, f"{url}/{bomb.name}", len(data),
                                         hashlib.sha256(data).hexdigest()), tmp_path)
    assert code == 3 and "inflates to 2147483648 bytes" in text and peak < 150 * 2**20, (text, peak)
    lock = tmp_path / "pylock.toml"
    named = 'name = "torch-2.9.0-cp312-cp312-manylinux_2_28_x86_64.whl", path = "/dev/zero", '
    lock.write_text(LOCK.replace('url = "{url}", size = {size}, ', named).format(sha="0" * 64))
    code, text, _peak = _rss_of(lock, tmp_path)
    assert code == 3 and "/dev/zero is a device, not a regular file" in text and text.count("\n") == 1, text


def test_check_of_a_lock_with_an_ftp_url_is_a_bad_lock(tmp_path: Path) -> None:
    code, text, _ = _rss_of(_lock(tmp_path, "ftp://example.org/torch-2.9.0-py3-none-any.whl"), tmp_path)
    assert code == 2 and "builder reads https, http and file URLs only" in text, text


def test_a_budget_bounds_a_member_streamed_in_windows(site) -> None:
    """The deep fatbin read streams one member in windows of range requests: one budget of
    seconds and bytes covers them all, over HTTP and for a local file."""
    url, stats, d = site
    for src in (f"{url}/small.bin", d / "small.bin"):
        budget = _http.Budget(30, 3000, "vllm/_C.abi3.so")
        got = b"".join(_http.iter_range(src, 0, 2000, what="w1", max_bytes=2000, budget=budget))
        assert len(got) == 2000 and budget.spent == 2000
        with pytest.raises(Unavailable, match="more than 2.9 KiB read in total"):
            list(_http.iter_range(src, 2000, 4000, what="w2", max_bytes=2000, budget=budget))
    stats.misbehave["/small.bin"] = Misbehave(drip=0.2)
    budget = _http.Budget(1.0, 10**6, "vllm/_C.abi3.so")
    took, exc = _timed(lambda: [list(_http.iter_range(f"{url}/small.bin", a, a + 100, what="w", max_bytes=100,
                                                      budget=budget)) for a in range(0, 1000, 100)])
    assert isinstance(exc, Unavailable) and took < 2.5


def test_all_wheel_reads_of_one_check_share_one_deadline(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    refs = []
    with httpserver.serve(www) as (url, stats):
        for i in range(12):  # more wheels than worker threads: later ones start after earlier ones
            name = f"pkg{i}-1.0-py3-none-any.whl"
            stats.misbehave[f"/{name}"] = Misbehave(drip=0.5)
            refs.append((wheels.WheelRef(name=f"pkg{i}", version="1.0", filename=name, url=f"{url}/{name}",
                                         sha256=f"{i:064x}", size=10**6), True))
        t = time.monotonic()
        with pytest.raises(Unavailable):
            wheels.read_wheels(refs, cache=None, offline=False, stats=wheels.FetchStats(), small=0, deadline=2.0)
        assert time.monotonic() - t < 4.0


def test_a_host_is_resolved_once_and_by_one_thread_at_a_time(site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight concurrent reads of one host make one DNS lookup (concurrent lookups of one name can
    lose an answer in the resolver and stall 5 s); a failed lookup is not kept."""
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    url, stats, root = site
    (root / "f.bin").write_bytes(b"x" * 1000)
    host = url.split("//")[1].split(":")[0]
    real, calls, inside, most = socket.getaddrinfo, [], [0], [0]
    lock = threading.Lock()

    def counting(*a: object, **k: object) -> object:
        with lock:
            calls.append(a[0])
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        with lock:
            inside[0] -= 1
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    monkeypatch.setattr(_http, "_DNS", {})
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _i: _http.fetch(f"{url}/f.bin", what="t", max_bytes=10_000).body, range(8)))
    assert bodies == [b"x" * 1000] * 8 and calls == [host] and most[0] == 1 and stats.requests == 8

    def failing(*a: object, **k: object) -> object:
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", failing)
    with pytest.raises(Unavailable, match="Temporary failure in name resolution"):
        _http.fetch("http://nowhere.invalid/f.bin", what="t", max_bytes=10)
    assert ("nowhere.invalid", 80) not in _http._DNS
