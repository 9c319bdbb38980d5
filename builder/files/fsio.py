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
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the kernel says it (Linux >= 4.7:
    ``Umask:`` in /proc/self/status). Python has no getter: the fallback sets and restores it
    under a lock, a window in which another thread's new file would get no umask, so it is
    only the fallback (builder reads wheels and runs smoke steps on threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)  # the restrictive side while the window is open
        os.umask(mask)
    return mask


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix.

    ``path`` may be a symlink: the file it names is replaced, the link stays.
    """
    import tempfile  # here, not at the top: the read-only commands never load it

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
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a lock is a normal file
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


def _temp_copy(path: Path, text: str) -> str:
    """A fsynced temp file beside ``path`` holding ``text`` (mode as a normal file)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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
    files = [(Path(os.path.realpath(path)), text) for path, text in files]  # through symlinks, as atomic_write
    for path, _text in files:
        refuse_special(path)
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            with cancel.deferred():  # no temp file a signal could orphan
                temps.append((_temp_copy(path, text), path))
        cancel.check()  # a stop signal arrived: no rename at all
    except BaseException as exc:
        for tmp, _path in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            refused = FilesystemRefused.from_oserror(exc, exc.filename or files[len(temps)][0])
            if refused is not None:
                raise refused from None
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
