"""CUDA knowledge: releases, driver floors, component versions (pure).

Everything factual lives in ``builder/data/cuda.toml`` (one source URL per row);
this module only reads that table and answers questions about it.  Adding a
CUDA release is a data change.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from builder import data as datafiles
from builder.versions import DriverVersion


@dataclass(frozen=True)
class ReleaseRow:
    release: str  # "12.9"
    update: int  # 0 = GA
    driver: str  # "575.57.08"
    source: str


@dataclass(frozen=True)
class ComponentRow:
    component: str  # cudart, nvcc, cublas
    version: str
    release: str
    update: int
    source: str


def release_label(release: str, update: int | None) -> str:
    """``12.8 GA``, ``12.8 Update 1``, or the release alone when the update is not known."""
    if update is None:
        return release
    return f"{release} GA" if update == 0 else f"{release} Update {update}"


@dataclass(frozen=True)
class Placement:
    """Where a component version sits: its CUDA release/update and driver floor.

    ``exact`` is false when the version falls between rows of the table; then
    ``driver`` is the highest floor of the updates it could belong to.
    """

    component: str
    version: str
    release: str
    update: int | None
    driver: str
    exact: bool
    source: str

    @property
    def label(self) -> str:
        return release_label(self.release, self.update)


@dataclass(frozen=True)
class BindingsRow:
    """A package that installs the ``cuda.bindings`` modules (cuda-bindings, cuda-python)."""

    package: str
    meta_from: str | None  # from this version on it carries no bindings of its own (a meta package)
    source: str


@dataclass(frozen=True)
class BindingsKnowledge:
    """CUDA Python bindings: which packages carry them, their driver floor per CUDA major,
    and who imports them."""

    packages: Mapping[str, BindingsRow] = field(default_factory=dict)
    driver: Mapping[int, tuple[str, str]] = field(default_factory=dict)  # major -> (driver, source)
    users: tuple[str, ...] = ()  # packages whose code imports cuda.bindings
    not_imported_by: str = ""  # a package whose own code does not import it ...
    not_imported_versions: str = ""  # ... in these versions (a PEP 440 specifier)
    source: str = ""


@dataclass(frozen=True)
class Knowledge:
    releases: tuple[ReleaseRow, ...]
    components: tuple[ComponentRow, ...]
    compat: Mapping[int, tuple[str, str]]  # major -> (driver, source)
    release_from_version: frozenset[str]
    packages: Mapping[str, tuple[str, str]]  # PyPI name -> (component, source)
    gpu: frozenset[str]
    follows_torch: frozenset[str]
    neutral: frozenset[str]
    name_patterns: tuple[re.Pattern[str], ...]
    arch_floor: Mapping[int, tuple[str, str]]  # major -> (min cc, source)
    arch_intro: Mapping[str, tuple[str, str]]  # cc -> (first release, source)
    known_bad: Mapping[str, Mapping[str, Any]]
    main_extensions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # package -> members
    ptx_isa: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # PTX ISA -> (release, source)
    jit_compilers: frozenset[str] = frozenset()  # components that compile GPU code at run time
    jit_source: str = ""
    bindings: BindingsKnowledge = field(default_factory=BindingsKnowledge)


def _bindings(d: Mapping[str, Any]) -> BindingsKnowledge:
    use = d.get("bindings-use", {})
    return BindingsKnowledge(
        packages={b["package"]: BindingsRow(b["package"], b.get("meta-from"), b["source"])
                  for b in d.get("python-bindings", [])},
        driver={int(r["major"]): (r["driver"], r["source"]) for r in d.get("bindings-driver", [])},
        users=tuple(use.get("users", ())), not_imported_by=str(use.get("not-imported-by", "")),
        not_imported_versions=str(use.get("not-imported-versions", "")), source=str(use.get("source", "")))


def from_mapping(d: Mapping[str, Any]) -> Knowledge:
    """Build the knowledge tables from a parsed ``cuda.toml`` (validated by :func:`builder.data.read`)."""
    pk = d.get("packages", {})
    return Knowledge(
        releases=tuple(ReleaseRow(r["release"], int(r["update"]), r["driver"], r["source"])
                       for r in d.get("release", [])),
        components=tuple(ComponentRow(c["component"], c["version"], c["release"], int(c["update"]),
                                      c["source"]) for c in d.get("component", [])),
        compat={int(c["major"]): (c["driver"], c["source"]) for c in d.get("compat", [])},
        release_from_version=frozenset(d.get("components", {}).get("release-from-version", [])),
        packages={p["name"]: (p["component"], p["source"]) for p in d.get("package", [])},
        gpu=frozenset(pk.get("gpu", [])),
        follows_torch=frozenset(pk.get("follows-torch", [])),
        neutral=frozenset(pk.get("neutral", [])),
        name_patterns=tuple(re.compile(p) for p in pk.get("name-patterns", [])),
        arch_floor={int(a["major"]): (a["min-cc"], a["source"]) for a in d.get("arch-floor", [])},
        arch_intro={a["cc"]: (a["release"], a["source"]) for a in d.get("arch-intro", [])},
        known_bad={k["id"]: k for k in d.get("known-bad", [])},
        main_extensions={m["package"]: tuple(m["members"]) for m in d.get("main-extension", [])},
        ptx_isa={r["isa"]: (r["release"], r["source"]) for r in d.get("ptx-isa", [])},
        jit_compilers=frozenset(d.get("jit", {}).get("compilers", [])),
        jit_source=str(d.get("jit", {}).get("source", "")),
        bindings=_bindings(d),
    )


@functools.cache
def load(path: Path = datafiles.CUDA) -> Knowledge:
    """The shipped tables (cached)."""
    return from_mapping(datafiles.read(path))


def release_key(release: str) -> tuple[int, int]:
    major, minor = release.split(".")[:2]
    return int(major), int(minor)


def release_of(version: str) -> str:
    """``12.9.86`` -> ``12.9``."""
    return ".".join(version.split(".")[:2])


def variant_release(variant: str) -> str | None:
    """``cu128`` -> ``12.8``, ``cu130`` -> ``13.0`` (the PyTorch/vLLM variant tags)."""
    m = re.fullmatch(r"cu(\d{2})(\d)", variant)
    return f"{int(m.group(1))}.{m.group(2)}" if m else None


def updates(k: Knowledge, release: str) -> list[ReleaseRow]:
    return sorted((r for r in k.releases if r.release == release), key=lambda r: r.update)


def release_floor(k: Knowledge, release: str, update: int | None = None) -> ReleaseRow | None:
    """The driver row of a release update; ``update=None`` means the release's GA."""
    rows = updates(k, release)
    want = 0 if update is None else update
    return next((r for r in rows if r.update == want), None)


def _v(s: str) -> Version | None:
    try:
        return Version(s)
    except InvalidVersion:
        return None


def place(k: Knowledge, component: str, version: str) -> Placement | None:
    """Map a component version to its CUDA release/update and driver floor, or None."""
    v = _v(version)
    if v is None:
        return None
    rows = sorted((r for r in k.components if r.component == component), key=lambda r: Version(r.version))
    for r in rows:
        if Version(r.version) == v:
            rr = release_floor(k, r.release, r.update)
            if rr is None:
                return None
            return Placement(component, version, r.release, r.update, rr.driver, True, r.source)
    if component in k.release_from_version:
        release = release_of(version)
        same = [r for r in rows if r.release == release]
    else:
        same = [r for r in rows if Version(r.version).major == v.major]
        lower_any = [r for r in same if Version(r.version) < v]
        if not lower_any:
            return None
        release = lower_any[-1].release
        same = [r for r in same if r.release == release]
    rel_rows = updates(k, release)
    if not rel_rows:
        return None
    lower = [r for r in same if Version(r.version) < v]
    upper = [r for r in same if Version(r.version) > v]
    lo = lower[-1].update if lower else 0
    hi = upper[0].update if upper else rel_rows[-1].update
    # Without an exact row the version could be any update in [lo, hi]: take the
    # highest floor among them, so an unknown version never looks more compatible.
    cands = [r for r in rel_rows if lo <= r.update <= hi] or rel_rows
    floor = max(cands, key=lambda r: DriverVersion.parse(r.driver))
    upd = cands[0].update if len(cands) == 1 else None
    return Placement(component, version, release, upd, floor.driver, False, floor.source)


def compat_floor(k: Knowledge, major: int) -> tuple[str, str] | None:
    """(driver, source) under which any runtime of ``major`` runs (minor-version compat)."""
    return k.compat.get(major)


def package_component(k: Knowledge, name: str) -> str | None:
    """``nvidia-cublas-cu12`` -> ``cublas``."""
    hit = k.packages.get(name)
    return hit[0] if hit else None


def name_major(k: Knowledge, name: str) -> int | None:
    """The CUDA major a package name carries (``nvidia-cudnn-cu12``, ``cupy-cuda12x``)."""
    for rx in k.name_patterns:
        m = rx.search(name)
        if m:
            return int(m.group(1))
    return None


def _cc(cc: str) -> tuple[int, int]:
    a, b = cc.split(".")
    return int(a), int(b)


def major_floor_problem(k: Knowledge, cc: str, major: int) -> tuple[str, str] | None:
    """Why no CUDA ``major`` code runs on compute capability ``cc`` (the major dropped it), or None."""
    floor = k.arch_floor.get(major)
    if floor and _cc(cc) < _cc(floor[0]):
        return (f"CUDA {major} supports compute capability {floor[0]} and newer; "
                f"this GPU is {cc}", floor[1])
    return None


def arch_problem(k: Knowledge, cc: str, release: str) -> tuple[str, str] | None:
    """Why a GPU of compute capability ``cc`` cannot run CUDA ``release`` code, or None.

    Returns (reason, source).  A capability the table does not know is not a problem
    by itself: ``arch_known`` says whether it was judged.
    """
    floor = major_floor_problem(k, cc, release_key(release)[0])
    if floor:
        return floor
    intro = k.arch_intro.get(cc)
    if intro and release_key(release) < release_key(intro[0]):
        return (f"compute capability {cc} needs CUDA {intro[0]} or newer; the lock uses {release}",
                intro[1])
    return None
