"""``builder lock --refresh``: move the specs' ``exclude-newer`` forward and re-lock, as one transaction.

The pins stay pins (torch 2.9.0, vLLM 0.13.0): only the date up to which the
index is read moves, so unpinned dependencies (and overrides such as
``nvidia-cublas-cu12>=12.9,<12.10``) pick up what was published since.

One transaction over specs and locks: every spec edit (tomlkit, comments and
layout kept) and every lock is computed first, each lock resolved online with
the new date; only when all succeeded are the files written, every temp file
first and then every rename (:func:`builder.files.fsio.write_all`), the specs last.
Any failure leaves specs and locks byte-identical.

Per lock the outcome is ``unchanged`` (identical package content, possibly
re-stamped: runtimes are addressed by content, so they stay valid),
``changed`` (n packages differ) or ``new``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import paths, pylock, tools
from builder.errors import BuilderError, LockFileError, UsageError
from builder.files import fsio, inputs
from builder.lock import uv as uv_backend
from builder.lock.diff import diff_packages
from builder.lock.resolve import Target, lock_text
from builder.project import Project, lock_path
from builder.report import Progress
from builder.spec import Matrix

KEY = "exclude-newer"


def default_date(now: dt.datetime | None = None) -> dt.date:
    """Yesterday, UTC: the newest date whose cut-off has passed.

    uv reads ``--exclude-newer 2026-11-29`` as "uploaded before the end of
    2026-11-29" (checked with uv 0.13.9; builder runs uv with TZ=UTC), so the
    cut-off of yesterday's date is today 00:00 UTC.  Today's date would take
    files uploaded later today: the lock would not repeat.
    """
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).date() - dt.timedelta(days=1)


def parse_date(raw: str | None, now: dt.datetime | None = None) -> dt.date:
    """The ``--exclude-newer`` date: ``YYYY-MM-DD`` whose whole day lies in the past (UTC)."""
    if raw is None:
        return default_date(now)
    try:
        day = dt.date.fromisoformat(raw.strip())
    except ValueError:
        raise UsageError(f"--exclude-newer must be a date like 2026-01-31, got {raw!r}",
                         "pass YYYY-MM-DD (UTC)") from None
    limit = default_date(now)
    if day > limit:
        raise UsageError(f"--exclude-newer {day} has not ended yet (UTC): uv would take files uploaded until the "
                         "end of that day, so the lock would not repeat",
                         f"use {limit} or earlier (the default)")
    return day


@dataclass(frozen=True, kw_only=True)
class SpecChange:
    path: Path
    old: str
    new: str
    text: str  # the edited spec
    changed: bool


@dataclass(frozen=True, kw_only=True)
class RefreshOutcome:
    target: Target
    path: Path
    state: str  # unchanged | changed | new
    packages: int = 0  # how many packages differ (changed)
    written: bool = False  # the file's bytes change (a re-stamp counts)


@dataclass(frozen=True, kw_only=True)
class RefreshResult:
    date: str
    specs: list[SpecChange] = field(default_factory=list)
    locks: list[RefreshOutcome] = field(default_factory=list)
    conda_locks: list[Path] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class RefreshRequest:
    selectors: tuple[str, ...] = ()
    exclude_newer: str | None = None  # YYYY-MM-DD; default: yesterday (UTC)
    jobs: int | None = None
    channel_overrides: Mapping[str, str] = field(default_factory=dict)


def _keep_type(day: dt.date) -> Callable[[Any], Any]:
    """The new value in the spec's own style: a TOML date stays a date, a string a string."""
    return lambda old: day if isinstance(old, dt.date) else day.isoformat()


def edit_spec(path: Path, day: dt.date) -> tuple[SpecChange, Matrix]:
    """The spec at ``path`` with ``exclude-newer`` set to ``day`` (nothing written)."""
    from builder import spec_edit

    text = inputs.read_text(path)
    new_text, matrix, old, _new = spec_edit.edit_text(text, path, KEY, value=_keep_type(day))
    old_s = old.isoformat() if isinstance(old, dt.date) else str(old)
    return SpecChange(path=path, old=old_s, new=day.isoformat(), text=new_text, changed=new_text != text), matrix


def _outcome(t: Target, path: Path, text: str) -> RefreshOutcome:
    try:
        old_text = inputs.read_text(path)
    except FileNotFoundError:
        return RefreshOutcome(target=t, path=path, state="new", packages=len(pylock.parse(text.encode(), str(path))
                                                                                .packages), written=True)
    except (OSError, UnicodeDecodeError):
        old_text = ""
    if old_text == text:
        return RefreshOutcome(target=t, path=path, state="unchanged")
    new = pylock.parse(text.encode(), f"{path} (refreshed)")
    try:
        old = pylock.parse(old_text.encode(), str(path))
    except LockFileError:
        return RefreshOutcome(target=t, path=path, state="changed", packages=len(new.packages), written=True)
    if old.content_hash == new.content_hash:
        return RefreshOutcome(target=t, path=path, state="unchanged", written=True)
    return RefreshOutcome(target=t, path=path, state="changed", packages=diff_packages(old, new).count,
                          written=True)


def _fail(errors: list[tuple[Target, BuilderError]], day: dt.date) -> BuilderError:
    """The first failure, saying that nothing was written (and which other locks failed)."""
    t, exc = errors[0]
    more = ", ".join(o.label for o, _ in errors[1:])
    exc.message = f"refresh to {day} failed: {t.label}: {exc.message}" + (f" (also failed: {more})" if more else "")
    exc.hint = "nothing was written: specs and locks are unchanged" + (f"; {exc.hint}" if exc.hint else "")
    return exc


def refresh(project: Project, req: RefreshRequest, progress: Progress | None = None) -> RefreshResult:
    """Move ``exclude-newer`` of the selected matrices to the request's date and re-lock them all.

    Raises the first resolution error (nothing written) or UsageError for a bad date.
    """
    day = parse_date(req.exclude_newer)
    say = progress or (lambda _t, _m: None)
    specs = list(dict.fromkeys([project.matrix_path(s) for s in req.selectors] if req.selectors
                               else project.matrix_paths()))
    matrices = project.matrices(list(req.selectors))  # every spec valid before anything runs (all problems at once)
    # Everything this transaction may write passes the write gate first: the specs,
    # locks/ and every lock of the selected matrices (conda locks too), uv's cache, $TMPDIR.
    paths.gate(project.locks, what="write locks in", project=project, kind="dir")
    for sp in specs:
        paths.gate(sp, what="edit the spec", project=project)
    for m in matrices:
        for py in m.pythons:
            lp = lock_path(project.locks, m, py)
            paths.gate(lp.parent, what="write locks in", project=project, kind="dir")
            paths.gate(lp, what="write the lock", project=project)
            if m.conda is not None:
                from builder.conda.backend import conda_lock_path

                paths.gate(conda_lock_path(project.locks, m, py), what="write the conda lock", project=project)
    paths.uv_cache(project=project)
    paths.temp_base(project=project)
    uv = tools.uv_bin()
    version = tools.uv_version(uv)
    with fsio.directory_lock(project.locks, on_wait=lambda: say("*", "waiting for another builder lock run")):
        edits = [edit_spec(p, day) for p in specs]
        ts = [Target(matrix=m, python=py) for _c, m in edits for py in m.pythons]
        for t in ts:
            say(t.label, f"resolving with exclude-newer {day}")

        def resolve(t: Target) -> str | BuilderError:
            # Every lock online: with a new cut-off, pages cached before it can lack files.
            try:
                return lock_text(t, uv_backend.compile_lock(uv, t.matrix, t.python, offline=False), version)
            except BuilderError as exc:
                return exc

        workers = req.jobs or min(len(ts), max(2, os.cpu_count() or 2), 8) or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            texts = list(pool.map(resolve, ts))
        errors = [(t, r) for t, r in zip(ts, texts, strict=True) if isinstance(r, BuilderError)]
        conda_files: list[tuple[Path, str]] = []
        if not errors:
            conda_files, errors = _conda(project, ts, req.channel_overrides)
        if errors:
            for t, _e in errors:
                say(t.label, "failed")
            raise _fail(errors, day)
        outcomes = [_outcome(t, lock_path(project.locks, t.matrix, t.python), str(text))
                    for t, text in zip(ts, texts, strict=True)]
        files = [(o.path, str(text)) for o, text in zip(outcomes, texts, strict=True) if o.written]
        files += conda_files
        files += [(c.path, c.text) for c, _m in edits if c.changed]  # specs last: they record the change
        for t in ts:
            fsio.clean_temp_files(lock_path(project.locks, t.matrix, t.python).parent)
        fsio.write_all(files)
    for o in outcomes:
        say(o.target.label, describe(o))
    return RefreshResult(date=day.isoformat(), specs=[c for c, _m in edits], locks=outcomes,
                         conda_locks=[p for p, _t in conda_files])


def _conda(project: Project, ts: list[Target], overrides: Mapping[str, str]
           ) -> tuple[list[tuple[Path, str]], list[tuple[Target, BuilderError]]]:
    """The conda base locks of conda matrices, re-solved for the new spec (nothing written)."""
    files, errors = [], []
    for t in ts:
        if t.matrix.conda is None:
            continue
        from builder.conda import backend as conda_backend

        try:
            text = conda_backend.solve_text(t.matrix, t.python, overrides)
        except BuilderError as exc:
            errors.append((t, exc))
            continue
        path = conda_backend.conda_lock_path(project.locks, t.matrix, t.python)
        old = inputs.read_text(path) if path.exists() else None
        if old != text:
            files.append((path, text))
    return files, errors


def describe(o: RefreshOutcome) -> str:
    """``unchanged``, ``unchanged (re-stamped)``, ``changed (3 packages)`` or ``new (178 packages)``."""
    if o.state == "unchanged":
        return "unchanged (re-stamped)" if o.written else "unchanged"
    return f"{o.state} ({o.packages} package{'s' if o.packages != 1 else ''})"
