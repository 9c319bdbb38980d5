"""``builder check``: the CUDA identity of every GPU package in a PEP 751 lock,
and the rules that decide whether the lock can run on the host.

Pipeline: read the lock -> pick the target's wheels -> read what is needed of
them (:mod:`builder.wheels`, cached) -> establish identities -> run the rules
(pure functions over :class:`Facts`) -> a :class:`Report` with a verdict.
The core never prints; the CLI renders.
"""

from __future__ import annotations

import re
import tomllib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import Marker, default_environment
from packaging.pylock import Pylock, PylockValidationError
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder import cuda, wheels
from builder.errors import LockFileError
from builder.spec import Host, Matrix

LEVELS = ("pass", "info", "warn", "fail")
RULES = ("cuda-identity", "torch-pin", "cuda-major", "cuda-toolkit-order", "driver-native",
         "driver-compat", "gpu-arch", "sdist-only", "platform-tag", "python-tag")
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")
_VARIANT = re.compile(r"(?:^|[+./-])(cu\d{3})(?:$|[/.+-])")

# Sources for rules whose facts are not rows of cuda.toml (FACTS.md lists them).
SRC_TORCH_PIN = "https://github.com/vllm-project/vllm/issues/13608"
SRC_CUDA_MAJOR = "https://github.com/vllm-project/vllm/issues/44335"
SRC_COMPAT = "https://docs.nvidia.com/deploy/cuda-compatibility/index.html#minor-version-compatibility"
SRC_DRIVER = "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#id5"
SRC_TAGS = "https://packaging.python.org/en/latest/specifications/platform-compatibility-tags/"
SRC_SDIST = "https://docs.astral.sh/uv/reference/cli/#uv-pip-compile--no-build"


@dataclass(frozen=True)
class HostFacts:
    """What the rules know about the host; None means unknown (never OK)."""

    driver: str | None
    ccs: tuple[str, ...]
    glibc: str | None
    origin: str = "envs/host.toml"

    @classmethod
    def from_host(cls, host: Host | None, *, driver: str | None = None, ccs: tuple[str, ...] = (),
                  glibc: str | None = None, origin: str = "envs/host.toml") -> HostFacts:
        return cls(driver or (host.driver if host else None),
                   ccs or (host.compute_capabilities if host else ()),
                   glibc or (host.glibc if host else None), origin)


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

    def add(self, kind: str, detail: str) -> None:
        if self.kind == "unknown":
            self.kind = kind
        self.evidence.append({"kind": kind, "detail": detail})

    def to_json(self) -> dict[str, Any]:
        return {"major": sorted(self.major)[0] if len(self.major) == 1 else sorted(self.major) or None,
                "release": self.release, "runtime": self.runtime, "cudart_soname": self.cudart_soname,
                "build_toolkit": self.build_toolkit, "cublas": self.cublas, "archs": list(self.archs),
                "evidence_kind": self.kind, "evidence": self.evidence}


@dataclass
class Pkg:
    name: str
    version: str
    wheel: wheels.WheelRef | None
    facts: wheels.WheelFacts | None = None
    identity: Identity | None = None  # None: no CUDA content


@dataclass(frozen=True)
class Finding:
    id: str
    level: str
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
    raw: dict[str, dict[str, Any]]  # name -> lock entry, for tag rules
    env: dict[str, str]
    k: cuda.Knowledge


@dataclass
class Report:
    lock: str
    matrix: str | None
    python: str
    verdict: str
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


# ---------------------------------------------------------------- lock reading


def target_env(python: str, arch: str) -> dict[str, str]:
    """Marker environment of the target (Linux, CPython) rather than this machine."""
    env = dict(default_environment())
    env.update(python_version=python, python_full_version=f"{python}.0", platform_system="Linux",
               sys_platform="linux", platform_machine=arch, os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def supported_tags(python: str, arch: str, glibc: str | None) -> set[Tag]:
    """Every wheel tag CPython ``python`` accepts on ``arch`` Linux with ``glibc``."""
    major, minor = (int(x) for x in python.split(".")[:2])
    gmaj, gmin = (int(x) for x in (glibc or "2.17").split(".")[:2])
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    plats = []
    for m in range(gmin, 4, -1):
        plats.append(f"manylinux_{gmaj}_{m}_{arch}")
        if m in legacy:
            plats.append(f"{legacy[m]}_{arch}")
    plats.append(f"linux_{arch}")
    out = set(cpython_tags((major, minor), platforms=plats))
    out |= set(compatible_tags((major, minor), interpreter=f"cp{major}{minor}", platforms=plats))
    return out


def _wheel_filename(w: dict[str, Any]) -> str:
    name = w.get("name") or urllib.parse.unquote((w.get("url") or w.get("path") or "").rsplit("/", 1)[-1])
    return str(name)


def _lock_python(path: Path, data: dict[str, Any], python: str | None) -> str:
    if python:
        return python.removeprefix("py").removeprefix("python")
    stamp = data.get("tool", {}).get("builder", {})
    if stamp.get("python"):
        return str(stamp["python"])
    m = re.search(r"pylock\.py(\d)(\d+)\.toml$", path.name)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m2 = re.match(r"\s*>=\s*(\d+\.\d+)", str(data.get("requires-python", "")))
    if m2:
        return m2.group(1)
    raise LockFileError(f"{path}: cannot tell which Python the lock is for", "pass --python 3.12")


def read_lock(path: Path) -> dict[str, Any]:
    """Parse and validate a PEP 751 lock (packaging.pylock); errors name the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise LockFileError(f"{path}: no such lock file", "check the path or run `builder lock`") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LockFileError(f"{path}: not a readable TOML file: {exc}", "regenerate the lock") from None
    try:
        Pylock.from_dict(data)
    except PylockValidationError as exc:
        raise LockFileError(f"{path}: not a valid PEP 751 lock: {exc}", "regenerate the lock") from None
    return data


def _pick_wheel(entry: dict[str, Any], supported: set[Tag], lock_dir: Path) -> wheels.WheelRef | None:
    best: tuple[int, wheels.WheelRef] | None = None
    for w in entry.get("wheels", []) or []:
        fn = _wheel_filename(w)
        try:
            tags = parse_wheel_filename(fn)[3]
        except InvalidWheelFilename:
            continue
        if not tags & supported:
            continue
        # Prefer a platform wheel over a pure one: it is what an installer picks.
        rank = 0 if any(t.platform != "any" for t in tags) else 1
        path = w.get("path")
        ref = wheels.WheelRef(
            name=entry["name"], version=str(entry.get("version", "")), filename=fn, url=w.get("url"),
            path=str((lock_dir / path).resolve()) if path else None,
            sha256=(w.get("hashes") or {}).get("sha256"), size=w.get("size"))
        if best is None or rank < best[0]:
            best = (rank, ref)
    return best[1] if best else None


# ---------------------------------------------------------------- identities


def _pins(reqs: tuple[str, ...], env: dict[str, str]) -> dict[str, Requirement]:
    out: dict[str, Requirement] = {}
    for r in reqs:
        try:
            req = Requirement(r)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        out[canonicalize_name(req.name)] = req
    return out


def _exact(req: Requirement) -> str | None:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator in ("==", "===") else None


def _is_platform(ref: wheels.WheelRef | None) -> bool:
    if ref is None:
        return False
    try:
        return any(t.platform != "any" for t in parse_wheel_filename(ref.filename)[3])
    except InvalidWheelFilename:
        return False


def _variant(version: str, url: str | None) -> tuple[str, str] | None:
    """(kind, variant) from a local version label or an index URL naming it."""
    try:
        local = Version(version).local
    except InvalidVersion:
        local = None
    if local and re.fullmatch(r"cu\d{3}", local):
        return "local-version", local
    if url:
        m = _VARIANT.search(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        if m:
            return "index-url", m.group(1)
    return None


def needs_binary(k: cuda.Knowledge, name: str, env: dict[str, str]) -> Callable[[tuple[str, ...]], bool]:
    """Whether a GPU package's binaries must be read, given its Requires-Dist."""

    def decide(reqs: tuple[str, ...]) -> bool:
        pins = _pins(reqs, env)
        if any(cuda.package_component(k, n) == "cudart" and _exact(r) for n, r in pins.items()):
            return False
        return not (name in k.follows_torch and "torch" in pins and _exact(pins["torch"]))

    return decide


def identify(p: Pkg, k: cuda.Knowledge, env: dict[str, str], torch: Pkg | None) -> Identity:
    """CUDA identity of a GPU package from label/URL, Requires-Dist pins and binaries."""
    ident = Identity()
    url = p.wheel.url if p.wheel else None
    var = _variant(p.version, url)
    if var:
        rel = cuda.variant_release(var[1])
        if rel:
            ident.release = rel
            ident.major.add(cuda.release_key(rel)[0])
            ident.add(var[0], f"{p.version} names {var[1]} (CUDA {rel})")
    if p.facts is not None:
        pins = _pins(p.facts.requires_dist, env)
        for n, req in sorted(pins.items()):
            comp, ver = cuda.package_component(k, n), _exact(req)
            if comp is None or ver is None:
                continue
            ident.add("requires-dist", f"Requires-Dist: {n}=={ver}")
            pl = cuda.place(k, comp, ver)
            if comp == "cudart":
                ident.runtime = ver
                ident.release = ident.release or cuda.release_of(ver)
                major = int(ver.split(".")[0])
                ident.major.add(major)
                ident.cudart_soname = ident.cudart_soname or f"libcudart.so.{major}"
            elif comp == "cublas":
                ident.cublas = ver
            if pl is not None:
                ident.evidence[-1]["detail"] += f" (CUDA {pl.label})"
        b = p.facts.binary
        if b is not None:
            ident.cudart_soname = b.cudart_soname
            ident.major.add(int(b.cudart_soname.rsplit(".", 1)[-1])) if b.cudart_soname else None
            ident.build_toolkit = b.toolkit
            ident.archs = b.archs
            tk = f", built with nvcc {b.toolkit}" if b.toolkit else ", no nvcc banner"
            ident.add("binary", f"{b.member} links {b.cudart_soname}{tk}")
        elif p.facts.binary_scanned and not ident.major:
            ident.evidence.append({"kind": "binary", "detail": (
                f"no libcudart link in {', '.join(p.facts.members_read) or 'any extension'}"
                f" ({p.facts.extensions} extensions)")})
        if (ident.kind == "unknown" and p.name in k.follows_torch and torch is not None
                and torch.identity is not None and "torch" in pins and _exact(pins["torch"])):
            t = torch.identity
            ident.major |= t.major
            ident.release, ident.runtime, ident.cudart_soname = t.release, t.runtime, t.cudart_soname
            ident.add("follows-torch", f"Requires-Dist: torch=={_exact(pins['torch'])}; "
                                       f"built for torch's CUDA {t.release}")
    if ident.kind == "unknown" and not _is_platform(p.wheel) and p.facts is not None:
        ident.jit_only = True
        ident.evidence.append({"kind": "pure-python", "detail": "no compiled code in the wheel"})
    return ident


def nvidia_identity(name: str, version: str, k: cuda.Knowledge) -> Identity | None:
    """Identity of an nvidia-* / name-tagged package from its name and version alone."""
    comp = cuda.package_component(k, name)
    ident = Identity()
    if comp is not None:
        major = int(version.split(".")[0])
        ident.major.add(major)
        pl = cuda.place(k, comp, version)
        where = f"CUDA {pl.label}" if pl else "a release not in builder/data/cuda.toml"
        ident.add("version", f"{name} {version} is {comp} of {where}")
        if comp == "cudart":
            ident.runtime, ident.release, ident.cudart_soname = version, cuda.release_of(version), \
                f"libcudart.so.{major}"
        elif comp == "cublas":
            ident.cublas = version
        return ident
    major = cuda.name_major(k, name)
    if major is not None:
        ident.major.add(major)
        ident.add("name", f"the name {name} names CUDA {major}")
        return ident
    return None
