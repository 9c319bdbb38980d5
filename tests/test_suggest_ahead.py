"""builder/suggest/ahead.py: while uv resolves a candidate, the wheels the checker will ask for are
read into the wheel cache: vLLM's binaries and the GPU packages its METADATA pins exactly, picked
from their (real, local) index pages as the checker picks them from a lock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.check import knowledge as cuda
from builder.check import toolkit
from builder.check.fetchplan import FetchStats
from builder.check.model import WheelFacts
from builder.pylock import target_env, target_tags
from builder.suggest import ahead, index, releases
from tests.helpers import httpserver
from tests.helpers import wheels as hw

K, TK = cuda.load(), toolkit.load()
ENVS = {py: target_env(py, "x86_64") for py in ("3.11", "3.12")}
UNTIL = releases.cutoff("2025-12-30")
LINUX = 'platform_system == "Linux"'


def _vllm(*requires: str) -> dict[str, WheelFacts]:
    f = WheelFacts("vllm-0.13.0-cp38-abi3-manylinux_2_31_x86_64.whl", "aa" * 32, "vllm", "0.13.0", tuple(requires))
    return {py: f for py in ENVS}


def test_the_gpu_packages_vllm_pins_exactly_per_python() -> None:
    got = ahead.pinned(_vllm("torch==2.9.0", "torchaudio==2.9.0", f"torchvision==0.24.0; {LINUX}",
                             "xformers==0.0.32; python_version < '3.12'", "flashinfer-python>=0.5", "numpy==2.2.0",
                             "flash-attn==2.8; platform_machine == 'aarch64'"), envs=ENVS, k=K)
    assert got == {"3.11": {"torchaudio": "2.9.0", "torchvision": "0.24.0", "xformers": "0.0.32"},
                   "3.12": {"torchaudio": "2.9.0", "torchvision": "0.24.0"}}  # torch is read anyway; ranges and
    # packages the checker does not read are no guess


@pytest.fixture
def index_of(tmp_path: Path) -> Iterator[tuple[str, httpserver.Stats]]:
    house = tmp_path / "house"
    for py in ("cp311", "cp312"):
        hw.make_wheel(house, "torchaudio", "2.9.0", requires=["torch==2.9.0"], tag=f"{py}-{py}-manylinux_2_28_x86_64")
        hw.make_wheel(house, "torchaudio", "2.8.0", requires=["torch==2.8.0"], tag=f"{py}-{py}-manylinux_2_28_x86_64")
    hw.make_wheel(house, "flashinfer-python", "0.5.3", requires=["numpy"])
    simple = httpserver.write_simple_index(tmp_path / "idx", house)
    with httpserver.serve(simple.parent) as (url, stats):
        yield f"{url}/simple", stats


def _pick(r: releases.Release, py: str) -> releases.IndexFile | None:
    return releases.pick_wheel(r, target_tags(py, "x86_64", "2.35"), py)


def _facts(cache: Path) -> dict[str, dict[str, object]]:
    return {d["filename"]: d for d in (json.loads(f.read_text()) for f in (cache / "wheels").glob("*.json"))}


def test_the_pinned_wheels_are_in_the_cache_when_the_block_ends(index_of, tmp_path: Path) -> None:
    url, stats = index_of
    cache = tmp_path / "c"
    with ahead.reading([], _vllm("torchaudio==2.9.0", "flashinfer-python==0.5.3"), pick=_pick, envs=ENVS,
                       index_urls=[url], until=UNTIL, cache=cache, stats=FetchStats(), k=K, tk=TK):
        deadline = time.monotonic() + 10
        while len(_facts(cache) if (cache / "wheels").exists() else {}) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # uv would be resolving here
    got = _facts(cache)
    assert sorted(got) == ["flashinfer_python-0.5.3-py3-none-any.whl",  # one wheel for both Pythons
                           "torchaudio-2.9.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                           "torchaudio-2.9.0-cp312-cp312-manylinux_2_28_x86_64.whl"]
    assert all(d["requires_dist"] for d in got.values())
    assert "/simple/torchaudio/" in stats.paths and "/simple/flashinfer-python/" in stats.paths
    # the pages are kept like every page a search reads: the checker's own reads, or the next search, use them
    assert index.read_page(url, "torchaudio", cache=cache, until=UNTIL, offline=True).kept


def test_a_pin_the_index_lacks_or_an_unreachable_index_is_left_to_the_checker(index_of, tmp_path: Path) -> None:
    url, _stats = index_of
    with ahead.reading([], _vllm("torchaudio==9.9.9", "torchvision==0.24.0"), pick=_pick, envs=ENVS,
                       index_urls=[url], until=UNTIL, cache=tmp_path / "c", stats=FetchStats(), k=K, tk=TK):
        time.sleep(0.3)  # no such release, no torchvision page (HTTP 404): nothing read, nothing raised
    assert not (tmp_path / "c" / "wheels").exists() or not _facts(tmp_path / "c")


def test_an_error_in_the_block_cancels_the_reads_at_once(index_of, tmp_path: Path) -> None:
    url, stats = index_of
    stats.misbehave["/simple/torchaudio/"] = httpserver.Misbehave(drip_headers=1.0)  # a stalled index
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt), ahead.reading(
            [], _vllm("torchaudio==2.9.0"), pick=_pick, envs=ENVS, index_urls=[url], until=UNTIL,
            cache=tmp_path / "c", stats=FetchStats(), k=K, tk=TK):
        time.sleep(0.3)
        raise KeyboardInterrupt
    assert time.monotonic() - t < 3  # not the page's 60 s deadline
