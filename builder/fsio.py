"""Filesystem primitives: atomic writes and the directory lock (no subprocesses).

Every file builder generates is written by :func:`atomic_write` (temp file in
the same directory, fsync, rename, fsync of the directory), so a reader sees the
old or the new file, never a mix, and a killed writer leaves the old file intact.

Which paths may be written at all is :mod:`builder.paths`' decision (the write
gate); this module only makes the write itself safe: it replaces nothing but a
regular file (never a device node, FIFO, socket or directory, nor what a
symlink to one of those points at), writes through a symlink to the file it
names, writes nothing once a stop signal arrived (:mod:`builder.cancel`), and
turns a refusing filesystem (read-only, full, no permission) into
:class:`~builder.errors.FilesystemRefused` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from builder import cancel
from builder.errors import Busy, FilesystemRefused, UsageError

DIR_LOCK_NAME = ".builder.lock"


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def refuse_special(path: str | os.PathLike[str]) -> None:
    """UsageError if ``path`` exists (following symlinks) and is not a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        refused = FilesystemRefused.from_oserror(exc, path, "inspect")
        if refused is not None:
            raise refused from None
        return  # ELOOP, ENOTDIR ...: the write itself will say what is wrong
    if stat.S_ISREG(st.st_mode):
        return
    kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
    via = f" (a symlink to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise UsageError(f"refusing to replace {path}{via}: it is {kind}, not a regular file",
                     "give a regular file path, or `-` for standard output")


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix.

    ``path`` may be a symlink: the file it names is replaced, the link stays.
    """
    refuse_special(path)
    real = Path(os.path.realpath(path))
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        with cancel.deferred():  # a signal here must not leave a temp file nobody removes
            fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    except OSError as exc:
        raise FilesystemRefused.from_oserror(exc, path) or exc from None
    try:
        cancel.check()
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a lock is a normal file
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        cancel.check()  # a stop signal arrived: keep the old file, write nothing
        os.replace(tmp, real)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            refused = FilesystemRefused.from_oserror(exc, path)
            if refused is not None:
                raise refused from None
        raise
    fsync_dir(real.parent)


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
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / DIR_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise FilesystemRefused.from_oserror(exc, directory / DIR_LOCK_NAME, "create the lock file") or exc from None
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
