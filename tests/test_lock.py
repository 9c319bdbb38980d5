"""End-to-end locking with real uv against a local index of tiny wheels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.pylock import Pylock

from builder.errors import EXIT_FAILED, EXIT_TOOL_FAILED, EXIT_UNAVAILABLE
from builder.lock import files as lockfile
from tests.conftest import builder_cmd, write_project

LOCK311 = Path("locks/matrix-t/pylock.py311.toml")
LOCK312 = Path("locks/matrix-t/pylock.py312.toml")


def test_lock_writes_valid_pep751_locks_for_every_python(project: Path) -> None:
    r = builder_cmd("lock", "--matrix", "T", cwd=project)
    assert r.returncode == 0, r.stderr
    for rel, py in ((LOCK311, "3.11"), (LOCK312, "3.12")):
        text = (project / rel).read_text()
        data = tomllib.loads(text)
        lock = Pylock.from_dict(data)  # raises if not valid PEP 751
        names = {p.name: str(p.version) for p in lock.packages}
        assert names["torch"] == "2.9.0" and names["vllm"] == "0.13.0"
        for p in lock.packages:
            assert p.wheels, p.name
            for w in p.wheels:
                assert w.hashes and len(w.hashes["sha256"]) == 64
        torch = next(p for p in lock.packages if p.name == "torch")
        assert f"cp{py.replace('.', '')}" in str(torch.wheels[0].url)
        stamp = data["tool"]["builder"]
        assert stamp["python"] == py and stamp["uv-version"] == "0.13.9"
        assert stamp["command"] == f"builder lock --matrix t --python {py}"
        assert stamp["spec-hash"].startswith("sha256:")


def test_python_option_narrows(project: Path) -> None:
    r = builder_cmd("lock", "-m", "matrix-t", "--python", "3.12", cwd=project)
    assert r.returncode == 0, r.stderr
    assert (project / LOCK312).exists() and not (project / LOCK311).exists()


def test_relock_is_byte_identical_and_check_passes(project: Path) -> None:
    assert builder_cmd("lock", cwd=project).returncode == 0
    first = (project / LOCK312).read_bytes()
    os.unlink(project / LOCK312)
    r = builder_cmd("lock", "--all", cwd=project)
    assert r.returncode == 0, r.stderr
    assert (project / LOCK312).read_bytes() == first
    r = builder_cmd("lock", "--check", cwd=project)
    assert r.returncode == 0 and "2 locks are fresh" in r.stdout


def test_spec_change_makes_check_fail_naming_the_matrix(project: Path, index: str) -> None:
    write_project(project, index, {"t": {}, "u": {}})
    assert builder_cmd("lock", cwd=project).returncode == 0
    r = builder_cmd("spec", "set", "u", "packages.extra", '["filelock==3.19.1"]', cwd=project)
    assert r.returncode == 0, r.stderr
    r = builder_cmd("lock", "--check", cwd=project)
    assert r.returncode == EXIT_FAILED
    assert "locks/matrix-u/pylock.py311.toml: stale" in r.stderr
    assert "builder lock --matrix u --python 3.11" in r.stderr
    assert "matrix-t" not in r.stderr
    r = builder_cmd("lock", "--matrix", "u", cwd=project)
    assert r.returncode == 0
    assert builder_cmd("lock", "--check", cwd=project).returncode == 0
    text = (project / "locks/matrix-u/pylock.py312.toml").read_text()
    assert 'version = "3.19.1"' in text


def test_hand_edited_lock_is_reported_modified(project: Path) -> None:
    assert builder_cmd("lock", cwd=project).returncode == 0
    p = project / LOCK311
    p.write_text(p.read_text().replace('version = "3.20.0"', 'version = "3.19.1"'))
    r = builder_cmd("lock", "--check", "--json", cwd=project)
    assert r.returncode == EXIT_FAILED
    assert '"state": "modified"' in r.stdout


def test_missing_lock_is_named(project: Path) -> None:
    r = builder_cmd("lock", "--check", cwd=project)
    assert r.returncode == EXIT_FAILED
    assert "pylock.py311.toml: missing" in r.stderr and "pylock.py312.toml: missing" in r.stderr


def test_overrides_raise_a_pinned_dependency(project: Path, index: str) -> None:
    write_project(project, index, {"t": {"overrides": '["nvidia-cublas-cu12>=12.9,<12.10"]'}})
    assert builder_cmd("lock", "-p", "3.12", cwd=project).returncode == 0
    lock = tomllib.loads((project / LOCK312).read_text())
    cublas = next(p for p in lock["packages"] if p["name"] == "nvidia-cublas-cu12")
    assert cublas["version"] == "12.9.1.4"


def test_sdist_only_package_is_an_error_and_lock_is_untouched(project: Path, index: str) -> None:
    assert builder_cmd("lock", cwd=project).returncode == 0
    before = (project / LOCK312).read_bytes()
    write_project(project, index, {"t": {"extra": '["srconly==1.0"]'}})
    r = builder_cmd("lock", cwd=project)
    assert r.returncode == EXIT_FAILED, r.stderr
    assert "srconly" in r.stderr and "Traceback" not in r.stderr
    assert (project / LOCK312).read_bytes() == before


def test_unsatisfiable_pins_leave_previous_lock_intact(project: Path, index: str) -> None:
    assert builder_cmd("lock", cwd=project).returncode == 0
    before = (project / LOCK311).read_bytes()
    write_project(project, index, {"t": {"extra": '["filelock==9.9"]'}})
    r = builder_cmd("lock", cwd=project)
    assert r.returncode == EXIT_TOOL_FAILED
    assert "could not resolve" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 12
    assert (project / LOCK311).read_bytes() == before
    assert not list((project / "locks/matrix-t").glob(".*.tmp"))


def test_network_down_is_exit_3_and_lock_intact(project: Path, tmp_path: Path) -> None:
    import socket

    assert builder_cmd("lock", cwd=project).returncode == 0
    before = (project / LOCK311).read_bytes()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    spec = project / "envs/matrix-t.toml"
    dead = f'url = "http://127.0.0.1:{port}/x#'
    spec.write_text(spec.read_text().replace('url = "http://127.0.0.1', dead))
    env = dict(os.environ, UV_CACHE_DIR=str(tmp_path / "empty-cache"))
    r = builder_cmd("lock", cwd=project, env=env)
    assert r.returncode == EXIT_UNAVAILABLE, r.stderr
    assert "could not reach" in r.stderr
    assert (project / LOCK311).read_bytes() == before


def test_inherited_settings_do_not_leak_into_uv(project: Path, tmp_path: Path) -> None:
    assert builder_cmd("lock", cwd=project).returncode == 0
    clean = (project / LOCK312).read_bytes()
    os.unlink(project / LOCK312)
    ov = tmp_path / "evil-overrides.txt"
    ov.write_text("filelock==3.19.1\n")
    (project / "uv.toml").write_text('index-url = "http://127.0.0.1:9/nothing"\n')
    (tmp_path / "xdg" / "uv").mkdir(parents=True)
    (tmp_path / "xdg" / "uv" / "uv.toml").write_text("no-verify-hashes = true\n")
    env = dict(
        os.environ,
        UV_INDEX_URL="http://127.0.0.1:9/nothing",
        UV_DEFAULT_INDEX="http://127.0.0.1:9/nothing",
        UV_NO_VERIFY_HASHES="1",
        UV_OVERRIDE=str(ov),
        UV_EXCLUDE_NEWER="2001-01-01",
        PIP_INDEX_URL="http://127.0.0.1:9/nothing",
        PIP_NO_INDEX="1",
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        VIRTUAL_ENV=str(tmp_path / "someenv"),
        PYTHONPATH=str(tmp_path),
    )
    r = builder_cmd("lock", "-p", "3.12", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert (project / LOCK312).read_bytes() == clean


def test_sigkill_mid_lock_leaves_previous_lock_and_next_run_succeeds(project: Path, index: str) -> None:
    assert builder_cmd("lock", cwd=project).returncode == 0
    before = {p: (project / p).read_bytes() for p in (LOCK311, LOCK312)}
    write_project(project, index, {"t": {"extra": '["filelock==3.19.1"]'}})
    # Kill the process group at several points of the run, then check.
    for delay in (0.05, 0.3, 0.8):
        proc = subprocess.Popen([sys.executable, "-m", "builder", "lock"], cwd=project,
                                start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for p, data in before.items():
            text = (project / p).read_bytes()
            # Either untouched or the complete new lock: never a mix.
            assert text == data or lockfile.read_stamp(text.decode(), str(p))[1]
    r = builder_cmd("lock", cwd=project)
    assert r.returncode == 0, r.stderr
    assert not list((project / "locks/matrix-t").glob(".*.tmp"))
    assert builder_cmd("lock", "--check", cwd=project).returncode == 0


def test_two_concurrent_lock_runs_do_not_corrupt(project: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "builder", "lock"], cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert builder_cmd("lock", "--check", cwd=project).returncode == 0
    for rel in (LOCK311, LOCK312):
        Pylock.from_dict(tomllib.loads((project / rel).read_text()))


def test_quiet_silences_progress(project: Path) -> None:
    r = builder_cmd("-q", "lock", cwd=project)
    assert r.returncode == 0 and r.stderr == ""
    r = builder_cmd("lock", cwd=project)
    assert "matrix-t/py3.12" in r.stderr


def test_list_shows_states(project: Path) -> None:
    import json

    builder_cmd("lock", "-p", "3.11", cwd=project)
    r = builder_cmd("list", "--json", cwd=project)
    rows = json.loads(r.stdout)
    assert {(x["python"], x["state"]) for x in rows} == {("3.11", "fresh"), ("3.12", "missing")}


@pytest.mark.network
def test_relock_matrix_b_against_pypi_matches_committed(tmp_path: Path) -> None:
    """Re-lock the shipped matrix B for Python 3.12 from PyPI: identical bytes."""
    import shutil

    from tests.conftest import ROOT

    proj = tmp_path / "p"
    shutil.copytree(ROOT / "envs", proj / "envs")
    shutil.copytree(ROOT / "locks", proj / "locks")
    committed = (ROOT / "locks/matrix-b/pylock.py312.toml").read_bytes()
    r = builder_cmd("lock", "--matrix", "B", "--python", "3.12", cwd=proj, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (proj / "locks/matrix-b/pylock.py312.toml").read_bytes() == committed


def test_follower_locks_match_a_lock_resolved_online_on_its_own(project: Path) -> None:
    """In a full run matrix-t/py3.12 follows py3.11 (resolved from uv's fresh cache);
    locked alone it is a leader (resolved online): the bytes must be the same."""
    r = builder_cmd("-v", "lock", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "--offline" in r.stderr  # the follower did resolve from the cache
    as_follower = (project / LOCK312).read_bytes()
    os.unlink(project / LOCK312)
    r = builder_cmd("-v", "lock", "-p", "3.12", cwd=project)
    assert r.returncode == 0 and "--offline" not in r.stderr
    assert (project / LOCK312).read_bytes() == as_follower
