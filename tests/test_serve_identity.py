"""Whether a recorded pid is ours (builder/serve/process.py): same start ticks, same boot, and
our random token in its environment.  A real harmless process (``sleep``) stands in for a pid
that was reused (or survived a reboot's renumbering): ``serve stop`` must leave it alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.serve import process
from tests.conftest import write_project
from tests.helpers import serve as h

TOKEN = "0123456789abcdef01234567"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """``sleep 60`` in its own session carrying TOKEN, as a server builder started would."""
    p = subprocess.Popen(["sleep", "60"], env={**os.environ, process.TOKEN_VAR: TOKEN}, start_new_session=True)
    try:
        yield p
    finally:
        p.kill()
        p.wait(timeout=10)


def _record(p: subprocess.Popen[bytes], **changes: object) -> dict[str, object]:
    st = process.read_stat(p.pid)
    assert st is not None
    rec: dict[str, object] = {"pid": p.pid, "pgid": st.pgrp, "start_ticks": st.start_ticks,
                              "boot_id": process.boot_id(), "exe": "", "cmdline": ["sleep", "60"],
                              "token": TOKEN}
    rec.update(changes)
    return rec


def test_the_recorded_pid_is_ours_only_with_the_same_start_ticks_boot_and_token(
        sleeper: subprocess.Popen[bytes]) -> None:
    assert process.boot_id()  # Linux: the check below is not vacuous
    assert process.is_ours(_record(sleeper))
    st = process.read_stat(sleeper.pid)
    assert st is not None
    assert not process.is_ours(_record(sleeper, start_ticks=st.start_ticks + 1))  # pid reused
    assert not process.is_ours(_record(sleeper, boot_id="00000000-0000-0000-0000-000000000000"))  # rebooted
    assert not process.is_ours(_record(sleeper, token="f" * 24))  # someone else's process
    assert not process.is_ours(_record(sleeper, token=""))
    # The command line is not compared (a console script execs python; vLLM retitles itself).
    assert process.is_ours(_record(sleeper, cmdline=["something", "else"], exe="/bin/false"))


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
        rec = _record(other)
        if changes.get("start_ticks"):
            rec["start_ticks"] = st.start_ticks + 1
        if changes.get("boot_id"):
            rec["boot_id"] = changes["boot_id"]
        rec.update(runtime=h.RUNTIME_ID, argv=["vllm", "serve"], port=1)
        assert not process.is_ours(rec)

        project = write_project(tmp_path / "proj", "http://127.0.0.1:9/simple")
        h.write_service(project, blue=h.free_port(), green=h.free_port())
        slots = project / "serve-state" / "slots"
        slots.mkdir(parents=True)
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
