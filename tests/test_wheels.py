"""builder/wheels.py: METADATA and CUDA binaries from local wheels and by HTTP ranges."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from builder.check import wheels
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
    f = wheels.read_local(next(house.glob("kern-*.whl")))
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
        assert stats.ranges and stats.ranges[0] == f"bytes=-{wheels.TAIL}"
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
