"""builder._proc.run(max_output=...): a child that prints too much is killed and the
Result says so; output below the cap, stdin, and output kept across a timeout behave
as communicate() did.  Real children only."""

from __future__ import annotations

import sys
import time

import pytest

from builder import _proc
from builder.errors import ToolFailed

PY = sys.executable


def test_a_child_printing_100_mb_is_killed_at_the_cap() -> None:
    t = time.monotonic()
    res = _proc.run([PY, "-c", "import sys\nwhile True: sys.stdout.write('x' * 65536)"], timeout=60,
                    max_output=1 << 20)
    assert time.monotonic() - t < 5
    assert res.output_capped and not res.ok and res.returncode is None and not res.timed_out
    assert len(res.stdout) <= 1 << 20


def test_stderr_counts_too_and_check_raises_one_line() -> None:
    with pytest.raises(ToolFailed, match=r"printed more than 4096 bytes and was killed"):
        _proc.run([PY, "-c", "import sys\nsys.stderr.write('e' * 100000)"], timeout=30, max_output=4096,
                  check=True, what="noisy")


def test_below_the_cap_everything_arrives_and_stdin_is_fed() -> None:
    data = "line\n" * 200_000  # 1 MB through stdin and back
    res = _proc.run([PY, "-c", "import sys; sys.stdout.write(sys.stdin.read()); sys.stderr.write('done')"],
                    timeout=60, input=data)
    assert res.ok and res.stdout == data and res.stderr == "done" and not res.output_capped


def test_output_printed_before_a_timeout_is_kept() -> None:
    res = _proc.run([PY, "-c", "import sys, time; print('hello', flush=True); time.sleep(30)"], timeout=1)
    assert res.timed_out and "hello" in res.stdout and not res.output_capped


def test_the_default_cap_is_generous() -> None:
    assert _proc.MAX_OUTPUT >= 64 * 1024 * 1024
    res = _proc.run([PY, "-c", "import sys; sys.stdout.write('y' * (3 << 20))"], timeout=60)
    assert res.ok and len(res.stdout) == 3 << 20
