"""The fatbin reader (builder.binaries.fatbin) against NVIDIA's own cuobjdump, on real binaries.

Real inputs: vLLM 0.13.0's ``_flashmla_extension_C.abi3.so`` (committed, see
tests/data/fatbin/README.md) and, when nvcc is installed, a kernel compiled here
for several targets.  cuobjdump comes from PyPI (``nvidia-cuda-cuobjdump``, the
``dev`` extra).
"""

from __future__ import annotations

import lzma
import os
import random
import re
import struct
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder import _proc
from builder.binaries import fatbin
from builder.binaries.archcompat import Arch, covers

DATA = Path(__file__).parent / "data" / "fatbin"
FLASHMLA = DATA / "vllm-0.13.0-_flashmla_extension_C.abi3.so.xz"


def _cuobjdump() -> str:
    for scheme_dir in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}:
        hits = sorted(Path(scheme_dir, "nvidia").glob("*/bin/cuobjdump"))
        if hits:
            return str(hits[-1])
    found = _proc.which("cuobjdump")
    if found is None:
        pytest.fail("cuobjdump not found: install the dev extra (nvidia-cuda-cuobjdump)")
    return found


def cuobjdump_listing(path: Path) -> list[str]:
    """``cuobjdump --list-elf --list-ptx`` as ["sm_90a", "compute_80", ...] in file order.

    cuobjdump names an entry ``<file>.<n>.sm_XY[a|f].cubin`` / ``.ptx``; a PTX
    ``compute_XY`` is printed as ``sm_XY.ptx``.
    """
    r = _proc.run([_cuobjdump(), "--list-elf", "--list-ptx", str(path)], timeout=120)
    if r.returncode == 255 and "does not contain device code" in r.stderr:
        return []
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines():
        m = re.fullmatch(r"(ELF|PTX) file\s+\d+: .*\.sm_(\d+[af]?)\.(cubin|ptx)", line.strip())
        assert m, line
        out.append(("sm_" if m.group(1) == "ELF" else "compute_") + m.group(2))
    return out


def as_cuobjdump(listing: tuple[str, ...]) -> list[str]:
    # cuobjdump 13.x prints a family-specific cubin (fatbin flag 0x200000) without its
    # "f" (sm_100f -> "sm_100"), but keeps it for PTX (compute_100f -> "sm_100f.ptx").
    return [x[:-1] if x.startswith("sm_") and x.endswith("f") else x for x in listing]


@pytest.fixture(scope="module")
def flashmla(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fatbin") / "_flashmla_extension_C.abi3.so"
    path.write_bytes(lzma.decompress(FLASHMLA.read_bytes()))
    return path


def nv_fatbin_section(data: bytes) -> bytes:
    from builder.binaries import elf

    sec = next(s for s in elf.sections(data) if s.name == ".nv_fatbin")
    return data[sec.offset: sec.offset + sec.size]


# --- (a) a real binary from a PyPI wheel ---------------------------------------------------

def test_real_vllm_extension_matches_cuobjdump(flashmla: Path) -> None:
    report = fatbin.read_bytes(flashmla.read_bytes())
    assert list(report.listing) == cuobjdump_listing(flashmla)


def test_real_vllm_extension_pinned(flashmla: Path) -> None:
    report = fatbin.read_bytes(flashmla.read_bytes())
    assert report.listing == ("sm_90a", "sm_100a", "sm_90a", "sm_100a")
    assert report.archs.sass_names() == ["sm_90a", "sm_100a"] and report.archs.ptx == frozenset()
    assert (report.containers, report.entries, report.region, report.outside) == (2, 4, ".nv_fatbin", 0)
    assert report.ptx_isa is None and report.dropped == 0
    # Arch-specific code only: Hopper 9.0 and Blackwell 10.0, nothing else; in particular
    # not the operator's Ada (8.9), which is why this extension cannot decide gpu-arch.
    assert covers(report.archs, "9.0")[0] and covers(report.archs, "10.0")[0]
    for cc in ("8.9", "9.1", "10.3", "12.0"):
        assert covers(report.archs, cc) == (False, f"nothing runs on {cc}: only arch-specific code for other GPUs")


def test_strings_are_not_evidence(flashmla: Path) -> None:
    # The old string scan (elf.sm_archs) sees "sm_100" only, and no arch-specific suffix;
    # the fatbin headers (and cuobjdump) say sm_90a and sm_100a.  Strings are not code.
    from builder.binaries import elf

    data = flashmla.read_bytes()
    assert elf.sm_archs(data) == ["sm_100"]
    assert fatbin.read_bytes(data).archs.sass == {Arch(90, "a"), Arch(100, "a")}


def test_bare_fatbin_section_reads_the_same(flashmla: Path) -> None:
    data = flashmla.read_bytes()
    elf_report = fatbin.read_bytes(data)
    bare = fatbin.read_bytes(nv_fatbin_section(data))
    assert bare.region == "whole file"
    assert (bare.archs, bare.listing, bare.containers) == (elf_report.archs, elf_report.listing, 2)


def test_containers_outside_nv_fatbin_do_not_count(flashmla: Path, tmp_path: Path) -> None:
    # Rename the sections (same length) in the section-name table: the containers are
    # still in the file, but not where cuobjdump looks (.nv_fatbin, else the wrappers in
    # .nvFatBinSegment), like the fatbins libcupti embeds for cuModuleLoadData.
    data = flashmla.read_bytes()
    assert data.count(b".nv_fatbin\0") == 1 and data.count(b".nvFatBinSegment\0") == 1
    renamed = data.replace(b".nv_fatbin\0", b".nv_fatbix\0")
    renamed = renamed.replace(b".nvFatBinSegment\0", b".nvFatBinSegmenX\0")
    report = fatbin.read_bytes(renamed)
    assert (report.containers, report.outside, report.archs.sass) == (0, 2, frozenset())
    path = tmp_path / "renamed.so"
    path.write_bytes(renamed)
    assert cuobjdump_listing(path) == []


# --- (b) a kernel compiled here, for targets we choose ---------------------------------------

KERNEL = r"""
extern "C" __global__ void axpy(float a, const float *x, float *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
"""
GENCODE = [
    "arch=compute_75,code=sm_75",
    "arch=compute_80,code=compute_80",     # PTX only
    "arch=compute_89,code=sm_89",
    "arch=compute_90a,code=[sm_90a,compute_90a]",  # arch-specific SASS and PTX
    "arch=compute_100f,code=sm_100f",       # family-specific (CUDA 12.9+)
    "arch=compute_120,code=[sm_120,compute_120]",
]
WANT_SASS = {Arch(75), Arch(89), Arch(90, "a"), Arch(100, "f"), Arch(120)}
WANT_PTX = {Arch(80), Arch(90, "a"), Arch(120)}


def _nvcc() -> str | None:
    return _proc.which("nvcc") or _proc.which("/usr/local/cuda/bin/nvcc")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    d = tmp_path_factory.mktemp("nvcc")
    (d / "k.cu").write_text(KERNEL)
    gen = [x for g in GENCODE for x in ("-gencode", g)]
    out = {"so": d / "k.so", "so-compressed": d / "kz.so", "fatbin": d / "k.fatbin"}
    for argv in (
        [nvcc, "-shared", "-Xcompiler", "-fPIC", "-Xfatbin", "-compress=false", "-o", str(out["so"]), *gen],
        [nvcc, "-shared", "-Xcompiler", "-fPIC", "-Xfatbin", "-compress-all", "-o", str(out["so-compressed"]), *gen],
    ):
        r = _proc.run([*argv, str(d / "k.cu")], timeout=600, cwd=str(d))
        assert r.ok, r.stderr_tail()
    out["fatbin"].write_bytes(nv_fatbin_section(out["so"].read_bytes()))  # a bare fatbin, as `nvcc -fatbin` writes
    return out


@pytest.mark.parametrize("kind", ["so", "so-compressed", "fatbin"])
def test_compiled_kernel_matches_cuobjdump_and_the_requested_targets(compiled: dict[str, Path], kind: str) -> None:
    path = compiled[kind]
    report = fatbin.read_bytes(path.read_bytes())
    assert as_cuobjdump(report.listing) == cuobjdump_listing(path)
    assert report.archs.sass == WANT_SASS and report.archs.ptx == WANT_PTX
    assert report.region == ("whole file" if kind == "fatbin" else ".nv_fatbin")
    nvcc_ptx_isa = report.ptx_isa
    assert nvcc_ptx_isa is not None and re.fullmatch(r"\d+\.\d", nvcc_ptx_isa)


def test_compressed_entries_are_read_without_decompressing(compiled: dict[str, Path]) -> None:
    plain = fatbin.read_bytes(compiled["so"].read_bytes())
    packed = fatbin.read_bytes(compiled["so-compressed"].read_bytes())
    assert packed.listing == plain.listing
    scan = fatbin.Scanner()
    scan.feed(compiled["so-compressed"].read_bytes())
    entries = [e for c in scan.finish() for e in c.entries]
    assert entries and all(e.compressed for e in entries)


def test_compiled_kernel_coverage(compiled: dict[str, Path]) -> None:
    # nvcc -shared writes two containers here: one with SASS only, one with SASS and PTX.
    archs = fatbin.kernel_archs(compiled["so"].read_bytes())
    assert [g.containers for g in archs.groups] == [1, 1]
    ok, why = covers(archs, "8.9")
    assert ok and why.endswith("sm_89 SASS runs natively on 8.9; 2 of 2 kernel containers have code for 8.9")
    ok, why = covers(archs, "8.6")  # sm_89 SASS does not run on 8.6; PTX compute_80 does, in one container
    assert ok and "PTX compute_80 is JIT-compiled" in why and "1 of 2 kernel containers have code for 8.6" in why
    ok, why = covers(archs, "10.3")  # family-specific sm_100f runs on 10.3
    assert ok and "sm_100f SASS runs on 10.3 (same major, older minor); 2 of 2" in why
    assert not covers(archs, "7.0")[0]
    ok, why = covers(archs, "11.0")  # compute_90a is arch-specific (9.0 only); compute_80 JITs anywhere newer
    assert ok and "PTX compute_80 is JIT-compiled" in why


# --- streams, chunking, hostile input ----------------------------------------------------------

def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i: i + n])
        i, k = i + n, k + 1
    return out


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=200_000), min_size=1, max_size=8))
def test_stream_equals_whole_bytes_for_any_chunking(sizes: list[int]) -> None:
    data = lzma.decompress(FLASHMLA.read_bytes())
    assert fatbin.read_stream(_chunks(data, sizes)) == fatbin.read_bytes(data)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=6), seed=st.integers(0, 2**32))
def test_stream_equals_whole_bytes_on_mixed_input(sizes: list[int], seed: int) -> None:
    # Real containers, a truncated one, fake magics and noise, cut at small sizes so that
    # headers straddle chunk boundaries.
    rng = random.Random(seed)
    section = nv_fatbin_section(lzma.decompress(FLASHMLA.read_bytes()))
    small = section[-37760:]  # the second, smaller container (16 + 37744 bytes)
    assert fatbin.read_bytes(small).containers == 1
    noise = bytes(rng.getrandbits(8) for _ in range(3000))
    fake = struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, 4096) + noise[:200]
    data = noise + small + fake + small[:5000] + struct.pack("<I", fatbin.MAGIC) + small + noise
    whole = fatbin.read_bytes(data)
    assert whole.containers == 2 and whole.listing == ("sm_90a", "sm_100a") * 2
    assert fatbin.read_stream(_chunks(data, sizes)) == whole


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=4096))
def test_random_bytes_give_nothing(data: bytes) -> None:
    report = fatbin.read_bytes(data)
    assert (report.containers, report.entries, report.archs.sass, report.archs.ptx) == (0, 0, frozenset(), frozenset())


def test_random_megabytes_with_magic_give_nothing() -> None:
    rng = random.Random(7)
    blob = bytearray(rng.randbytes(4 << 20))
    for pos in rng.sample(range(len(blob) - 16), 2000):  # many magics with plausible headers
        blob[pos: pos + 16] = struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, rng.randrange(64, 1 << 20))
    report = fatbin.read_bytes(bytes(blob))
    assert report.containers == 0 and report.listing == ()


@pytest.mark.parametrize("cut", [16, 17, 80, 1000, 37700, 37759])
def test_truncated_container_gives_nothing(flashmla: Path, cut: int) -> None:
    small = nv_fatbin_section(flashmla.read_bytes())[-37760:]
    assert fatbin.read_bytes(small[:cut]).containers == 0
    assert fatbin.read_stream(_chunks(small[:cut], [13])).containers == 0


def _container(entries: list[tuple[int, int, int, bytes]], fat: int | None = None, version: int = 1,
               header_size: int = 16, entry_size: int = 64, csize: int = 0) -> bytes:
    body = b""
    for kind, arch, flags, payload in entries:
        body += struct.pack("<HHIQIIHHIIIQ", kind, 0x101, entry_size, len(payload), csize, 0, 0, 1, arch, 0, 0, flags)
        body += b"\0" * (entry_size - 48) + payload
    return struct.pack("<IHHQ", fatbin.MAGIC, version, header_size, len(body) if fat is None else fat) + body


def test_hand_made_container_is_read() -> None:
    blob = _container([(2, 89, 0x11, b"\0" * 64), (1, 80, 0x11, b"\0" * 8)])
    report = fatbin.read_bytes(blob)
    assert report.listing == ("sm_89", "compute_80") and report.ptx_isa == "1.0"
    assert fatbin.read_bytes(_container([(2, 100, 0x8011, b"\0" * 64)], entry_size=120, csize=64)).listing == (
        "sm_100",)  # compressed, with a long (LTO-style) entry header


@pytest.mark.parametrize(("why", "blob"), [
    ("version 2", _container([(2, 89, 0, b"\0" * 64)], version=2)),
    ("header size 24", _container([(2, 89, 0, b"\0" * 64)], header_size=24)),
    ("entries overrun the container", _container([(2, 89, 0, b"\0" * 64)], fat=100)),
    ("container longer than its entries", _container([(2, 89, 0, b"\0" * 64)], fat=64 + 64 + 64) + b"\0" * 64),
    ("kind 3", _container([(3, 89, 0, b"\0" * 64)])),
    ("kind 0", _container([(0, 89, 0, b"\0" * 64)])),
    ("arch 7", _container([(2, 7, 0, b"\0" * 64)])),
    ("arch 5000", _container([(1, 5000, 0, b"\0" * 64)])),
    ("entry header of 56 bytes", _container([(2, 89, 0, b"\0" * 64)], entry_size=56)),
    ("entry header of 68 bytes", _container([(2, 89, 0, b"\0" * 64)], entry_size=68)),
    ("entry header of 8 KiB", _container([(2, 89, 0, b"\0" * 64)], entry_size=8192)),
    ("compressed size over the payload", _container([(2, 89, 0x8011, b"\0" * 64)], csize=65)),
    ("empty container", struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, 0)),
    ("magic only", struct.pack("<I", fatbin.MAGIC)),
])
def test_invalid_containers_give_nothing(why: str, blob: bytes) -> None:
    report = fatbin.read_bytes(b"x" * 5 + blob + b"y" * 7)
    assert report.containers == 0, why


def test_too_many_overlapping_candidates_are_dropped_not_trusted() -> None:
    # Each header claims a huge container with a valid first entry whose payload never
    # ends: all stay open at once.
    fat = 1 << 30
    one = struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, fat) + struct.pack(
        "<HHIQIIHHIIIQ", 2, 0x101, 64, fat - 64, 0, 0, 0, 1, 89, 0, 0, 0x11) + b"\0" * 16
    blob = one * (fatbin.MAX_ACTIVE + 10) + os.urandom(256)
    report = fatbin.read_bytes(blob)
    assert report.dropped >= 10 and report.containers == 0


def test_lto_entries_are_not_code_the_driver_runs() -> None:
    blob = _container([(8, 89, 0x11, b"\0" * 64), (2, 80, 0x11, b"\0" * 64)])
    report = fatbin.read_bytes(blob)
    assert report.listing == ("sm_80",) and report.other_entries == 1


def test_committed_binary_is_the_wheel_member() -> None:
    import hashlib

    readme = (DATA / "README.md").read_text()
    digest = hashlib.sha256(lzma.decompress(FLASHMLA.read_bytes())).hexdigest()
    assert f"| member sha256 | `{digest}` |" in readme
    assert FLASHMLA.stat().st_size < 500_000


@pytest.mark.network
def test_pypi_member_streams_to_the_committed_answer(tmp_path: Path) -> None:
    # The same member, read live from PyPI by builder.check.deepread: ~0.5 MB, a few seconds.
    from builder.check import deepread

    readme = (DATA / "README.md").read_text()
    url = re.search(r"\| wheel URL \| (\S+) \|", readme)
    sha = re.search(r"\| wheel sha256 \| `(\w+)` \|", readme)
    assert url and sha
    ref = deepread.MemberRef(filename=url.group(1).rsplit("/", 1)[1], sha256=sha.group(1), url=url.group(1),
                             size=474_942_618, member="vllm/_flashmla_extension_C.abi3.so")
    r = deepread.deep_read(ref, cache=deepread.DeepCache(tmp_path))
    assert r.archs == fatbin.read_bytes(lzma.decompress(FLASHMLA.read_bytes())).archs
    assert r.member_size == 968_248 and r.bytes_transferred < 2_000_000


def test_entry_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fatbin, "MAX_ENTRIES", 3)
    blob = _container([(2, 89, 0x11, b"")] * 2) * 3
    report = fatbin.read_bytes(blob)
    assert report.containers == 1 and report.dropped == 2
