"""``builder lock``: lock every selected (matrix, Python) in parallel, atomically.

The directory lock is held for the whole run so two concurrent ``builder lock``
runs serialise instead of interleaving writes.  A lock file is replaced only
after uv succeeded and the result passed every check; anything else leaves the
previous file byte-for-byte intact.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from builder import lockfile, tools, uv_backend
from builder.errors import BuilderError
from builder.project import Project, select_pythons
from builder.spec import Matrix

Progress = Callable[[str, str], None]
"""Called with (target, message) as locks start and finish."""


@dataclass(frozen=True)
class Target:
    matrix: Matrix
    python: str

    @property
    def label(self) -> str:
        return f"{self.matrix.name}/py{self.python}"


@dataclass
class LockOutcome:
    target: Target
    path: Path
    changed: bool = False
    seconds: float = 0.0
    error: BuilderError | None = None
    conda_path: Path | None = None  # the conda lock, for a matrix with a conda base
    conda_changed: bool = False
    conda_solver: str = ""


@dataclass(frozen=True)
class LockRequest:
    selectors: list[str] = field(default_factory=list)  # empty: every matrix
    python: str | None = None
    offline: bool = False
    jobs: int | None = None
    channel_overrides: Mapping[str, str] = field(default_factory=dict)  # conda NAME -> URL or dir


def targets(project: Project, selectors: list[str], python: str | None) -> list[Target]:
    out: list[Target] = []
    for m in project.matrices(selectors):
        out.extend(Target(m, py) for py in select_pythons(m, python))
    return out


def _lock_one(project: Project, uv: str, uv_version: str, t: Target, offline: bool,
              overrides: Mapping[str, str] | None = None) -> LockOutcome:
    path = lockfile.lock_path(project.locks, t.matrix, t.python)
    out = LockOutcome(t, path)
    try:
        res = uv_backend.compile_lock(uv, t.matrix, t.python, offline=offline)
        text = lockfile.render(
            t.matrix, t.python, res.body,
            {"uv-version": uv_version, "uv-command": " ".join(res.argv)},
        )
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            lockfile.atomic_write(path, text)
            out.changed = True
        out.seconds = res.seconds
        if t.matrix.conda is not None:
            from builder import conda_backend

            c = conda_backend.lock(project.locks, t.matrix, t.python, overrides)
            out.conda_path, out.conda_changed, out.conda_solver = c.path, c.changed, c.solver
            out.seconds += c.seconds
    except BuilderError as exc:
        out.error = exc
    return out


def run_lock(
    project: Project, req: LockRequest, progress: Progress | None = None
) -> list[LockOutcome]:
    """Lock every target; return one outcome each (errors are collected, not raised)."""
    ts = targets(project, req.selectors, req.python)
    uv = tools.uv_bin()
    version = tools.uv_version(uv)
    say = progress or (lambda _t, _m: None)
    jobs = req.jobs or min(len(ts), max(2, os.cpu_count() or 2), 8) or 1
    with lockfile.directory_lock(project.locks, on_wait=lambda: say("*", "waiting for another builder lock run")):
        for t in ts:
            lockfile.clean_temp_files(lockfile.lock_path(project.locks, t.matrix, t.python).parent)
        for t in ts:
            say(t.label, "resolving")
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_lock_one, project, uv, version, t, req.offline,
                                   req.channel_overrides) for t in ts]
            outcomes = []
            for fut in futures:
                o = fut.result()
                if o.error is not None:
                    say(o.target.label, "failed")
                else:
                    say(o.target.label, ("written" if o.changed else "unchanged")
                        + (f", conda lock {'written' if o.conda_changed else 'unchanged'}"
                           f" by {o.conda_solver}" if o.conda_path else "")
                        + f" ({o.seconds:.1f}s)")
                outcomes.append(o)
    return outcomes


def check_locks(project: Project, selectors: list[str], python: str | None) -> list[lockfile.LockState]:
    """Freshness of every selected lock, and of the conda lock of a conda base (offline, no uv)."""
    states = []
    for t in targets(project, selectors, python):
        states.append(lockfile.lock_state(project.locks, t.matrix, t.python))
        if t.matrix.conda is not None:
            from builder import conda_backend

            states.append(conda_backend.conda_lock_state(project.locks, t.matrix, t.python))
    return states
