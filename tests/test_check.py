"""builder check: identities and rules on small real wheels locked by real uv,
served over a local Range-honouring HTTP server; network tests on the real locks."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import pylock
from builder.check import pipeline as check
from builder.check import wheels
from builder.check.rules import tag_rules, verdict
from builder.driver import snapshot
from builder.driver.facts import HostFacts
from builder.errors import ToolNotFound, Unavailable
from builder.project import Project
from tests.helpers import cuda_world, httpserver
from tests.helpers.scripts import sh

ROOT = Path(__file__).resolve().parent.parent
ADA = ("8.9",)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, httpserver.Stats]]:
    with cuda_world.served(tmp_path_factory) as (proj, stats):
        yield Project(proj), stats


def _host(driver: str | None, ccs: tuple[str, ...], glibc: str | None, origin: str = "test") -> HostFacts:
    return HostFacts(origin=origin).overridden(driver=driver, ccs=ccs, glibc=glibc)


def _check(proj: Project, mid: str, driver: str, cache: Path, **kw: object) -> check.Report:
    m = proj.matrix(mid)
    host = _host(driver, ADA, "2.35", "test")
    return check.check_lock(pylock.read(proj.locks / f"matrix-{mid}" / "pylock.py312.toml"), matrix=m, host=host,
                            opts=check.CheckOptions(cache_dir=cache, **kw))  # type: ignore[arg-type]


def _level(r: check.Report, rule: str) -> str:
    f = r.finding(rule)
    assert f is not None, rule
    return f.level


def test_matrix_b_like_warns_on_toolkit_order_and_declared_floor(world, tmp_path: Path) -> None:
    proj, _ = world
    r = _check(proj, "b", "575.57.08", tmp_path)
    vllm, torch = r.packages["vllm"].identity, r.packages["torch"].identity
    assert vllm and vllm.cudart_soname == "libcudart.so.12" and vllm.build_toolkit == "12.9.86"
    assert vllm.kind == "binary" and vllm.archs == ("sm_80", "sm_89")
    assert torch and (torch.runtime, torch.cublas, torch.kind) == ("12.8.90", "12.8.4.1", "requires-dist")
    assert r.packages["torchvision"].identity.kind == "follows-torch"  # type: ignore[union-attr]
    assert r.packages["flashinfer-python"].identity.jit_only  # type: ignore[union-attr]
    tk = r.finding("cuda-toolkit-order")
    assert tk and tk.level == "warn" and "nvidia-cublas-cu12>=12.9,<12.10" in tk.message
    assert "pytorch/pytorch/issues/174949" in tk.source
    dn = r.finding("driver-native")
    assert dn and dn.level == "warn" and "570.26 is below the native floor 575.57.08" in dn.message
    assert "minor-version compatibility" in dn.message
    assert r.driver["native_min"] == "575.57.08" and r.driver["compat_min"] == "525.60.13"
    assert _level(r, "driver-compat") == "pass" and _level(r, "torch-pin") == "pass"
    assert _level(r, "cuda-major") == "pass"
    ga = r.finding("gpu-arch")  # this vLLM wheel is not in builder/data/kernels.toml: not judged
    assert ga and ga.level == "warn" and "--deep" in ga.message and "vllm/_C.abi3.so" in ga.message
    assert r.verdict == "warn"


def test_deep_reads_the_main_extension_and_judges_the_gpu(world, tmp_path: Path) -> None:
    proj, stats = world
    r = _check(proj, "a", "575.57.08", tmp_path, deep=True)
    ga = r.finding("gpu-arch")
    assert ga and ga.level == "pass" and "vllm/_C.abi3.so" in ga.message and "deep read" in ga.message
    assert "sm_89 SASS runs natively on 8.9" in ga.message
    kern = r.packages["vllm"].identity.kernels  # type: ignore[union-attr]
    assert kern and kern.origin == "deep read" and kern.archs.sass_names() == ["sm_80", "sm_89", "sm_90a"]
    assert r.fetched["deep_bytes"] > 600_000 and r.fetched["deep_requests"] >= 2  # the member, by ranges
    assert r.verdict == "pass"
    # cached by the wheel's sha256: a second deep check reads nothing, offline
    before = stats.requests
    again = _check(proj, "a", "575.57.08", tmp_path, deep=True, offline=True)
    kern2 = again.packages["vllm"].identity.kernels  # type: ignore[union-attr]
    assert kern2 and kern2.origin == "deep read (cached)" and stats.requests == before
    assert "deep_bytes" not in again.fetched and again.finding("gpu-arch").level == "pass"  # type: ignore[union-attr]
    # a GPU that neither the SASS (8.0, 8.9) nor the PTX (8.9) runs on
    m = proj.matrix("a")
    old = check.check_lock(pylock.read(proj.locks / "matrix-a" / "pylock.py312.toml"), matrix=m,
                           host=_host("575.57.08", ("7.5",), "2.35"),
                           opts=check.CheckOptions(cache_dir=tmp_path, deep=True, offline=True))
    ga = old.finding("gpu-arch")
    assert ga and ga.level == "fail" and "nothing runs on 7.5" in ga.message


def test_matrix_a_like_has_no_toolkit_warning_and_fails_on_the_current_driver(world, tmp_path: Path) -> None:
    proj, _ = world
    r = _check(proj, "a", "550.107.02", tmp_path)
    assert _level(r, "cuda-toolkit-order") == "info"  # cudart 12.8 older than the 12.9 build: info only
    assert r.driver["native_min"] == "575.57.08"
    dn = r.finding("driver-native")
    assert dn and dn.level == "fail" and dn.message.startswith("driver upgrade required")
    assert _level(r, "driver-compat") == "warn"  # 550 >= 525.60.13: would run only under compat
    assert r.verdict == "fail"
    assert check.chooser_row(r)["blocker"] == "driver upgrade required: needs a reboot"
    assert _check(proj, "a", "575.57.08", tmp_path, deep=True).verdict == "pass"


def test_vllm_020_forced_onto_torch_29_fails_torch_pin_and_cuda_major(world, tmp_path: Path) -> None:
    proj, _ = world
    r = _check(proj, "c", "580.95.05", tmp_path)
    assert r.packages["vllm"].identity.cudart_soname == "libcudart.so.13"  # type: ignore[union-attr]
    tp = r.finding("torch-pin")
    assert tp and tp.level == "fail" and "requires torch==2.11.0; the lock has torch 2.9.0" in tp.message
    cm = r.finding("cuda-major")
    assert cm and cm.level == "fail" and "CUDA 12" in cm.message and "CUDA 13" in cm.message
    assert r.verdict == "fail"


def test_second_check_is_served_from_the_cache_without_network(world, tmp_path: Path) -> None:
    proj, stats = world
    first = _check(proj, "b", "575.57.08", tmp_path)
    assert first.fetched["requests"] > 0
    lock = tomllib.loads((proj.locks / "matrix-b" / "pylock.py312.toml").read_text())
    vllm_size = next(w["size"] for p in lock["packages"] if p["name"] == "vllm" for w in p["wheels"])
    assert 0 < first.fetched["bytes"] < vllm_size  # vLLM read by ranges, not downloaded
    before = stats.requests
    second = _check(proj, "b", "575.57.08", tmp_path, offline=True)
    assert second.fetched == {"requests": 0, "bytes": 0} and stats.requests == before
    assert [f.to_json() for f in second.findings] == [f.to_json() for f in first.findings]


def test_unreadable_wheel_with_empty_cache_is_unavailable(world, tmp_path: Path) -> None:
    proj, stats = world
    stats.fail_with = 503
    try:
        with pytest.raises(Unavailable, match="HTTP 503"):
            _check(proj, "b", "575.57.08", tmp_path)
    finally:
        stats.fail_with = None
    with pytest.raises(Unavailable, match="--offline"):
        _check(proj, "b", "575.57.08", tmp_path / "empty", offline=True)


def test_unknown_host_driver_and_gpu_are_warnings_not_passes(world, tmp_path: Path) -> None:
    proj, _ = world
    m = proj.matrix("a")
    r = check.check_lock(pylock.read(proj.locks / "matrix-a" / "pylock.py312.toml"), matrix=m,
                         host=HostFacts(origin="none"), opts=check.CheckOptions(cache_dir=tmp_path))
    assert {_level(r, x) for x in ("driver-native", "driver-compat", "gpu-arch", "platform-tag")} == {"warn"}
    assert r.verdict == "warn"


def test_gpu_arch_fails_for_pascal_on_cuda_13(world, tmp_path: Path) -> None:
    proj, _ = world
    m = proj.matrix("c")
    r = check.check_lock(pylock.read(proj.locks / "matrix-c" / "pylock.py312.toml"), matrix=m,
                         host=_host("580.95.05", ("6.1",), "2.35"), opts=check.CheckOptions(cache_dir=tmp_path))
    ga = r.finding("gpu-arch")
    assert ga and ga.level == "fail" and "CUDA 13 supports compute capability 7.5" in ga.message


def test_predict_reports_what_the_runtime_should_show(world, tmp_path: Path) -> None:
    proj, _ = world
    p = check.predict(pylock.read(proj.locks / "matrix-b" / "pylock.py312.toml"), cache_dir=tmp_path)
    assert p == {"torch": "2.9.0", "torch_reported": "2.9.0+cu128", "torch_cuda": "12.8", "vllm": "0.13.0",
                 "cudart_soname": "libcudart.so.12", "build_toolkit": "12.9.86"}


# ------------------------------------------------------------ tag rules on hand-written locks


def _facts_for(lock: str, tmp_path: Path, glibc: str = "2.35") -> check.Facts:
    path = tmp_path / "pylock.toml"
    path.write_text(lock)
    return check.gather(pylock.read(path), matrix=None, host=_host("575.57.08", ADA, glibc),
                        opts=check.CheckOptions(python="3.12", cache_dir=tmp_path), stats=wheels.FetchStats())


HAND_LOCK = """\
lock-version = "1.0"
created-by = "hand"
requires-python = ">=3.12"

[[packages]]
name = "srconly"
version = "1.0"
sdist = {{ url = "https://example.invalid/srconly-1.0.tar.gz", hashes = {{ sha256 = "{h}" }} }}

[[packages]]
name = "newglibc"
version = "1.0"
[[packages.wheels]]
url = "https://example.invalid/newglibc-1.0-cp312-cp312-manylinux_2_39_x86_64.whl"
hashes = {{ sha256 = "{h}" }}

[[packages]]
name = "py313only"
version = "1.0"
[[packages.wheels]]
url = "https://example.invalid/py313only-1.0-cp313-cp313-manylinux_2_17_x86_64.whl"
hashes = {{ sha256 = "{h}" }}

[[packages]]
name = "fine"
version = "1.0"
[[packages.wheels]]
url = "https://example.invalid/fine-1.0-py3-none-any.whl"
hashes = {{ sha256 = "{h}" }}

[[packages]]
name = "windowsonly"
version = "1.0"
marker = "sys_platform == 'win32'"
sdist = {{ url = "https://example.invalid/windowsonly-1.0.tar.gz", hashes = {{ sha256 = "{h}" }} }}
""".format(h="0" * 64)


def test_tag_rules_name_sdist_glibc_and_python_problems(tmp_path: Path) -> None:
    f = _facts_for(HAND_LOCK, tmp_path)
    got = {x.id: x for x in tag_rules(f)}
    assert got["sdist-only"].level == "fail" and "srconly 1.0" in got["sdist-only"].message
    assert "windowsonly" not in got["sdist-only"].message  # marker false on the target
    assert got["platform-tag"].level == "fail" and "newglibc: needs glibc 2.39, host has 2.35" in \
        got["platform-tag"].message
    assert got["python-tag"].level == "fail" and "py313only" in got["python-tag"].message
    assert verdict(list(got.values())) == "fail"
    ok = {x.id: x.level for x in tag_rules(_facts_for(HAND_LOCK, tmp_path, glibc="2.39"))}
    assert ok["platform-tag"] == "pass"


def test_invalid_lock_is_a_lock_file_error(tmp_path: Path) -> None:
    from builder.errors import LockFileError

    bad = tmp_path / "pylock.toml"
    bad.write_text('lock-version = "1.0"\n[[packages]]\nversion = "1"\n')
    with pytest.raises(LockFileError, match="not a valid PEP 751 lock"):
        pylock.read(bad)


_HOST_DATA = Path(__file__).parent / "data" / "host"


def _smi_record(text: str, exit: int | str | None) -> snapshot.ProbeRecord:
    return snapshot.ProbeRecord(id="nvidia-smi-gpus", kind="command", command=("nvidia-smi",), path=None,
                                stdout=text, stderr="", exit=exit, duration=0.01)


def test_probe_reads_a_real_gpu_host_snapshot() -> None:
    snap = snapshot.load(_HOST_DATA / "snapshots" / "h200-driver-580-ubuntu-24.04.json")
    facts = check.host_from_snapshot(snap)
    assert (facts.driver, facts.ccs, facts.origin) == ("580.159.04", ("9.0",), "nvidia-smi")


@pytest.mark.parametrize("case", ["mismatch-one-line", "mismatch-two-line-570", "no-devices-were-found",
                                  "couldnt-communicate"])
def test_probe_never_guesses_a_driver_from_an_nvidia_smi_error(case: str) -> None:
    text = "".join(ln for ln in (_HOST_DATA / "nvidia-smi" / f"{case}.txt").read_text().splitlines(True)
                   if not ln.startswith("#!"))
    with pytest.raises(Unavailable, match="nvidia-smi could not report the driver"):
        check.host_from_snapshot(snapshot.make([_smi_record(text, 9)]))


def test_probe_without_nvidia_smi_is_tool_not_found() -> None:
    with pytest.raises(ToolNotFound):
        check.host_from_snapshot(snapshot.make([_smi_record("", "missing")]))


# ------------------------------------------------------------ the committed locks, against PyPI


def _real(mid: str, driver: str, cache: Path, python: str = "3.12") -> check.Report:
    proj = Project(ROOT)
    m = proj.matrix(mid)
    host = HostFacts.declared(proj.host()).overridden(driver=driver)
    path = ROOT / "locks" / f"matrix-{mid}" / f"pylock.py{python.replace('.', '')}.toml"
    return check.check_lock(pylock.read(path), matrix=m, host=host, opts=check.CheckOptions(cache_dir=cache))


@pytest.mark.network
def test_real_matrix_b_on_driver_575(tmp_path: Path) -> None:
    r = _real("b", "575.57.08", tmp_path)
    vllm, torch = r.packages["vllm"].identity, r.packages["torch"].identity
    assert vllm and (vllm.cudart_soname, vllm.build_toolkit) == ("libcudart.so.12", "12.9.86")
    assert torch and (torch.runtime, torch.cublas) == ("12.8.90", "12.8.4.1")
    assert _level(r, "cuda-toolkit-order") == "warn"
    dn = r.finding("driver-native")
    assert dn and dn.level == "warn" and "570.26 is below the native floor 575.57.08" in dn.message
    assert r.verdict == "warn"
    assert r.fetched["bytes"] < 2_000_000


@pytest.mark.network
def test_real_matrix_a_fails_on_the_current_driver(tmp_path: Path) -> None:
    r = _real("a", "550.107.02", tmp_path)
    assert _level(r, "cuda-toolkit-order") != "warn"
    assert r.driver["native_min"] == "575.57.08"
    assert r.verdict == "fail"
    # on its target driver matrix A warns only about the CUDA 13 bindings (cuda-bindings 13.1.1 needs 580.65.06)
    on575 = _real("a", "575.57.08", tmp_path)
    assert on575.verdict == "warn" and _level(on575, "cuda-bindings") == "warn"
    assert {f.id for f in on575.findings if f.level == "warn"} == {"cuda-bindings"}


@pytest.mark.network
def test_real_vllm_020_with_torch_29_fails(tmp_path: Path) -> None:
    from builder import _proc, tools

    (tmp_path / "req.in").write_text("vllm==0.20.0\ntorch==2.9.0\n")
    (tmp_path / "ov.txt").write_text("torch==2.9.0\n")
    res = _proc.run([tools.uv_bin(), "pip", "compile", str(tmp_path / "req.in"), "--format", "pylock.toml",
                     "--output-file", str(tmp_path / "pylock.toml"), "--no-config", "--quiet", "--no-build",
                     "--python-version", "3.12", "--python-platform", "x86_64-manylinux_2_35",
                     "--overrides", str(tmp_path / "ov.txt")], timeout=300, env=_proc.clean_env())
    assert res.returncode == 0, res.stderr
    data = tomllib.loads((tmp_path / "pylock.toml").read_text())
    versions = {p["name"]: p["version"] for p in data["packages"]}
    assert versions["vllm"] == "0.20.0" and versions["torch"] == "2.9.0"
    proj = Project(ROOT)
    host = HostFacts.declared(proj.host()).overridden(driver="580.95.05")
    r = check.check_lock(pylock.read(tmp_path / "pylock.toml"), matrix=None, host=host,
                         opts=check.CheckOptions(cache_dir=tmp_path / "cache"))
    assert r.packages["vllm"].identity.cudart_soname == "libcudart.so.13"  # type: ignore[union-attr]
    assert _level(r, "torch-pin") == "fail" and _level(r, "cuda-major") == "fail"
    assert r.verdict == "fail"


def _fake_smi(tmp_path: Path, body: str) -> str:
    sh(tmp_path / "bin" / "nvidia-smi", body)
    return f"{tmp_path / 'bin'}:/usr/bin:/bin"


def test_probe_runs_the_real_probe_against_a_fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = snapshot.load(_HOST_DATA / "snapshots" / "h200-driver-580-ubuntu-24.04.json").get("nvidia-smi-gpus")
    assert rec is not None
    out = tmp_path / "out.csv"
    out.write_text(rec.stdout)
    monkeypatch.setenv("PATH", _fake_smi(tmp_path, f"cat {out}\n"))
    facts = check.probe_host()
    assert (facts.driver, facts.ccs) == ("580.159.04", ("9.0",))
    monkeypatch.setenv("PATH", _fake_smi(tmp_path, "echo 'Failed to initialize NVML: Driver/library version mismatch'\n"
                                                   "exit 18\n"))
    with pytest.raises(Unavailable, match="mismatch"):
        check.probe_host()
