"""Shipped GPU-arch data (builder/data/kernels.toml): loads, covers every CUDA vLLM wheel on
PyPI, and says what the PyPI wheels say.

The rows were produced by scripts/kernel_data.py (builder's fatbin reader streaming the
member out of the PyPI wheel, 2026-12-07); the vLLM 0.13.0 row was also cross-checked entry
by entry against NVIDIA's ``cuobjdump --list-elf --list-ptx`` on the extracted member
(334 entries, same order) on 2026-11-30.  The network-marked test at the end locks
``vllm==X`` alone, at each row's upload time and on its architecture, and checks that
``gpu-arch`` is judged from the row.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from builder import data as datafiles
from builder.binaries import fatbin
from builder.binaries.archcompat import covers
from builder.check import kerneldata, knowledge
from builder.errors import DataFileError

VLLM_0130_SHA = "12b3d0a3b91c32a0091349de64b464f1c3d499a5b3a5d0ec387fef94ed5df6ee"  # 474,942,618 bytes on PyPI
STABLE = "vllm/_C_stable_libtorch.abi3.so"


@pytest.fixture(scope="module")
def rows() -> tuple[kerneldata.KernelRow, ...]:
    return kerneldata.load()


def _row(rows: tuple[kerneldata.KernelRow, ...], version: str, arch: str = "x86_64") -> kerneldata.KernelRow:
    return next(r for r in rows if r.package == "vllm" and r.version == version and r.arch == arch)


def test_every_cuda_wheel_of_vllm_on_pypi_has_a_row(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    # PyPI, 2026-12-07: 67 releases with an x86_64 wheel from 0.6.0 (70 wheels: 0.20.1, 0.21.0 and
    # 0.23.0 were re-uploaded under a build tag, and both files stay), 37 with an aarch64 wheel
    # (the first is 0.10.2; 40 wheels); no yanked file or pre-release among them.
    assert Counter(r.arch for r in rows) == {"x86_64": 70, "aarch64": 40}
    releases = {a: sorted({Version(r.version) for r in rows if r.arch == a}) for a in ("x86_64", "aarch64")}
    assert (len(releases["x86_64"]), len(releases["aarch64"])) == (67, 37)
    assert (str(releases["x86_64"][0]), str(releases["aarch64"][0])) == ("0.6.0", "0.10.2")
    assert str(releases["x86_64"][-1]) == str(releases["aarch64"][-1]) == "0.34.0"
    assert not any(v.is_prerelease for vs in releases.values() for v in vs)
    assert len({r.wheel_sha256 for r in rows}) == len(rows)  # one row per wheel
    tagged = sorted((r.version, r.arch) for r in rows if r.wheel.split("-")[2][0].isdigit())
    assert tagged == [(v, a) for v in ("0.20.1", "0.21.0", "0.23.0") for a in ("aarch64", "x86_64")]


def test_every_row_is_from_builders_reader_and_names_its_wheel(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    for r in rows:
        assert r.produced_by == fatbin.PRODUCED_BY and r.reader_version == fatbin.READER_VERSION
        assert r.source.startswith("https://files.pythonhosted.org/") and r.source.endswith("/" + r.wheel)
        assert len(r.wheel_sha256) == 64 and r.wheel.startswith(f"vllm-{r.version}-")
        assert r.wheel.endswith(f"_{r.arch}.whl")
        assert dt.datetime.fromisoformat(r.uploaded.replace("Z", "+00:00")).year >= 2024
        assert r.archs.sass and r.entries >= r.containers > 0
        assert sum(g.containers for g in r.archs.groups) == r.containers
        assert r.bytes_transferred < r.wheel_size  # streamed the member, not the wheel


def test_the_member_is_the_first_main_extension_the_wheel_has(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    # The wheels' file lists (PyPI, 2026-12-07): _C.abi3.so alone up to 0.18.1, both in
    # 0.19.0-0.23.0 (so _C, the first of [[main-extension]], is read), _C_stable_libtorch alone
    # from 0.24.0.
    assert knowledge.load().main_extensions["vllm"] == ("vllm/_C.abi3.so", STABLE)
    for r in rows:
        assert r.member == (STABLE if Version(r.version) >= Version("0.24.0") else "vllm/_C.abi3.so"), r.wheel


def test_the_nvcc_banner_names_the_build_toolkit(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    def tk(v: str, arch: str = "x86_64") -> tuple[str | None, str | None]:
        r = _row(rows, v, arch)
        return r.nvcc, r.nvcc_release

    assert tk("0.6.0") == (None, None) and _row(rows, "0.6.0").ptx_isa == "8.1"  # no banner (CUDA 12.1's PTX)
    assert tk("0.9.1") == ("12.8.93", "12.8") and tk("0.11.0") == ("12.8.93", "12.8")
    assert tk("0.11.0", "aarch64") == ("12.9.86", "12.9")  # the aarch64 builds moved to 12.9 first
    assert tk("0.13.0") == tk("0.19.1") == ("12.9.86", "12.9")
    # CUDA 13 builds compress their fatbins: the banner's version is mangled ("V.88"), its release is not
    assert tk("0.20.0") == tk("0.24.0") == tk("0.34.0", "aarch64") == (None, "13.0")
    for r in rows:
        assert (r.nvcc_banners > 0) == (r.nvcc_release is not None), r.wheel
        assert r.nvcc is None or r.nvcc.startswith(r.nvcc_release + "."), r.wheel  # type: ignore[operator]


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
        assert covers(r.archs, "8.9")[1].startswith("main arch list"), r.wheel
        assert covers(r.archs, "8.9")[0], r.wheel


def test_aarch64_vllm_0130_targets_jetson_orin_natively(rows: tuple[kerneldata.KernelRow, ...]) -> None:
    r = _row(rows, "0.13.0", "aarch64")
    assert "sm_70" not in r.archs.sass_names() and "sm_87" in r.archs.sass_names()
    ok, why = covers(r.archs, "8.7")
    assert ok and "sm_87 SASS runs natively on 8.7" in why


def test_bad_rows_are_named_by_path() -> None:
    data = tomllib.loads(datafiles.KERNELS.read_text())
    data["kernels"][2]["sass"] = ["sm_8x"]
    with pytest.raises(DataFileError) as exc:
        kerneldata.from_mapping(data)
    assert exc.value.line().startswith(
        "builder/data/kernels.toml: kernels[2]: bad sass/ptx/groups: not a GPU architecture: 'sm_8x'")
    data = tomllib.loads(datafiles.KERNELS.read_text())
    data["kernels"][3]["nvc"] = "12.9.86"
    data["schema"] = 1
    problems = datafiles.problems_of(datafiles.KERNELS, data)
    assert any("kernels[3].nvc" in x and "nvcc" in x for x in problems)
    assert any("schema" in x and "expected 2, got 1" in x for x in problems)


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


# ------------------------------------------------------------ every row, in a real lock (network)

#: Locks PyPI can no longer make as they were made: (releases, ``--exclude-newer-package``
#: entries, overrides, why).  The vLLM wheel locked is the row's all the same.
LOCK_REPAIRS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    (">=0.6.0,<0.6.5", ("pyairports=2025-09-26T00:00:00Z",), (),
     "outlines 0.0.43-0.0.46 need pyairports, whose only file on PyPI is an sdist uploaded 2025-09-25"),
    (">=0.8.0,<0.8.3", ("xgrammar=2025-03-26T00:00:00Z",), ("xgrammar==0.1.17",),
     "vLLM pins xgrammar==0.1.16, which PyPI no longer has (0.1.14-0.1.16 are gone)"),
    ("==0.34.0", (), ("flashinfer-python==0.7.4",),
     "vLLM 0.34.0 pins flashinfer-python==0.7.3, a version PyPI never had"),
)
HOST = ("--driver", "580.95.05", "--gpu-cc", "9.0", "--glibc", "2.35")  # an H100 / GH200 host


def _lock_and_check(r: kerneldata.KernelRow, work: Path, cache: Path) -> str | None:
    """Lock ``vllm==X`` alone at the row's upload time (plus a minute) for its architecture,
    check it, and say what is wrong (None: gpu-arch was judged from this very row, and the
    build toolkit is known wherever the row's banner names it)."""
    from builder import _proc, tools
    from tests.helpers.cli import builder_cmd

    d = work / r.wheel.removesuffix(".whl")
    d.mkdir(parents=True)
    (d / "req.in").write_text(f"vllm=={r.version}\n")
    at = dt.datetime.fromisoformat(r.uploaded.replace("Z", "+00:00")) + dt.timedelta(minutes=1)
    argv = [tools.uv_bin(), "pip", "compile", str(d / "req.in"), "--format", "pylock.toml", "--output-file",
            str(d / "pylock.toml"), "--no-config", "--quiet", "--no-python-downloads", "--python-version", "3.12",
            "--python-platform", f"{r.arch}-manylinux_2_35", "--exclude-newer", at.strftime("%Y-%m-%dT%H:%M:%SZ")]
    for spec, newer, overrides, _why in LOCK_REPAIRS:
        if Version(r.version) in SpecifierSet(spec):
            argv += [a for pkg in newer for a in ("--exclude-newer-package", pkg)]
            if overrides:
                (d / "overrides.txt").write_text("".join(o + "\n" for o in overrides))
                argv += ["--overrides", str(d / "overrides.txt")]
    res = _proc.run(argv, timeout=900, env=_proc.clean_env())
    if res.returncode != 0:
        return f"{r.wheel}: uv pip compile failed: {res.stderr[-400:]}"
    chk = builder_cmd("check", "--lock", str(d / "pylock.toml"), "--arch", r.arch, *HOST, "--json",
                      "--cache-dir", str(cache), cwd=d, env=dict(os.environ), timeout=900)
    if chk.returncode not in (0, 1):
        return f"{r.wheel}: check exit {chk.returncode}: {chk.stderr[-400:]}"
    rep = json.loads(chk.stdout)
    vllm = rep["packages"].get("vllm") or {}
    kern = (vllm.get("cuda") or {}).get("kernels") or {}
    gpu_arch = next(f for f in rep["findings"] if f["id"] == "gpu-arch")
    problems = []
    if rep["arch"] != r.arch or vllm.get("version") != r.version:
        problems.append(f"judged {vllm.get('version')} on {rep['arch']}")
    if kern.get("origin") != "shipped data" or r.wheel not in kern.get("detail", "") or kern.get("member") != r.member:
        problems.append(f"kernels: {kern}")
    if "no fatbin data" in gpu_arch["message"] or r.member not in gpu_arch["message"]:
        problems.append(f"gpu-arch {gpu_arch['level']}: {gpu_arch['message'][:300]}")
    cuda = vllm.get("cuda") or {}
    if (r.nvcc or r.nvcc_release) and not (cuda.get("build_toolkit") or cuda.get("build_release")):
        problems.append(f"build toolkit unknown although {r.member} names nvcc {r.nvcc or r.nvcc_release}")
    return f"{r.wheel}: " + "; ".join(problems) if problems else None


@pytest.mark.network
@pytest.mark.slow
def test_every_row_decides_gpu_arch_in_a_lock_of_its_release(rows: tuple[kerneldata.KernelRow, ...],
                                                              tmp_path: Path) -> None:
    """110 locks and checks, 8 at a time: 5.4 minutes on 2 shared cores (2026-12-07).  Each lock is a
    real resolution from PyPI (3-5 s; ``--no-python-downloads``: without an interpreter of the
    target Python, uv would spend 10 s failing to download one); each check reads the lock's GPU
    wheels by range requests into one check cache the locks share (about 2 s cold)."""
    from builder import tools

    tools.uv_bin()  # found once, here: sysconfig's first use is not thread-safe
    cache = tmp_path / "check-cache"
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for p in pool.map(lambda r: _lock_and_check(r, tmp_path / "locks", cache), rows) if p]
    assert not problems, "\n".join(problems)
