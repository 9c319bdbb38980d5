"""Orchestration of the driver-upgrade commands: probe or load, parse, decide.

Each function here is what one CLI command calls: it gets facts from the live
host (bounded probes) or from a snapshot file, then hands them to the pure
decision or rendering module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from builder.driver import facts as hostfacts
from builder.driver import preflight, runbook, snapshot
from builder.driver import probe as host
from builder.driver import verify as verify_driver
from builder.errors import UsageError
from builder.project import Project


def take_snapshot(project: Project, path: Path) -> snapshot.Snapshot:
    """Probe the live host (and every runtime's torch) and write ``path`` atomically."""
    snap = snapshot.make(host.capture(project.runtimes))
    write_text(path, lambda: snapshot.write(snap, path))
    return snap


def write_text(path: Path, write: Callable[[], None]) -> None:
    """Run ``write``; an unwritable path is a usage error (exit 2), not a traceback."""
    try:
        write()
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}", "choose a writable path") from None


def _snapshot(project: Project, from_snapshot: Path | None, matrix_id: str | None,
              with_torch: bool) -> snapshot.Snapshot:
    if from_snapshot is not None:
        return snapshot.load(from_snapshot)
    records = host.capture(project.runtimes if with_torch else None, matrix_id)
    return snapshot.make(records, source="live host")


def _source(snap: snapshot.Snapshot) -> str:
    return snap.source if snap.source == "live host" else f"snapshot {snap.source} ({snap.created})"


def run_preflight(project: Project, selector: str, from_snapshot: Path | None = None) -> preflight.Report:
    """``builder preflight``: every check for the matrix, from the host or a snapshot."""
    matrix = project.matrix(selector)
    snap = _snapshot(project, from_snapshot, matrix.id, with_torch=False)
    report = preflight.evaluate(hostfacts.from_snapshot(snap), matrix, project.host())
    report.extra["source"] = _source(snap)
    return report


def run_verify(project: Project, selector: str, from_snapshot: Path | None = None,
               skip_torch: bool = False) -> preflight.Report:
    """``builder verify-driver``: post-reboot checks (and each runtime's torch)."""
    matrix = project.matrix(selector)
    snap = _snapshot(project, from_snapshot, matrix.id, with_torch=not skip_torch)
    found = None if from_snapshot is not None else len(host.runtime_dirs(project.runtimes, matrix.id))
    report = verify_driver.evaluate(hostfacts.from_snapshot(snap), matrix, project.host(),
                                    skip_torch=skip_torch, runtimes_found=found)
    report.extra["source"] = _source(snap)
    return report


def render_runbook(project: Project, selector: str, fmt: str = "md",
                   from_snapshot: Path | None = None) -> str:
    """``builder runbook``: values from the host (or the snapshot), else envs/host.toml."""
    matrix = project.matrix(selector)
    snap = _snapshot(project, from_snapshot, matrix.id, with_torch=False)
    facts = hostfacts.from_snapshot(snap)
    return runbook.render(runbook.plan(matrix, project.host(), facts, _source(snap)), fmt)
