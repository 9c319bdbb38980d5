"""Whether a recorded pid is ours (builder/serve/process.py): same start ticks, same boot, our
random token in its environment, and the identity of the state directory that holds the record.
A real harmless process (``sleep``) stands in for a pid that was reused (or survived a reboot's
renumbering), or for a server of another state directory: ``serve stop`` must leave it alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.serve import process, record
from builder.serve.record import SlotRecord
from tests.conftest import write_project
from tests.helpers import serve as h

TOKEN = "0123456789abcdef01234567"


@pytest.fixture
def home_dir(tmp_path: Path) -> Path:
    d = tmp_path / "serve-state"
    d.mkdir()
    return d


def _execd(p: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Wait until ``p`` runs ``sleep``: between fork and exec /proc shows the parent's environment."""
    deadline = time.monotonic() + 10
    while (process.cmdline_of(p.pid) or [""])[0] != "sleep":
        assert time.monotonic() < deadline, "sleep did not start"
        time.sleep(0.01)
    return p


@pytest.fixture
def sleeper(home_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``sleep 60`` in its own session carrying TOKEN and the state dir's identity, in the state
    dir, as a server builder started would."""
    env = {**os.environ, process.TOKEN_VAR: TOKEN, process.STATE_VAR: process.home_of(home_dir).identity}
    p = _execd(subprocess.Popen(["sleep", "60"], env=env, cwd=home_dir, start_new_session=True))
    try:
        yield p
    finally:
        p.kill()
        p.wait(timeout=10)


def _record(p: subprocess.Popen[bytes], home: process.Home, **changes: object) -> SlotRecord:
    st = process.read_stat(p.pid)
    assert st is not None
    rec: dict[str, object] = {"slot": "green", "pid": p.pid, "pgid": st.pgrp, "start_ticks": st.start_ticks,
                              "boot_id": process.boot_id(), "exe": "", "cmdline": ["sleep", "60"],
                              "token": TOKEN, "state": home.identity, "format": 2}
    rec.update(changes)
    return record.from_mapping(rec)


def test_the_recorded_pid_is_ours_only_with_the_same_start_ticks_boot_token_and_state_dir(
        sleeper: subprocess.Popen[bytes], home_dir: Path, tmp_path: Path) -> None:
    home = process.home_of(home_dir)
    assert process.boot_id() and home.identity  # Linux: the checks below are not vacuous
    assert process.is_ours(_record(sleeper, home), home)
    st = process.read_stat(sleeper.pid)
    assert st is not None
    assert not process.is_ours(_record(sleeper, home, start_ticks=st.start_ticks + 1), home)  # pid reused
    assert not process.is_ours(_record(sleeper, home, boot_id="00000000-0000-0000-0000-000000000000"), home)
    assert not process.is_ours(_record(sleeper, home, token="f" * 24), home)  # someone else's process
    assert not process.is_ours(_record(sleeper, home, token=""), home)
    # The command line is not compared (a console script execs python; vLLM retitles itself).
    assert process.is_ours(_record(sleeper, home, cmdline=["something", "else"], exe="/bin/false"), home)
    # A copy of the state directory (a copied project) is another directory: the record it holds
    # names the original's identity, and the process carries the original's.
    copy = tmp_path / "copy-state"
    copy.mkdir()
    other = process.home_of(copy)
    assert other.identity != home.identity
    assert not process.is_ours(_record(sleeper, home), other)
    assert not process.is_ours(_record(sleeper, other), other)
    assert process.members(_record(sleeper, home), other) == []
    assert process.members(_record(sleeper, home), home) == [sleeper.pid]


def test_a_format_1_record_is_recognised_by_the_servers_working_directory(home_dir: Path, tmp_path: Path) -> None:
    """Records written before state identities (no ``format``, no ``state``) still load; their
    server carries no identity, so its working directory (the state dir) stands in for it."""
    old = _execd(subprocess.Popen(["sleep", "60"], env={**os.environ, process.TOKEN_VAR: TOKEN}, cwd=home_dir,
                                  start_new_session=True))
    try:
        st = process.read_stat(old.pid)
        assert st is not None
        legacy = {"slot": "green", "service": "querylake-llm", "runtime": h.RUNTIME_ID, "runtime_path": "/rt",
                  "lock": "ab" * 32, "host": "127.0.0.1", "port": 8002, "url": "http://127.0.0.1:8002/v1",
                  "model": "querylake-llm", "log": "/x.log", "started_at": "2026-11-30T12:00:00+00:00",
                  "argv": ["vllm", "serve"], "pid": old.pid, "pgid": st.pgrp, "start_ticks": st.start_ticks,
                  "boot_id": process.boot_id(), "exe": "/bin/sleep", "cmdline": ["sleep", "60"], "token": TOKEN,
                  "ready_after": 1.5}
        rec = record.from_mapping(legacy)
        assert (rec.format, rec.state, rec.runtime, rec.ready_after) == (1, None, h.RUNTIME_ID, 1.5)
        assert process.is_ours(rec, process.home_of(home_dir))
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        assert not process.is_ours(rec, process.home_of(elsewhere))
    finally:
        old.kill()
        old.wait(timeout=10)


@pytest.mark.parametrize("bad", [[], "x", {"slot": 1}, {"slot": "g", "pid": "12"}, {"slot": "g", "pid": True},
                                 {"slot": "g", "argv": "vllm"}, {"slot": "g", "format": 99}])
def test_a_record_with_wrong_types_does_not_load(bad: object) -> None:
    with pytest.raises(ValueError):
        record.from_mapping(bad)


@pytest.mark.parametrize("changes", [
    {"start_ticks": "+1"},
    {"boot_id": "00000000-0000-0000-0000-000000000000"},
    {},
], ids=["start-ticks", "boot-id", "token-only"])
def test_serve_stop_leaves_a_process_that_is_not_ours_alone(tmp_path: Path, changes: dict[str, str]) -> None:
    """A pid reused by another process (it does not carry the record's token): stop signals nothing,
    whichever of start ticks or boot id also differs, and drops the stale record."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)  # not carrying TOKEN
    try:
        st = process.read_stat(other.pid)
        assert st is not None
        project = write_project(tmp_path / "proj", "http://127.0.0.1:9/simple")
        h.write_service(project, blue=h.free_port(), green=h.free_port())
        slots = project / "serve-state" / "slots"
        slots.mkdir(parents=True)
        home = process.home_of(project / "serve-state")
        rec = _record(other, home).as_dict()
        if changes.get("start_ticks"):
            rec["start_ticks"] = st.start_ticks + 1
        if changes.get("boot_id"):
            rec["boot_id"] = changes["boot_id"]
        rec.update(runtime=h.RUNTIME_ID, argv=["vllm", "serve"], port=1)
        assert not process.is_ours(record.from_mapping(rec), home)
        (slots / "green.json").write_text(json.dumps(rec))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV"))}
        r = h.builder("serve", "stop", "--slot", "green", cwd=project, env=env)
        assert r.returncode == 0, r.stderr
        assert "not running" in r.stdout + r.stderr
        assert other.poll() is None, "serve stop signalled a process that was not ours"
        assert not (slots / "green.json").exists()  # the stale record is dropped, the process kept
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait(timeout=10)
