"""CUDA components as the rules see them (pure): which component and CUDA major a PyPI
name is, where a component version sits (CUDA release, update, driver floor), which
shared libraries a component installs, and which CUDA release a driver runs natively.

Two tables answer, strongest first: the ``cuda-toolkit`` meta-package pins
(:mod:`builder.check.toolkit`: every component of CUDA 12.0-13.x under both naming
schemes, versions placed by the release that pins them) and the release-notes rows of
:mod:`builder.check.knowledge` (cudart, nvcc and cuBLAS versions between rows).  The
CUDA major always comes from the name (``nvidia-cufft`` 12.0.0.61 is CUDA 13), never
from a library's version.  Releases from 13.3 on have no driver row in
``builder/data/cuda.toml``: a placement there has ``driver=None`` and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.check import knowledge as cuda
from builder.check import toolkit
from builder.versions import DriverVersion

_SO = re.compile(r"\.so(\.\d+)*$")


@dataclass(frozen=True)
class Place:
    """A component version placed in a CUDA release; ``update`` None when only the
    release is known (then ``driver`` is the highest floor of its updates); ``driver``
    None when builder/data/cuda.toml has no driver row for the release."""

    component: str
    version: str
    release: str
    update: int | None
    driver: str | None
    how: str  # what placed it, for evidence lines
    source: str

    @property
    def label(self) -> str:
        return cuda.release_label(self.release, self.update)


def component_of(k: cuda.Knowledge, tk: toolkit.ToolkitKnowledge, name: str) -> tuple[str, int | None] | None:
    """(component, CUDA major or None) of a PyPI name: ``nvidia-cufft`` -> ("cufft", 13)."""
    hit = toolkit.package(tk, name)
    if hit is not None:
        return hit[0].component, hit[1]
    comp = cuda.package_component(k, name)
    return (comp, None) if comp else None


def versioning(tk: toolkit.ToolkitKnowledge, component: str) -> str:
    """``toolkit`` (version major.minor is the release), ``library`` or ``own``."""
    return next((c.versioning for c in tk.components if c.component == component), "toolkit")


def package_name(tk: toolkit.ToolkitKnowledge, component: str, major: int) -> str | None:
    """The PyPI name of ``component`` for CUDA ``major`` (nvcc, 13 -> nvidia-cuda-nvcc)."""
    c = next((c for c in tk.components if c.component == component), None)
    if c is None:
        return None
    return (c.cu12 if major == 12 else c.cu13 if major == 13 else "") or None


def release_place(k: cuda.Knowledge, component: str, version: str, *, release: str, how: str,
                  source: str = "") -> Place:
    """A version known only by its release: the highest driver floor of the release's updates."""
    rows = cuda.updates(k, release)
    driver = max((r.driver for r in rows), key=DriverVersion.parse) if rows else None
    return Place(component, version, release, None, driver, how, source or (rows[-1].source if rows else ""))


def _known_release(k: cuda.Knowledge, tk: toolkit.ToolkitKnowledge, release: str) -> bool:
    return any(r.release == release for r in k.releases) or any(t.release == release for t in tk.releases)


def place(k: cuda.Knowledge, tk: toolkit.ToolkitKnowledge, component: str, *, version: str,
          name: str | None = None, major: int | None = None) -> Place | None:
    """Where ``version`` of ``component`` sits, or None when no table can tell.

    ``name`` is the PyPI package (its cuda-toolkit pins place it exactly); without it the
    component's name for ``major`` is used (the nvcc of a banner ``12.9.86`` is
    ``nvidia-cuda-nvcc-cu12``).
    """
    pkg = name or (package_name(tk, component, major) if major is not None else None)
    pinned = toolkit.place(tk, pkg, version) if pkg else None
    if pinned is not None:
        row = cuda.release_floor(k, pinned.release, pinned.update)
        how = f"cuda-toolkit {pinned.toolkit} pins {pkg}=={version}" + (" (a patch)" if pinned.patch else "")
        return Place(component, version, pinned.release, pinned.update, row.driver if row else None, how,
                     pinned.source)
    old = cuda.place(k, component, version)
    if old is not None:
        return Place(component, version, old.release, old.update, old.driver,
                     "release notes" if old.exact else "between release-notes rows", old.source)
    if versioning(tk, component) == "toolkit" or component in k.release_from_version:
        rel = cuda.release_of(version)
        if re.fullmatch(r"\d+\.\d+", rel) and _known_release(k, tk, rel):
            return release_place(k, component, version, release=rel, how=f"version {version} names CUDA {rel}")
    return None


def driver_release(k: cuda.Knowledge, driver: str) -> tuple[str | None, bool]:
    """(newest CUDA release whose GA floor the driver meets, whether the driver is at or
    past the newest release builder/data/cuda.toml knows: then it may run newer ones)."""
    have = DriverVersion.parse(driver)
    ga = sorted(((cuda.release_key(r.release), r) for r in k.releases if r.update == 0), key=lambda x: x[0])
    met = [r for _key, r in ga if DriverVersion.parse(r.driver) <= have]
    if not met:
        return None, False
    return met[-1].release, met[-1] is ga[-1][1]


def ptx_isa_release(k: cuda.Knowledge, isa: str | None) -> tuple[str, str] | None:
    """(CUDA release, source) whose nvcc writes PTX ISA ``isa`` (8.8 -> 12.9), if unique."""
    return k.ptx_isa.get(isa) if isa else None


def sonames(tk: toolkit.ToolkitKnowledge, component: str, major: int) -> tuple[str, ...]:
    """The shared libraries a component's wheel installs for ``major`` (basenames)."""
    c = next((c for c in tk.components if c.component == component), None)
    if c is None:
        return ()
    files = c.files12 if major == 12 else c.files13 if major == 13 else ""
    return tuple(f.rsplit("/", 1)[-1] for f in files.split() if _SO.search(f))


def install_paths(tk: toolkit.ToolkitKnowledge, component: str, major: int) -> tuple[str, ...]:
    """The main library paths (as in builder/data/cuda.toml) a component installs for ``major``."""
    c = next((c for c in tk.components if c.component == component), None)
    if c is None:
        return ()
    files = (c.files12 if major == 12 else c.files13 if major == 13 else "").split()
    if not files:
        return ()
    base = files[0].rsplit("/", 1)[0]
    return tuple(f if "/" in f else f"{base}/{f}" for f in files)


def is_shared_library(path: str) -> bool:
    return bool(_SO.search(path))
