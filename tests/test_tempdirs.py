"""Temp dirs of killed runs are swept; those of live runs, other programs and other users are not
(builder/files/tempdirs.py).  Owners are real processes: this one, a sleeping child, a child that
has exited; a lock held here stands for a live run in another pid namespace."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.files import tempdirs


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p
    p.kill()
    p.wait()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _owned_by(base: Path, pid: int, start: str, what: str = "lock") -> Path:
    d = base / f"builder-{what}-{pid}.{start}-x1y2z3"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "requirements.in").write_text("torch\n")
    return d


def test_a_created_dir_is_named_after_its_owner_and_locked(tmp_path: Path) -> None:
    path, fd = tempdirs.create("builder-lock-", tmp_path)
    try:
        m = tempdirs.NAME.fullmatch(path.name)
        assert m is not None and int(m[1]) == os.getpid() and m[2] == tempdirs.start_time(os.getpid())
        other = os.open(path, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
        assert tempdirs.sweep(tmp_path) == [] and path.is_dir()  # its owner runs (this process)
    finally:
        tempdirs.release(path, fd)
    assert not path.exists()


def test_only_dirs_whose_owner_is_gone_and_whose_lock_is_free_are_swept(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    dead = _dead_pid()
    live_start = tempdirs.start_time(sleeper.pid)
    assert live_start is not None and tempdirs.start_time(dead) is None
    killed = _owned_by(tmp_path, dead, "123456")
    killed_sync = _owned_by(tmp_path, dead, "123456", "conda-lock")
    reused = _owned_by(tmp_path, sleeper.pid, str(int(live_start) + 1), "smoke")  # same pid, another process
    live = _owned_by(tmp_path, sleeper.pid, live_start)
    elsewhere = _owned_by(tmp_path, dead, "777", "sync")  # its owner's pid is not ours to see, but it holds the lock
    held = os.open(elsewhere, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    unnamed = tmp_path / "builder-lock-abc123"  # an older builder's (no owner in the name): never guessed
    unnamed.mkdir()
    foreign = tmp_path / f"other-lock-{dead}.1-x1y2z3"
    foreign.mkdir()
    link = tmp_path / f"builder-lock-{dead}.2-link"
    link.symlink_to(unnamed)
    try:
        swept = tempdirs.sweep(tmp_path)
    finally:
        os.close(held)
    assert sorted(swept) == sorted([killed, killed_sync, reused])
    assert not killed.exists() and not killed_sync.exists() and not reused.exists()
    assert live.is_dir() and elsewhere.is_dir() and unnamed.is_dir() and foreign.is_dir() and link.is_symlink()
    assert tempdirs.sweep(tmp_path / "missing") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_another_users_dir_is_left_alone(tmp_path: Path) -> None:
    d = _owned_by(tmp_path, _dead_pid(), "1")
    os.chown(d, 65534, 65534)
    assert tempdirs.sweep(tmp_path) == [] and d.is_dir()
