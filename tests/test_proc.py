"""The one subprocess wrapper: bounded timeouts, group kill, scrubbed env, typed errors."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from builder import _proc
from builder.errors import ToolFailed, ToolNotFound, ToolTimeout


def test_stuck_child_ignoring_sigterm_is_killed_within_bound(tmp_path: Path) -> None:
    script = tmp_path / "stuck.sh"
    # Ignores SIGTERM, and leaves a grandchild holding the pipes.
    script.write_text("#!/bin/sh\ntrap '' TERM\nsleep 60 &\nsleep 60\n")
    script.chmod(0o755)
    t = time.monotonic()
    res = _proc.run([str(script)], timeout=0.5)
    elapsed = time.monotonic() - t
    assert res.timed_out and res.returncode is None and not res.ok
    assert elapsed < 0.5 + _proc.TERM_GRACE + _proc.KILL_GRACE + 1.0


def test_timeout_with_check_raises_typed_error() -> None:
    with pytest.raises(ToolTimeout) as ei:
        _proc.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.3, check=True, what="sleeper")
    assert "sleeper did not finish within 0.3s" in ei.value.message


def test_missing_tool_is_reported_not_raised() -> None:
    res = _proc.run(["definitely-not-a-tool-xyz"], timeout=5)
    assert res.missing and not res.ok and res.returncode is None
    with pytest.raises(ToolNotFound):
        _proc.run(["definitely-not-a-tool-xyz"], timeout=5, check=True)


def test_nonzero_exit_carries_stderr_tail() -> None:
    with pytest.raises(ToolFailed) as ei:
        _proc.run([sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"],
                  timeout=10, check=True, what="boomer")
    assert ei.value.returncode == 3 and "boom" in ei.value.message


def test_clean_env_scrubs_operator_settings(tmp_path: Path) -> None:
    base = {
        "PATH": f"{tmp_path}/ql1/bin:/usr/bin:{tmp_path}/venv/bin",
        "HOME": "/root",
        "CONDA_PREFIX": f"{tmp_path}/ql1",
        "VIRTUAL_ENV": f"{tmp_path}/venv",
        "PYTHONPATH": "/evil",
        "PYTHONHOME": "/evil",
        "UV_INDEX_URL": "http://evil",
        "UV_NO_VERIFY_HASHES": "1",
        "PIP_INDEX_URL": "http://evil",
        "CONDA_PREFIX_1": "/x",
        "LANG": "C.UTF-8",
    }
    env = _proc.clean_env(base)
    assert env["PATH"] == "/usr/bin"
    assert env["HOME"] == "/root" and env["LANG"] == "C.UTF-8"
    for k in ("CONDA_PREFIX", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_INDEX_URL",
              "UV_NO_VERIFY_HASHES", "PIP_INDEX_URL", "CONDA_PREFIX_1"):
        assert k not in env
    assert env["PYTHONNOUSERSITE"] == "1"


def test_children_get_the_scrubbed_env_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "http://evil")
    monkeypatch.setenv("PYTHONPATH", "/evil")
    res = _proc.run([sys.executable, "-c", "import os; print(sorted(k for k in os.environ "
                     "if k.startswith('UV_') or k == 'PYTHONPATH'))"], timeout=20)
    assert res.ok and res.stdout.strip() == "[]"


def test_input_and_cwd(tmp_path: Path) -> None:
    res = _proc.run([sys.executable, "-c", "import os,sys; print(os.getcwd(), sys.stdin.read())"],
                    timeout=20, cwd=tmp_path, input="hello")
    assert res.stdout.split() == [str(tmp_path), "hello"]


def test_keyboard_interrupt_kills_the_child_group(tmp_path: Path) -> None:
    import signal
    import threading

    pidfile = tmp_path / "pid"
    code = f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(60)"

    sent = threading.Event()

    def interrupt() -> None:
        for _ in range(1200):  # the child is running once it wrote its pid (a loaded machine: seconds)
            if pidfile.exists() and pidfile.read_text():
                os.kill(os.getpid(), signal.SIGINT)
                sent.set()
                return
            time.sleep(0.05)

    # Python's own Ctrl-C handler, whatever an earlier test in this worker left installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            res = _proc.run([sys.executable, "-c", code], timeout=90)
            pytest.fail(f"run returned ({res}); SIGINT sent: {sent.is_set()}; handler before: {previous!r}")
    finally:
        signal.signal(signal.SIGINT, previous)
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        try:  # reap if it is our zombie
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        pytest.fail("child survived Ctrl-C")


def test_started_is_set_once_the_child_runs(tmp_path: Path) -> None:
    import threading

    ran = threading.Event()
    _proc.run(["true"], timeout=10, started=ran)
    assert ran.is_set()
    missing = threading.Event()
    assert _proc.run([str(tmp_path / "no-such-tool")], timeout=10, started=missing).missing
    assert not missing.is_set()  # nothing ran: a waiter learns it from the caller (builder.suggest.resolve)


def test_stop_kills_the_child_group_and_raises_dropped(tmp_path: Path) -> None:
    import threading

    from builder.errors import Dropped

    stop = threading.Event()
    pidfile = tmp_path / "grandchild"
    stopped_at: list[float] = []

    def stop_once_running() -> None:  # the grandchild exists before the stop, however slow the machine
        while not (pidfile.exists() and pidfile.read_text().strip()):
            time.sleep(0.02)
        stopped_at.append(time.monotonic())
        stop.set()

    threading.Thread(target=stop_once_running, daemon=True).start()
    with pytest.raises(Dropped):
        _proc.run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait"], timeout=60,
                  stop=stop, check=True)
    assert time.monotonic() - stopped_at[0] < 20  # within a poll and the kill's grace, not the sleep's 30 s
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the group was SIGKILLed; the grandchild's parent reaps nothing
        try:
            os.kill(pid, 0)
            if open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z":
                break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"pid {pid} still runs")
