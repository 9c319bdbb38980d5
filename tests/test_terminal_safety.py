"""Bytes from servers, files and arguments never reach the terminal raw (issue 20 items 3 and 5):
every message and table escapes control characters, one line each; user input never exits 70;
a closed pipe ends the command quietly with 141.  Through the real CLI, real sockets and pipes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.cli.common import escape
from builder.errors import EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_USAGE
from tests.conftest import ROOT, builder_cmd
from tests.helpers.serve import raw_server

HOSTILE = b"\x1b]0;TITLE\x07 evil\x00 \rCR\nSet-Cookie: injected\r\n\r\n"
RAW = ("\x1b", "\x07", "\x00", "\r")


@pytest.fixture
def hostile_server() -> Iterator[str]:
    """A loopback server that answers every connection with a status line of control bytes."""
    def answer(conn: socket.socket, _stop: threading.Event) -> None:
        conn.settimeout(2)
        conn.recv(65536)
        conn.sendall(HOSTILE)

    with raw_server(answer) as (port, _):
        yield f"http://127.0.0.1:{port}"


def _clean(text: str) -> None:
    assert not any(c in text for c in RAW), repr(text)


def test_escape_keeps_text_and_shows_every_control_character() -> None:
    assert escape("ok: 12.9 -> 12.10 (é, ✓)") == "ok: 12.9 -> 12.10 (é, ✓)"
    assert escape("\x1b]0;T\x07a\x00b\rc\nd\te\x7f\x9b\u202e") == "\\x1b]0;T\\x07a\\x00b\\rc\\nd\\te\\x7f\\x9b\\u202e"
    assert escape("line 1\nline 2\x1b[2J", keep_newlines=True) == "line 1\nline 2\\x1b[2J"


def test_check_error_line_from_a_hostile_index_is_one_escaped_line(hostile_server: str, tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    text = (ROOT / "locks" / "matrix-a" / "pylock.py312.toml").read_text(encoding="utf-8")
    lock.write_text(text.replace("https://files.pythonhosted.org", hostile_server), encoding="utf-8")
    r = builder_cmd("check", "--lock", str(lock), "--driver", "575.57.08", "--gpu-cc", "8.9",
                    "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path,
                    env=dict(os.environ, BUILDER_CACHE_DIR=str(tmp_path / "bc")))
    assert r.returncode == 3, r.stderr
    _clean(r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("builder: error: ")]
    assert len(errors) == 1 and "\\x1b]0;TITLE\\x07" in errors[0], r.stderr
    assert not any(ln.startswith("Set-Cookie") for ln in r.stderr.splitlines())


def test_serve_probe_table_from_a_hostile_server_is_escaped(hostile_server: str) -> None:
    r = builder_cmd("serve", "probe", "--url", hostile_server, "--model", "m\x1b[2Jx", "--timeout", "5", cwd=ROOT)
    assert r.returncode in (1, 3), r.stderr
    _clean(r.stdout + r.stderr)
    assert "m\\x1b[2Jx" in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("health")]
    assert len(rows) == 1 and "\\x1b]0;TITLE\\x07" in rows[0], r.stdout
    assert not any(ln.startswith("Set-Cookie") for ln in r.stdout.splitlines())


def test_an_argument_in_an_error_line_is_escaped(tmp_path: Path) -> None:
    r = builder_cmd("check", "--lock", str(tmp_path / "a\x1b]0;T\x07\rb.toml"), cwd=tmp_path)
    assert r.returncode != 0
    _clean(r.stderr)
    assert "a\\x1b]0;T\\x07\\rb.toml" in r.stderr


# --------------------------------------------------------------------------- no exit 70 for user input
def test_spec_set_with_a_value_nested_5000_deep_is_exit_2(tmp_path: Path) -> None:
    proj = tmp_path / "p"
    shutil.copytree(ROOT / "envs", proj / "envs")
    before = (proj / "envs" / "matrix-a.toml").read_bytes()
    r = builder_cmd("--project", str(proj), "spec", "set", "a", "packages.extra", "[" * 5000 + "]" * 5000,
                    cwd=tmp_path)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert "nested too deeply" in r.stderr and "Traceback" not in r.stderr
    assert (proj / "envs" / "matrix-a.toml").read_bytes() == before


def test_a_route_journal_line_nested_100000_deep_is_a_torn_line(tmp_path: Path) -> None:
    proj = tmp_path / "p"
    shutil.copytree(ROOT / "envs", proj / "envs")
    r = builder_cmd("--project", str(proj), "route", "init", "--url", "http://127.0.0.1:8000/v1", "--model", "qwen",
                    cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    journal = next((proj / "deploy").glob("*.journal"))
    with journal.open("a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    r = builder_cmd("--project", str(proj), "route", "show", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["url"] == "http://127.0.0.1:8000/v1"


BOOM = """
import sys
import builder.lock.state as state
def boom(*a, **k):
    raise RuntimeError("a bug \\x1b]0;T\\x07")
state.lock_state = boom
sys.argv = ["builder", *sys.argv[1:]]
from builder.cli import main
main()
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_an_internal_error_is_exit_70_with_or_without_v(verbose: bool) -> None:
    args = ["-v"] if verbose else []
    r = subprocess.run([sys.executable, "-c", BOOM, *args, "list"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == EXIT_INTERNAL, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("builder: internal error: RuntimeError: a bug \\x1b]0;T\\x07"), r.stderr
    assert ("Traceback (most recent call last)" in r.stderr) is verbose
    _clean(r.stderr)


# --------------------------------------------------------------------------- closed pipes
def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run builder with its stdout a pipe whose reader has already gone."""
    rfd, wfd = os.pipe()
    os.close(rfd)
    try:
        env = dict(os.environ)
        env.pop("BUILDER_PROJECT", None)
        return subprocess.run([sys.executable, "-m", "builder", *args], cwd=ROOT, stdout=wfd,
                              stderr=subprocess.PIPE, text=True, timeout=60, env=env)
    finally:
        os.close(wfd)


@pytest.mark.parametrize("args", [("list",), ("lock", "--check"), ("spec", "validate", "--json")])
def test_writing_to_a_closed_pipe_exits_141_quietly(args: tuple[str, ...]) -> None:
    r = _into_closed_pipe(*args)
    assert r.returncode == EXIT_BROKEN_PIPE == 141, r.stderr
    said = [ln for ln in r.stderr.splitlines() if not ln.startswith("builder: warning: cannot guard")]
    assert said == [], r.stderr  # quiet: no traceback, no "internal error"


def test_route_show_into_a_closed_pipe_exits_141(tmp_path: Path) -> None:
    proj = tmp_path / "p"
    shutil.copytree(ROOT / "envs", proj / "envs")
    assert builder_cmd("--project", str(proj), "route", "init", "--url", "http://127.0.0.1:8000/v1", "--model", "q",
                       cwd=tmp_path).returncode == 0
    r = _into_closed_pipe("--project", str(proj), "route", "show")
    assert r.returncode == 141 and "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_every_printed_line_goes_through_the_one_escaping_echo() -> None:
    """Only builder/cli/common.py calls click.echo (escape, echo, warn, progress, JSON)."""
    for mod in sorted((ROOT / "builder" / "cli").glob("*.py")):
        if mod.name != "common.py":
            assert "click.echo(" not in mod.read_text(encoding="utf-8"), f"{mod.name}: print with common.echo"
