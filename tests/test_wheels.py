"""builder/check/wheels.py: METADATA and CUDA binaries from local wheels and by HTTP ranges."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from builder.check import wheelread, wheels
from builder.errors import Unavailable
from tests.helpers import httpserver
from tests.helpers import wheels as hw


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("w")
    so = tmp_path_factory.mktemp("so")
    rt = hw.stub_cudart(so, 12)
    ext = hw.cuda_extension(so, "_k.abi3.so", rt, "12.9.86", archs=("sm_89",))
    plain = hw.compile_shared_object(so / "plain.so", c_source="int f(void){return 1;}\n")
    hw.make_wheel(d, "kern", "1.0", tag="cp38-abi3-manylinux_2_31_x86_64", requires=["torch==2.9.0"],
                  files={"kern/__init__.py": "", "kern/big.abi3.so": os.urandom(400_000),
                         "kern/plain.abi3.so": plain.read_bytes(), "kern/_k.abi3.so": ext.read_bytes(),
                         "kern.libs/libcudart-1234.so.12": rt.read_bytes()})
    hw.make_wheel(d, "pure", "2.0", requires=["numpy>=2"])
    return d


def _ref(path: Path, **kw: object) -> wheels.WheelRef:
    data = path.read_bytes()
    base = dict(name=path.name.split("-")[0], version=path.name.split("-")[1], filename=path.name,
                sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    base.update(kw)
    return wheels.WheelRef(**base)  # type: ignore[arg-type]


def test_local_wheel_metadata_and_smallest_cudart_extension(house: Path) -> None:
    f = wheelread.read_local(next(house.glob("kern-*.whl")))
    assert (f.name, f.version, f.requires_dist) == ("kern", "1.0", ("torch==2.9.0",))
    assert f.binary is not None and f.binary.member == "kern/_k.abi3.so"
    assert f.binary.cudart_soname == "libcudart.so.12" and f.binary.toolkit == "12.9.86"
    assert f.binary.archs == ("sm_89",)
    # smallest first: the plain extension was read (no cudart), the vendored runtime never
    assert f.members_read[-1] == "kern/_k.abi3.so" and "kern/big.abi3.so" not in f.members_read
    assert f.extensions == 3


def test_http_range_read_fetches_a_fraction_and_checks_the_size(house: Path, tmp_path: Path) -> None:
    whl = next(house.glob("kern-*.whl"))
    with httpserver.serve(house) as (url, stats):
        ref = _ref(whl, url=f"{url}/{whl.name}")
        st = wheels.FetchStats()
        f = wheels.read_wheel(ref, want_binary=True, stats=st, small=0)
        assert f.binary is not None and f.binary.toolkit == "12.9.86" and f.origin == "http"
        assert stats.ranges and stats.ranges[0] == f"bytes=-{wheelread.TAIL}"
        assert st.bytes == stats.bytes_sent < whl.stat().st_size / 2
        with pytest.raises(Unavailable, match="the lock says"):
            wheels.read_wheel(_ref(whl, url=f"{url}/{whl.name}", size=123456789), want_binary=True, small=0)


def test_small_wheel_is_fetched_whole_and_hash_checked(house: Path) -> None:
    whl = next(house.glob("pure-*.whl"))
    with httpserver.serve(house) as (url, stats):
        f = wheels.read_wheel(_ref(whl, url=f"{url}/{whl.name}"), want_binary=False)
        assert f.requires_dist == ("numpy>=2",) and not stats.ranges
        with pytest.raises(Unavailable, match="sha256 differs"):
            wheels.read_wheel(_ref(whl, url=f"{url}/{whl.name}", sha256="0" * 64), want_binary=False)


def test_pep658_metadata_avoids_the_zip(house: Path, tmp_path: Path) -> None:
    whl = next(house.glob("kern-*.whl"))
    (tmp_path / whl.name).write_bytes(whl.read_bytes())
    with zipfile.ZipFile(whl) as zf:
        (tmp_path / f"{whl.name}.metadata").write_bytes(zf.read("kern-1.0.dist-info/METADATA"))
    with httpserver.serve(tmp_path) as (url, stats):
        f = wheels.read_wheel(_ref(whl, url=f"{url}/{whl.name}"), want_binary=lambda reqs: False, small=0)
        assert f.requires_dist == ("torch==2.9.0",) and stats.requests == 1 and not f.binary_scanned
        # the decision comes from the metadata: asked for binaries, it reads the zip too
        g = wheels.read_wheel(_ref(whl, url=f"{url}/{whl.name}"), want_binary=lambda reqs: True, small=0)
        assert g.binary is not None


def test_cache_answers_offline_and_errors_are_unavailable(house: Path, tmp_path: Path) -> None:
    whl = next(house.glob("kern-*.whl"))
    cache = wheels.WheelCache(tmp_path / "c")
    with httpserver.serve(house) as (url, stats):
        ref = _ref(whl, url=f"{url}/{whl.name}")
        wheels.read_wheel(ref, want_binary=True, cache=cache, small=0)
        n = stats.requests
        hit = wheels.read_wheel(ref, want_binary=True, cache=cache, offline=True)
        assert hit.origin == "cache" and hit.binary is not None and stats.requests == n
        stats.fail_with = 404
        with pytest.raises(Unavailable, match="HTTP 404"):
            wheels.read_wheel(_ref(whl, url=f"{url}/{whl.name}", sha256="1" * 64), want_binary=True, small=0)
    with pytest.raises(Unavailable, match="cannot reach"):
        wheels.read_wheel(_ref(whl, url="http://127.0.0.1:9/x.whl", sha256="2" * 64), want_binary=True, small=0)
    with pytest.raises(Unavailable, match="--offline"):
        wheels.read_wheel(_ref(whl, url="http://127.0.0.1:9/x.whl", sha256="3" * 64), want_binary=True,
                          cache=cache, offline=True)


def test_corrupt_cache_entry_is_a_miss(house: Path, tmp_path: Path) -> None:
    cache = wheels.WheelCache(tmp_path)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / ("a" * 64 + ".json")).write_text("{not json")
    assert cache.get("a" * 64, want_binary=False) is None


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BUILDER_CACHE_DIR", str(tmp_path / "x"))
    assert wheels.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("BUILDER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert wheels.default_cache_dir() == tmp_path / "xdg" / "builder"


@pytest.fixture(scope="module")
def overbudget(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel whose only CUDA extension is larger than the read budget (as xformers' _C.so),
    beside a small extension that links no libcudart."""
    d = tmp_path_factory.mktemp("big")
    so = tmp_path_factory.mktemp("bigso")
    rt = hw.stub_cudart(so, 12)
    ext = hw.fatbin_extension(so, "_C.so", rt, [], os.urandom(3 * 1024 * 1024))  # incompressible: 3 MB stored
    plain = hw.compile_shared_object(so / "plain.so", c_source="int f(void){return 1;}\n")
    hw.make_wheel(d, "xf", "0.1", tag="cp39-abi3-manylinux_2_28_x86_64", requires=["torch==2.9.0"],
                  files={"xf/__init__.py": "", "xf/_C.so": ext.read_bytes(), "xf/plain.so": plain.read_bytes()})
    return next(d.glob("xf-*.whl"))


def test_a_member_over_the_budget_is_skipped_and_named(overbudget: Path) -> None:
    with httpserver.serve(overbudget.parent) as (url, stats):
        st = wheels.FetchStats()
        f = wheels.read_wheel(_ref(overbudget, url=f"{url}/{overbudget.name}"), want_binary=True, stats=st, small=0)
    size = zipfile.ZipFile(overbudget).getinfo("xf/_C.so").compress_size
    assert size > wheelread.BINARY_BUDGET
    assert f.binary is None and f.members_read == ("xf/plain.so",) and f.binary_scanned
    assert f.skipped == (f"xf/_C.so ({size:,} bytes compressed)",)
    assert dict(f.ext_sizes)["xf/_C.so"] > 3_000_000 and f.extensions == 2
    assert st.bytes < wheelread.BINARY_BUDGET  # the big member was never fetched


def test_budget_counts_every_member_read(house: Path) -> None:
    with zipfile.ZipFile(next(house.glob("kern-*.whl"))) as zf:
        tight = wheelread._scan_binaries(zf, "w.whl", budget=zf.getinfo("kern/plain.abi3.so").compress_size)
        assert tight.binary is None and tight.read == ("kern/plain.abi3.so",)
        assert [s.split(" ")[0] for s in tight.skipped] == ["kern/_k.abi3.so", "kern/big.abi3.so"]
        roomy = wheelread._scan_binaries(zf, "w.whl")
        assert roomy.binary is not None and roomy.binary.member == "kern/_k.abi3.so" and roomy.skipped == ()


@pytest.fixture(scope="module")
def manyfiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pure wheel whose central directory is far larger than the first 64 KiB read."""
    d = tmp_path_factory.mktemp("many")
    hw.make_wheel(d, "cubins", "0.6", requires=["requests"],
                  files={f"cubins/k{i:05d}_{'x' * 60}.cubin": os.urandom(32) for i in range(4000)})
    return next(d.glob("cubins-*.whl"))


def test_metadata_is_read_through_the_tail_without_the_directory(manyfiles: Path) -> None:
    with zipfile.ZipFile(manyfiles) as zf:
        assert zf.start_dir < manyfiles.stat().st_size - 3 * wheelread.TAIL  # a directory of over 192 KiB
    with httpserver.serve(manyfiles.parent) as (url, stats):
        st = wheels.FetchStats()
        f = wheels.read_wheel(_ref(manyfiles, url=f"{url}/{manyfiles.name}"), want_binary=False, stats=st, small=0)
        assert f.requires_dist == ("requests",) and f.origin == "http"
        # the 404 for URL.metadata, the tail, METADATA's own bytes: never the directory
        assert stats.requests == 3 and st.bytes < 2 * wheelread.TAIL + 4096
        # asked for its file list, it reads the directory (and keeps the list)
        g = wheels.read_wheel(_ref(manyfiles, url=f"{url}/{manyfiles.name}"), want_binary=False, small=0,
                              want_files=True)
        assert g.files is not None and len(g.files) == 4000 + 3


def test_file_lists_are_cached_with_the_facts(house: Path, tmp_path: Path) -> None:
    whl = next(house.glob("pure-*.whl"))
    cache = wheels.WheelCache(tmp_path)
    with httpserver.serve(house) as (url, stats):
        ref = _ref(whl, url=f"{url}/{whl.name}")
        first = wheels.read_wheel(ref, want_binary=False, cache=cache)
        assert first.files is None  # not asked for
        listed = wheels.read_wheel(ref, want_binary=False, cache=cache, want_files=True)
        assert listed.files and "pure-2.0.dist-info/METADATA" in listed.files
        n = stats.requests
        again = wheels.read_wheel(ref, want_binary=False, cache=cache, want_files=True, offline=True)
        assert again.files == listed.files and again.origin == "cache" and stats.requests == n
