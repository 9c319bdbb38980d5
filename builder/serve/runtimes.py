"""Where served runtimes come from, through the runtime layout (:mod:`builder.runtime.layout`).

A runtime is named by its directory name (its id, e.g. ``matrix-a-py312-3f2a9c0d1b7e``
or ``matrix-b-py312-conda-...``), always addressed by its resolved,
content-addressed path, never the pointer symlink.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ManifestError, NotReady, UsageError
from builder.project import Project, select_pythons
from builder.runtime import layout
from builder.runtime import manifest as manifests
from builder.runtime.build import locate
from builder.schema import suggest


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """A finished runtime: its id, resolved path and manifest (built from a lock, or adopted)."""

    id: str
    path: Path
    manifest: manifests.Manifest

    @property
    def vllm(self) -> Path:
        return self.path / "bin" / "vllm"

    @property
    def origin(self) -> str:
        return self.manifest.origin

    @property
    def lock_sha256(self) -> str | None:
        return self.manifest.lock_sha256

    def smoke_problem(self) -> str | None:
        """Why the runtime must not be served (failed or missing smoke test), or None."""
        return self.manifest.smoke.problem()

    def skipped_gpu_steps(self) -> int:
        return self.manifest.smoke.skipped_gpu_steps()


def root(project: Project, root_dir: str | None = None) -> Path:
    """The runtimes root (``--root``, ``$BUILDER_RUNTIMES`` or ``<project>/runtimes``), resolved."""
    return layout.runtimes_root(project, root_dir)


def list_runtimes(project: Project, root_dir: str | None = None) -> list[Runtime]:
    """Every finished runtime under the root, of any matrix and base (no pointers, no staging)."""
    return [Runtime(id=r.name.name, path=Path(os.path.realpath(r.path)), manifest=r.manifest)
            for r in layout.discover(root(project, root_dir))]


def by_id(project: Project, runtime_id: str, root_dir: str | None = None) -> Runtime:
    """``--runtime ID``: any built runtime under the root, by its directory name."""
    known = list_runtimes(project, root_dir)
    for rt in known:
        if rt.id == runtime_id:
            return rt
    names = [r.id for r in known]
    d = root(project, root_dir) / runtime_id
    if layout.parse_name(runtime_id) is not None and d.is_dir():
        try:
            manifests.load(d)
        except ManifestError as exc:
            raise NotReady(f"{runtime_id} is not a finished runtime: {exc.message}",
                           "rebuild it (builder build --force) or adopt it again (builder runtime adopt)") from None
    raise NotReady(f"no built runtime {runtime_id!r} under {root(project, root_dir)}"
                   f"{suggest(runtime_id, names)}",
                   f"built: {', '.join(names)}" if names else "build one with `builder build`")


def of_lock(project: Project, matrix: str, python: str | None, *, root_dir: str | None = None) -> Runtime:
    """``--matrix A --python 3.12``: the runtime built from the current lock."""
    m = project.matrix(matrix)
    if python is None:
        if len(m.pythons) != 1:
            raise UsageError(f"{m.name} declares Pythons {', '.join(m.pythons)}; pass --python X.Y")
        python = m.pythons[0]
    py = select_pythons(m, python)[0]
    _m, _lock, path = locate(project, matrix, py, root=root_dir)
    real = Path(os.path.realpath(path))
    found = layout.read_manifest(real)
    if found is None:
        raise NotReady(f"{real.name}: its manifest does not read", f"rebuild it with `builder build --matrix "
                                                                   f"{m.id} --python {py} --force`")
    return Runtime(id=real.name, path=real, manifest=found)


def resolve(project: Project, *, runtime_id: str | None, matrix: str | None, python: str | None,
            root_dir: str | None = None) -> Runtime:
    """The runtime named by ``--runtime ID`` or ``--matrix/--python`` (exactly one of them)."""
    if runtime_id and matrix:
        raise UsageError("pass either --runtime ID or --matrix/--python, not both")
    if runtime_id:
        return by_id(project, runtime_id, root_dir)
    if matrix:
        return of_lock(project, matrix, python, root_dir=root_dir)
    raise UsageError("which runtime? pass --matrix A --python 3.12 (the current lock's) or --runtime ID")
