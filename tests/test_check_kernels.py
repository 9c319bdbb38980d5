"""Kernel evidence for gpu-arch (builder/check/kernels.py): shipped rows by wheel sha256,
and --deep on a real wheel whose main extension is a real ELF with a .nv_fatbin section."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from builder.check import fetchplan, kernels, knowledge
from builder.check.model import Pkg, WheelFacts, WheelRef
from builder.errors import Unavailable
from tests.helpers import wheels as hw

K = knowledge.load()
VLLM_0130 = "12b3d0a3b91c32a0091349de64b464f1c3d499a5b3a5d0ec387fef94ed5df6ee"  # PyPI, kernels.toml


def _pkg(sha: str | None, path: Path | None = None, sizes: tuple[tuple[str, int], ...] = ()) -> Pkg:
    ref = WheelRef(name="vllm", version="0.13.0", filename=path.name if path else "vllm-0.13.0.whl", sha256=sha,
                   path=str(path) if path else None, platform=True)
    facts = WheelFacts(ref.filename, sha, "vllm", "0.13.0", (), True, ext_sizes=sizes) if sizes else None
    return Pkg("vllm", "0.13.0", ref, facts=facts)


def test_shipped_row_applies_only_to_its_wheel() -> None:
    ev = kernels.shipped(_pkg(VLLM_0130), K.main_extensions["vllm"])
    assert ev is not None and ev.member == "vllm/_C.abi3.so" and ev.origin == "shipped data"
    assert ev.ptx_isa == "8.8" and "sm_89" in ev.archs.sass_names() and "read 2026-12-07" in ev.detail
    assert (ev.nvcc, ev.nvcc_release) == ("12.9.86", "12.9")  # the banner in _C itself
    assert kernels.shipped(_pkg("0" * 64), K.main_extensions["vllm"]) is None
    assert kernels.shipped(_pkg(None), K.main_extensions["vllm"]) is None


@pytest.fixture(scope="module")
def stable_abi_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vLLM-like wheel whose main extension has the 0.33 name (the second candidate)."""
    so = tmp_path_factory.mktemp("so")
    rt = hw.stub_cudart(so, 13)
    ext = hw.fatbin_extension(so, "_C_stable_libtorch.abi3.so", rt,
                              [hw.fatbin_container(["sm_89", "compute_89"], isa=(9, 0))])
    d = tmp_path_factory.mktemp("w")
    return hw.make_wheel(d, "vllm", "0.33.0", tag="cp38-abi3-manylinux_2_28_x86_64",
                         files={"vllm/__init__.py": "", "vllm/_C_stable_libtorch.abi3.so": ext.read_bytes()})


def test_deep_reads_the_member_the_wheel_has_and_caches_it(stable_abi_wheel: Path, tmp_path: Path) -> None:
    sha = hashlib.sha256(stable_abi_wheel.read_bytes()).hexdigest()
    stats = fetchplan.FetchStats()
    ev = kernels.deep_evidence(_pkg(sha, stable_abi_wheel), K.main_extensions["vllm"], cache_dir=tmp_path,
                               offline=False, stats=stats)  # extension list unknown: tries _C, then this
    assert ev is not None and ev.member == "vllm/_C_stable_libtorch.abi3.so" and ev.origin == "deep read"
    assert ev.ptx_isa == "9.0" and ev.archs.sass_names() == ["sm_89"]
    assert (tmp_path / "kernels" / f"{sha}.json").exists()
    again = kernels.deep_evidence(_pkg(sha, stable_abi_wheel), K.main_extensions["vllm"], cache_dir=tmp_path,
                                  offline=True, stats=stats)
    assert again is not None and again.origin == "deep read (cached)"


def test_deep_without_the_member(stable_abi_wheel: Path, tmp_path: Path) -> None:
    sha = hashlib.sha256(stable_abi_wheel.read_bytes()).hexdigest()
    # the scan saw the wheel's extensions and none is a main extension: nothing to read
    assert kernels.deep_evidence(_pkg(sha, stable_abi_wheel, sizes=(("vllm/other.so", 1),)),
                                 K.main_extensions["vllm"], cache_dir=tmp_path, offline=False,
                                 stats=fetchplan.FetchStats()) is None
    # the extension list is unknown and the last candidate is missing too: the error names it
    with pytest.raises(Unavailable, match="no member vllm/_C.abi3.so"):
        kernels.deep_evidence(_pkg(sha, stable_abi_wheel), ("vllm/_C.abi3.so",), cache_dir=tmp_path,
                              offline=False, stats=fetchplan.FetchStats())
