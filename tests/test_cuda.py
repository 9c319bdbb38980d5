"""builder/cuda.py and builder/data/cuda.toml, row by row."""

from __future__ import annotations

import tomllib

import pytest

from builder import data as datafiles
from builder.check import knowledge as cuda

K = cuda.load()
with open(datafiles.CUDA, "rb") as _f:
    RAW = tomllib.load(_f)


# NVIDIA CUDA Toolkit release notes, Table 3 ("CUDA Toolkit and Corresponding Driver
# Versions", Linux x86_64), https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#id5:
# the release -> minimum driver table, pinned here.
TABLE3_DRIVERS = {
    ("12.4", 0): "550.54.14", ("12.4", 1): "550.54.15", ("12.5", 0): "555.42.02", ("12.5", 1): "555.42.06",
    ("12.6", 0): "560.28.03", ("12.6", 1): "560.35.03", ("12.6", 2): "560.35.03", ("12.6", 3): "560.35.05",
    ("12.8", 0): "570.26", ("12.8", 1): "570.124.06", ("12.9", 0): "575.51.03", ("12.9", 1): "575.57.08",
    ("13.0", 0): "580.65.06", ("13.0", 1): "580.82.07", ("13.0", 2): "580.95.05", ("13.1", 0): "590.44.01",
    ("13.1", 1): "590.48.01", ("13.2", 0): "595.45.04", ("13.2", 1): "595.58.03", ("13.2", 2): "595.71.05",
}


def test_release_table_matches_facts_exactly() -> None:
    assert {(r.release, r.update): r.driver for r in K.releases} == TABLE3_DRIVERS


@pytest.mark.parametrize("row", RAW["release"] + RAW["component"] + RAW["compat"] + RAW["package"]
                         + RAW["arch-floor"] + RAW["arch-intro"] + RAW["known-bad"],
                         ids=lambda r: "-".join(str(r.get(k, "")) for k in ("release", "component", "version",
                                                                               "major", "name", "cc", "id")))
def test_every_row_names_an_https_source(row: dict[str, object]) -> None:
    assert str(row["source"]).startswith("https://")


@pytest.mark.parametrize("row", RAW["component"], ids=lambda r: f"{r['component']}-{r['version']}")
def test_every_component_row_places_exactly_on_its_release(row: dict[str, str]) -> None:
    pl = cuda.place(K, row["component"], row["version"])
    assert pl is not None and pl.exact
    assert (pl.release, pl.update) == (row["release"], row["update"])
    assert pl.driver == TABLE3_DRIVERS[(row["release"], int(row["update"]))]


@pytest.mark.parametrize("component, version, label, driver", [
    ("cudart", "12.8.90", "12.8 Update 1", "570.124.06"),   # nvidia-cuda-runtime-cu12 of torch 2.9.0
    ("nvcc", "12.9.86", "12.9 Update 1", "575.57.08"),      # vLLM 0.13.0's banner
    ("nvcc", "12.8.93", "12.8 Update 1", "570.124.06"),
    ("cublas", "12.8.4.1", "12.8 Update 1", "570.124.06"),  # torch 2.9.0's pin
    ("cublas", "12.9.1.4", "12.9 Update 1", "575.57.08"),   # matrix A's override
    ("cublas", "13.1.0.3", "13.0 Update 2", "580.95.05"),   # cuBLAS minor != CUDA minor
])
def test_facts_component_placements(component: str, version: str, label: str, driver: str) -> None:
    pl = cuda.place(K, component, version)
    assert pl is not None and (pl.label, pl.driver) == (label, driver)


def test_versions_between_rows_take_the_highest_possible_floor() -> None:
    mid = cuda.place(K, "cudart", "12.8.70")  # between 12.8 GA (57) and U1 (90)
    assert mid is not None and not mid.exact and mid.driver == "570.124.06" and mid.update is None
    late = cuda.place(K, "cudart", "13.0.96")  # a 13.0 update with no cudart row: U1 or U2
    assert late is not None and late.release == "13.0" and late.driver == "580.95.05"


@pytest.mark.parametrize("component, version", [("cudart", "11.8.89"), ("cublas", "11.11.3.6"),
                                                ("cudart", "not-a-version"), ("nvcc", "14.0.1")])
def test_unknown_versions_are_unknown(component: str, version: str) -> None:
    assert cuda.place(K, component, version) is None


def test_compat_floors() -> None:
    assert cuda.compat_floor(K, 12) == ("525.60.13", RAW["compat"][0]["source"])
    assert cuda.compat_floor(K, 13)[0] == "580.65.06"  # type: ignore[index]
    assert cuda.compat_floor(K, 11) is None


@pytest.mark.parametrize("name, component, major", [
    ("nvidia-cuda-runtime-cu12", "cudart", 12), ("nvidia-cuda-runtime", "cudart", None),
    ("nvidia-cublas-cu12", "cublas", 12), ("nvidia-cudnn-cu12", None, 12), ("cupy-cuda12x", None, 12),
    ("cupy-cuda13x", None, 13), ("numpy", None, None),
])
def test_package_names(name: str, component: str | None, major: int | None) -> None:
    assert cuda.package_component(K, name) == component
    assert cuda.name_major(K, name) == major


@pytest.mark.parametrize("cc, release, bad", [
    ("8.9", "12.8", False), ("8.9", "13.0", False), ("7.5", "13.0", False), ("7.0", "13.0", True),
    ("6.1", "13.0", True), ("6.1", "12.8", False), ("5.0", "12.4", False), ("3.7", "12.4", True),
    ("12.0", "12.6", True), ("12.0", "12.8", False), ("9.0", "12.4", False),
])
def test_arch_problem(cc: str, release: str, bad: bool) -> None:
    assert (cuda.arch_problem(K, cc, release) is not None) is bad


@pytest.mark.parametrize("variant, release", [("cu128", "12.8"), ("cu130", "13.0"), ("cu126", "12.6"),
                                              ("cpu", None), ("rocm6.4", None)])
def test_variant_release(variant: str, release: str | None) -> None:
    assert cuda.variant_release(variant) == release


def test_adding_cuda_13_3_is_a_data_change() -> None:
    data = dict(RAW)
    src = "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/"
    data["release"] = RAW["release"] + [{"release": "13.3", "update": 0, "driver": "600.10.01", "source": src}]
    data["component"] = RAW["component"] + [
        {"component": "cudart", "version": "13.3.29", "release": "13.3", "update": 0, "source": src}]
    k = cuda.from_mapping(data)
    assert cuda.place(K, "cudart", "13.3.29") is None
    pl = cuda.place(k, "cudart", "13.3.29")
    assert pl is not None and pl.exact and pl.driver == "600.10.01"
    assert cuda.place(k, "nvcc", "13.3.33") is not None  # release from the version: no nvcc row needed


def test_known_bad_fix_template_names_the_override() -> None:
    kb = K.known_bad["cublas-older-than-build-toolkit"]
    fix = str(kb["fix"]).format(package="nvidia-cublas-cu12", release="12.9", next="12.10", tag="129")
    assert '"nvidia-cublas-cu12>=12.9,<12.10"' in fix and "+cu129" in fix
