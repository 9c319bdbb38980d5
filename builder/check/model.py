"""The data the checker works on: wheel references and facts, identities, findings, reports (pure).

Shared by :mod:`builder.check.wheels` (which fills :class:`WheelFacts`),
:mod:`builder.check.identity`, :mod:`builder.check.rules` and the pipeline;
nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from builder.binaries.archcompat import KernelArchs
from builder.check import knowledge as cuda
from builder.check import toolkit
from builder.driver.facts import HostFacts
from builder.report import Level
from builder.spec import Matrix

if TYPE_CHECKING:
    from builder.pylock import Package

CACHE_SCHEMA = 1  # later fields (skipped, ext_sizes, files) are optional: older entries stay valid


@dataclass(frozen=True)
class WheelRef:
    """One wheel named by a lock: where it is and what it must be."""

    name: str
    version: str
    filename: str
    url: str | None = None
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    platform: bool = False  # compiled for a platform (not ``any``)
    metadata_file: bool | None = None  # the index serves PEP 658 metadata for it (None: not known, ask)


@dataclass(frozen=True)
class Binary:
    """What one extension module says about CUDA."""

    member: str
    needed: tuple[str, ...]
    toolkit: str | None
    archs: tuple[str, ...] = ()

    @property
    def cudart_soname(self) -> str | None:
        return next((n for n in self.needed if n.startswith("libcudart.so")), None)


@dataclass(frozen=True)
class WheelFacts:
    filename: str
    sha256: str | None
    name: str
    version: str
    requires_dist: tuple[str, ...]
    binary_scanned: bool = False
    binary: Binary | None = None  # the first extension read that links libcudart
    members_read: tuple[str, ...] = ()
    extensions: int = 0
    origin: str = "file"  # file | http | cache
    skipped: tuple[str, ...] = ()  # extension members not read: over the read budget (with sizes)
    ext_sizes: tuple[tuple[str, int], ...] = ()  # every extension member and its uncompressed size
    files: tuple[str, ...] | None = None  # the wheel's file list, when a rule needs it

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = CACHE_SCHEMA
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WheelFacts:
        b = d.get("binary")
        return cls(
            filename=d["filename"], sha256=d.get("sha256"), name=d["name"], version=d["version"],
            requires_dist=tuple(d.get("requires_dist", ())), binary_scanned=bool(d.get("binary_scanned")),
            binary=Binary(b["member"], tuple(b["needed"]), b.get("toolkit"), tuple(b.get("archs", ())))
            if b else None,
            members_read=tuple(d.get("members_read", ())), extensions=int(d.get("extensions", 0)),
            origin="cache", skipped=tuple(d.get("skipped", ())),
            ext_sizes=tuple((str(n), int(z)) for n, z in d.get("ext_sizes", ())),
            files=tuple(d["files"]) if d.get("files") is not None else None,
        )


@dataclass(frozen=True)
class KernelEvidence:
    """GPU code of a package's main extension, read from its fatbin headers."""

    member: str
    archs: KernelArchs
    ptx_isa: str | None
    origin: str  # "shipped data" | "deep read" | "deep read (cached)"
    detail: str  # where it comes from: the kernels.toml row, or the bytes a deep read cost


@dataclass
class Identity:
    """The CUDA identity of one package and the evidence it rests on."""

    major: set[int] = field(default_factory=set)
    release: str | None = None  # CUDA release of the runtime (12.8)
    runtime: str | None = None  # cudart version (12.8.90)
    cudart_soname: str | None = None
    build_toolkit: str | None = None  # nvcc version the kernels were built with
    cublas: str | None = None  # cuBLAS the package pins
    archs: tuple[str, ...] = ()
    evidence: list[dict[str, str]] = field(default_factory=list)
    kind: str = "unknown"  # strongest evidence: local-version, index-url, requires-dist, binary, name
    jit_only: bool = False
    build_release: str | None = None  # CUDA release of the build toolkit when only the release is known
    toolkit_from: str = ""  # how the build toolkit is known (nvcc banner, PTX ISA of the main extension)
    toolkit_unknown: str = ""  # why a package with its own kernels has no known build toolkit
    kernels: KernelEvidence | None = None  # the main extension's GPU code (gpu-arch)
    unplaced: str = ""  # a component whose version no table places: why
    built_on_host: bool = False  # no wheel: the installer would compile it

    def add(self, kind: str, detail: str) -> None:
        if self.kind == "unknown":
            self.kind = kind
        self.evidence.append({"kind": kind, "detail": detail})

    def to_json(self) -> dict[str, Any]:
        return {"major": sorted(self.major)[0] if len(self.major) == 1 else sorted(self.major) or None,
                "release": self.release, "runtime": self.runtime, "cudart_soname": self.cudart_soname,
                "build_toolkit": self.build_toolkit, "build_release": self.build_release,
                "toolkit_from": self.toolkit_from or None, "cublas": self.cublas,
                # sm_NN strings in the binary read for the CUDA link: a hint only, never the
                # gpu-arch evidence (that is "kernels": fatbin entry headers, docs/check.md).
                "sm_strings": list(self.archs),
                "kernels": None if self.kernels is None else {
                    "member": self.kernels.member, "origin": self.kernels.origin, "detail": self.kernels.detail,
                    "ptx_isa": self.kernels.ptx_isa, **self.kernels.archs.to_dict()},
                "evidence_kind": self.kind, "evidence": self.evidence}


@dataclass
class Pkg:
    name: str
    version: str
    wheel: WheelRef | None
    facts: WheelFacts | None = None
    locked: Package | None = None  # the lock's entry
    identity: Identity | None = None  # None: no CUDA content
    files: tuple[str, ...] | None = None  # the wheel's file list, read when a rule needs it


@dataclass(frozen=True)
class Finding:
    id: str
    level: Level
    message: str
    evidence: tuple[str, ...] = ()
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "level": self.level, "message": self.message,
                "evidence": list(self.evidence), "source": self.source}


@dataclass
class Facts:
    """Everything the rules look at (built once per lock)."""

    lock: str
    python: str
    arch: str
    matrix: Matrix | None
    host: HostFacts
    packages: dict[str, Pkg]
    env: dict[str, str]
    k: cuda.Knowledge
    tk: toolkit.ToolkitKnowledge = field(default_factory=toolkit.load)


@dataclass
class CheckReport:
    lock: str
    matrix: str | None
    python: str
    verdict: Level  # the worst finding, an info counting as a pass
    findings: list[Finding]
    packages: dict[str, Pkg]
    driver: dict[str, Any]
    fetched: dict[str, int] = field(default_factory=dict)

    def finding(self, rule: str) -> Finding | None:
        return next((f for f in self.findings if f.id == rule), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "lock": self.lock, "matrix": self.matrix, "python": self.python, "verdict": self.verdict,
            "findings": [f.to_json() for f in self.findings],
            "packages": {n: {"version": p.version, "cuda": p.identity.to_json() if p.identity else None}
                         for n, p in sorted(self.packages.items()) if p.identity is not None},
            "driver": self.driver, "fetched": self.fetched,
        }



