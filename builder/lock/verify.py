"""``builder lock --verify``: proof that each lock is what uv produces from its spec.

The stamp's ``lock-hash`` is unkeyed: it catches accidents, and anyone can
recompute it after editing a lock.  Verification re-resolves every selected
lock (in a temp directory, with the same uv command builder locks with) and
requires the *whole rendered file*, header and stamp included, to be
byte-identical to the one on disk.  Nothing under ``locks/`` is written.

A resolution first runs from uv's cache alone (``--offline``, about a second
on a warm cache).  Identical bytes end it: uv produced them from the spec.
When the cache cannot answer, or answers differently (a page cached before the
lock's ``exclude-newer`` cut-off can lack files), it runs online, and only
that answer can condemn a lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import pylock, tools
from builder.errors import BuilderError, LockFileError, Unavailable
from builder.files import inputs
from builder.lock import uv as uv_backend
from builder.lock.diff import diff_packages
from builder.lock.resolve import Target, lock_text, targets
from builder.project import Project, lock_path
from builder.report import Progress


@dataclass(frozen=True, kw_only=True)
class VerifyOutcome:
    """One lock's verification: ``identical``, ``differs``, ``missing`` or ``error``."""

    target: Target
    path: Path
    state: str
    how: str = ""  # offline | online: which resolution settled it
    summary: str = ""  # what differs, for ``differs``
    error: BuilderError | None = None

    @property
    def ok(self) -> bool:
        return self.state == "identical"


def difference(old_text: str, new_text: str, where: str) -> str:
    """A one-line account of how a lock on disk differs from uv's fresh one."""
    try:
        old = pylock.parse(old_text.encode(), where)
    except LockFileError as exc:
        return f"not a valid lock: {exc.message}"
    new = pylock.parse(new_text.encode(), f"{where} (re-resolved)")
    p = diff_packages(old, new)
    if p.count:
        def some(what: str, rows: tuple[dict[str, Any], ...], show: Callable[[dict[str, Any]], str]) -> list[str]:
            return [f"{len(rows)} {what} (" + ", ".join(map(show, rows[:5])) + ")"] if rows else []

        parts = [*some("changed", p.changed, lambda c: f"{c['name']} {c['old']} -> {c['new']}"),
                 *some("missing from the lock", p.added, lambda c: f"{c['name']} {c['version']}"),
                 *some("not in uv's resolution", p.removed, lambda c: f"{c['name']} {c['version']}"),
                 *some("with other files or hashes", p.rehashed, lambda c: str(c["name"]))]
        return "packages differ: " + "; ".join(parts)
    if old.content_hash != new.content_hash:
        return "package entries differ in detail (markers, sizes, upload times or URLs)"
    a = dict(old.stamp.stamp.fields) if old.stamp.stamp else {}
    b = dict(new.stamp.stamp.fields) if new.stamp.stamp else {}
    keys = [k for k in dict.fromkeys([*b, *a]) if k != pylock.HASH_KEY and a.get(k) != b.get(k)]
    if keys:
        return "packages identical; stamp differs: " + ", ".join(keys)
    return "packages and stamp identical; other bytes differ (header, layout or whitespace)"


def _resolve(uv: str, uv_version: str, t: Target, *, offline: bool) -> str:
    return lock_text(t, uv_backend.compile_lock(uv, t.matrix, t.python, offline=offline), uv_version)


def verify_one(uv: str, uv_version: str, t: Target, *, path: Path, offline_only: bool = False) -> VerifyOutcome:
    """Re-resolve ``t`` and compare with the lock at ``path`` (never raises a BuilderError)."""
    try:
        on_disk = inputs.read_text(path)
    except FileNotFoundError:
        return VerifyOutcome(target=t, path=path, state="missing", summary="no lock file")
    except (OSError, UnicodeDecodeError) as exc:
        on_disk = f"<unreadable: {exc}>"
    fresh: str | None = None
    try:
        fresh = _resolve(uv, uv_version, t, offline=True)
        if fresh == on_disk:
            return VerifyOutcome(target=t, path=path, state="identical", how="offline")
    except BuilderError as exc:
        if offline_only:
            return VerifyOutcome(target=t, path=path, state="error", how="offline", error=_offline_error(exc))
    if offline_only:
        assert fresh is not None
        return VerifyOutcome(target=t, path=path, state="differs", how="offline",
                             summary=difference(on_disk, fresh, str(path)) + " (uv's cache only: --offline)")
    try:
        fresh = _resolve(uv, uv_version, t, offline=False)
    except BuilderError as exc:
        return VerifyOutcome(target=t, path=path, state="error", how="online", error=exc)
    if fresh == on_disk:
        return VerifyOutcome(target=t, path=path, state="identical", how="online")
    return VerifyOutcome(target=t, path=path, state="differs", how="online",
                         summary=difference(on_disk, fresh, str(path)))


def _offline_error(exc: BuilderError) -> BuilderError:
    """An offline resolution that fails for want of cached data is data unavailable (3)."""
    if isinstance(exc, Unavailable):  # uv's offline miss (lock/uv.py): say how to fill the cache for *this*
        return Unavailable(exc.message, "run `builder lock --verify` online once; then --offline works")
    return Unavailable(f"uv's cache cannot re-resolve it offline: {exc.message}",
                       "run `builder lock --verify` online once")


def verify_locks(project: Project, selectors: list[str], python: str | None, *, offline: bool = False,
                 jobs: int | None = None, progress: Progress | None = None) -> list[VerifyOutcome]:
    """Verify every selected lock, in parallel; one outcome each, in target order."""
    ts = targets(project, selectors, python)
    uv = tools.uv_bin()
    version = tools.uv_version(uv)
    say = progress or (lambda _t, _m: None)

    def one(t: Target) -> VerifyOutcome:
        say(t.label, "re-resolving")
        o = verify_one(uv, version, t, path=lock_path(project.locks, t.matrix, t.python), offline_only=offline)
        say(t.label, o.state + (f" ({o.how})" if o.how else ""))
        return o

    workers = jobs or min(len(ts), max(2, os.cpu_count() or 2), 8) or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, ts))


def exit_code(outcomes: list[VerifyOutcome]) -> int:
    """0 all identical; 1 any lock differs or is missing; else the first error's code (3: no network)."""
    from builder.errors import EXIT_FAILED, EXIT_OK

    if any(o.state in ("differs", "missing") for o in outcomes):
        return EXIT_FAILED
    errors = [o.error for o in outcomes if o.error is not None]
    if any(isinstance(e, Unavailable) for e in errors):
        return Unavailable.exit_code
    return errors[0].exit_code if errors else EXIT_OK
