"""Where served runtimes come from, through the runtime layout (:mod:`builder.runtime.layout`).

A runtime is named by its directory name (its id, e.g. ``matrix-a-py312-3f2a9c0d1b7e``
or ``matrix-b-py312-conda-...``), always addressed by its resolved,
content-addressed path, never the pointer symlink.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import NotReady, UsageError
from builder.project import Project, select_pythons
from builder.runtime import layout
from builder.runtime.build import locate
from builder.schema import suggest


@dataclass(frozen=True)
class Runtime:
    """A finished runtime: its id, resolved path and manifest."""

    id: str
    path: Path
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def vllm(self) -> Path:
        return self.path / "bin" / "vllm"

    @property
    def lock_sha256(self) -> str | None:
        lock = self.manifest.get("lock")
        return str(lock.get("sha256")) if isinstance(lock, dict) and lock.get("sha256") else None

    def smoke_problem(self) -> str | None:
        """Why the runtime must not be served (failed or missing smoke test), or None.

        Steps ``skipped`` (e.g. GPU steps on a build host without a GPU) are
        not failures.
        """
        sm = self.manifest.get("smoke")
        steps = sm.get("steps") if isinstance(sm, dict) else None
        if not isinstance(steps, list) or not steps:
            return "its manifest records no smoke test"
        failed = [s for s in steps if not isinstance(s, dict) or s.get("status") not in ("pass", "skipped")]
        if failed:
            names = ", ".join(f"{s.get('step')}: {s.get('reason')}" if isinstance(s, dict) else repr(s)
                              for s in failed[:3])
            return f"its smoke test failed ({names})"
        return None

    def skipped_gpu_steps(self) -> int:
        sm = self.manifest.get("smoke")
        steps = sm.get("steps", []) if isinstance(sm, dict) else []
        return sum(1 for s in steps if isinstance(s, dict) and s.get("status") == "skipped"
                   and "no GPU" in str(s.get("reason", "")))


def root(project: Project, root_dir: str | None = None) -> Path:
    """The runtimes root (``--root``, ``$BUILDER_RUNTIMES`` or ``<project>/runtimes``), resolved."""
    return layout.runtimes_root(project, root_dir)


def list_runtimes(project: Project, root_dir: str | None = None) -> list[Runtime]:
    """Every finished runtime under the root, of any matrix and base (no pointers, no staging)."""
    return [Runtime(r.name.name, Path(os.path.realpath(r.path)), r.manifest)
            for r in layout.discover(root(project, root_dir))]


def by_id(project: Project, runtime_id: str, root_dir: str | None = None) -> Runtime:
    """``--runtime ID``: any built runtime under the root, by its directory name."""
    known = list_runtimes(project, root_dir)
    for rt in known:
        if rt.id == runtime_id:
            return rt
    names = [r.id for r in known]
    raise NotReady(f"no built runtime {runtime_id!r} under {root(project, root_dir)}"
                   f"{suggest(runtime_id, names)}",
                   f"built: {', '.join(names)}" if names else "build one with `builder build`")


def of_lock(project: Project, matrix: str, python: str | None, root_dir: str | None = None) -> Runtime:
    """``--matrix A --python 3.12``: the runtime built from the current lock."""
    m = project.matrix(matrix)
    if python is None:
        if len(m.pythons) != 1:
            raise UsageError(f"{m.name} declares Pythons {', '.join(m.pythons)}; pass --python X.Y")
        python = m.pythons[0]
    py = select_pythons(m, python)[0]
    _m, _lock, path = locate(project, matrix, py, root_dir)
    real = Path(os.path.realpath(path))
    return Runtime(real.name, real, layout.read_manifest(real) or {})


def resolve(project: Project, *, runtime_id: str | None, matrix: str | None, python: str | None,
            root_dir: str | None = None) -> Runtime:
    """The runtime named by ``--runtime ID`` or ``--matrix/--python`` (exactly one of them)."""
    if runtime_id and matrix:
        raise UsageError("pass either --runtime ID or --matrix/--python, not both")
    if runtime_id:
        return by_id(project, runtime_id, root_dir)
    if matrix:
        return of_lock(project, matrix, python, root_dir)
    raise UsageError("which runtime? pass --matrix A --python 3.12 (the current lock's) or --runtime ID")
