"""`_proc.run(on_line=...)`: a child's lines reach the caller while it runs, under the same bounds."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from builder import _proc

# The child prints a line, then waits (up to 20 s) for the parent to react to that
# line by creating a file: it can only finish early if lines arrive while it runs.
HANDSHAKE = r"""
import os, sys, time
print("ready", flush=True)
sys.stderr.write("on stderr\n"); sys.stderr.flush()
deadline = time.monotonic() + 20
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.01)
print("saw it" if os.path.exists(sys.argv[1]) else "never saw it", flush=True)
"""


def test_lines_arrive_while_the_child_runs_and_the_result_still_has_everything(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    got: list[tuple[str, str]] = []

    def on_line(stream: str, line: str) -> None:
        got.append((stream, line))
        if line == "ready":
            flag.touch()

    res = _proc.run([sys.executable, "-c", HANDSHAKE, str(flag)], timeout=60, on_line=on_line)
    assert res.ok and res.stdout == "ready\nsaw it\n" and res.stderr == "on stderr\n"
    assert [x for x in got if x[0] == "stdout"] == [("stdout", "ready"), ("stdout", "saw it")]
    assert ("stderr", "on stderr") in got


def test_carriage_returns_split_lines_and_blank_lines_are_dropped() -> None:
    got: list[str] = []
    code = r"import sys; sys.stdout.write('a\r\nb\rc\n\n\nd')"
    res = _proc.run([sys.executable, "-c", code], timeout=30, on_line=lambda _s, line: got.append(line))
    assert res.ok and got == ["a", "b", "c", "d"]


def test_callbacks_never_run_at_the_same_time() -> None:
    active, overlaps = [0], [0]
    lock = threading.Lock()

    def on_line(_stream: str, _line: str) -> None:
        with lock:
            active[0] += 1
            overlaps[0] += active[0] > 1
        time.sleep(0.001)
        with lock:
            active[0] -= 1

    code = "import sys\nfor i in range(200):\n    print(i, flush=True); print(i, file=sys.stderr, flush=True)"
    res = _proc.run([sys.executable, "-c", code], timeout=60, on_line=on_line)
    assert res.ok and overlaps[0] == 0


def test_a_failing_callback_is_switched_off_and_the_run_completes() -> None:
    calls: list[str] = []

    def on_line(_stream: str, line: str) -> None:
        calls.append(line)
        raise BrokenPipeError("stderr went away")

    res = _proc.run([sys.executable, "-c", "print(1); print(2); print(3)"], timeout=30, on_line=on_line)
    assert res.ok and res.stdout == "1\n2\n3\n" and calls == ["1"]


def test_input_is_fed_while_lines_stream() -> None:
    got: list[str] = []
    res = _proc.run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], timeout=30,
                    input="hello", on_line=lambda _s, line: got.append(line))
    assert res.ok and got == ["HELLO"]


def test_a_stuck_child_holding_the_pipes_is_still_killed_within_the_bound(tmp_path: Path) -> None:
    script = tmp_path / "stuck.sh"
    # Prints, ignores SIGTERM, and leaves a grandchild holding the pipes.
    script.write_text("#!/bin/sh\necho started\ntrap '' TERM\nsleep 60 &\nsleep 60\n")
    script.chmod(0o755)
    got: list[str] = []
    t = time.monotonic()
    res = _proc.run([str(script)], timeout=0.5, on_line=lambda _s, line: got.append(line))
    elapsed = time.monotonic() - t
    assert res.timed_out and res.returncode is None and got == ["started"]
    assert elapsed < 0.5 + _proc.TERM_GRACE + _proc.KILL_GRACE + 1.0
