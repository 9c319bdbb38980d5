"""The one write gate: every path builder writes is resolved and checked here first.

Files, directories, caches, temp dirs and lock files alike: before builder
creates or changes anything it calls :func:`gate` with the target, which

1. resolves it as the kernel will (``~``, symlinks component by component,
   then ``..``), and returns that resolved path: the path checked is the
   path written;
2. refuses it with :class:`~builder.errors.ProtectedEnvError` (exit 6) when it
   lies in a protected environment (QL_1, the active env, ``envs/host.toml``'s
   paths) by resolved path *or* by ``(st_dev, st_ino)`` of any existing
   ancestor (bind mounts): :meth:`builder.protect.Protected.match`;
3. for a path the user gave (``-o FILE``, ``--root``, ``--cache-dir``):
   refuses a missing parent directory (exit 2); builder's own state
   directories (``runtimes/``, ``locks/``, caches) are created as needed;
4. refuses an existing target that is not a regular file where a file is to
   be written (a device node, FIFO, socket, directory: exit 2).

The protected set is resolved once per process (it may run ``conda env
list``) and only when something is about to be written: ``builder --help`` and
``lock --check`` never pay for it.

A symlink swapped between the gate and the write (a race by someone who can
already write there) is not covered: see docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from builder import cancel, protect
from builder.errors import FilesystemRefused, UsageError
from builder.files.fsio import refuse_special
from builder.project import Project
from builder.report import Say

Kind = Literal["file", "dir"]

_current: Project | None = None
_cache: dict[tuple[object, ...], protect.Protected] = {}
_approved: list[tuple[Path, Kind]] = []  # what the gate let through in this process
_warn: Say | None = None  # where the gate's warnings go (the CLI's stderr)
_reported: set[tuple[str, ...]] = set()  # protected names already reported unguardable in this process
_temps: dict[Path, int] = {}  # temp dirs of this process -> the descriptor holding each one's lock
_swept: set[Path] = set()  # temp bases swept of killed runs' temp dirs in this process


def on_warning(callback: Say | None) -> None:
    """Where the gate's warnings go (the CLI prints each as one stderr line); None drops them."""
    global _warn
    _warn = callback


def unguarded_message(name: str) -> str:
    """What is said of a protected env builder cannot locate (:meth:`protect.Protected.unlocatable`)."""
    return f"cannot guard {name}: add its path to `[protected] paths` in envs/host.toml"


def _report_unguarded(guard: protect.Protected) -> None:
    """Warn once per process for each protected env this writing command cannot guard."""
    if _warn is None or guard.names in _reported:
        return
    _reported.add(guard.names)
    for name in guard.unlocatable():
        _warn(unguarded_message(name))


def use_project(project: Project | None) -> None:
    """Make ``project`` the one whose protected envs apply when a caller passes none (the CLI)."""
    global _current
    _current = project


def protected_set(project: Project | None = None) -> protect.Protected:
    """The protected roots of ``project`` (default: the current one), resolved once per process."""
    proj = project if project is not None else _current
    key = (proj.root if proj is not None else None, tuple(sorted(os.environ.items())))
    hit = _cache.get(key)
    if hit is None:
        hit = protect.for_project(proj) if proj is not None else protect.resolve()
        _cache[key] = hit
    return hit


def resolve(target: str | os.PathLike[str]) -> Path:
    """``target`` as the kernel resolves it (``~``, symlinks, then ``..``)."""
    raw = os.path.expanduser(os.fspath(target))
    if raw == "":
        raise UsageError("an empty path was given", "pass a file or directory path")
    try:
        return Path(os.path.realpath(raw))
    except FileNotFoundError:  # relative path, and the working directory was deleted
        raise UsageError(f"cannot resolve {raw}: the current directory no longer exists",
                         "cd to an existing directory, or pass absolute paths") from None


def gate(target: str | os.PathLike[str], *, what: str, project: Project | None = None, kind: Kind = "file",
         user_given: bool = False, protected: protect.Protected | None = None) -> Path:
    """Approve writing ``target`` (see the module docstring); return its resolved path.

    ``what`` completes "refusing to ...", e.g. ``"write the runbook to"``.
    ``protected`` overrides the project's protected set (a caller that already
    resolved it).
    """
    real = resolve(target)
    shown = os.fspath(target)
    guard = protected if protected is not None else protected_set(project)
    _report_unguarded(guard)
    # match() resolves again and walks the device/inode of the ancestors of
    # both the given and the resolved path: a bind mount shows only there.
    guard.guard_write(os.path.expanduser(shown), what)
    if user_given and not real.parent.is_dir():
        why = "is not a directory" if real.parent.exists() else "does not exist"
        raise UsageError(f"cannot write {shown}: {real.parent} {why}", "create the directory first, or choose "
                         "another path")
    if kind == "file":
        refuse_special(shown)
    elif real.exists() and not real.is_dir():
        raise UsageError(f"{shown}: exists and is not a directory", "choose a directory path")
    _approved.append((real, kind))
    return real


def approved() -> list[tuple[Path, Kind]]:
    """Every (resolved path, kind) the gate approved in this process (for tests and -v)."""
    return list(_approved)


def mkdir(target: str | os.PathLike[str], *, what: str, project: Project | None = None,
          user_given: bool = False, protected: protect.Protected | None = None) -> Path:
    """Gate a directory builder owns, then create it (and missing parents)."""
    real = gate(target, what=what, project=project, kind="dir", user_given=user_given, protected=protected)
    try:
        real.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FilesystemRefused.from_oserror(exc, target, "create the directory") or exc from None
    return real


@contextlib.contextmanager
def temp_dir(prefix: str, *, project: Project | None = None,
             protected: protect.Protected | None = None) -> Iterator[Path]:
    """A private temp directory (under the gated ``$TMPDIR``), removed on every exit path.

    The CLI removes any left behind (a signal during the removal) with :func:`cleanup`; the
    first temp dir of a process sweeps those of killed runs (:mod:`builder.files.tempdirs`:
    named after their owner, locked while in use).
    """
    base = temp_base(project=project, protected=protected)
    # tempdirs imports tempfile and shutil: here, so the cheap commands never pay for them.
    from builder.files import tempdirs

    if base not in _swept:
        _swept.add(base)
        tempdirs.sweep(base)
    try:
        with cancel.deferred():  # a signal between mkdtemp and the registration would leak it
            path, fd = tempdirs.create(prefix, base)
            _temps[path] = fd
    except OSError as exc:
        raise FilesystemRefused.from_oserror(exc, base, "create a temporary directory in") or exc from None
    try:
        cancel.check()
        yield path
    finally:
        tempdirs.release(path, _temps.pop(path, None))


def temp_base(*, project: Project | None = None, protected: protect.Protected | None = None) -> Path:
    """Where temp dirs go (``$TMPDIR``, ``$TEMP``, ``$TMP``, else ``/tmp``), gated.

    Not ``tempfile.gettempdir()``: it proves a candidate writable by creating
    and deleting a file in it, which is a write into QL_1 when ``$TMPDIR``
    points there.  Children (uv) inherit ``$TMPDIR``, so commands that run
    them gate this before the first child starts.
    """
    chosen = next((v for v in (os.environ.get(n) for n in ("TMPDIR", "TEMP", "TMP")) if v), "/tmp")
    return gate(chosen, what="create temporary files in", project=project, kind="dir", protected=protected)


def cleanup() -> None:
    """Remove temp dirs whose removal a signal cut short (the CLI calls this on exit)."""
    if not _temps:
        return
    from builder.files import tempdirs

    for path in list(_temps):
        tempdirs.release(path, _temps.pop(path, None))


def uv_cache(explicit: str | os.PathLike[str] | None = None, *, project: Project | None = None,
             protected: protect.Protected | None = None) -> Path:
    """uv's cache directory, gated: ``explicit`` (``--cache-dir``), else ``$UV_CACHE_DIR``,
    else uv's default on Linux (``$XDG_CACHE_HOME/uv``, else ``~/.cache/uv``).

    builder hands the result to uv explicitly, so the directory checked is the one uv writes.
    """
    chosen = explicit or os.environ.get("UV_CACHE_DIR") or _xdg_cache("uv")
    return gate(chosen, what="use the uv cache at", project=project, kind="dir",
                user_given=bool(explicit), protected=protected)


def check_cache(explicit: str | os.PathLike[str] | None = None, *, project: Project | None = None,
                protected: protect.Protected | None = None) -> Path:
    """builder's wheel-facts cache, gated: ``explicit`` (``check --cache-dir``), else
    ``$BUILDER_CACHE_DIR``, else ``$XDG_CACHE_HOME/builder``, else ``~/.cache/builder``."""
    chosen = explicit or os.environ.get("BUILDER_CACHE_DIR") or _xdg_cache("builder")
    return gate(chosen, what="write the check cache in", project=project, kind="dir",
                user_given=bool(explicit), protected=protected)


def rattler_cache(*, project: Project | None = None, protected: protect.Protected | None = None) -> Path:
    """rattler's cache root (conda packages and repodata), gated: ``$RATTLER_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/rattler/cache``, else ``~/.cache/rattler/cache`` (rattler's
    ``default_cache_dir``)."""
    chosen = os.environ.get("RATTLER_CACHE_DIR") or os.path.join(_xdg_cache("rattler"), "cache")
    return gate(chosen, what="use the conda package cache at", project=project, kind="dir", protected=protected)


def _xdg_cache(name: str) -> str:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(xdg if xdg else os.path.join(os.path.expanduser("~"), ".cache"), name)
