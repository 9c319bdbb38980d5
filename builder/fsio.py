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
import tempfile
import time
from collections.abc import Callable, Iterator
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
