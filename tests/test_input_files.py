"""Input files are read with bounds (builder/files/inputs.py): a device, a FIFO nobody writes to, a
huge file or a CRLF copy at any path builder reads (an option, or envs/ and locks/ of the
project) ends in one line with its exit code, in bounded time and memory, never in a
MemoryError (exit 70) or a hang.  /dev/zero is only opened, never read; the FIFOs are real."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.errors import EXIT_FAILED, EXIT_USAGE
from builder.files import inputs
from tests.conftest import ROOT
from tests.helpers.cli import builder_cmd

SNAPSHOT = ROOT / "tests" / "data" / "host" / "snapshots" / "h200-driver-580-ubuntu-24.04.json"
LOCK = ROOT / "locks" / "matrix-a" / "pylock.py312.toml"

#: Commands reading a path the user gives; "{}" is the path.
READERS = {
    "check --lock": ["check", "--lock", "{}", "--offline"],
    "spec validate": ["spec", "validate", "{}"],
    "preflight --from-snapshot": ["preflight", "-m", "a", "--from-snapshot", "{}"],
    "runbook --from-snapshot": ["runbook", "-m", "a", "--from-snapshot", "{}"],
    "lock diff OLD": ["lock", "diff", "{}", str(LOCK)],
    "route show --route-file": ["route", "show", "--route-file", "{}"],
}


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A copy of the project's specs and locks (what the cheap commands read)."""
    p = tmp_path / "proj"
    for d in ("envs", "locks"):
        shutil.copytree(ROOT / d, p / d)
    return p


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    r = builder_cmd(*args, cwd=cwd, timeout=60)  # a hang fails the test by TimeoutExpired
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr
    assert r.returncode != 70, r.stderr
    return r


def one_line(r: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("builder: error: ")]
    assert r.returncode == code and len(errors) == 1, (r.returncode, r.stderr)
    assert all(w in errors[0] for w in words), errors[0]


def fifo(tmp_path: Path) -> Path:
    p = tmp_path / "input.fifo"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("cmd", READERS)
def test_a_device_as_an_input_file_is_refused_without_reading_it(cmd: str) -> None:
    r = run(*[a.replace("{}", "/dev/zero") for a in READERS[cmd]])
    one_line(r, EXIT_USAGE, "/dev/zero", "a character device")


@pytest.mark.parametrize("cmd", READERS)
def test_a_fifo_nobody_writes_to_reads_as_empty_instead_of_hanging(cmd: str, tmp_path: Path) -> None:
    f = fifo(tmp_path)
    r = run(*[a.replace("{}", str(f)) for a in READERS[cmd]])
    if cmd == "route show --route-file":  # an empty route file: an endpoint builder did not write
        assert r.returncode == 0 and "builder did not write it" in r.stdout, r.stdout + r.stderr
    else:  # an empty document: invalid (a spec lists every missing key, each naming the file)
        assert r.returncode == EXIT_USAGE and r.stderr.startswith("builder: error: "), r.stderr
        assert str(f) in r.stderr, r.stderr


def test_an_input_over_the_cap_is_refused_from_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:  # sparse: no disk used, and builder must not read it
        fh.truncate(inputs.INPUT_MAX + 1)
    one_line(run("check", "--lock", str(big), "--offline"), EXIT_USAGE, str(big), "MiB")
    one_line(run("spec", "validate", str(big)), EXIT_USAGE, str(big), "MiB")


def test_a_pipe_with_a_writer_is_read(tmp_path: Path) -> None:
    """`check --lock <(cat lock)`: a pipe is an input, read once, to its end (offline, on the
    captured wheel facts of matrix B: no network, no warm cache of this host)."""
    cache = tmp_path / "cache"
    shutil.copytree(ROOT / "tests" / "data" / "check-cache" / "matrix-b", cache)
    lock = ROOT / "locks" / "matrix-b" / "pylock.py312.toml"
    r = subprocess.run(["bash", "-c", f"exec {' '.join(map(str, _python_builder()))} check --lock "
                        f"<(cat {lock}) --offline --cache-dir {cache} --driver 575.57.08 --gpu-cc 8.9 --json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1) and '"verdict"' in r.stdout, r.stderr


def _python_builder() -> list[str]:
    import sys

    return [sys.executable, "-m", "builder"]


def test_project_files_that_are_devices_or_fifos_end_in_one_line(proj: Path) -> None:
    host = proj / "envs" / "host.toml"
    host.unlink()
    host.symlink_to("/dev/zero")
    one_line(run("--project", str(proj), "check", "-m", "A", "-p", "3.12", "--offline"), EXIT_USAGE,
             "host.toml", "a character device")
    host.unlink()
    shutil.copy(ROOT / "envs" / "host.toml", host)
    lock = proj / "locks" / "matrix-a" / "pylock.py312.toml"
    lock.unlink()
    os.mkfifo(lock)
    r = run("--project", str(proj), "lock", "--check")
    assert r.returncode == EXIT_FAILED and "matrix-a/pylock.py312.toml: invalid" in r.stdout + r.stderr
    r = run("--project", str(proj), "list")
    assert r.returncode in (0, 1) and "matrix-b" in r.stdout, r.stderr
    one_line(run("--project", str(proj), "build", "-m", "A", "-p", "3.12", "--no-gpu"), EXIT_USAGE,
             "pylock.py312.toml")


def test_a_crlf_copy_of_a_lock_is_not_fresh(proj: Path) -> None:
    """The stamp's hash covers every byte: CR bytes too (lock --check reads bytes, as build does)."""
    lock = proj / "locks" / "matrix-b" / "pylock.py312.toml"
    lock.write_bytes(lock.read_bytes().replace(b"\n", b"\r\n"))
    r = run("--project", str(proj), "lock", "--check")
    assert r.returncode == EXIT_FAILED, r.stdout + r.stderr
    line = next(ln for ln in (r.stdout + r.stderr).splitlines() if "matrix-b/pylock.py312.toml" in ln)
    assert "pylock.py312.toml: invalid" in line, line
    one_line(run("--project", str(proj), "build", "-m", "B", "-p", "3.12", "--no-gpu"), EXIT_USAGE,
             "pylock.py312.toml")
