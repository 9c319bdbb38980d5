"""End-to-end runtime builds from real locks over tiny local wheels, with real uv."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from builder import pylock
from builder.errors import EXIT_BUSY, EXIT_FAILED, EXIT_USAGE, BuildError, Busy, LockFileError
from builder.files import fsio
from builder.lock import state as lockstate
from builder.project import Project
from builder.protect import resolve
from builder.runtime import build as runtime
from builder.runtime import layout, sync
from tests.helpers import wheels
from tests.helpers.runtimes import PY312, World, builder, serve, write_project


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".staging-", ".trash-")))


def test_build_creates_a_complete_content_addressed_runtime(w: World) -> None:
    rt = w.runtime
    assert rt.parent == w.root and rt.name.startswith("matrix-t-py312-") and len(rt.name) == len("matrix-t-py312-") + 12
    m = json.loads((rt / "runtime.json").read_text())
    lock = pylock.read(w.project / "locks/matrix-t/pylock.py312.toml")
    assert m["lock"]["sha256"] == lock.sha256 and m["lock"]["path"] == "locks/matrix-t/pylock.py312.toml"
    assert m["lock"]["content"] == lock.content_hash
    assert rt.name == layout.runtime_name(Project(w.project).matrix("t"), PY312, lock.content_hash)
    assert m["interpreter"]["version"].startswith("3.12.") and m["interpreter"]["source"] in ("path", "pyenv", "uv")
    steps = {s["step"]: s["status"] for s in m["smoke"]["steps"]}
    for name in ("import torch", "import vllm", "import AsyncLLMEngine", "torch.__version__",
                 "torch.version.cuda", "vllm.__version__", "torch cudart", "vllm cudart", "vllm build toolkit"):
        assert steps[name] == "pass", (name, m["smoke"])
    assert steps["vllm --help"] == "skipped"
    assert steps["torch.cuda.is_available()"] == "skipped"
    assert m["smoke"]["expected_from"] == "builder check"  # compared with the checker's prediction
    # The pointer is a symlink to the content-addressed directory.
    ptr = w.root / "matrix-t-py312"
    assert ptr.is_symlink() and os.readlink(ptr) == rt.name
    assert _leftovers(w.root) == []
    cfg = (rt / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg and "relocatable = true" in cfg


def test_console_script_still_works_after_staging_was_renamed(w: World) -> None:
    r = subprocess.run([str(w.runtime / "bin" / "vllm"), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Failed to infer device type" in r.stderr
    assert ".staging-" not in (w.runtime / "bin" / "vllm").read_text()


def test_packages_are_hardlinked_from_the_cache_not_symlinked(w: World) -> None:
    site = next((w.runtime / "lib").glob("python3.12/site-packages"))
    ext = site / "vllm" / "_flashmla_extension_C.abi3.so"
    assert not ext.is_symlink() and ext.stat().st_nlink >= 2
    assert not any(p.is_symlink() for p in site.rglob("*"))


def test_same_lock_again_is_a_noop_that_says_so(w: World) -> None:
    before = (w.runtime / "runtime.json").stat().st_mtime_ns
    r = w.build()
    assert r.returncode == 0, r.stderr
    assert "already built from this lock" in r.stdout and "nothing to do" in r.stdout
    assert (w.runtime / "runtime.json").stat().st_mtime_ns == before


def test_force_rebuilds_and_swaps_atomically(w: World, tmp_path: Path) -> None:
    root = tmp_path / "rt"
    assert w.build(root=root).returncode == 0
    [rt] = [p for p in root.iterdir() if p.name.startswith("matrix-t-py312-")]
    first = json.loads((rt / "runtime.json").read_text())["built_at"]
    marker = rt / "old-build-marker"
    marker.write_text("x")
    time.sleep(1.1)
    r = w.build("--force", "--json", root=root)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)[0]
    assert out["status"] == "rebuilt" and Path(out["path"]) == rt
    assert not marker.exists() and json.loads((rt / "runtime.json").read_text())["built_at"] != first
    assert _leftovers(root) == []


def test_force_refuses_to_replace_a_runtime_in_use(w: World, tmp_path: Path) -> None:
    root = tmp_path / "rt"
    assert w.build(root=root).returncode == 0
    [rt] = [p for p in root.iterdir() if p.name.startswith("matrix-t-py312-")]
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=rt)
    try:
        time.sleep(0.2)
        r = w.build("--force", root=root)
        assert r.returncode == EXIT_BUSY, r.stderr
        assert f"in use by pid {user.pid}" in r.stderr
        assert (rt / "runtime.json").exists()
    finally:
        user.kill()
        user.wait()


def test_two_builds_of_one_runtime_do_not_collide(w: World, tmp_path: Path) -> None:
    proj = Project(w.project)
    req = runtime.BuildRequest(matrix="t", python=PY312, root=str(tmp_path), cache_dir=str(w.cache), gpu=False,
                               wait=0.3)
    lock = runtime.checked_lock(proj, proj.matrix("t"), PY312)
    name = layout.runtime_name(proj.matrix("t"), PY312, lock.content_hash)
    with fsio.directory_lock(tmp_path / ".locks" / name):
        with pytest.raises(Busy, match="another builder process holds"):
            runtime.build(proj, req, resolve())
    assert not (tmp_path / name).exists()


def test_sigkilled_build_leaves_nothing_complete_and_next_build_cleans_up(w: World, tmp_path: Path) -> None:
    root = tmp_path / "rt"
    cmd = [sys.executable, "-m", "builder", "build", "-m", "t", "-p", PY312, "--root", str(root),
           "--cache-dir", str(tmp_path / "cold-cache"), "--no-gpu"]
    proc = subprocess.Popen(cmd, cwd=w.project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (root.is_dir() and _leftovers(root)):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _leftovers(root), "the build finished before it could be killed"
    time.sleep(0.5)  # let an orphaned uv child finish writing into staging
    complete = [p for p in root.iterdir() if p.name.startswith("matrix-t-") and layout.read_manifest(p)]
    assert complete == []
    r = w.build("--json", root=root)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)[0]
    assert out["status"] == "built" and out["removed_leftovers"]
    assert _leftovers(root) == []


@pytest.mark.parametrize("how", ["flipped-byte", "substituted-wheel"])
def test_tampered_wheel_is_refused_and_nothing_is_switched_in(w: World, tmp_path: Path, how: str) -> None:
    idx = tmp_path / "index"
    shutil.copytree(w.index_root, idx)
    proj = write_project(tmp_path / "proj", serve(idx), {"t": "0.13.0"})
    assert builder("lock", cwd=proj).returncode == 0
    whl = next((idx / "files").glob("torch-*.whl"))
    if how == "flipped-byte":
        data = bytearray(whl.read_bytes())
        data[len(data) // 2] ^= 0xFF
        whl.write_bytes(bytes(data))
    else:  # a valid wheel of the same name and size with other contents
        size, pad = whl.stat().st_size, 0
        for _ in range(5):
            other = wheels.make_wheel(tmp_path / "evil", "torch", "2.9.0", tag="cp312-cp312-manylinux_2_28_x86_64",
                                      files={"torch/__init__.py": "import os  # evil" + "#" * pad + "\n"},
                                      compress=zipfile.ZIP_STORED)
            pad += size - other.stat().st_size
        assert other.stat().st_size == size
        shutil.copy(other, whl)
    root = tmp_path / "rt"
    r = w.build(root=root, project=proj, env={**os.environ, "UV_NO_VERIFY_HASHES": "1"})
    assert r.returncode == EXIT_FAILED, r.stderr
    assert ("does not match the lock's hash" if how == "substituted-wheel" else "is corrupt") in r.stderr
    assert [p.name for p in root.iterdir() if not p.name.startswith(".locks")] == []


def test_hand_edited_hash_in_the_lock_is_refused(w: World, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "proj", w.index, {"t": "0.13.0"})
    assert builder("lock", cwd=proj).returncode == 0
    lock = proj / "locks/matrix-t/pylock.py312.toml"
    text = lock.read_text()
    i = text.index('sha256 = "') + len('sha256 = "')
    lock.write_text(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1:])
    r = w.build(root=tmp_path / "rt", project=proj)
    assert r.returncode == EXIT_USAGE and "modified" in r.stderr and "refusing to build" in r.stderr
    assert not (tmp_path / "rt").exists()


@pytest.mark.parametrize(("hashes", "message"), [
    ("hashes = {}", "At least one hash must be provided"),  # packaging.pylock refuses it
    ('hashes = { sha256 = "" }', "has no hash"),  # builder refuses it
])
def test_lock_with_an_empty_hash_is_refused_before_install(w: World, tmp_path: Path, hashes: str,
                                                            message: str) -> None:
    proj = write_project(tmp_path / "proj", w.index, {"t": "0.13.0"})
    assert builder("lock", cwd=proj).returncode == 0
    lock = proj / "locks/matrix-t/pylock.py312.toml"
    text = lock.read_text()
    body = text[: text.index("[tool.builder]")].split("\n", 2)[2]  # without builder's header
    start = body.index("hashes = {")
    body = body[:start] + hashes + body[body.index("}", start) + 1:]
    m = Project(proj).matrix("t")
    lock.write_text(lockstate.render(m, PY312, body, stamp={"uv-version": "0.13.9"}))  # stamped: looks fresh
    with pytest.raises(LockFileError, match=message):
        runtime.checked_lock(Project(proj), m, PY312)
    r = w.build(root=tmp_path / "rt", project=proj)
    assert r.returncode == EXIT_USAGE and message in r.stderr
    assert not (tmp_path / "rt").exists() or not any((tmp_path / "rt").glob("matrix-*"))


def test_smoke_failure_refuses_the_build(w: World, tmp_path: Path) -> None:
    r = builder("build", "-m", "u", "-p", PY312, "--root", str(tmp_path), "--cache-dir", str(w.cache),
                "--no-gpu", cwd=w.project)
    assert r.returncode == EXIT_FAILED
    assert "smoke tests failed, nothing was switched in" in r.stderr and "AsyncLLMEngine" in r.stderr
    assert not any(tmp_path.glob("matrix-u*")) and _leftovers(tmp_path) == []


def test_stale_and_missing_locks_are_refused_with_the_command(w: World, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "proj", w.index, {"t": "0.13.0"})
    r = w.build(root=tmp_path / "rt", project=proj)
    assert r.returncode == EXIT_FAILED and "no lock file" in r.stderr
    assert "builder lock --matrix t --python 3.12" in r.stderr


def test_smoke_command_on_the_built_runtime_and_when_none_exists(w: World, tmp_path: Path) -> None:
    r = builder("smoke", "-m", "t", "-p", PY312, "--root", str(w.root), "--no-gpu", "--json", cwd=w.project)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)[0]
    assert rep["ok"] and rep["runtime"] == str(w.runtime)
    r = builder("smoke", "-m", "t", "-p", PY312, "--root", str(tmp_path), cwd=w.project)
    assert r.returncode == EXIT_FAILED and "builder build --matrix t --python 3.12" in r.stderr


def test_bad_interpreter_and_unknown_base_are_usage_errors(w: World, tmp_path: Path) -> None:
    # A CPython 3.11 for a 3.12 runtime. A stand-in answering the interpreter probe: the
    # host may have no real 3.11 (test_interpreters checks real interpreters' versions).
    py311 = tmp_path / "py311" / "bin" / "python3.11"
    py311.parent.mkdir(parents=True)
    # (interpreters.PROBE's answer: version, implementation, in a venv, executable, base)
    py311.write_text(f"#!/bin/sh\nprintf '3.11.9\\ncpython\\n0\\n{py311}\\n{py311}\\n'\n")
    py311.chmod(0o755)
    r = w.build("--interpreter", str(py311), root=tmp_path / "rt")
    assert r.returncode == EXIT_USAGE and "is Python 3.11.9, not 3.12" in r.stderr, r.stderr
    r = w.build("--base", "nix", root=tmp_path)
    assert r.returncode == EXIT_USAGE and "Invalid value for '--base'" in r.stderr


def test_pinned_requirements_pick_the_best_wheel_and_keep_markers(tmp_path: Path) -> None:
    from packaging import tags

    plat = next(iter(tags.platform_tags()))  # this host's best platform tag
    lock = tmp_path / "pylock.toml"
    lock.write_text(f'''lock-version = "1.0"
created-by = "test"

[[packages]]
name = "ffi"
version = "1.0"
wheels = [
  {{ url = "https://x/ffi-1.0-cp312-abi3-manylinux2014_x86_64.whl", hashes = {{ sha256 = "{'a' * 64}" }} }},
  {{ url = "https://x/ffi-1.0-cp312-abi3-{plat}.whl", hashes = {{ sha256 = "{'b' * 64}" }} }},
  {{ url = "https://x/ffi-1.0-cp312-abi3-macosx_11_0_arm64.whl", hashes = {{ sha256 = "{'c' * 64}" }} }},
]

[[packages]]
name = "maconly"
version = "2.0"
marker = 'sys_platform == "darwin"'
wheels = [{{ url = "https://x/maconly-2.0-py3-none-macosx_11_0_arm64.whl", hashes = {{ sha256 = "{'d' * 64}" }} }}]
''')
    reqs = sync.pinned_requirements(pylock.read(lock), "3.12.1").splitlines()
    assert reqs[0] == f"ffi @ https://x/ffi-1.0-cp312-abi3-{plat}.whl --hash=sha256:{'b' * 64}"
    assert reqs[1].startswith('maconly @ https://x/maconly-2.0-py3-none-macosx_11_0_arm64.whl ; '
                              'sys_platform == "darwin" --hash=sha256:')
    with pytest.raises(BuildError, match="no wheel for Python 3.11.9"):
        sync.pinned_requirements(pylock.read(lock), "3.11.9")  # cp312-only wheels, no marker


def test_a_second_runtime_of_the_same_lock_adds_no_cache_copy(w: World, tmp_path: Path) -> None:
    before = sorted(p.name for p in (w.cache / "archive-v0").iterdir())
    assert w.build(root=tmp_path / "second").returncode == 0
    assert sorted(p.name for p in (w.cache / "archive-v0").iterdir()) == before
    [rt] = [p for p in (tmp_path / "second").iterdir() if p.name.startswith("matrix-t-py312-")]
    a = rt / "lib/python3.12/site-packages/vllm/_flashmla_extension_C.abi3.so"
    b = w.runtime / "lib/python3.12/site-packages/vllm/_flashmla_extension_C.abi3.so"
    assert a.stat().st_ino == b.stat().st_ino  # the same file on disk, linked twice


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_mid_build_leaves_nothing_complete(w: World, tmp_path: Path, signum: int) -> None:
    """The signal lands anywhere between staging and the end (dataclass creation included:
    a KeyboardInterrupt there used to end ``python -m builder`` by SIGINT, status -2)."""
    root = tmp_path / "rt"
    (tmp_path / "tmp").mkdir()
    cmd = [sys.executable, "-m", "builder", "build", "-m", "t", "-p", PY312, "--root", str(root),
           "--cache-dir", str(tmp_path / "cold-cache"), "--no-gpu"]
    proc = subprocess.Popen(cmd, cwd=w.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (root.is_dir() and _leftovers(root)):
        time.sleep(0.005)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.fail("the build finished before it could be interrupted")
    word = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}[signum]
    assert proc.returncode == 128 + signum and f"builder: {word}" in err and "Traceback" not in err, \
        (proc.returncode, err)
    assert _leftovers(root) == []  # builder removed its own staging
    assert not [p for p in root.iterdir() if p.name.startswith("matrix-t-")]
    assert not list((tmp_path / "tmp").iterdir())  # nor its builder-sync-*/builder-smoke-* temp dirs


def test_network_down_mid_build_is_exit_3_and_leaves_nothing(w: World, tmp_path: Path) -> None:
    """The index answers while locking, then fails (503) while the build downloads."""
    from tests.helpers import httpserver

    with httpserver.serve(w.index_root) as (url, stats):
        proj = write_project(tmp_path / "proj", f"{url}/simple", {"t": "0.13.0"})
        assert builder("lock", "-m", "t", cwd=proj).returncode == 0
        stats.fail_with = 503
        r = builder("build", "-m", "t", "-p", PY312, "--root", str(tmp_path / "rt"),
                    "--cache-dir", str(tmp_path / "empty-cache"), "--no-gpu", cwd=proj)
        assert r.returncode == 3, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("builder: error:")]
        assert len(errors) == 1 and "check the network" in errors[0] and "Traceback" not in r.stderr
        assert _leftovers(tmp_path / "rt") == []
        assert not [p for p in (tmp_path / "rt").iterdir() if p.name.startswith("matrix-t-")]
        stats.fail_with = None  # the network is back: the next build succeeds
        r = builder("build", "-m", "t", "-p", PY312, "--root", str(tmp_path / "rt"),
                    "--cache-dir", str(tmp_path / "empty-cache"), "--no-gpu", cwd=proj)
        assert r.returncode == 0, r.stderr
