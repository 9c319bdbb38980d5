"""Shipped GPU-arch data (builder/data/kernels.toml): loads, and says what the PyPI wheels say.

The rows were produced by scripts/kernel_data.py (builder's fatbin reader streaming the
member out of the PyPI wheel); the vLLM 0.13.0 row was also cross-checked entry by entry
against NVIDIA's ``cuobjdump --list-elf --list-ptx`` on the extracted member
(334 entries, same order) on 2026-11-30.
"""

from __future__ import annotations

import tomllib

import pytest

from builder import data as datafiles
from builder.binaries import fatbin
from builder.binaries.archcompat import covers
from builder.check import kerneldata
from builder.errors import DataFileError

VLLM_0130_SHA = "12b3d0a3b91c32a0091349de64b464f1c3d499a5b3a5d0ec387fef94ed5df6ee"  # 474,942,618 bytes, https://pypi.org/project/vllm/0.13.0/#files


@pytest.fixture(scope="module")
def rows() -> tuple[kerneldata.KernelRow, ...]:
    return kerneldata.load()


def _row(rows: tuple[kerneldata.KernelRow, ...], version: str) -> kerneldata.KernelRow:
    return next(r for r in rows if r.package == "vllm" and r.version == version)


def test_every_row_is_from_builders_reader_and_names_its_wheel(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    assert {"0.10.1.1", "0.11.0", "0.11.1", "0.11.2", "0.12.0", "0.13.0"} <= {r.version for r in rows}
    for r in rows:
        assert r.produced_by == fatbin.PRODUCED_BY and r.reader_version == fatbin.READER_VERSION
        assert r.source.startswith("https://files.pythonhosted.org/") and r.source.endswith("/" + r.wheel)
        assert len(r.wheel_sha256) == 64 and r.wheel.startswith(f"vllm-{r.version}-") and "x86_64" in r.wheel
        assert r.archs.sass and r.entries >= r.containers > 0
        assert sum(g.containers for g in r.archs.groups) == r.containers
        assert r.bytes_transferred < r.wheel_size  # streamed the member, not the wheel


def test_vllm_0130_c_matches_its_wheel(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    r = _row(rows, "0.13.0")
    assert (r.wheel, r.wheel_sha256, r.wheel_size) == (
        "vllm-0.13.0-cp38-abi3-manylinux_2_31_x86_64.whl", VLLM_0130_SHA, 474_942_618)
    assert (r.member, r.member_size) == ("vllm/_C.abi3.so", 438_781_728)
    # A reading of strings (2026-11-30) listed SASS 70/75/80/89/90/100/120 and PTX 52/80/89/90; the
    # headers (and cuobjdump) also show one sm_52 cubin and the arch-specific 90a/100a/120a.
    assert r.archs.sass_names() == ["sm_52", "sm_70", "sm_75", "sm_80", "sm_89", "sm_90", "sm_90a",
                                    "sm_100", "sm_100a", "sm_120", "sm_120a"]
    assert r.archs.ptx_names() == ["compute_52", "compute_80", "compute_89", "compute_90"]
    assert (r.containers, r.entries, r.ptx_isa) == (100, 334, "8.8")  # PTX ISA 8.8: CUDA 12.9
    assert kerneldata.find(rows, sha256=VLLM_0130_SHA, member="vllm/_C.abi3.so") == r
    assert kerneldata.find(rows, sha256=VLLM_0130_SHA, member="vllm/_moe_C.abi3.so") is None


def test_vllm_0130_runs_natively_on_ada(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    ok, why = covers(_row(rows, "0.13.0").archs, "8.9")
    assert ok
    assert "sm_89 SASS runs natively on 8.9; 58 of 58 kernel containers have code for 8.9" in why


def test_vllm_0130_does_not_run_on_pascal(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    # One container of 100 carries sm_52/compute_52 (PTX that could JIT on 6.1); the
    # build's arch list starts at sm_70, so a GTX 1080 (6.1) cannot run vLLM's kernels.
    archs = _row(rows, "0.13.0").archs
    ok, why = covers(archs, "6.1")
    assert not ok and "1 of 58 kernel containers have code for 6.1" in why


def test_vllm_0130_on_orin_runs_sm80_code_and_misses_the_sm89_only_kernels(
        rows: tuple[kerneldata.KernelRow, ...]) -> None:
    ok, why = covers(_row(rows, "0.13.0").archs, "8.7")
    assert ok and "sm_80 SASS runs on 8.7 (same major, older minor)" in why
    assert "53 of 58 kernel containers have code for 8.7" in why and "no code in 5 with sm_89/sm_120" in why


def test_cuda13_vllm_drops_volta(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    r = _row(rows, "0.20.0")
    assert r.ptx_isa == "9.0" and "sm_70" not in r.archs.sass_names()
    assert not covers(r.archs, "7.0")[0]
    assert covers(r.archs, "8.9")[0]


def test_every_shipped_vllm_runs_on_the_operators_gpu(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    for r in rows:
        assert covers(r.archs, "8.9")[1].startswith("main arch list"), r.version
        assert covers(r.archs, "8.9")[0], r.version


def test_bad_rows_are_named_by_path() -> None:
    data = tomllib.loads(datafiles.KERNELS.read_text())
    data["kernels"][2]["sass"] = ["sm_8x"]
    with pytest.raises(DataFileError) as exc:
        kerneldata.from_mapping(data)
    assert exc.value.line().startswith(
        "builder/data/kernels.toml: kernels[2]: bad sass/ptx/groups: not a GPU architecture: 'sm_8x'")


@pytest.mark.network
@pytest.mark.slow
def test_shipped_row_matches_a_fresh_deep_read(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    # Streams vLLM 0.13.0's _C member from PyPI again: about 184 MB and 15-35 s.
    from builder.check import deepread

    r = _row(rows, "0.13.0")
    fresh = deepread.deep_read(deepread.MemberRef(filename=r.wheel, sha256=r.wheel_sha256, member=r.member,
                                                  url=r.source, size=r.wheel_size))
    assert (fresh.archs, fresh.containers, fresh.entries, fresh.ptx_isa, fresh.crc32) == (
        r.archs, r.containers, r.entries, r.ptx_isa, r.member_crc32)
