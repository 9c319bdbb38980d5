"""The runtime layout: the one place that knows names, roots and discovery.

Under a runtimes root (``--root DIR``, else ``$BUILDER_RUNTIMES``, else
``<project>/runtimes``)::

    matrix-a-py312-<hash12>/        a finished runtime (never moved, never edited)
        runtime.json                manifest: lock, interpreter, timings, smoke
        bin/python, lib/ ...        a relocatable venv (or a conda prefix)
    matrix-b-py312-conda-<hash12>/  a runtime on a conda base
    matrix-a-py312 -> matrix-a-py312-<hash12>   "current" pointer (symlink)
    adopted-py312-<hash12>/         an adopted environment (``builder runtime adopt``): its
        runtime.json                manifest (origin "adopted": no lock) and
        bin/python, bin/vllm        trampolines into the environment, which stays where it is
    .staging-<name>-<pid>-<tok>/    a build in progress (or a killed one)
    .trash-<name>-<tok>/            a replaced runtime being deleted
    .locks/<name>/.builder.lock     flock held by the one build of <name>

``<hash12>`` is the content address: the sha256 of the lock's *package
content* (:attr:`builder.pylock.Lock.content_hash`, never the stamp), plus the
base's identity for a non-venv base.  An adopted runtime's ``<hash12>`` hashes the
environment's resolved interpreter and its distributions: its name can never be one a
build would give, so a build never finds, replaces or pins it as its own.  Build, smoke, doctor, verify-driver and
serve all find runtimes through this module.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.project import Project, py_tag
from builder.runtime import manifest as manifests
from builder.runtime.manifest import Manifest
from builder.spec import Matrix

MANIFEST = manifests.FILE
MANIFEST_FORMAT = manifests.FORMAT
HASH_LEN = 12
ADOPTED_PREFIX = "adopted"
_NAME = re.compile(r"^(?P<matrix>matrix-(?P<id>[a-z0-9][a-z0-9-]*?))-py(?P<py>\d)(?P<minor>\d{1,2})"
                   r"-(?:(?P<base>[a-z][a-z0-9]*)-)?(?P<hash>[0-9a-f]{12})$")
_ADOPTED = re.compile(rf"^{ADOPTED_PREFIX}-py(?P<py>\d)(?P<minor>\d{{1,2}})-(?P<hash>[0-9a-f]{{12}})$")


def runtimes_root(project: Project, root: str | os.PathLike[str] | None = None) -> Path:
    """``--root``, else ``$BUILDER_RUNTIMES``, else ``<project>/runtimes``.

    Resolved like the kernel resolves it (symlinks, then ".."): the path the
    write gate checks is the path written to.
    """
    chosen = root or os.environ.get("BUILDER_RUNTIMES") or project.runtimes
    return Path(os.path.realpath(os.path.expanduser(chosen)))


def content_address(lock_content_hash: str, base: str = "venv", base_identity: str = "") -> str:
    """The 12-hex-digit address of a runtime of this package content on this base."""
    h = hashlib.sha256(lock_content_hash.encode())
    if base != "venv":
        h.update(f"\0{base}\0{base_identity}".encode())
    return h.hexdigest()[:HASH_LEN]


def runtime_name(matrix: Matrix, python: str, lock_content_hash: str, *, base: str = "venv",
                 base_identity: str = "") -> str:
    """``matrix-a-py312-<hash12>`` (``matrix-a-py312-conda-<hash12>`` for a conda base)."""
    mid = "" if base == "venv" else f"{base}-"
    return f"{matrix.name}-{py_tag(python)}-{mid}{content_address(lock_content_hash, base, base_identity)}"


def pointer_name(matrix: Matrix, python: str, base: str = "venv") -> str:
    """The "current runtime" symlink of (matrix, python, base)."""
    return f"{matrix.name}-{py_tag(python)}" + ("" if base == "venv" else f"-{base}")


def adopted_name(python: str, executable: str, fingerprint: str) -> str:
    """``adopted-py312-<hash12>``: an adopted environment, addressed by its resolved interpreter
    and the fingerprint of its distributions (re-adopting an unchanged environment finds it)."""
    address = hashlib.sha256(f"adopted\0{executable}\0{fingerprint}".encode()).hexdigest()[:HASH_LEN]
    return f"{ADOPTED_PREFIX}-{py_tag(python)}-{address}"


@dataclass(frozen=True, kw_only=True)
class RuntimeName:
    """What a runtime directory's name says."""

    name: str
    matrix_id: str | None  # None: an adopted runtime (no matrix, no lock)
    python: str  # "3.12"
    base: str  # "venv" | "conda" | ... | "adopted"
    address: str

    @property
    def origin(self) -> str:
        return manifests.ADOPTED if self.matrix_id is None else manifests.LOCK


def parse_name(name: str) -> RuntimeName | None:
    """The parts of a runtime directory name, or None if it is not one."""
    m = _NAME.match(name)
    if m is not None:
        return RuntimeName(name=name, matrix_id=m.group("id"), python=f"{m.group('py')}.{m.group('minor')}",
                           base=m.group("base") or "venv", address=m.group("hash"))
    a = _ADOPTED.match(name)
    if a is not None:
        return RuntimeName(name=name, matrix_id=None, python=f"{a.group('py')}.{a.group('minor')}",
                           base=ADOPTED_PREFIX, address=a.group("hash"))
    return None


def read_manifest(runtime: Path) -> Manifest | None:
    """The manifest of a finished runtime, or None if it has none that reads (not complete)."""
    return manifests.read(runtime)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """A finished runtime found under a root."""

    path: Path
    name: RuntimeName
    manifest: Manifest

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def _finished(d: Path, parsed: RuntimeName) -> Runtime | None:
    """The runtime in ``d`` if it is complete: a real directory, a manifest that reads and agrees
    with the name (its name, its origin), a ``bin/python``."""
    if d.is_symlink():
        return None
    manifest = read_manifest(d)
    if manifest is None or manifest.name != d.name or manifest.origin != parsed.origin:
        return None
    if not (d / "bin" / "python").exists():
        return None
    return Runtime(path=d, name=parsed, manifest=manifest)


def discover(root: Path, matrix_id: str | None = None) -> list[Runtime]:
    """Finished runtimes (a valid name, a manifest, a ``bin/python``) under ``root``, by name.

    With ``matrix_id``, only the runtimes built for that matrix (never adopted ones)."""
    out: list[Runtime] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return out
    for d in entries:
        parsed = parse_name(d.name)
        if parsed is None or (matrix_id is not None and parsed.matrix_id != matrix_id):
            continue
        rt = _finished(d, parsed)
        if rt is not None:
            out.append(rt)
    return out


def find(root: Path, name: str) -> Runtime | None:
    """The finished runtime called ``name`` under ``root``, or None."""
    parsed = parse_name(name)
    return _finished(root / name, parsed) if parsed is not None else None


def named(root: Path, name: str) -> Runtime:
    """The finished runtime called ``name`` under ``root``; NotReady naming the ones there if none."""
    from builder.errors import NotReady
    from builder.schema import suggest

    rt = find(root, name)
    if rt is None:
        known = [r.name.name for r in discover(root)]
        raise NotReady(f"no runtime {name!r} under {root}{suggest(name, known)}",
                       f"runtimes: {', '.join(known)}" if known else "build one (builder build) or adopt one "
                       "(builder runtime adopt)")
    return rt
