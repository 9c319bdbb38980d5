"""``builder check``: the CUDA identity of every GPU package in a PEP 751 lock,
and the rules that decide whether the lock can run on the host.

Pipeline: the lock model (:mod:`builder.pylock`) -> pick the target's wheels
-> read what is needed of them (:mod:`builder.check.wheels`, cached) ->
establish identities (:mod:`builder.check.identity`) -> run the rules (pure,
:mod:`builder.check.rules`) -> a :class:`CheckReport` with a verdict.  The core
never prints; the CLI renders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder import memo, paths, pylock
from builder.check import fetchplan, toolkit, wheels
from builder.check import knowledge as cuda
from builder.check.identity import (
    apply_kernels,
    as_tool,
    identify,
    is_platform,
    mark_toolkit_unknown,
    needs_binary,
    nvidia_identity,
    variant,
)
from builder.check.kernels import attach_kernels
from builder.check.loaded import analyze, wants_file_lists
from builder.check.model import CheckReport, Facts, Identity, Pkg, WheelRef
from builder.check.rules import driver_summary, evaluate, verdict
from builder.driver.facts import HostFacts
from builder.errors import LockFileError, ToolNotFound, Unavailable, UsageError
from builder.report import Level, Progress
from builder.spec import Matrix
from builder.versions import DriverVersion, compute_capability

if TYPE_CHECKING:
    from builder.driver.snapshot import Snapshot


@dataclass(frozen=True, kw_only=True)
class CheckOptions:
    python: str | None = None
    cache_dir: Path | None = None
    offline: bool = False
    deep: bool = False  # read the main extension's fatbin itself (by ranges, cached by wheel sha256)
    small_wheel: int = fetchplan.SMALL_WHEEL


#: Machine architectures ``check`` judges wheels for (``--arch``); a lock without a matrix is
#: judged for the host's (``--arch``, else a snapshot's ``uname -m``), else for the first.
ARCHES = ("x86_64", "aarch64")


def _matrix_platform(matrix: Matrix) -> tuple[str, str | None]:
    m = re.match(r"(x86_64|aarch64)-manylinux_(\d+)_(\d+)$", matrix.platform)
    return (m.group(1), f"{m.group(2)}.{m.group(3)}") if m else (matrix.platform.split("-")[0], None)


def _arch_glibc(matrix: Matrix | None, host: HostFacts) -> tuple[str, str | None]:
    """(architecture, glibc of the platform tag): a matrix's platform, else the host's arch."""
    if matrix is None:
        return host.arch or ARCHES[0], None
    return _matrix_platform(matrix)


def _lock_python(lock: pylock.Lock, python: str | None) -> str:
    want = python.removeprefix("py").removeprefix("python") if python else lock.python
    if not want:
        raise LockFileError(f"{lock.where}: cannot tell which Python the lock is for", "pass --python 3.12")
    return want


def _wheel_ref(p: pylock.Package, w: pylock.Wheel | None, lock_dir: Path) -> WheelRef | None:
    if w is None:
        return None
    return WheelRef(name=p.name, version=p.version, filename=w.filename, url=w.url,
                    path=str((lock_dir / w.path).resolve()) if w.path else None,
                    sha256=w.sha256, size=w.size, platform=w.is_platform)


@dataclass(frozen=True)
class _Plan:
    python: str
    arch: str
    env: dict[str, str]
    packages: dict[str, Pkg]
    gpu: list[Pkg]
    jobs: list[tuple[WheelRef, fetchplan.NeedBinary]]


def _plan(lock: pylock.Lock, *, matrix: Matrix | None, host: HostFacts, opts: CheckOptions) -> _Plan:
    python = _lock_python(lock, opts.python)
    arch, platform_glibc = _arch_glibc(matrix, host)
    env = pylock.target_env(python, arch)
    # Identity is read from the wheel an installer on the target would pick.
    tags = pylock.target_tags(python, arch, host.glibc or platform_glibc or "2.99")
    k = cuda.load()
    tk = toolkit.load()
    lock_dir = Path(lock.where).parent
    packages: dict[str, Pkg] = {}
    for entry in lock.applicable(env):
        packages[entry.name] = Pkg(entry.name, entry.version, _wheel_ref(entry, entry.pick_wheel(tags), lock_dir),
                                   locked=entry)
    comps = {matrix.torch.name, matrix.vllm.name} if matrix else set()
    gpu = [p for p in packages.values()
           if p.name in k.gpu or p.name in comps or variant(p.version, p.wheel.url if p.wheel else None)]
    jobs = [(p.wheel, needs_binary(k, tk, p.name, env=env) if is_platform(p.wheel) else False)
            for p in gpu if p.wheel is not None]
    return _Plan(python, arch, env, packages, gpu, jobs)


def wheel_jobs(lock: pylock.Lock, *, matrix: Matrix | None, host: HostFacts,
               opts: CheckOptions) -> list[tuple[WheelRef, fetchplan.NeedBinary]]:
    """The wheels :func:`gather` reads first, and whether it wants their binaries: a caller
    judging several locks reads them all at once (:func:`read_ahead`), then gathers from the cache."""
    return _plan(lock, matrix=matrix, host=host, opts=opts).jobs


def combined(jobs: list[tuple[WheelRef, fetchplan.NeedBinary]]) -> list[tuple[WheelRef, fetchplan.NeedBinary]]:
    """Jobs of several :func:`wheel_jobs` lists as one: each file once, with its binaries if any
    list wants them (a ``py3-none-any`` wheel serves every Python)."""
    need: dict[str, tuple[WheelRef, list[fetchplan.NeedBinary]]] = {}
    for ref, nb in jobs:
        need.setdefault(ref.filename, (ref, []))[1].append(nb)

    def either(nbs: list[fetchplan.NeedBinary]) -> fetchplan.NeedBinary:
        return nbs[0] if len(nbs) == 1 else (lambda reqs: any(fetchplan.wants(nb, reqs) for nb in nbs))

    return [(ref, either(nbs)) for ref, nbs in need.values()]


def read_ahead(jobs: list[tuple[WheelRef, fetchplan.NeedBinary]], *, opts: CheckOptions,
               stats: fetchplan.FetchStats) -> None:
    """Read (into the wheel cache) the wheels of several :func:`wheel_jobs` lists together
    (:func:`combined`)."""
    cache = wheels.WheelCache(paths.check_cache(opts.cache_dir))
    wheels.read_wheels(combined(jobs), cache=cache, offline=opts.offline, stats=stats, small=opts.small_wheel)


def gather(lock: pylock.Lock, *, matrix: Matrix | None, host: HostFacts, opts: CheckOptions,
           stats: fetchplan.FetchStats) -> Facts:
    """Read every wheel the rules need; establish identities."""
    plan = _plan(lock, matrix=matrix, host=host, opts=opts)
    python, arch, env, packages, gpu, jobs = plan.python, plan.arch, plan.env, plan.packages, plan.gpu, plan.jobs
    k = cuda.load()
    tk = toolkit.load()
    cache = wheels.WheelCache(paths.check_cache(opts.cache_dir))
    read = wheels.read_wheels(jobs, cache=cache, offline=opts.offline, stats=stats, small=opts.small_wheel)
    for p in gpu:
        p.facts = read.get(p.wheel.filename) if p.wheel else None
    torch = packages.get("torch")
    if torch is not None and torch in gpu:
        torch.identity = identify(torch, k, env, torch=None, tk=tk)
    for p in gpu:
        if p is not torch:
            p.identity = identify(p, k, env, torch=torch, tk=tk)
    for p in packages.values():
        if p in gpu or p.name in k.neutral:
            continue
        p.identity = nvidia_identity(p.name, p.version, k, tk=tk)
        if p.name in k.tools:
            p.identity = as_tool(p.identity, p.name, p.version)
        elif p.identity is None and p.name.startswith("nvidia-"):
            p.identity = Identity()
            p.identity.evidence.append({"kind": "unknown", "detail": "an nvidia-* package builder/data/"
                                        "cuda.toml does not know"})
    facts = Facts(lock.where, python, arch, matrix, host, packages, env, k, tk)
    for p, ev in attach_kernels(facts, cache_dir=cache.root, deep=opts.deep,  # the gated cache dir
                                offline=opts.offline, stats=stats):
        assert p.identity is not None
        apply_kernels(p.identity, ev, k)
    for p in gpu:
        mark_toolkit_unknown(p, k)
    # Per-major builds of one family: their file lists decide whether they coexist.
    want = [packages[n] for n in sorted(wants_file_lists(facts))]
    refs = [(p.wheel, False) for p in want if p.wheel is not None]
    if refs:
        lists = wheels.read_wheels(refs, cache=cache, offline=opts.offline, stats=stats, small=opts.small_wheel,
                                   files=frozenset(r.filename for r, _ in refs))
        for p in want:
            hit = lists.get(p.wheel.filename) if p.wheel else None
            p.files = hit.files if hit else None
    return facts


def check_lock(lock: pylock.Lock, *, matrix: Matrix | None, host: HostFacts, opts: CheckOptions | None = None,
               stats: fetchplan.FetchStats | None = None) -> CheckReport:
    """Check one lock against the host; raises Unavailable when a wheel can't be read."""
    stats = stats or fetchplan.FetchStats()
    f = gather(lock, matrix=matrix, host=host, opts=opts or CheckOptions(), stats=stats)
    findings = evaluate(f)
    driver = driver_summary(f, analyze(f))
    return CheckReport(lock.where, matrix.id if matrix else None, f.python, verdict(findings), findings,
                       f.packages, driver, stats.as_dict(), arch=f.arch)


@dataclass(frozen=True, kw_only=True)
class CheckRequest:
    """What ``builder check`` was asked (built by the CLI)."""

    selectors: tuple[str, ...] = ()
    python: str | None = None
    lock: Path | None = None
    driver: str | None = None
    ccs: tuple[str, ...] = ()
    glibc: str | None = None
    arch: str | None = None  # the host's machine architecture (--arch)
    probe: bool = False
    offline: bool = False
    deep: bool = False
    cache_dir: Path | None = None


@dataclass
class CheckResult:
    reports: list[CheckReport]
    chooser: list[dict[str, Any]]
    verdict: Level
    fetched: dict[str, int]


def _blocker(r: CheckReport) -> str:
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


def chooser_row(r: CheckReport) -> dict[str, Any]:
    """One matrix-chooser row: floors, host driver, verdict and what blocks it."""
    return {"matrix": r.matrix, "python": r.python, "native_floor": r.driver["native_min"],
            "declared_floor": r.driver["declared"], "host_driver": r.driver["host"],
            "verdict": r.verdict, "blocker": _blocker(r)}


def validate_overrides(req: CheckRequest) -> None:
    """UsageError for a malformed ``--driver``/``--gpu-cc``/``--glibc``/``--arch`` (pure).

    Called before anything reads the host or the repository: a usage error is
    reported as such even where a probe, git or a tool would fail first.
    """
    for name, value in (("--driver", req.driver), ("--glibc", req.glibc)):
        if value is not None and not value.strip():
            raise UsageError(f"{name} is empty", f"pass a value, e.g. {name} "
                             + ("575.57.08" if name == "--driver" else "2.35"))
    if req.driver is not None and DriverVersion.maybe(req.driver) is None:
        raise UsageError(f"not an NVIDIA driver version: {req.driver!r}", "e.g. --driver 575.57.08")
    for cc in req.ccs:
        try:
            compute_capability(cc)
        except ValueError:
            raise UsageError(f"not a compute capability: {cc!r}", "e.g. --gpu-cc 8.9") from None
    if req.glibc is not None and not re.fullmatch(r"2\.\d{1,3}", req.glibc.strip()):
        raise UsageError(f"not a glibc version: {req.glibc!r}", "e.g. --glibc 2.35")
    if req.arch is not None and req.arch not in ARCHES:
        raise UsageError(f"not a machine architecture builder judges: {req.arch!r}",
                         f"pass one of {', '.join(ARCHES)}")


def resolve_host(base: HostFacts, req: CheckRequest) -> HostFacts:
    """Options override the probe, which overrides envs/host.toml (options validated first)."""
    validate_overrides(req)
    host = base
    if req.probe:
        probed = probe_host()
        host = probed.overridden(glibc=probed.glibc or host.glibc)
    if req.driver or req.ccs or req.glibc or req.arch:
        given = [n for n, v in (("--driver", req.driver), ("--gpu-cc", req.ccs), ("--glibc", req.glibc),
                                ("--arch", req.arch)) if v]
        host = host.overridden(driver=req.driver, ccs=tuple(req.ccs), glibc=req.glibc, arch=req.arch,
                               origin=f"{host.origin} + {', '.join(given)}")
    return host


def run_check(project: Any, req: CheckRequest,
              progress: Progress | None = None) -> CheckResult:
    """Check the requested locks (``project`` is a builder.project.Project or None).

    ``progress`` hears (lock, message) for each lock that had to read wheels
    over the network (about a second each); a warm check says nothing.
    """
    import time

    from builder.project import lock_path, regenerate_command, select_pythons

    # Usage errors first: a bad option is reported as such even where the probe would fail.
    if req.python is not None and not re.fullmatch(r"(py|python)?3\.\d{1,2}", req.python):
        raise UsageError(f"not a Python version: {req.python!r}", "e.g. --python 3.12")
    if req.lock is not None and req.selectors:
        raise UsageError("--lock and --matrix are exclusive", "pass one or the other")
    validate_overrides(req)
    base = HostFacts.declared(project.host() if project is not None else None,
                              origin="envs/host.toml" if project is not None else "options")
    host = resolve_host(base, req)
    stats = fetchplan.FetchStats()
    reports: list[CheckReport] = []
    cache = paths.check_cache(req.cache_dir)  # validated locks and data files are kept beside the wheel facts
    memo.use_for_data(cache)
    if req.lock is not None:
        lock = memo.read_lock(req.lock, cache)
        matrix = None
        stamped = lock.stamp.stamp.matrix if lock.stamp.stamp is not None else ""
        if stamped and project is not None and stamped in project.matrix_ids():
            matrix = project.matrix(stamped)
        opts = CheckOptions(python=req.python, cache_dir=req.cache_dir, offline=req.offline, deep=req.deep)
        reports.append(check_lock(lock, matrix=matrix, host=host, opts=opts, stats=stats))
    else:
        if project is None:
            raise UsageError("no builder project found", "pass --lock FILE or run inside the project")
        for m in project.matrices(list(req.selectors)):
            if req.arch is not None and _matrix_platform(m)[0] != req.arch:
                raise UsageError(f"{m.name} locks for {m.platform}, not {req.arch}: its wheels are not this "
                                 "host's", f"check a lock made for {req.arch} with --lock FILE --arch {req.arch}")
            for py in select_pythons(m, req.python):
                path = lock_path(project.locks, m, py)
                if not path.exists():
                    raise UsageError(f"{path.relative_to(project.root)}: no lock",
                                     f"run `{regenerate_command(m, py)}` first")
                t, before = time.monotonic(), (stats.requests, stats.bytes)
                reports.append(check_lock(memo.read_lock(path, cache), matrix=m, host=host,
                                          opts=CheckOptions(python=py, cache_dir=req.cache_dir,
                                                            offline=req.offline, deep=req.deep), stats=stats))
                if progress is not None and stats.requests > before[0]:
                    n = stats.bytes - before[1]
                    size = f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"
                    progress(f"{m.name}/py{py}", f"{reports[-1].verdict}; read {size} of its wheels over the "
                             f"network ({stats.requests - before[0]} requests) in {time.monotonic() - t:.1f}s, "
                             "cached for next time")
    chooser = [chooser_row(r) for r in reports] if not req.selectors and req.lock is None else []
    return CheckResult(reports, chooser, verdict([f for r in reports for f in r.findings]), stats.as_dict())


def predict(lock: pylock.Lock, *, cache_dir: Path | None = None, offline: bool = False,
            matrix: Matrix | None = None) -> dict[str, str | None]:
    """What a runtime built from ``lock`` should report, for the smoke test to compare.

    Keys: torch (locked version), torch_reported (``torch.__version__``: PyPI's Linux
    wheels report their variant, 2.9.0 -> 2.9.0+cu128: the Linux x86_64 wheels of
    https://pypi.org/project/torch/2.9.0/#files are the CUDA 12.8 build), torch_cuda
    (``torch.version.cuda``), vllm, cudart_soname and build_toolkit (of vLLM's kernels).
    """
    f = gather(lock, matrix=matrix, host=HostFacts(origin="predict"),
               opts=CheckOptions(cache_dir=cache_dir, offline=offline), stats=fetchplan.FetchStats())
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


# ---------------------------------------------------------------- host probe


def host_from_snapshot(snap: Snapshot) -> HostFacts:
    """The host facts of a snapshot's nvidia-smi probe, for ``check --probe`` (pure).

    The same probe, parser and facts as ``builder preflight``: a "Driver/library
    version mismatch", "No devices were found", unparsable output or GPUs that
    report different drivers is an error, never a guess.
    """
    from builder.driver import facts as hostfacts

    rec = snap.get("nvidia-smi-gpus")
    if rec is None or rec.exit == "missing":
        raise ToolNotFound("nvidia-smi not found: cannot --probe this host",
                           "run on the GPU host, or pass --driver and --gpu-cc")
    facts = hostfacts.from_snapshot(snap).overridden(origin="nvidia-smi")
    if facts.nvsmi_error is not None or facts.gpus is None or facts.driver is None:
        drivers = facts.gpu_drivers
        why = facts.problems.get("gpus") or (
            "timed out" if rec.timed_out else
            f"GPUs report different drivers ({', '.join(drivers)})" if len(drivers) > 1 else
            "no driver version reported")
        raise Unavailable(f"nvidia-smi could not report the driver: {why}",
                          "fix the driver (a reboot may be pending) or pass --driver")
    return facts


def probe_host() -> HostFacts:
    """Driver and GPUs from this machine's nvidia-smi (bounded probe)."""
    from builder.driver import probe, snapshot

    nvsmi = next(p for p in probe.probes() if p.id == "nvidia-smi-gpus")
    return host_from_snapshot(snapshot.make(probe.capture(only=[nvsmi])))
