"""builder's temp directories: named after their owner, locked while in use, swept when stale.

A temp dir (``builder-lock-*``, ``builder-sync-*``, ``builder-smoke-*`` ...) is removed on every
exit path a process sees (:func:`builder.paths.temp_dir`), but not after SIGKILL, a power loss
or an OOM kill.  So each is made recognisable and provably abandoned:

* its name carries the owner: ``<prefix><pid>.<start>-<random>``, where ``start`` is the
  process's start time (``/proc/<pid>/stat`` field 22, clock ticks since boot), so a pid
  reused by another process does not pass for the owner;
* the owner holds an exclusive ``flock`` on the directory for as long as it uses it (the
  kernel drops it when the process dies, however it dies; children do not inherit it).

:func:`sweep` removes a directory only when both say it is abandoned: no process with that pid
and start time exists (in this pid namespace), *and* its lock can be taken (no process anywhere,
another pid namespace sharing ``/tmp`` included, holds it).  Names it cannot read (another
program's, an older builder's) and directories of other users are left alone.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

#: ``builder-<what>-<pid>.<start>-<random>``: the names :func:`create` gives.
NAME = re.compile(r"builder-[a-z]+(?:-[a-z]+)*-(\d+)\.(\d+)-[^/]+")


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None when it does not exist
    (or is a zombie: it holds nothing any more)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": field 3 (state) first
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def owner_tag() -> str:
    """``<pid>.<start>`` of this process (start ``0`` where /proc cannot say)."""
    return f"{os.getpid()}.{start_time(os.getpid()) or 0}"


def create(prefix: str, base: Path) -> tuple[Path, int]:
    """A new private directory ``<prefix><owner>-<random>`` in ``base``, and the descriptor
    holding its lock (close it after removing the directory)."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=base))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh directory: nobody else has it
    except OSError:
        os.close(fd)
        raise
    return path, fd


def release(path: Path, fd: int | None) -> None:
    """Remove ``path``, then drop its lock (in that order: a sweeper never sees it unlocked)."""
    shutil.rmtree(path, ignore_errors=True)
    if fd is not None:
        os.close(fd)


def _abandoned(entry: os.DirEntry[str]) -> int | None:
    """A locked descriptor of ``entry`` when it is one of this user's temp dirs whose owner is
    gone, else None."""
    m = NAME.fullmatch(entry.name)
    if m is None:
        return None
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return None
    if start_time(int(m[1])) == m[2]:
        return None  # its owner runs
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None  # someone holds it: a live run we cannot see (another pid namespace)
    return fd


def sweep(base: Path) -> list[Path]:
    """Remove the temp dirs in ``base`` whose owners are gone (a killed run's); return them."""
    removed: list[Path] = []
    try:
        entries = os.scandir(base)
    except OSError:
        return removed
    with entries:
        for entry in entries:
            if not entry.name.startswith("builder-"):
                continue
            fd = _abandoned(entry)
            if fd is not None:
                release(Path(entry.path), fd)
                removed.append(Path(entry.path))
    return removed
