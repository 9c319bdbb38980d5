"""The CUDA 12.0-13.x component tables of builder/data/cuda.toml (builder/check/toolkit.py),
pinned against facts read from PyPI's cuda-toolkit METADATA, torch METADATA and wheel
file lists (scripts/cuda_toolkit_rows.py regenerates them)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

from builder import data as datafiles
from builder.check import knowledge as cuda
from builder.check import toolkit as cuda_toolkit

K = cuda_toolkit.load()
LOCKS = Path(__file__).resolve().parent / "data" / "locks"


@pytest.mark.parametrize(("name", "version", "release", "update", "patch", "toolkit"), [
    ("nvidia-cublas-cu12", "12.8.4.1", "12.8", 1, False, "12.8.1"),  # torch 2.9.0's cuBLAS
    ("nvidia-cuda-runtime-cu12", "12.8.90", "12.8", 1, False, "12.8.1"),
    ("nvidia-cuda-runtime-cu12", "12.6.77", "12.6", 2, False, "12.6.2"),  # torch 2.7.1's
    ("nvidia-cublas-cu12", "12.6.4.1", "12.6", 3, False, "12.6.3"),
    ("nvidia-cuda-nvcc-cu12", "12.9.86", "12.9", 1, False, "12.9.1"),  # vLLM 0.13.0's banner V12.9.86
    ("nvidia-cublas-cu12", "12.9.1.4", "12.9", 1, False, "12.9.1"),  # matrix A's override
    ("nvidia-cuda-runtime", "13.0.96", "13.0", 2, False, "13.0.2"),  # a 13.0 update, not GA
    ("nvidia-cuda-nvcc", "13.0.88", "13.0", 1, False, "13.0.1"),  # vLLM 0.20's V13.0.88
    ("nvidia-cublas", "13.1.0.3", "13.0", 2, False, "13.0.2"),
    ("nvidia-cublas", "13.1.1.3", "13.0", 2, True, "13.0.3.0"),  # torch 2.14's cuBLAS patch
    ("nvidia-cublas-cu12", "12.8.5.5", "12.8", 1, True, "12.8.2.0"),
    ("nvidia-cufft", "12.0.0.61", "13.0", 1, False, "13.0.1"),  # cuFFT 12.x is CUDA 13
    ("nvidia-cufft-cu12", "11.3.3.83", "12.8", 1, False, "12.8.1"),
    ("nvidia-cusparse", "12.6.3.3", "13.0", 1, False, "13.0.1"),  # cuSPARSE 12.x on CUDA 13
    ("nvidia-nvjitlink", "13.5.37", "13.5", 0, False, "13.5.0"),  # latest lock's nvJitLink
    ("nvidia-cuda-cccl", "13.3.5.0.6", "13.5", 0, False, "13.5.0"),
    ("nvidia-cuda-runtime-cu12", "12.5.39", "12.5", 0, False, "12.5.0"),  # 12.5.1 only re-pins it
    ("nvidia-cuda-runtime-cu12", "12.0.146", "12.0", 1, False, "12.0.1"),
])
def test_component_versions_are_placed_by_the_first_toolkit_that_pins_them(
        name: str, version: str, release: str, update: int, patch: bool, toolkit: str) -> None:
    p = cuda_toolkit.place(K, name, version)
    assert p is not None
    assert (p.release, p.update, p.patch, p.toolkit) == (release, update, patch, toolkit)
    assert p.source == f"https://pypi.org/project/cuda-toolkit/{toolkit}/"


def test_unknown_versions_are_not_placed() -> None:
    assert cuda_toolkit.place(K, "nvidia-cuda-runtime-cu12", "12.5.82") is None  # only in release notes
    assert cuda_toolkit.place(K, "nvidia-cublas", "99.0") is None
    assert cuda_toolkit.place(K, "numpy", "2.0.0") is None


@pytest.mark.parametrize(("name", "component", "major", "versioning"), [
    ("nvidia-cuda-runtime", "cudart", 13, "toolkit"),
    ("nvidia-cuda-nvrtc", "nvrtc", 13, "toolkit"),
    ("nvidia-nvjitlink", "nvjitlink", 13, "toolkit"),
    ("nvidia-cuda-cupti", "cupti", 13, "toolkit"),
    ("nvidia-cufft", "cufft", 13, "library"),
    ("nvidia-curand", "curand", 13, "library"),
    ("nvidia-cusolver", "cusolver", 13, "library"),
    ("nvidia-cusparse", "cusparse", 13, "library"),
    ("nvidia-cufile", "cufile", 13, "library"),
    ("nvidia-nvtx", "nvtx", 13, "toolkit"),
    ("nvidia-cuda-nvcc", "nvcc", 13, "toolkit"),
    ("nvidia-cuda-crt", "crt", 13, "toolkit"),
    ("nvidia-nvvm", "nvvm", 13, "toolkit"),
    ("nvidia-cuda-cccl", "cccl", 13, "library"),
    ("nvidia-cublas-cu12", "cublas", 12, "library"),
    ("Nvidia_Cufft_Cu12", "cufft", 12, "library"),
    ("nvidia-cudnn-cu13", "cudnn", 13, "own"),
    ("nvidia-nccl-cu12", "nccl", 12, "own"),
    ("nvidia-cusparselt-cu13", "cusparselt", 13, "own"),
    ("nvidia-nvshmem-cu13", "nvshmem", 13, "own"),
])
def test_both_naming_schemes_name_component_and_major(name: str, component: str, major: int,
                                                      versioning: str) -> None:
    hit = cuda_toolkit.package(K, name)
    assert hit is not None
    assert (hit[0].component, hit[1], hit[0].versioning) == (component, major, versioning)


def test_library_versions_do_not_tell_the_cuda_major() -> None:
    """Why [[package]]'s "version major = CUDA major" must not be used for these."""
    wrong = {p.component for p in K.placed.values() if int(p.version.split(".")[0]) != p.major}
    assert {"cufft", "curand", "cusolver", "cufile"} <= wrong
    toolkit_versioned = {c.component for c in K.components if c.versioning == "toolkit"}
    assert not wrong & toolkit_versioned


def test_toolkit_versioned_components_carry_their_release() -> None:
    for p in K.placed.values():
        comp, _major = K.names[p.package]
        if comp.versioning == "toolkit":
            assert ".".join(p.version.split(".")[:2]) == p.release, p


def test_torch_cuda_toolkit_pins_expand_to_components() -> None:
    t214 = next(u for u in K.users if u["version"] == "2.14.0")
    reqs = cuda_toolkit.expand(K, t214["requires"].split(";")[0])
    assert reqs is not None
    assert {"nvidia-cublas==13.1.1.3.*", "nvidia-cuda-nvrtc==13.0.88.*", "nvidia-cuda-runtime==13.0.96.*",
            "nvidia-cufft==12.0.0.61.*", "nvidia-nvjitlink<14,>=13.0.88", "nvidia-nvtx==13.0.85.*",
            "nvidia-cufile==1.15.1.6.*"} <= set(reqs)
    assert not any(r.startswith("nvidia-cuda-nvcc") for r in reqs)  # no nvcc extra asked
    t211 = next(u for u in K.users if u["version"] == "2.11.0")
    assert "nvidia-cublas==13.1.0.3.*" in (cuda_toolkit.expand(K, t211["requires"].split(";")[0]) or ())
    t212 = next(u for u in K.users if u["version"] == "2.12.0")
    assert "cublas" not in t212["requires"] and any("nvidia-cublas<=13.1.1.3" in a for a in t212["also"])
    assert cuda_toolkit.toolkit(K, "13.0.3") is cuda_toolkit.toolkit(K, "13.0.3.0")
    assert cuda_toolkit.expand(K, "cuda-toolkit[cudart]>=13") is None
    assert cuda_toolkit.expand(K, "cuda-toolkit[cudart]==99.0") is None


def test_toolkit_rows_agree_with_release_notes_and_driver_table() -> None:
    k = cuda.load()
    for row in k.components:  # [[component]] rows from NVIDIA's release notes / redist JSON
        name = {"cudart": "nvidia-cuda-runtime", "nvcc": "nvidia-cuda-nvcc", "cublas": "nvidia-cublas"}[row.component]
        name += "-cu12" if row.release.startswith("12.") else ""
        p = cuda_toolkit.place(K, name, row.version)
        if p is not None:
            assert (p.release, p.update) == (row.release, row.update), (row, p)
    released = {(r.release, r.update) for r in k.releases}
    for p in K.placed.values():
        if any(r.release == p.release for r in k.releases):
            assert (p.release, p.update) in released, p


def test_every_row_has_a_source() -> None:
    data = tomllib.loads(datafiles.CUDA.read_text(encoding="utf-8"))
    for table in ("release", "compat", "component", "package", "arch-floor", "arch-intro", "known-bad",
                  "cuda-component", "cuda-toolkit", "toolkit-user", "python-bindings", "bindings-driver"):
        rows = data[table]
        assert rows, table
        assert all(str(r.get("source", "")).startswith("https://") for r in rows), table
    assert str(data["bindings-use"]["source"]).startswith("https://")
    versions = [Version(t.version) for t in K.releases]
    assert versions == sorted(versions) and min(versions) == Version("12.0.0")
    assert {t.kind for t in K.releases} == {"update", "revision", "same-pins"}
    assert all(t.of for t in K.releases if t.kind != "update")


def test_every_nvidia_package_of_the_corpus_is_known_by_name() -> None:
    """No CUDA component in a real lock is 'identity unknown' to these tables."""
    neutral = {"nvidia-ml-py", "nvidia-cudnn-frontend"}
    for lock in sorted(LOCKS.glob("pylock.*.toml")):
        for p in tomllib.loads(lock.read_text(encoding="utf-8"))["packages"]:
            name = p["name"]
            if not name.startswith("nvidia-") or name in neutral or name.startswith("nvidia-cutlass-dsl"):
                continue
            assert cuda_toolkit.package(K, name) is not None, (lock.name, name)
            comp, _ = cuda_toolkit.package(K, name) or (None, 0)
            if comp is not None and comp.versioning != "own":
                assert cuda_toolkit.place(K, name, p["version"]) is not None, (lock.name, name, p["version"])


def test_the_normal_form_shortcut_agrees_with_packaging() -> None:
    """toolkit._norm skips packaging's parser for release-only versions: the same answer on every
    version string of builder/data/cuda.toml and on the forms the shortcut must not take."""
    import re as _re

    from packaging.version import Version

    from builder.check.toolkit import _norm

    seen = set(_re.findall(r"[0-9][0-9A-Za-z.+!-]*", datafiles.CUDA.read_text()))
    seen |= {"13.0.96", "12.08.1", "012", "1.0.post1", "13.0.0rc1", "1!2.0", "2.9.0+cu128", "0.0", "0"}
    for v in sorted(seen):
        try:
            want = str(Version(v))
        except ValueError:
            want = v
        assert _norm(v) == want, v
