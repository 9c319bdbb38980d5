"""``builder lock``: lock every selected (matrix, Python) in parallel, atomically.

The directory lock is held for the whole run so two concurrent ``builder lock``
runs serialise instead of interleaving writes.  A lock file is replaced only
after uv succeeded and the result passed every check; anything else leaves the
previous file byte-for-byte intact.

``--check`` (:func:`check_locks`) runs no tool: uv, the subprocess wrapper, the
write gate and the thread pool are imported only by the functions that lock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuilderError
from builder.files import inputs
from builder.freshness import LockState
from builder.lock import state as lockstate
from builder.project import Project, lock_path, select_pythons
from builder.report import Progress
from builder.spec import Matrix

if TYPE_CHECKING:
    from builder.lock.uv import CompileResult


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class LockRequest:
    selectors: tuple[str, ...] = ()  # empty: every matrix
    python: str | None = None
    offline: bool = False
    jobs: int | None = None
    channel_overrides: Mapping[str, str] = field(default_factory=dict)  # conda NAME -> URL or dir


def targets(project: Project, selectors: list[str], python: str | None) -> list[Target]:
    out: list[Target] = []
    for m in project.matrices(selectors):
        out.extend(Target(matrix=m, python=py) for py in select_pythons(m, python))
    return out


def _compile(uv: str, t: Target, *, offline: bool, follower: bool, cache: Path) -> CompileResult:
    """Resolve one target. A follower first tries uv's cache alone (its group's leader
    has just revalidated the shared index pages), then the network if that fails."""
    from builder.lock import uv as uv_backend

    if follower and not offline:
        try:
            return uv_backend.compile_lock(uv, t.matrix, t.python, offline=True, cache_dir=cache)
        except BuilderError:
            pass  # something the leader did not fetch: resolve online
    return uv_backend.compile_lock(uv, t.matrix, t.python, offline=offline, cache_dir=cache)


def _read_old(path: Path) -> str | None:
    try:
        return inputs.read_text(path)
    except (OSError, UnicodeDecodeError):
        return None  # missing, unreadable or not text: it gets replaced


def lock_text(t: Target, res: CompileResult, uv_version: str) -> str:
    """The full lock file builder writes for ``t`` from uv's result (header, body, stamp)."""
    return lockstate.render(t.matrix, t.python, res.body,
                            stamp={"uv-version": uv_version, "uv-command": " ".join(res.argv)})


def _lock_one(project: Project, uv: str, uv_version: str, *, t: Target, offline: bool,
              overrides: Mapping[str, str] | None = None, follower: bool = False,
              cache: Path | None = None) -> LockOutcome:
    from builder import paths
    from builder.files import fsio

    path = lock_path(project.locks, t.matrix, t.python)
    out = LockOutcome(t, path)
    try:
        res = _compile(uv, t, offline=offline, follower=follower, cache=cache or paths.uv_cache(project=project))
        text = lock_text(t, res, uv_version)
        if _read_old(path) != text:
            fsio.atomic_write(paths.gate(path, what="write the lock", project=project), text)
            out.changed = True
        out.seconds = res.seconds
        if t.matrix.conda is not None:
            from builder.conda import backend as conda_backend

            c = conda_backend.lock(project.locks, t.matrix, t.python, overrides=overrides, project=project)
            out.conda_path, out.conda_changed, out.conda_solver = c.path, c.changed, c.solver
            out.seconds += c.seconds
    except BuilderError as exc:
        out.error = exc
    return out


def _group_key(m: Matrix) -> tuple[object, ...]:
    """Targets with the same package sources and cut-off date see the same index pages."""
    return (m.index_url, tuple(m.index_urls()), m.find_links, m.exclude_newer)


def run_lock(
    project: Project, req: LockRequest, progress: Progress | None = None
) -> list[LockOutcome]:
    """Lock every target; return one outcome each, in target order (errors are collected, not raised).

    Targets are grouped by package sources: each group's first target (its
    leader) resolves online, revalidating uv's cache of the index pages; the
    others follow from that fresh cache (falling back to the network), so four
    locks cost little more than one.  With ``exclude-newer`` in the past the
    filtered index is immutable, so the bytes are those of an online resolution
    (tests check that re-locking reproduces them).  Groups run in parallel.
    """
    from concurrent.futures import ThreadPoolExecutor

    from builder import paths, tools
    from builder.files import fsio

    ts = targets(project, list(req.selectors), req.python)
    # Every path this run writes, approved before anything is written: locks/
    # (and its lock file), each lock and its directory (a matrix directory may
    # be a symlink), uv's cache and the temp dirs.
    paths.gate(project.locks, what="write locks in", project=project, kind="dir")
    for t in ts:
        p = lock_path(project.locks, t.matrix, t.python)
        paths.gate(p.parent, what="write locks in", project=project, kind="dir")
        paths.gate(p, what="write the lock", project=project)
    cache = paths.uv_cache(project=project)
    paths.temp_base(project=project)  # uv inherits $TMPDIR
    uv = tools.uv_bin()
    version = tools.uv_version(uv)
    say = progress or (lambda _t, _m: None)
    jobs = req.jobs or min(len(ts), max(2, os.cpu_count() or 2), 8) or 1
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, t in enumerate(ts):
        groups.setdefault(_group_key(t.matrix), []).append(i)

    def report(o: LockOutcome) -> LockOutcome:
        if o.error is not None:
            say(o.target.label, "failed")
        else:
            say(o.target.label, ("written" if o.changed else "unchanged")
                + (f", conda lock {'written' if o.conda_changed else 'unchanged'}"
                   f" by {o.conda_solver}" if o.conda_path else "")
                + f" ({o.seconds:.1f}s)")
        return o

    with fsio.directory_lock(project.locks, on_wait=lambda: say("*", "waiting for another builder lock run")):
        for t in ts:
            fsio.clean_temp_files(lock_path(project.locks, t.matrix, t.python).parent)
        for t in ts:
            say(t.label, "resolving")
        done: dict[int, LockOutcome] = {}
        with ThreadPoolExecutor(max_workers=jobs) as pool:

            def lock(i: int, *, follower: bool) -> LockOutcome:
                return report(_lock_one(project, uv, version, t=ts[i], offline=req.offline,
                                        overrides=req.channel_overrides, follower=follower, cache=cache))

            def run_group(members: list[int]) -> None:
                done[members[0]] = lock(members[0], follower=False)
                rest = {i: pool.submit(lock, i, follower=True) for i in members[1:]}
                for i, fut in rest.items():
                    done[i] = fut.result()

            # Leaders run on their own threads so followers never wait for a free worker.
            with ThreadPoolExecutor(max_workers=max(1, len(groups))) as leaders:
                list(leaders.map(run_group, groups.values()))
    return [done[i] for i in range(len(ts))]


def check_locks(project: Project, selectors: list[str], python: str | None) -> list[LockState]:
    """Freshness of every selected lock, and of the conda lock of a conda base (offline, no uv)."""
    states = []
    for t in targets(project, selectors, python):
        states.append(lockstate.lock_state(project.locks, t.matrix, t.python))
        if t.matrix.conda is not None:
            from builder.conda import backend as conda_backend

            states.append(conda_backend.conda_lock_state(project.locks, t.matrix, t.python))
    return states
