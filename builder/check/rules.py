"""The rules of ``builder check``: pure functions over :class:`~builder.check.model.Facts`,
one :class:`~builder.check.model.Finding` per rule id.  Nothing here does I/O:
the pipeline gathers the facts, the rules only judge them.
"""

from __future__ import annotations

import re

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from builder.binaries.archcompat import covers
from builder.check import components
from builder.check import knowledge as cuda
from builder.check.floors import NativeFloor, compat_min, jit_risks, native_floor
from builder.check.identity import own_kernels, pins
from builder.check.loaded import LoadView, analyze
from builder.check.model import Facts, Finding, Pkg
from builder.pylock import target_tags
from builder.report import Level, worst
from builder.versions import DriverVersion

RULES = ("cuda-identity", "torch-pin", "cuda-major", "cuda-toolkit-order", "driver-native",
         "driver-compat", "gpu-arch", "cuda-bindings", "sdist-only", "platform-tag", "python-tag")
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")

# Sources for rules whose facts are not rows of cuda.toml.
SRC_TORCH_PIN = "https://github.com/vllm-project/vllm/issues/13608"
SRC_CUDA_MAJOR = "https://github.com/vllm-project/vllm/issues/44335"
SRC_COMPAT = "https://docs.nvidia.com/deploy/cuda-compatibility/index.html#minor-version-compatibility"
SRC_DRIVER = "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#id5"
SRC_TAGS = "https://packaging.python.org/en/latest/specifications/platform-compatibility-tags/"
SRC_SDIST = "https://docs.astral.sh/uv/reference/cli/#uv-pip-compile--no-build"


# ---------------------------------------------------------------- rules (pure)


def _f(rule: str, level: Level, message: str, *, evidence: list[str] | None = None, source: str = "") -> Finding:
    return Finding(rule, level, message, tuple(evidence or ()), source)


def _gpu(f: Facts) -> list[Pkg]:
    return [p for _, p in sorted(f.packages.items()) if p.identity is not None]


def _view(f: Facts, view: LoadView | None) -> LoadView:
    return view if view is not None else analyze(f)


def _desc(p: Pkg) -> str:
    i = p.identity
    assert i is not None
    bits = []
    if i.cudart_soname:
        bits.append(i.cudart_soname)
    if i.runtime:
        bits.append(f"cudart {i.runtime}")
    elif i.release:
        bits.append(f"CUDA {i.release}")
    if i.build_toolkit:
        bits.append(f"built with {i.build_toolkit}")
    elif i.build_release:
        bits.append(f"built with CUDA {i.build_release}")
    if i.cublas:
        bits.append(f"cuBLAS {i.cublas}")
    return f"{p.name} {p.version} ({', '.join(bits) or 'CUDA ' + '/'.join(map(str, sorted(i.major)))}; {i.kind})"


def rule_identity(f: Facts) -> Finding:
    """Every GPU package has an established CUDA identity, every CUDA component a placed
    version (unknown is a warning, with the reason; a known package never warns)."""
    unknown = [p for p in _gpu(f) if p.identity and not p.identity.major and not p.identity.jit_only]
    unplaced = [p for p in _gpu(f) if p.identity and p.identity.unplaced]
    main = [p for p in _gpu(f) if p.identity and p.identity.kind in
            ("local-version", "index-url", "requires-dist", "binary", "follows-torch")]
    ev = [_desc(p) for p in main]
    if unknown or unplaced:
        names = ", ".join(f"{p.name} {p.version}" for p in unknown + unplaced)
        why = [f"{p.name}: " + "; ".join(e["detail"] for e in p.identity.evidence if e["kind"] != "version")
               for p in unknown if p.identity] + [p.identity.unplaced for p in unplaced if p.identity]
        return _f("cuda-identity", Level.WARN,
                  f"CUDA identity unknown for {names}: treat as untested; run the runtime smoke test "
                  "on the GPU host before relying on it", evidence=why + ev)
    comps = [p for p in _gpu(f) if p.identity and p.identity.kind in ("version", "name")]
    return _f("cuda-identity", Level.PASS, f"{len(main)} CUDA-linked packages identified, {len(comps)} CUDA "
              "libraries placed by name and version", evidence=ev)


def rule_torch_pin(f: Facts) -> Finding:
    """vLLM's (and anyone's) torch/torchvision/torchaudio pins match the lock."""
    bad: list[str] = []
    ok: list[str] = []
    for p in _gpu(f):
        if p.facts is None:
            continue
        for n, req in pins(p.facts.requires_dist, f.env).items():
            if n not in TORCH_FAMILY or n not in f.packages or not req.specifier:
                continue
            locked = f.packages[n].version
            line = f"{p.name} {p.version} requires {n}{req.specifier}; the lock has {n} {locked}"
            try:
                good = req.specifier.contains(Version(locked), prereleases=True)
            except InvalidVersion:
                good = False
            (ok if good else bad).append(line)
    if bad:
        return _f("torch-pin", Level.FAIL,
                  f"{bad[0]}: its compiled ops load only with the torch they were built against "
                  "(`undefined symbol`); lock the pinned versions or choose the release built for the "
                  "locked torch", evidence=bad + ok, source=SRC_TORCH_PIN)
    msg = "torch pins match the lock" if ok else "no package pins torch, torchvision or torchaudio"
    return _f("torch-pin", Level.PASS, msg, evidence=ok, source=SRC_TORCH_PIN)


def rule_cuda_major(f: Facts, view: LoadView | None = None) -> Finding:
    """Binaries one process loads agree on the CUDA major; per-major builds in disjoint
    files coexist (info); what builder cannot place is a warning."""
    v = _view(f, view)
    majors = "/".join(str(m) for m in sorted(v.majors))
    ev = [*v.conflicts, *v.unsure, *v.coexist, *(f"loaded: {c}" for c in v.core)]
    if v.conflicts:
        return _f("cuda-major", Level.FAIL,
                  f"{v.conflicts[0]}: one process loads one libcudart, so this fails with "
                  "`libcudart.so.N: cannot open shared object file` or mixes two CUDA builds; pick builds of every "
                  "package for one CUDA major", evidence=ev, source=SRC_CUDA_MAJOR)
    if v.unsure:
        return _f("cuda-major", Level.WARN, f"{v.unsure[0]}; smoke-test the runtime on the GPU host", evidence=ev,
                  source=SRC_CUDA_MAJOR)
    if not v.majors:
        return _f("cuda-major", Level.PASS, "no CUDA-linked packages", evidence=[], source=SRC_CUDA_MAJOR)
    if v.coexist:
        return _f("cuda-major", Level.INFO,
                  f"a process loads CUDA {majors}; builds for another major sit beside it in their own files and "
                  f"are not loaded: {v.coexist[0]}", evidence=ev, source=SRC_CUDA_MAJOR)
    return _f("cuda-major", Level.PASS, f"every CUDA-linked package is on CUDA {majors}", evidence=ev,
              source=SRC_CUDA_MAJOR)


def _build(p: Pkg) -> tuple[str, str] | None:
    """(release, label) of the toolkit that built ``p``'s kernels, if known."""
    i = p.identity
    if i is None:
        return None
    if i.build_toolkit:
        return cuda.release_of(i.build_toolkit), i.build_toolkit
    if i.build_release:
        return i.build_release, i.toolkit_from
    return None


def rule_toolkit_order(f: Facts, view: LoadView | None = None) -> Finding:
    """The cuBLAS a process loads is not older than the toolkit its kernels were built
    with; a package with its own kernels and no known toolkit is a warning."""
    v = _view(f, view)
    kb = f.k.known_bad.get("cublas-older-than-build-toolkit", {})
    src = str(kb.get("source", ""))
    loaded = [p for p in _gpu(f) if v.loaded(p)]
    unknown = [p for p in loaded if own_kernels(p, f.k) and _build(p) is None]
    builders = [(p, tb) for p in loaded if (tb := _build(p)) is not None and own_kernels(p, f.k)]
    libs = []
    for p in loaded:
        hit = components.component_of(f.k, f.tk, p.name)
        pl = components.place(f.k, f.tk, hit[0], version=p.version, name=p.name) if hit else None
        if hit is not None and pl is not None and hit[0] not in f.k.jit_compilers and hit[0] != "cccl":
            libs.append((p, pl))
    warn, info, ok = [], [], []
    for b, (rt, tk) in builders:  # b: the package whose kernels were built with toolkit tk
        for lib, pl in libs:
            if cuda.release_key(pl.release)[0] != cuda.release_key(rt)[0]:
                continue
            line = f"{lib.name} {lib.version} (CUDA {pl.label}) vs {b.name} built with {tk}"
            if cuda.release_key(pl.release) >= cuda.release_key(rt):
                ok.append(line)
            elif pl.component == "cublas":
                major, minor = cuda.release_key(rt)
                fix = str(kb.get("fix", "")).format(package=lib.name, release=rt, next=f"{major}.{minor + 1}",
                                                    tag=rt.replace(".", ""))
                warn.append(f"{b.name} {b.version}'s kernels were built with CUDA {rt} ({tk}) but the lock "
                            f"has {lib.name} {lib.version} (CUDA {pl.release}): known "
                            f"{kb.get('symptom', 'failure')}; fix: {fix}")
            else:
                info.append(line)
    unknown_lines = [f"{p.name} {p.version}: {p.identity.toolkit_unknown or 'build toolkit unknown'}"
                     for p in unknown if p.identity]
    if warn:
        return _f("cuda-toolkit-order", Level.WARN, warn[0], evidence=warn[1:] + unknown_lines + info + ok, source=src)
    if unknown:
        return _f("cuda-toolkit-order", Level.WARN,
                  f"cannot tell whether the CUDA libraries are older than the toolkit that built "
                  f"{', '.join(p.name for p in unknown)}: {unknown_lines[0]}", evidence=unknown_lines[1:] + info + ok,
                  source=src)
    if not builders:
        return _f("cuda-toolkit-order", Level.PASS, "no package carries kernels built by its own toolkit", evidence=ok,
                  source=src)
    if info:
        return _f("cuda-toolkit-order", Level.INFO,
                  "cuBLAS matches the build toolkit; other CUDA libraries are older than it: "
                  + "; ".join(info), evidence=ok, source=src)
    return _f("cuda-toolkit-order", Level.PASS, "CUDA libraries are not older than the build toolkit", evidence=ok,
              source=src)


def driver_summary(f: Facts, view: LoadView | None = None) -> dict[str, object]:
    """The report's ``driver`` block: floors, what sets them, and whether they are bounds."""
    v = _view(f, view)
    nf = native_floor(f, v)
    return {"native_min": nf.driver, "native_from": nf.what, "native_is_lower_bound": bool(nf.lower_bound),
            "native_unknown": list(nf.lower_bound + nf.no_row), "compat_min": compat_min(f, v),
            "host": f.host.driver, "declared": f.matrix.driver_floor if f.matrix else None,
            "host_origin": f.host.origin}


def _bound(nf: NativeFloor) -> str:
    if not nf.lower_bound:
        return ""
    return f" (a lower bound: {nf.lower_bound[0]})"


def rule_driver_native(f: Facts, view: LoadView | None = None) -> Finding:
    """Native driver floor of the lock vs the host driver and the matrix's declared floor."""
    nf = native_floor(f, _view(f, view))
    native, what = nf.driver, nf.what
    ev = [f"native floor {native} set by {what}" if native else "no placed CUDA runtime", *nf.evidence,
          *(f"lower bound: {x}" for x in nf.lower_bound)]
    if native is None:
        if nf.no_row:
            return _f("driver-native", Level.WARN, f"native driver floor unknown: {nf.no_row[0]}", evidence=ev,
                      source=SRC_DRIVER)
        return _f("driver-native", Level.PASS, "the lock carries no CUDA runtime" + _bound(nf), evidence=ev,
                  source=SRC_DRIVER)
    declared = f.matrix.driver_floor if f.matrix else None
    host = f.host.driver
    level, msgs = Level.PASS, []
    if declared and DriverVersion.parse(declared) < DriverVersion.parse(native):
        level = Level.WARN
        msgs.append(f"declared floor {declared} is below the native floor {native} (set by {what}): on drivers "
                    f"from {declared} to {native} {f.matrix.name if f.matrix else 'it'} relies on minor-version "
                    f"compatibility; raise driver-floor to {native} in envs/"
                    f"{f.matrix.name if f.matrix else 'matrix'}.toml")
    if host is None:
        level = Level.WARN
        msgs.append(f"host driver unknown; the lock needs {native} natively{_bound(nf)} (pass --driver or --probe)")
    elif declared and DriverVersion.parse(host) < DriverVersion.parse(declared):
        level = Level.FAIL
        msgs.insert(0, f"driver upgrade required: host driver {host} is below the matrix's declared floor "
                       f"{declared} (native floor {native}); installing a new driver needs a reboot")
    elif DriverVersion.parse(host) >= DriverVersion.parse(native):
        if nf.no_row:
            level = Level.FAIL if level == Level.FAIL else Level.WARN
            msgs.append(f"host driver {host} meets the known floor {native}, but {nf.no_row[0]}: whether it runs "
                        "the lock natively is not known; add the release's driver row from NVIDIA's table")
        else:
            msgs.append(f"host driver {host} meets the native floor {native}{_bound(nf)}")
    else:
        msgs.append(f"host driver {host} is below the native floor {native}{_bound(nf)} (see driver-compat)")
    return _f("driver-native", level, "; ".join(msgs), evidence=ev, source=SRC_DRIVER)


def rule_driver_compat(f: Facts, view: LoadView | None = None) -> Finding:
    """Whether the host runs the lock natively, only under minor-version compatibility, or
    not at all; run-time compilers newer than the driver are a named JIT risk."""
    v = _view(f, view)
    nf = native_floor(f, v)
    native, cmin, host = nf.driver, compat_min(f, v), f.host.driver
    if native is None and not nf.no_row:
        return _f("driver-compat", Level.PASS, "the lock carries no CUDA runtime", evidence=[], source=SRC_COMPAT)
    if host is None:
        return _f("driver-compat", Level.WARN, "host driver unknown: cannot tell whether the lock runs",
                  evidence=[], source=SRC_COMPAT)
    risks = jit_risks(f, v, host)
    ev = [f"native floor {native or 'unknown'}{_bound(nf)}", f"minor-version compatibility floor {cmin}", *risks]
    jit = ("; run-time compilers newer than the driver: " + "; ".join(risks) + ": code they compile at run time "
           "(Triton, flashinfer, NVRTC/nvJitLink users) needs a driver of their release "
           "(cudaErrorUnsupportedPtxVersion); upgrade the driver or pin them to the driver's CUDA release"
           if risks else "")
    if native is not None and DriverVersion.parse(host) >= DriverVersion.parse(native):
        if risks:
            return _f("driver-compat", Level.WARN, f"host driver {host} runs the lock natively (>= {native}){jit}",
                      evidence=ev, source=f.k.jit_source or SRC_COMPAT)
        if nf.lower_bound:
            return _f("driver-compat", Level.PASS, f"host driver {host} meets the known native floor {native}, "
                      f"a lower bound: {nf.lower_bound[0]}", evidence=ev, source=SRC_COMPAT)
        return _f("driver-compat", Level.PASS, f"host driver {host} runs the lock natively (>= {native})", evidence=ev,
                  source=SRC_COMPAT)
    if cmin and DriverVersion.parse(host) >= DriverVersion.parse(cmin):
        return _f("driver-compat", Level.WARN,
                  f"host driver {host} runs this lock only under minor-version compatibility (>= {cmin}): "
                  "no JIT of PTX newer than the driver, so Triton/flashinfer JIT kernels are at risk; "
                  f"upgrade the driver to >= {native or 'the native floor'}{jit}", evidence=ev, source=SRC_COMPAT)
    return _f("driver-compat", Level.FAIL,
              f"host driver {host} is below the minor-version compatibility floor {cmin}: the CUDA runtime "
              f"will report 'driver too old'; upgrade the driver to >= {native or cmin}", evidence=ev,
              source=SRC_COMPAT)


def rule_gpu_arch(f: Facts, view: LoadView | None = None) -> Finding:
    """Host compute capability vs the CUDA line a process loads, and vs the GPU code of the
    main extension (read from its fatbin: shipped data or --deep)."""
    if not f.host.ccs:
        return _f("gpu-arch", Level.WARN, "host GPU compute capability unknown (pass --gpu-cc or --probe)")
    v = _view(f, view)
    loaded = [p for p in _gpu(f) if v.loaded(p) and p.identity]
    releases = {p.identity.release or (cuda.release_of(p.identity.build_toolkit)
                                       if p.identity.build_toolkit else p.identity.build_release)
                for p in loaded if p.identity}
    majors = {m for p in loaded if p.identity for m in p.identity.major}
    bad: list[str] = []
    judged: list[str] = []
    unjudged: list[str] = []
    notes: list[str] = []
    src = ""
    for cc in f.host.ccs:
        # a major's floor holds whatever the release; a release's intro only for known releases
        probs = [cuda.major_floor_problem(f.k, cc, m) for m in sorted(majors)]
        probs += [cuda.arch_problem(f.k, cc, rel) for rel in sorted(r for r in releases if r)]
        for prob in probs:
            if prob:
                bad.append(prob[0])
                src = prob[1]
        for p in _gpu(f):
            i = p.identity
            assert i is not None
            if p.name not in f.k.main_extensions:
                continue
            if i.built_on_host:
                notes.append(f"{p.name} {p.version} is built on the host from its sdist: its kernels are compiled "
                             "for the build's arch list, not judged here")
            elif i.kernels is None:
                members = " or ".join(f.k.main_extensions[p.name])
                unjudged.append(f"{p.name} {p.version}: no fatbin data for {members} of this wheel (by sha256) "
                                "in builder/data/kernels.toml; `builder check --deep` reads it")
            else:
                ok, why = covers(i.kernels.archs, cc)
                line = (f"{i.kernels.member} ({p.name} {p.version}, {i.kernels.origin}: {i.kernels.detail}) "
                        f"on {cc}: {why}")
                (judged if ok else bad).append(line)
    other = [p.name for p in _gpu(f) if p.identity and p.name not in f.k.main_extensions
             and p.identity.kind in ("binary", "local-version", "index-url", "requires-dist", "follows-torch")]
    tail = [f"not read: the GPU code of {', '.join(other)} (only main extensions are judged)"] if other else []
    cc_list = ", ".join(f.host.ccs)
    if bad:
        return _f("gpu-arch", Level.FAIL, "; ".join(dict.fromkeys(bad)) + ": use builds that support this GPU",
                  evidence=judged + unjudged + notes + tail, source=src)
    unreadable = f.host.unreadable_gpus
    if unreadable:
        which = ", ".join(f"GPU {g.index if g.index is not None else '?'} ({g.name or 'unnamed'}: "
                          f"{g.compute_capability or 'empty'})" for g in unreadable)
        return _f("gpu-arch", Level.WARN, f"compute capability could not be read for {which}: this GPU is not "
                  f"judged (the others, {cc_list}, are supported by the CUDA line); check `nvidia-smi` "
                  "or pass --gpu-cc", evidence=judged + unjudged + notes + tail)
    if unjudged:
        return _f("gpu-arch", Level.WARN, f"the CUDA line supports compute capability {cc_list}, but "
                  + unjudged[0], evidence=judged + unjudged[1:] + notes + tail)
    if notes and not judged:
        return _f("gpu-arch", Level.INFO, f"the CUDA line supports compute capability {cc_list}; " + notes[0],
                  evidence=notes[1:] + tail)
    return _f("gpu-arch", Level.PASS, f"the CUDA line supports compute capability {cc_list}"
              + (f"; {judged[0]}" if judged else ""), evidence=judged[1:] + notes + tail)


def _bindings_stack(f: Facts, view: LoadView | None) -> set[int]:
    """The stack's CUDA major: torch's, else the majors a process loads."""
    t = f.packages.get("torch")
    if t is not None and t.identity is not None and t.identity.major:
        return set(t.identity.major)
    return set(_view(f, view).majors)


def _not_imported(f: Facts) -> str:
    """What is known of whether the stack's server imports cuda.bindings itself."""
    b = f.k.bindings
    p = f.packages.get(b.not_imported_by) if b.not_imported_by else None
    if p is None:
        return ""
    try:
        known = SpecifierSet(b.not_imported_versions).contains(Version(p.version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        known = False
    if known:
        return f"{p.name} {p.version} itself does not import cuda.bindings: its default paths do not load them"
    return f"whether {p.name} {p.version} itself imports cuda.bindings is not known"


def rule_bindings(f: Facts, view: LoadView | None = None) -> Finding:
    """CUDA Python bindings (cuda-bindings; cuda-python before it became a meta package) vs the
    stack's CUDA major and the host driver.  Only optional code paths import them (CuTe DSL,
    flashinfer, cuDNN frontend kernels), so this warns at most and never sets the native floor."""
    b = f.k.bindings
    carriers: list[tuple[Pkg, int]] = []
    notes: list[str] = []
    problems: list[str] = []
    for name, row in sorted(b.packages.items()):
        p = f.packages.get(name)
        if p is None:
            continue
        try:
            v = Version(p.version)
        except InvalidVersion:
            problems.append(f"{name} {p.version}: not a version builder can read, its CUDA major is unknown")
            continue
        if row.meta_from and v >= Version(row.meta_from):
            notes.append(f"{name} {p.version} carries no bindings of its own (a meta package from "
                         f"{row.meta_from} on; {row.source})")
            continue
        carriers.append((p, v.major))
    if not carriers and not problems:
        return _f("cuda-bindings", Level.PASS, "the lock holds no CUDA Python bindings (cuda-bindings, cuda-python)",
                  evidence=notes)
    stack = _bindings_stack(f, view)
    stack_s = "/".join(str(m) for m in sorted(stack))
    host = f.host.driver
    infos: list[str] = []
    ok: list[str] = []
    floors: list[tuple[str, str]] = []  # (driver, source) of the carriers that warn
    src = ""
    for p, major in carriers:
        row_d = b.driver.get(major)
        if row_d is None:
            problems.append(f"{p.name} {p.version}: CUDA {major} bindings, whose driver floor "
                            "builder/data/cuda.toml does not know")
            continue
        floor, fsrc = row_d
        src = src or fsrc
        other = bool(stack) and major not in stack
        tag = (f"{p.name} {p.version} (CUDA {major} bindings" + (f" in a CUDA {stack_s} stack" if other else "")
               + f") needs driver >= {floor} (NVIDIA: {fsrc})")
        if host is None:
            problems.append(f"host driver unknown: {tag}")
            floors.append((floor, fsrc))
        elif DriverVersion.parse(host) < DriverVersion.parse(floor):
            problems.append(f"{tag}; host driver {host} is below it")
            floors.append((floor, fsrc))
        elif other:
            infos.append(f"{tag}; host driver {host} meets it")
        else:
            ok.append(f"{tag}; host driver {host} meets it")
    if floors:
        src = floors[0][1]
    majors = sorted({m for _, m in carriers})
    clash = ""
    if len(majors) > 1:
        names = " and ".join(f"{p.name} {p.version}" for p, _ in carriers)
        clash = (f"{names} both install cuda/bindings/ (the same paths): the last installed wins, mixing "
                 f"CUDA {' and '.join(map(str, majors))} bindings")
    users = [u for u in b.users if u in f.packages]
    who = f"code that imports cuda.bindings ({', '.join(users)})" if users else "code that imports cuda.bindings"
    default = _not_imported(f)
    ev = [*problems, *infos, *ok, *notes,
          *([f"imported by {', '.join(users)} when the lock holds them ({b.source})"] if users else []),
          *([default] if default else [])]
    tail = f"; {default}" if default else ""
    if problems or clash:
        fix = []
        if len(stack) == 1 and (clash or any(m not in stack for m in majors)):
            s = next(iter(stack))
            meta = [Version(r.meta_from) for r in b.packages.values() if r.meta_from]
            lo = max([Version(f"{s}.0"), *(m for m in meta if m.major == s)])
            pins = ", ".join(f'"{n}>={lo},<{s + 1}"' for n in sorted(b.packages))
            fix.append(f"lock one set of CUDA {s} bindings (overrides {pins})")
        if floors:
            fix.append(f"upgrade the driver to >= {max((d for d, _ in floors), key=DriverVersion.parse)}")
        head = "; ".join([*([clash] if clash else []), *problems])
        fails = (f": {who} fails on drivers below that floor" if floors else "")
        return _f("cuda-bindings", Level.WARN, f"{head}{fails}{tail}" + (f"; {' or '.join(fix)}" if fix else ""),
                  evidence=ev, source=src)
    if infos:
        return _f("cuda-bindings", Level.INFO, f"{infos[0]}: {who} runs on this driver{tail}", evidence=ev, source=src)
    return _f("cuda-bindings", Level.PASS, f"{ok[0]}{tail}", evidence=ev, source=src)


_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def _glibc_of(platform: str) -> tuple[int, int] | None:
    m = re.match(r"manylinux_(\d+)_(\d+)_", platform)
    if m:
        return int(m.group(1)), int(m.group(2))
    return _LEGACY.get(platform.split("_")[0])


def tag_rules(f: Facts) -> list[Finding]:
    """sdist-only, platform-tag and python-tag over every package the target installs."""
    supported = set(target_tags(f.python, f.arch, f.host.glibc or "2.99"))
    pairs = {(t.interpreter, t.abi) for t in supported}
    sdist, plat, py = [], [], []
    for name, pkg in sorted(f.packages.items()):
        entry = pkg.locked
        if entry is None:
            continue
        parsed = [(w.filename, w.tags) for w in entry.wheels if w.tags]
        has_src = entry.source is not None
        if not parsed:
            if has_src:
                sdist.append(f"{name} {entry.version}: source only")
            continue
        if any(tags & supported for _fn, tags in parsed):
            continue
        py_ok = [(fn, tags) for fn, tags in parsed if any((t.interpreter, t.abi) in pairs for t in tags)]
        tail = " (the installer would build the sdist)" if has_src else ""
        if not py_ok:
            py.append(f"{name}: {', '.join(fn for fn, _ in parsed)} do not match CPython {f.python}{tail}")
            continue
        needs = [g for _fn, tags in py_ok for t in tags if (g := _glibc_of(t.platform))
                 and t.platform.endswith(f.arch)]
        if needs:
            g = min(needs)
            plat.append(f"{name}: needs glibc {g[0]}.{g[1]}, host has {f.host.glibc}{tail}")
        else:
            plat.append(f"{name}: no wheel for {f.arch} Linux{tail}")
    out = [
        _f("sdist-only", Level.FAIL, f"{len(sdist)} packages have no wheel and would be compiled on the host: "
           f"{'; '.join(sdist)}; pin versions with wheels or change the platform", evidence=sdist, source=SRC_SDIST)
        if sdist else _f("sdist-only", Level.PASS, "every package installs from a wheel", evidence=[],
                         source=SRC_SDIST)]
    if f.host.glibc is None:
        out.append(_f("platform-tag", Level.WARN, "host glibc unknown (pass --glibc)", evidence=[], source=SRC_TAGS))
    elif plat:
        out.append(_f("platform-tag", Level.FAIL, f"wheels need a newer platform than the host: {'; '.join(plat)}; "
                      "pin older releases or target the host's glibc", evidence=plat, source=SRC_TAGS))
    else:
        out.append(_f("platform-tag", Level.PASS, f"every wheel installs on glibc {f.host.glibc} {f.arch}",
                      evidence=[], source=SRC_TAGS))
    out.append(_f("python-tag", Level.FAIL, f"wheels do not match CPython {f.python}: {'; '.join(py)}; re-lock for "
                  "this Python", evidence=py, source=SRC_TAGS) if py else
               _f("python-tag", Level.PASS, f"every wheel matches CPython {f.python}", evidence=[], source=SRC_TAGS))
    return out


def evaluate(f: Facts) -> list[Finding]:
    """Run every rule, in the documented order."""
    view = analyze(f)
    return [rule_identity(f), rule_torch_pin(f), rule_cuda_major(f, view), rule_toolkit_order(f, view),
            rule_driver_native(f, view), rule_driver_compat(f, view), rule_gpu_arch(f, view),
            rule_bindings(f, view), *tag_rules(f)]


def verdict(findings: list[Finding]) -> Level:
    """The worst level of ``findings``, an ``info`` counting as a pass."""
    w = worst(x.level for x in findings)
    return Level.PASS if w is Level.INFO else w
