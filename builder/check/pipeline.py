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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.markers import InvalidMarker, Marker, default_environment
from packaging.pylock import Pylock, PylockValidationError
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.check import knowledge as cuda
from builder.check import wheels
from builder.check.rules import (
    Facts,
    Finding,
    HostFacts,
    Identity,
    Pkg,
    Report,
    evaluate,
    exact,
    pins,
    supported_tags,
    verdict,
    wheel_filename,
)
from builder.errors import LockFileError, ToolNotFound, Unavailable, UsageError
from builder.spec import Matrix

if TYPE_CHECKING:
    from builder.driver.snapshot import Snapshot

__all__ = ["Facts", "Finding", "HostFacts", "Identity", "Pkg", "Report", "CheckRequest", "CheckResult",
           "check_lock", "run_check", "predict", "probe_host", "host_from_snapshot"]

_VARIANT = re.compile(r"(?:^|[+./-])(cu\d{3})(?:$|[/.+-])")

# ---------------------------------------------------------------- lock reading


def target_env(python: str, arch: str) -> dict[str, str]:
    """Marker environment of the target (Linux, CPython) rather than this machine."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(python_version=python, python_full_version=f"{python}.0", platform_system="Linux",
               sys_platform="linux", platform_machine=arch, os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


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
        fn = wheel_filename(w)
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
        pn = pins(reqs, env)
        if any(cuda.package_component(k, n) == "cudart" and exact(r) for n, r in pn.items()):
            return False
        return not (name in k.follows_torch and "torch" in pn and exact(pn["torch"]))

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
        pn = pins(p.facts.requires_dist, env)
        for n, req in sorted(pn.items()):
            comp, ver = cuda.package_component(k, n), exact(req)
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
                and torch.identity is not None and "torch" in pn and exact(pn["torch"])):
            t = torch.identity
            ident.major |= t.major
            ident.release, ident.runtime, ident.cudart_soname = t.release, t.runtime, t.cudart_soname
            ident.add("follows-torch", f"Requires-Dist: torch=={exact(pn['torch'])}; "
                                       f"built for torch's CUDA {t.release}")
    if ident.kind == "unknown" and not _is_platform(p.wheel) and p.facts is not None:
        ident.jit_only = True
        ident.add("pure-python", "no compiled code in the wheel (any CUDA code is compiled at run time)")
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
    from_name = cuda.name_major(k, name)
    if from_name is not None:
        ident.major.add(from_name)
        ident.add("name", f"the name {name} names CUDA {from_name}")
        return ident
    return None


# ---------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class CheckOptions:
    python: str | None = None
    cache_dir: Path | None = None
    offline: bool = False
    small_wheel: int = wheels.SMALL_WHEEL


def _arch_glibc(matrix: Matrix | None) -> tuple[str, str | None]:
    if matrix is None:
        return "x86_64", None
    m = re.match(r"(x86_64|aarch64)-manylinux_(\d+)_(\d+)$", matrix.platform)
    return (m.group(1), f"{m.group(2)}.{m.group(3)}") if m else (matrix.platform.split("-")[0], None)


def gather(path: Path, *, matrix: Matrix | None, host: HostFacts, opts: CheckOptions,
           stats: wheels.FetchStats) -> Facts:
    """Read the lock and every wheel the rules need; establish identities."""
    data = read_lock(path)
    python = _lock_python(path, data, opts.python)
    arch, platform_glibc = _arch_glibc(matrix)
    env = target_env(python, arch)
    # Identity is read from the wheel an installer on the target would pick.
    supported = supported_tags(python, arch, host.glibc or platform_glibc or "2.99")
    k = cuda.load()
    packages: dict[str, Pkg] = {}
    raw: dict[str, dict[str, Any]] = {}
    for entry in data.get("packages", []):
        try:
            if entry.get("marker") and not Marker(entry["marker"]).evaluate(env):
                continue
        except InvalidMarker:
            pass  # validated by packaging.pylock already; keep the package
        name = canonicalize_name(entry["name"])
        raw[name] = entry
        packages[name] = Pkg(name, str(entry.get("version", "")), _pick_wheel(entry, supported, path.parent))
    comps = {matrix.torch.name, matrix.vllm.name} if matrix else set()
    gpu = [p for p in packages.values()
           if p.name in k.gpu or p.name in comps or _variant(p.version, p.wheel.url if p.wheel else None)]
    jobs = [(p.wheel, needs_binary(k, p.name, env) if _is_platform(p.wheel) else False)
            for p in gpu if p.wheel is not None]
    cache = wheels.WheelCache(opts.cache_dir or wheels.default_cache_dir())
    read = wheels.read_wheels(jobs, cache=cache, offline=opts.offline, stats=stats, small=opts.small_wheel)
    for p in gpu:
        p.facts = read.get(p.wheel.filename) if p.wheel else None
    torch = packages.get("torch")
    if torch is not None and torch in gpu:
        torch.identity = identify(torch, k, env, None)
    for p in gpu:
        if p is not torch:
            p.identity = identify(p, k, env, torch)
    for p in packages.values():
        if p in gpu or p.name in k.neutral:
            continue
        p.identity = nvidia_identity(p.name, p.version, k)
        if p.identity is None and p.name.startswith("nvidia-"):
            p.identity = Identity()
            p.identity.evidence.append({"kind": "unknown", "detail": "an nvidia-* package builder/data/"
                                        "cuda.toml does not know"})
    return Facts(str(path), python, arch, matrix, host, packages, raw, env, k)


def check_lock(path: Path, *, matrix: Matrix | None, host: HostFacts, opts: CheckOptions | None = None,
               stats: wheels.FetchStats | None = None) -> Report:
    """Check one lock against the host; raises Unavailable when a wheel can't be read."""
    from builder.check.rules import compat_min, native_floor

    stats = stats or wheels.FetchStats()
    f = gather(path, matrix=matrix, host=host, opts=opts or CheckOptions(), stats=stats)
    findings = evaluate(f)
    native, what, _ev = native_floor(f)
    driver = {"native_min": native, "native_from": what, "compat_min": compat_min(f), "host": host.driver,
              "declared": matrix.driver_floor if matrix else None, "host_origin": host.origin}
    return Report(str(path), matrix.id if matrix else None, f.python, verdict(findings), findings,
                  f.packages, driver, {"requests": stats.requests, "bytes": stats.bytes})


@dataclass(frozen=True)
class CheckRequest:
    """What ``builder check`` was asked (built by the CLI)."""

    selectors: tuple[str, ...] = ()
    python: str | None = None
    lock: Path | None = None
    driver: str | None = None
    ccs: tuple[str, ...] = ()
    glibc: str | None = None
    probe: bool = False
    offline: bool = False
    cache_dir: Path | None = None


@dataclass
class CheckResult:
    reports: list[Report]
    chooser: list[dict[str, Any]]
    verdict: str
    fetched: dict[str, int]


def _blocker(r: Report) -> str:
    fails = [f for f in r.findings if f.level == "fail"]
    dn = r.finding("driver-native")
    parts = []
    if dn is not None and dn.level == "fail" and dn.message.startswith("driver upgrade required"):
        parts.append("driver upgrade required: needs a reboot")
        fails = [f for f in fails if f is not dn]
    if fails:
        parts.append(f"{fails[0].id}: {fails[0].message.split(':')[0]}" if not parts
                     else "also " + ", ".join(f.id for f in fails))
    if parts:
        return "; ".join(parts)
    warns = [f.id for f in r.findings if f.level == "warn"]
    return ("warnings: " + ", ".join(warns)) if warns else "-"


def chooser_row(r: Report) -> dict[str, Any]:
    """One matrix-chooser row: floors, host driver, verdict and what blocks it."""
    return {"matrix": r.matrix, "python": r.python, "native_floor": r.driver["native_min"],
            "declared_floor": r.driver["declared"], "host_driver": r.driver["host"],
            "verdict": r.verdict, "blocker": _blocker(r)}


def resolve_host(base: HostFacts, req: CheckRequest) -> HostFacts:
    """Options override the probe, which overrides envs/host.toml."""
    host = base
    if req.probe:
        drv, ccs = probe_host()
        host = HostFacts(drv, ccs, host.glibc, "nvidia-smi")
    if req.driver or req.ccs or req.glibc:
        host = HostFacts(req.driver or host.driver, req.ccs or host.ccs, req.glibc or host.glibc,
                         host.origin + " + options")
    if host.driver is not None:
        try:
            cuda.driver_key(host.driver)
        except ValueError:
            raise UsageError(f"not a driver version: {host.driver!r}", "e.g. --driver 575.57.08") from None
    for cc in host.ccs:
        if not re.fullmatch(r"\d+\.\d+", cc):
            raise UsageError(f"not a compute capability: {cc!r}", "e.g. --gpu-cc 8.9")
    return host


def run_check(project: Any, req: CheckRequest) -> CheckResult:
    """Check the requested locks (``project`` is a builder.project.Project or None)."""
    from builder.lock import files as lockfile
    from builder.project import select_pythons

    base = HostFacts.from_host(project.host() if project is not None else None,
                               origin="envs/host.toml" if project is not None else "options")
    host = resolve_host(base, req)
    opts = CheckOptions(req.python, req.cache_dir, req.offline)
    stats = wheels.FetchStats()
    reports: list[Report] = []
    if req.lock is not None:
        if req.selectors:
            raise UsageError("--lock and --matrix are exclusive", "pass one or the other")
        matrix = None
        stamp = _stamp_matrix(req.lock)
        if stamp and project is not None and stamp in project.matrix_ids():
            matrix = project.matrix(stamp)
        reports.append(check_lock(req.lock, matrix=matrix, host=host, opts=opts, stats=stats))
    else:
        if project is None:
            raise UsageError("no builder project found", "pass --lock FILE or run inside the project")
        for m in project.matrices(list(req.selectors)):
            for py in select_pythons(m, req.python):
                path = lockfile.lock_path(project.locks, m, py)
                if not path.exists():
                    raise UsageError(f"{path.relative_to(project.root)}: no lock",
                                     f"run `{lockfile.regenerate_command(m, py)}` first")
                reports.append(check_lock(path, matrix=m, host=host,
                                          opts=CheckOptions(py, req.cache_dir, req.offline), stats=stats))
    chooser = [chooser_row(r) for r in reports] if not req.selectors and req.lock is None else []
    return CheckResult(reports, chooser, verdict([f for r in reports for f in r.findings]),
                       {"requests": stats.requests, "bytes": stats.bytes})


def _stamp_matrix(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            v = tomllib.load(f).get("tool", {}).get("builder", {}).get("matrix")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return str(v) if v else None


def predict(lock_path: Path, *, cache_dir: Path | None = None, offline: bool = False,
            matrix: Matrix | None = None) -> dict[str, str | None]:
    """What a runtime built from ``lock_path`` should report, for the smoke test to compare.

    Keys: torch (locked version), torch_reported (``torch.__version__``: PyPI's Linux
    wheels report their variant, 2.9.0 -> 2.9.0+cu128, FACTS.md), torch_cuda
    (``torch.version.cuda``), vllm, cudart_soname and build_toolkit (of vLLM's kernels).
    """
    host = HostFacts(None, (), None, "predict")
    f = gather(lock_path, matrix=matrix, host=host,
               opts=CheckOptions(cache_dir=cache_dir, offline=offline), stats=wheels.FetchStats())
    torch, vllm = f.packages.get("torch"), f.packages.get("vllm")
    ti = torch.identity if torch else None
    vi = vllm.identity if vllm else None
    reported = None
    if torch is not None:
        reported = torch.version
        if ti and ti.release and "+" not in reported:
            reported += "+cu" + ti.release.replace(".", "")
    return {
        "torch": torch.version if torch else None,
        "torch_reported": reported,
        "torch_cuda": ti.release if ti else None,
        "vllm": vllm.version if vllm else None,
        "cudart_soname": (vi.cudart_soname if vi else None) or (ti.cudart_soname if ti else None),
        "build_toolkit": vi.build_toolkit if vi else None,
    }


# ---------------------------------------------------------------- host probe (minimal)

def host_from_snapshot(snap: Snapshot) -> tuple[str, tuple[str, ...]]:
    """Driver and compute capabilities from a host snapshot's nvidia-smi probe (pure).

    The same probe and parser as ``builder preflight``: a "Driver/library version
    mismatch", "No devices were found" or unparsable output is an error, never a
    guess.
    """
    from builder.driver import facts as hostfacts

    rec = snap.get("nvidia-smi-gpus")
    if rec is None or rec.exit == "missing":
        raise ToolNotFound("nvidia-smi not found: cannot --probe this host",
                           "run on the GPU host, or pass --driver and --gpu-cc")
    facts = hostfacts.from_snapshot(snap)
    drivers = {g.driver for g in facts.gpus or [] if g.driver}
    ccs = tuple(sorted({g.compute_capability for g in facts.gpus or [] if g.compute_capability}))
    if facts.nvsmi_error is not None or len(drivers) != 1:
        why = facts.problems.get("gpus") or ("timed out" if rec.timed_out else "no driver version reported")
        raise Unavailable(f"nvidia-smi could not report the driver: {why}",
                          "fix the driver (a reboot may be pending) or pass --driver")
    return drivers.pop(), ccs


def probe_host() -> tuple[str, tuple[str, ...]]:
    """Driver and compute capabilities from this machine's nvidia-smi (bounded probe)."""
    from builder.driver import probe as host
    from builder.driver import snapshot

    probe = next(p for p in host.probes() if p.id == "nvidia-smi-gpus")
    return host_from_snapshot(snapshot.make(host.capture(only=[probe])))
