"""Streaming one member out of a wheel by HTTP ranges (builder.check.deepread), against the
local range server with a wheel built here around a real CUDA extension."""

from __future__ import annotations

import hashlib
import lzma
import os
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from builder.binaries import fatbin
from builder.check import deepread
from builder.errors import Unavailable
from tests.helpers.httpserver import Misbehave, Stats, serve

EXT = Path(__file__).parent / "data" / "fatbin" / "vllm-0.13.0-_flashmla_extension_C.abi3.so.xz"
MEMBER = "vllm/_flashmla_extension_C.abi3.so"


@pytest.fixture(scope="module")
def ext() -> bytes:
    return lzma.decompress(EXT.read_bytes())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, ext: bytes) -> Path:
    path = tmp_path_factory.mktemp("wheels") / "fake_vllm-0.0.1-cp38-abi3-manylinux_2_31_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("vllm/__init__.py", "", compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("vllm/noise.bin", os.urandom(300_000), compress_type=zipfile.ZIP_STORED)
        zf.writestr(MEMBER, ext, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
        zf.writestr("vllm/stored.abi3.so", ext, compress_type=zipfile.ZIP_STORED)
        for i in range(3000):  # a central directory larger than the first 64 KiB read
            zf.writestr(f"vllm/pad/{i:05d}.py", f"# {i}\n", compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("fake_vllm-0.0.1.dist-info/METADATA", "Name: fake-vllm\nVersion: 0.0.1\n")
    return path


@pytest.fixture()
def server(wheel: Path) -> Iterator[tuple[str, Stats]]:
    with serve(wheel.parent) as (base, stats):
        yield f"{base}/{wheel.name}", stats


def _ref(wheel: Path, where: str | None, member: str = MEMBER, **kw: object) -> deepread.MemberRef:
    data = wheel.read_bytes()
    base = deepread.MemberRef(filename=wheel.name, sha256=hashlib.sha256(data).hexdigest(), member=member,
                              url=where, size=len(data))
    return replace(base, **kw)  # type: ignore[arg-type]


def test_streamed_member_reads_like_the_whole_file(wheel: Path, server: tuple[str, Stats], ext: bytes,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deepread, "WINDOW", 64 * 1024)  # several range requests
    url, stats = server
    r = deepread.deep_read(_ref(wheel, url))
    whole = fatbin.read_bytes(ext)
    assert (r.archs, r.containers, r.entries, r.region) == (whole.archs, 2, 4, ".nv_fatbin")
    info = zipfile.ZipFile(wheel).getinfo(MEMBER)
    assert (r.member_size, r.compress_size, r.crc32) == (len(ext), info.compress_size, info.CRC)
    # Bytes: the member's compressed bytes plus the zip tail, central directory and local header.
    assert r.bytes_transferred == stats.bytes_sent
    assert info.compress_size < r.bytes_transferred < info.compress_size + 300_000 < wheel.stat().st_size
    assert r.requests == stats.requests and r.requests >= info.compress_size // (64 * 1024)
    assert all(rng.startswith("bytes=") for rng in stats.ranges) and r.origin == "http"


def test_stored_member(wheel: Path, server: tuple[str, Stats], ext: bytes) -> None:
    r = deepread.deep_read(_ref(wheel, server[0], member="vllm/stored.abi3.so"))
    assert r.archs == fatbin.read_bytes(ext).archs and r.compress_size == len(ext)


def test_result_is_cached_by_wheel_sha256(wheel: Path, server: tuple[str, Stats], tmp_path: Path) -> None:
    url, stats = server
    cache = deepread.DeepCache(tmp_path)
    first = deepread.deep_read(_ref(wheel, url), cache=cache)
    n = stats.requests
    again = deepread.deep_read(_ref(wheel, url), cache=cache, offline=True)
    assert stats.requests == n and again.origin == "cache"
    assert replace(again, origin="http", seconds=first.seconds) == replace(first, seconds=first.seconds)
    saved = (tmp_path / "kernels" / f"{first.sha256}.json").read_text()
    assert '"vllm/_flashmla_extension_C.abi3.so"' in saved and '"sm_90a"' in saved


def test_offline_without_cache_entry(wheel: Path, server: tuple[str, Stats], tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="not in the deep-read cache and --offline was given"):
        deepread.deep_read(_ref(wheel, server[0]), cache=deepread.DeepCache(tmp_path), offline=True)


def test_size_differs_from_the_lock(wheel: Path, server: tuple[str, Stats]) -> None:
    with pytest.raises(Unavailable, match=r"server has \d+ bytes, the lock says 123"):
        deepread.deep_read(_ref(wheel, server[0], size=123))


def test_missing_member(wheel: Path, server: tuple[str, Stats]) -> None:
    with pytest.raises(Unavailable, match="no member vllm/_C.abi3.so"):
        deepread.deep_read(_ref(wheel, server[0], member="vllm/_C.abi3.so"))


def test_byte_cap_is_checked_before_streaming(wheel: Path, server: tuple[str, Stats]) -> None:
    url, stats = server
    info = zipfile.ZipFile(wheel).getinfo(MEMBER)
    with pytest.raises(Unavailable, match=rf"is {info.compress_size / 1e6:.1f} MB compressed, over the deep-read cap "
                                          r"of 0\.4 MB$") as exc:
        deepread.deep_read(_ref(wheel, url), max_bytes=400_000)
    assert exc.value.hint == "raise the byte cap"
    assert stats.ranges[0] == "bytes=-65536" and len(stats.ranges) == 2  # tail, then the rest of the directory
    assert not any(r.startswith(f"bytes={info.header_offset}-") for r in stats.ranges)  # member not touched
    with pytest.raises(Unavailable, match="passed its cap of 0.1 MB"):
        deepread.deep_read(_ref(wheel, url), max_bytes=100_000)


def test_deadline(wheel: Path, server: tuple[str, Stats]) -> None:
    with pytest.raises(Unavailable, match="took over 0 s"):
        deepread.deep_read(_ref(wheel, server[0]), deadline_s=0)


def test_deadline_holds_against_a_drip_feeding_server(wheel: Path, server: tuple[str, Stats]) -> None:
    # Headers one byte per 0.2 s: every socket read succeeds, so only a total deadline ends it
    # (the reader before builder._http waited the whole ~16 s here).
    url, stats = server
    stats.misbehave[f"/{wheel.name}"] = Misbehave(drip_headers=0.2)
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match=r"deep read of vllm/_flashmla_extension_C.abi3.so took over 1 s"):
        deepread.deep_read(_ref(wheel, url), deadline_s=1.0)
    assert time.monotonic() - t0 < 4


def test_http_error(wheel: Path, server: tuple[str, Stats]) -> None:
    url, stats = server
    stats.fail_with = 503
    with pytest.raises(Unavailable, match=r"HTTP 503 from 127\.0\.0\.1"):
        deepread.deep_read(_ref(wheel, url))


def test_changed_bytes_fail_the_crc(wheel: Path, tmp_path: Path) -> None:
    # Same size, one byte of the member's compressed data flipped: the directory's CRC-32
    # (or the deflate stream itself) catches it.
    data = bytearray(wheel.read_bytes())
    info = zipfile.ZipFile(wheel).getinfo(MEMBER)
    pos = info.header_offset + 30 + len(MEMBER) + info.compress_size // 2
    data[pos] ^= 0x55
    bad = tmp_path / wheel.name
    bad.write_bytes(bytes(data))
    with serve(tmp_path) as (base, _stats), pytest.raises(Unavailable, match="deflate|differ from the zip directory"):
        deepread.deep_read(_ref(bad, f"{base}/{bad.name}"))


def test_local_wheel(wheel: Path, ext: bytes) -> None:
    ref = _ref(wheel, None, path=str(wheel))
    r = deepread.deep_read(ref)
    assert r.origin == "file" and r.bytes_transferred == 0 and r.archs == fatbin.read_bytes(ext).archs
    with pytest.raises(Unavailable, match="sha256 differs from the lock"):
        deepread.deep_read(replace(ref, sha256="0" * 64))


def test_cache_ignores_results_of_another_reader_version(wheel: Path, server: tuple[str, Stats], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cache = deepread.DeepCache(tmp_path)
    deepread.deep_read(_ref(wheel, server[0]), cache=cache)
    monkeypatch.setattr(fatbin, "READER_VERSION", fatbin.READER_VERSION + 1)
    assert cache.get(_ref(wheel, server[0]).sha256, MEMBER) is None


def test_the_stream_also_yields_nvccs_banner(wheel: Path, server: tuple[str, Stats], ext: bytes) -> None:
    # vLLM 0.13.0's _flashmla_extension_C carries "Cuda compilation tools, release 12.9, V12.9.86" twice
    r = deepread.deep_read(_ref(wheel, server[0]))
    assert (r.nvcc, r.nvcc_release, r.nvcc_banners) == ("12.9.86", "12.9", 2)
    assert deepread.DeepResult.from_json(r.to_json()).nvcc == "12.9.86"


def test_banners_are_found_across_chunk_boundaries(ext: bytes) -> None:
    at = ext.index(b"Cuda compilation tools")
    part = ext[at - 200: at + 300]
    for cut in range(150, 260):  # every split of the first banner, and around it
        b = deepread.Banners()
        b.feed(part[:cut])
        b.feed(part[cut:])
        assert (b.finish(), b.count) == (("12.9.86", "12.9"), 1), cut
    one_byte = deepread.Banners()
    for i in range(len(part)):
        one_byte.feed(part[i:i + 1])
    assert one_byte.finish() == ("12.9.86", "12.9") and one_byte.count == 1


def test_a_mangled_banner_gives_the_release_and_two_releases_give_nothing() -> None:
    mangled = deepread.Banners()  # what fatbin compression leaves of nvcc 13.0.88's banner (vLLM 0.27.1)
    mangled.feed(b"\x00release 13.0, V.88 Cuda compilation tools, release 13.0, V.88\x00Build cuda_13.0")
    assert mangled.finish() == (None, "13.0") and mangled.count == 1
    two = deepread.Banners()
    two.feed(b"Cuda compilation tools, release 12.8, V12.8.93\x00Cuda compilation tools, release 12.9, V12.9.86")
    assert two.finish() == (None, None) and two.count == 2
    odd = deepread.Banners()  # a version that is not of the banner's release is not taken
    odd.feed(b"Cuda compilation tools, release 12.9, V12.8.93")
    assert odd.finish() == (None, "12.9")


def test_cached_results_without_banner_facts_are_read_again(wheel: Path, server: tuple[str, Stats],
                                                           tmp_path: Path) -> None:
    import json

    cache = deepread.DeepCache(tmp_path)
    r = deepread.deep_read(_ref(wheel, server[0]), cache=cache)
    path = tmp_path / "kernels" / f"{r.sha256}.json"
    d = json.loads(path.read_text())
    del d["members"][MEMBER]["nvcc_banners"]  # an entry written before banners were read
    path.write_text(json.dumps(d))
    assert cache.get(r.sha256, MEMBER) is None
