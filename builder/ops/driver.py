"""Orchestration of the driver-upgrade commands: probe or load, parse, decide.

Each function here is what one CLI command calls: it gets facts from the live
host (bounded probes) or from a snapshot file, then hands them to the pure
decision or rendering module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from builder import paths
from builder.driver import facts as hostfacts
from builder.driver import preflight, probe, runbook, snapshot, verify
from builder.errors import UsageError
from builder.files import fsio
from builder.project import Project
from builder.report import Level
from builder.runtime import layout


def _runtimes(project: Project, root: str | None, matrix_id: str | None = None) -> list[layout.Runtime]:
    return layout.discover(layout.runtimes_root(project, root), matrix_id)


STDOUT = "-"


def take_snapshot(project: Project, path: Path | str, root: str | None = None) -> tuple[snapshot.Snapshot, str]:
    """Probe the live host (and every runtime's torch); write ``path`` atomically.

    ``path`` passes the write gate before any probe runs.  ``-`` writes
    nothing: the caller prints the returned text.  Runtime paths are recorded
    relative to the project.
    """
    target = None if str(path) == STDOUT else gate_output(project, path, "write the snapshot to")
    runtimes_root = layout.runtimes_root(project, root)
    snap = snapshot.make(probe.capture([r.path for r in layout.discover(runtimes_root)]))
    snap = snapshot.relative_commands(snap, project.root, runtimes_root)
    text = snapshot.render(snap)
    if target is not None:
        write_text(target, lambda: fsio.atomic_write(target, text))
    return snap, text


def gate_output(project: Project, path: Path | str, what: str) -> Path:
    """A user-named output file, approved by the write gate (its parent must exist)."""
    return paths.gate(path, what=what, project=project, kind="file", user_given=True)


def write_output(project: Project, path: Path | str, text: str, *, what: str) -> Path:
    """Write ``text`` to the user-named file ``path`` through the gate, atomically."""
    target = gate_output(project, path, what)
    write_text(target, lambda: fsio.atomic_write(target, text))
    return target


def write_text(path: Path, write: Callable[[], None]) -> None:
    """Run ``write``; an unwritable path is a usage error (exit 2), not a traceback.

    A refusing filesystem (read-only, full, permission) is exit 8, from fsio.
    """
    try:
        write()
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}", "choose a writable path") from None


def _snapshot(project: Project, from_snapshot: Path | None, runtimes: list[layout.Runtime]) -> snapshot.Snapshot:
    if from_snapshot is not None:
        return snapshot.load(from_snapshot)
    return snapshot.make(probe.capture([r.path for r in runtimes]), source="live host")


def _source(snap: snapshot.Snapshot) -> str:
    return snap.source if snap.source == "live host" else f"snapshot {snap.source} ({snap.created})"


def torch_results(facts: hostfacts.HostFacts, matrix_id: str) -> dict[str, Mapping[str, Any]]:
    """The torch probe results of the matrix's runtimes (any base, any root), by runtime name."""
    out = {}
    for name, data in sorted(facts.torch.items()):
        parsed = layout.parse_name(name)
        if parsed is not None and parsed.matrix_id == matrix_id:
            out[name] = data
    return out


def run_preflight(project: Project, selector: str, from_snapshot: Path | None = None) -> preflight.Report:
    """``builder preflight``: every check for the matrix, from the host or a snapshot.

    The matrix lock's native driver floor comes from the checker, offline
    (:func:`builder.ops.lockfloor.lock_floor`).
    """
    from builder.ops.lockfloor import lock_floor

    matrix = project.matrix(selector)
    snap = _snapshot(project, from_snapshot, [])
    report = preflight.evaluate(hostfacts.from_snapshot(snap), matrix, project.host(),
                                lock_floor=lock_floor(project, matrix))
    if from_snapshot is None:  # the guard is this machine's: a snapshot's host is another one
        report.checks.extend(guard_checks(project))
    report.extra["source"] = _source(snap)
    return report


def guard_checks(project: Project) -> list[preflight.Check]:
    """A ``protected-envs`` warning per protected env builder cannot locate on this machine
    (:meth:`builder.protect.Protected.unlocatable`): builder could not refuse writes into it."""
    from builder import protect

    return [preflight.Check("protected-envs", Level.WARN, paths.unguarded_message(name),
                            f"add the env's prefix, e.g. paths = [\"/opt/conda/envs/{name}\"]")
            for name in protect.for_project(project).unlocatable()]


def _named_runtime(project: Project, root: str | None, runtime_id: str) -> layout.Runtime:
    return layout.named(layout.runtimes_root(project, root), runtime_id)


def run_verify(project: Project, selector: str, from_snapshot: Path | None = None,
               *, skip_torch: bool = False, root: str | None = None,
               runtime_id: str | None = None) -> preflight.Report:
    """``builder verify-driver``: post-reboot checks (and each runtime's torch).

    ``runtime_id``: check that runtime's torch (any runtime under the root, built or adopted)
    instead of the matrix's runtimes."""
    matrix = project.matrix(selector)
    if runtime_id is not None and not skip_torch and from_snapshot is None:
        found = [_named_runtime(project, root, runtime_id)]
    else:
        found = [] if skip_torch or from_snapshot is not None else _runtimes(project, root, matrix.id)
    snap = _snapshot(project, from_snapshot, found)
    facts = hostfacts.from_snapshot(snap)
    torch = torch_results(facts, matrix.id) if runtime_id is None else \
        {n: d for n, d in facts.torch.items() if n == runtime_id}
    report = verify.evaluate(facts, matrix, project.host(), torch=torch,
                             skip_torch=skip_torch,
                             runtimes_found=None if from_snapshot is not None else len(found))
    report.extra["source"] = _source(snap)
    return report


def render_runbook(project: Project, selector: str, fmt: str = "md",
                   *, from_snapshot: Path | None = None) -> str:
    """``builder runbook``: values from the host (or the snapshot), else envs/host.toml."""
    from builder.ops.lockfloor import lock_floor

    matrix = project.matrix(selector)
    snap = _snapshot(project, from_snapshot, [])
    facts = hostfacts.from_snapshot(snap)
    return runbook.render(runbook.plan(matrix, project.host(), facts, source=_source(snap),
                                       lock_floor=lock_floor(project, matrix)), fmt)
