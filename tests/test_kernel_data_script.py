"""scripts/kernel_data.py against a local PEP 691 index of small real wheels: which wheels it
reads (architectures and their first release, yanked files, pre-releases, build-tagged
re-uploads), which member (the first [[main-extension]] the wheel has), the nvcc banner,
and that a run is incremental and survives a failed wheel."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from builder import data as datafiles
from builder.check import kerneldata
from scripts import kernel_data
from tests.helpers import httpserver
from tests.helpers import wheels as hw

BANNER = b"Cuda compilation tools, release 12.8, V12.8.93"
# What fatbin compression leaves of nvcc 13.0.88's banner (vLLM 0.27.1's _C_stable_libtorch).
MANGLED = b"Cuda compilation tools, release 13.0, V.88\x00Build cuda_13.0"
TAG = {"x86_64": "cp38-abi3-manylinux_2_28_x86_64", "aarch64": "cp38-abi3-manylinux_2_28_aarch64"}
T0 = "2026-01-01T00:00:00.123456Z"


def _wheel(d: Path, so: Path, version: str, arch: str, *, members: tuple[str, ...], banner: bytes = BANNER,
           build: str = "") -> Path:
    rt = so / "libcudart.so.12"
    if not rt.exists():
        hw.stub_cudart(so, 12)
    files: dict[str, str | bytes] = {"vllm/__init__.py": ""}
    for m in members:
        ext = hw.fatbin_extension(so / version / arch / build, m.rsplit("/", 1)[-1], rt,
                                  [hw.fatbin_container(["sm_89", "compute_89"], isa=(8, 7))], filler=banner)
        files[m] = ext.read_bytes()
    if not build:
        return hw.make_wheel(d, "vllm", version, tag=TAG[arch], files=files)
    # A re-upload under a build tag (vllm-0.21.0-1-...): other bytes, the same version.
    files["vllm/build.txt"] = build
    made = hw.make_wheel(d / "build", "vllm", version, tag=TAG[arch], files=files)
    return made.rename(d / made.name.replace(f"-{version}-", f"-{version}-{build}-"))


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, httpserver.Stats]]:
    d = tmp_path_factory.mktemp("wheels")
    so = tmp_path_factory.mktemp("so")
    c, stable = "vllm/_C.abi3.so", "vllm/_C_stable_libtorch.abi3.so"
    _wheel(d, so, "0.5.5", "x86_64", members=(c,))  # before the x86_64 floor (0.6.0)
    _wheel(d, so, "0.6.0", "x86_64", members=(c,), banner=b"")  # no banner (vLLM 0.6-0.8)
    _wheel(d, so, "0.10.1", "aarch64", members=(c,))  # before the aarch64 floor (0.10.2)
    _wheel(d, so, "0.10.2", "x86_64", members=(c,))
    _wheel(d, so, "0.10.2", "aarch64", members=(c,))
    _wheel(d, so, "0.11.0", "x86_64", members=(c,))  # yanked below
    _wheel(d, so, "0.12.0rc1", "x86_64", members=(c,))  # a pre-release
    _wheel(d, so, "0.21.0", "x86_64", members=(c, stable))  # both: the first of the list is read
    _wheel(d, so, "0.21.0", "x86_64", members=(c, stable), build="1")  # a re-upload with a build tag
    _wheel(d, so, "0.24.0", "x86_64", members=(stable,), banner=MANGLED)  # only the stable-ABI one
    hw.make_sdist(d, "vllm", "0.24.0")
    root = tmp_path_factory.mktemp("index")
    times = {f.name: f"2026-0{1 + i % 9}-0{1 + i % 9}T0{i % 10}:00:00.5Z" for i, f in enumerate(sorted(d.iterdir()))}
    simple = httpserver.write_simple_index(root, d, upload_times=times)
    doc = json.loads((simple / "vllm" / "index.json").read_text())
    for f in doc["files"]:
        if f["filename"].startswith("vllm-0.11.0-"):
            f["yanked"] = "broken build"
    (simple / "vllm" / "index.json").write_text(json.dumps(doc))
    with httpserver.serve(root) as (url, stats):
        yield f"{url}/simple", root, stats


def _run(index: str, data: Path, *args: str) -> int:
    return kernel_data.main(["--all", "--index", index, "--data", str(data), *args])


def _rows(data: Path) -> list[dict[str, object]]:
    return list(tomllib.loads(data.read_text())["kernels"])


def test_select_reads_every_cuda_wheel_from_each_architectures_first_release() -> None:
    def f(name: str, **kw: object) -> dict[str, object]:
        return {"filename": name, "url": f"https://files.example/{name}", "hashes": {"sha256": name},
                "size": 1, "upload-time": T0, **kw}

    files = [f("vllm-0.5.5-cp38-abi3-manylinux1_x86_64.whl"), f("vllm-0.6.0-cp38-abi3-manylinux1_x86_64.whl"),
             f("vllm-0.6.0.tar.gz"), f("vllm-0.10.1-cp38-abi3-manylinux2014_aarch64.whl"),
             f("vllm-0.10.2-cp38-abi3-manylinux2014_aarch64.whl"),
             f("vllm-0.11.0-cp38-abi3-manylinux1_x86_64.whl", yanked=True),
             f("vllm-0.12.0rc1-cp38-abi3-manylinux1_x86_64.whl"), f("vllm-0.13.0.dev1-cp38-abi3-manylinux1_x86_64.whl"),
             f("vllm-0.13.0-cp38-abi3-macosx_11_0_arm64.whl"), f("vllm-0.13.0-cp38-abi3-win_amd64.whl"),
             f("vllm-0.20.1-1-cp38-abi3-manylinux_2_35_x86_64.whl"),
             f("vllm-0.20.1-cp38-abi3-manylinux_2_35_x86_64.whl")]
    got = kernel_data.select(files, "vllm", kernel_data.SINCE)
    assert [(w.version, w.arch, w.filename.split("-")[2]) for w in got] == [
        ("0.6.0", "x86_64", "cp38"), ("0.10.2", "aarch64", "cp38"), ("0.20.1", "x86_64", "1"),
        ("0.20.1", "x86_64", "cp38")]
    assert got[0].uploaded == "2026-01-01T00:00:00Z" and got[0].url.startswith("https://files.example/")
    only_x86 = kernel_data.select(files, "vllm", {"x86_64": Version("0.6.0")})
    assert {w.arch for w in only_x86} == {"x86_64"}


def test_all_reads_each_wheel_once_with_its_main_extension(index: tuple[str, Path, httpserver.Stats],
                                                            tmp_path: Path) -> None:
    url, _root, stats = index
    data = tmp_path / datafiles.KERNELS.name
    assert _run(url, data) == 0
    rows = _rows(data)
    assert [(r["version"], r["arch"], r["wheel"].split("-")[2], r["member"]) for r in rows] == [
        ("0.6.0", "x86_64", "cp38", "vllm/_C.abi3.so"),
        ("0.10.2", "aarch64", "cp38", "vllm/_C.abi3.so"),
        ("0.10.2", "x86_64", "cp38", "vllm/_C.abi3.so"),
        ("0.21.0", "x86_64", "1", "vllm/_C.abi3.so"),
        ("0.21.0", "x86_64", "cp38", "vllm/_C.abi3.so"),
        ("0.24.0", "x86_64", "cp38", "vllm/_C_stable_libtorch.abi3.so"),
    ]
    by_version = {(r["version"], r["arch"]): r for r in rows}
    assert by_version[("0.10.2", "x86_64")]["nvcc"] == "12.8.93"
    assert by_version[("0.10.2", "x86_64")]["nvcc_release"] == "12.8"
    assert "nvcc" not in by_version[("0.24.0", "x86_64")]  # mangled: the release alone
    assert by_version[("0.24.0", "x86_64")]["nvcc_release"] == "13.0"
    old = by_version[("0.6.0", "x86_64")]
    assert old["nvcc_banners"] == 0 and "nvcc_release" not in old
    for r in rows:
        assert r["sass"] == ["sm_89"] and r["ptx"] == ["compute_89"] and r["ptx_isa"] == "8.7"
        assert str(r["source"]).startswith(url.removesuffix("/simple") + "/files/vllm-")
        assert str(r["uploaded"]).endswith(":00Z")  # whole seconds
    assert len({r["wheel_sha256"] for r in rows}) == len(rows)
    assert kerneldata.load(data)  # the file loads with builder's own loader
    # Incremental: nothing new, nothing read (one request for the index page).
    before, text = stats.requests, data.read_text()
    assert _run(url, data) == 0
    assert stats.requests == before + 1 and data.read_text() == text


def test_a_failed_wheel_is_read_by_the_next_run(index: tuple[str, Path, httpserver.Stats], tmp_path: Path) -> None:
    url, root, stats = index
    data = tmp_path / datafiles.KERNELS.name
    victim = next((root / "files").glob("vllm-0.10.2-*aarch64.whl"))
    stash = victim.with_suffix(".hidden")
    victim.rename(stash)
    try:
        assert _run(url, data) == 1  # that wheel is gone (HTTP 404): the others are written
    finally:
        stash.rename(victim)
    assert len(_rows(data)) == 5
    before = stats.requests
    assert _run(url, data) == 0
    assert len(_rows(data)) == 6
    # the index page, then one wheel: the zip tail, the local header and the member's bytes
    assert 3 <= stats.requests - before <= 6
    assert [p for p in stats.paths[before:] if p.startswith("/files/")] == [f"/files/{victim.name}"] * (
        stats.requests - before - 1)


def test_rows_of_an_older_schema_are_read_again(index: tuple[str, Path, httpserver.Stats], tmp_path: Path) -> None:
    url, _root, _stats = index
    data = tmp_path / datafiles.KERNELS.name
    data.write_text('schema = 1\n\n[[kernels]]\npackage = "vllm"\nversion = "0.1"\n')
    assert _run(url, data, "--arch", "aarch64") == 0
    assert [(r["version"], r["arch"]) for r in _rows(data)] == [("0.10.2", "aarch64")]


def test_dry_run_lists_and_writes_nothing(index: tuple[str, Path, httpserver.Stats], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url, _root, _stats = index
    data = tmp_path / datafiles.KERNELS.name
    assert _run(url, data, "--dry-run") == 0
    assert not data.exists()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and out[0].startswith("vllm-0.6.0-cp38-abi3-manylinux_2_28_x86_64.whl 2026-")


@pytest.mark.parametrize("script", ["kernel_data", "requires_data"])
def test_an_index_that_cannot_be_read_is_one_line_and_exit_3(script: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    main = importlib.import_module(f"scripts.{script}").main
    code = main(["--all", "--dry-run", "--index", "http://127.0.0.1:9/simple", "--data", str(tmp_path / "d.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and err[0].startswith(f"{script}.py: error: "), err
    assert not (tmp_path / "d.toml").exists()
