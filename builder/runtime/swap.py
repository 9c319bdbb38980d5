"""Filesystem atomics of the runtimes root: staging, swap-in, pointers, leftovers.

A runtime is built in ``.staging-*`` and put in place by one ``rename`` (a
``renameat2(RENAME_EXCHANGE)`` swap when replacing one); the "current" pointer
is a symlink replaced by ``rename``.  A killed build leaves only a staging
directory, removed by the next build once its owner is provably dead (its
name lock is free).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from builder.errors import Busy
from builder.files import fsio

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        import ctypes  # here: first needed by the flush that runs beside the smoke tests

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def name_lock_dir(root: Path, name: str) -> Path:
    """The directory holding the flock of runtime ``name``."""
    return root / ".locks" / name


@contextlib.contextmanager
def name_lock(root: Path, name: str, wait: float, *, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold the lock of runtime ``name`` (one build of a name at a time)."""
    with fsio.directory_lock(name_lock_dir(root, name), timeout=wait, on_wait=on_wait):
        yield


def is_free(root: Path, name: str) -> bool:
    try:
        with fsio.directory_lock(name_lock_dir(root, name), timeout=0):
            return True
    except Busy:
        return False


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def staging_dir(root: Path, name: str) -> Path:
    return root / f".staging-{name}-{os.getpid()}-{secrets.token_hex(3)}"


def clean_leftovers(root: Path, held: str) -> list[str]:
    """Remove staging dirs of dead builds and trash dirs; return what was removed.

    ``held`` is the runtime name whose lock this process holds: its staging
    dirs are leftovers by definition.  Others are removed only if their name
    lock is free, i.e. the build that made them is dead.
    """
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if p.name.startswith(".trash-"):
            rmtree(p)
            removed.append(p.name)
        elif p.name.startswith(".staging-") and p.is_dir() and not p.is_symlink():
            parts = p.name.removeprefix(".staging-").rsplit("-", 2)
            if len(parts) != 3:
                continue
            if parts[0] == held or is_free(root, parts[0]):
                rmtree(p)
                removed.append(p.name)
    return removed


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        fn = _lib().renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def users_of(path: Path) -> list[int]:
    """Pids whose executable, cwd or mapped files lie inside ``path`` (readable ones only)."""
    prefix = str(path.resolve()) + os.sep
    pids: list[int] = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            links = [os.readlink(d / "exe"), os.readlink(d / "cwd")]
            maps = (d / "maps").read_text(errors="replace")
        except OSError:
            continue
        if any((x + os.sep).startswith(prefix) for x in links) or prefix in maps:
            pids.append(int(d.name))
    return sorted(p for p in pids if p != os.getpid())


def install(staging: Path, final: Path, root: Path) -> None:
    """Put ``staging`` at ``final``; an old ``final`` is swapped out and deleted."""
    if not final.exists():
        os.rename(staging, final)
        return
    trash = root / f".trash-{final.name}-{secrets.token_hex(4)}"
    if _renameat2_exchange(staging, final):
        os.rename(staging, trash)  # staging now holds the old runtime
    else:
        os.rename(final, trash)
        os.rename(staging, final)
    rmtree(trash)


def point(root: Path, pointer: str, target: str) -> None:
    """Switch ``root/pointer`` -> ``target`` by renaming a new symlink over it."""
    link = root / pointer
    if link.exists() and not link.is_symlink():
        return  # someone's real directory: never replace it
    tmp = root / f".{pointer}.{secrets.token_hex(4)}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, link)


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` so a renamed runtime is on disk."""
    try:
        lib = _lib()
        fd = os.open(path, os.O_RDONLY)
        try:
            lib.syncfs(fd)
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
