"""Reading builder's input files with bounds: specs, locks, snapshots, route and key files.

Every file builder reads that a user names, or that sits where anything can be put
(``envs/``, ``locks/``, a snapshot, the route file), is read here.  It must be a
regular file or a pipe (``check --lock <(git show REV:locks/...)``), never a device or
a socket, and at most :data:`INPUT_MAX` bytes: ``/dev/zero`` or a runaway file ends in
one line instead of a MemoryError, and a FIFO nobody writes to is opened without
blocking and reads as empty instead of hanging builder on ``open``.

Refusals are :class:`InputRefused`, an ``OSError`` whose ``strerror`` says why, so each
caller's existing "cannot read PATH: <why>" handling (and exit code) applies unchanged.
No subprocesses, no writes: pure modules (the lock model, the spec loader) use it.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

#: The most bytes builder reads from one input file (a 162-package lock is 69 KB).
INPUT_MAX = 64 * 1024 * 1024
_READ = 1024 * 1024


class InputRefused(OSError):
    """Not something builder reads as an input file: a device, a socket, or too large."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: Any, cap: int = INPUT_MAX) -> bytes:
    """The bytes of the input file at ``path`` (a ``Path`` or str), bounded.

    Raises FileNotFoundError, IsADirectoryError, PermissionError ... as ``open`` does,
    and :class:`InputRefused` for a device or socket, or past ``cap`` bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO without writer: no hang
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise InputRefused(errno.EINVAL, f"it is {_kind(st.st_mode)}, not a file builder reads", str(path))
        limit = f"over the {cap // (1024 * 1024)} MiB an input file may have"
        if st.st_size > cap:
            raise InputRefused(errno.EINVAL, f"{st.st_size:,} bytes, {limit}", str(path))
        os.set_blocking(fd, True)  # a pipe with a writer: wait for its data (Ctrl-C still stops it)
        buf = bytearray()
        while True:
            chunk = os.read(fd, min(_READ, cap + 1 - len(buf)))
            if not chunk:
                return bytes(buf)
            buf += chunk
            if len(buf) > cap:
                raise InputRefused(errno.EINVAL, limit, str(path))
    finally:
        os.close(fd)


def read_text(path: Any, cap: int = INPUT_MAX) -> str:
    """:func:`read_bytes` decoded as UTF-8 (UnicodeDecodeError as ``bytes.decode``), bytes kept
    as they are: a CRLF file stays CRLF (the lock stamp's hash covers every byte)."""
    return read_bytes(path, cap).decode("utf-8")
