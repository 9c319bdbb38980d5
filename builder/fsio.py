"""Filesystem primitives: atomic writes and the directory lock (no subprocesses).

Every file builder generates is written by :func:`atomic_write` (temp file in
the same directory, fsync, rename, fsync of the directory), so a reader sees the
old or the new file, never a mix, and a killed writer leaves the old file intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from builder.errors import Busy

DIR_LOCK_NAME = ".builder.lock"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a lock is a normal file
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _temp_copy(path: Path, text: str) -> str:
    """A fsynced temp file beside ``path`` holding ``text`` (mode as a normal file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


_SHIELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def write_all(files: Sequence[tuple[Path, str]]) -> None:
    """Replace several files as one step: every temp file first, then every rename.

    Any failure while writing the temp files (disk full, an interrupt) removes
    them and leaves every target untouched.  The renames then run in the given
    order with SIGINT/SIGTERM/SIGHUP held back (in the main thread), so an
    interrupt cannot stop them half way; only a crash between two renames can,
    which is why callers put the file that records the change (a spec) last.
    """
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append((_temp_copy(path, text), path))
    except BaseException:
        for tmp, _path in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    main = threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SHIELD) if main else None
    done = 0
    try:
        for tmp, path in temps:
            os.replace(tmp, path)
            done += 1
        for d in dict.fromkeys(path.parent for _tmp, path in temps):
            fsync_dir(d)
    finally:
        for tmp, _path in temps[done:]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry change (a rename) to disk."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def clean_temp_files(directory: Path) -> None:
    """Remove temp files left by a killed writer (only ours: ``.NAME.*.tmp``)."""
    if directory.is_dir():
        for p in directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def directory_lock(
    directory: Path,
    timeout: float = 600.0,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory/.builder.lock``.

    fcntl is used directly (not the ``filelock`` package) because it is a few
    lines, dies with the process (a SIGKILLed holder releases it) and adds no
    dependency.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / DIR_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                if time.monotonic() >= deadline:
                    raise Busy(
                        f"another builder process holds {directory / DIR_LOCK_NAME}",
                        "wait for it to finish and run the command again",
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
