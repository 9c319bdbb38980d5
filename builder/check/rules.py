"""The rules of ``builder check``: pure functions over :class:`~builder.check.model.Facts`,
one :class:`~builder.check.model.Finding` per rule id.  Nothing here does I/O:
the pipeline gathers the facts, the rules only judge them.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from builder.archcompat import runs_on_name
from builder.check import knowledge as cuda
from builder.check.identity import pins
from builder.check.model import Facts, Finding, Pkg
from builder.pylock import target_tags
from builder.versions import DriverVersion, driver_max

LEVELS = ("pass", "info", "warn", "fail")
RULES = ("cuda-identity", "torch-pin", "cuda-major", "cuda-toolkit-order", "driver-native",
         "driver-compat", "gpu-arch", "sdist-only", "platform-tag", "python-tag")
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")

# Sources for rules whose facts are not rows of cuda.toml (FACTS.md lists them).
SRC_TORCH_PIN = "https://github.com/vllm-project/vllm/issues/13608"
SRC_CUDA_MAJOR = "https://github.com/vllm-project/vllm/issues/44335"
SRC_COMPAT = "https://docs.nvidia.com/deploy/cuda-compatibility/index.html#minor-version-compatibility"
SRC_DRIVER = "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#id5"
SRC_TAGS = "https://packaging.python.org/en/latest/specifications/platform-compatibility-tags/"
SRC_SDIST = "https://docs.astral.sh/uv/reference/cli/#uv-pip-compile--no-build"


# ---------------------------------------------------------------- rules (pure)


def _f(rule: str, level: str, message: str, evidence: list[str] | None = None, source: str = "") -> Finding:
    return Finding(rule, level, message, tuple(evidence or ()), source)


def _gpu(f: Facts) -> list[Pkg]:
    return [p for _, p in sorted(f.packages.items()) if p.identity is not None]


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
    if i.cublas:
        bits.append(f"cuBLAS {i.cublas}")
    return f"{p.name} {p.version} ({', '.join(bits) or 'CUDA ' + '/'.join(map(str, sorted(i.major)))}; {i.kind})"


def rule_identity(f: Facts) -> Finding:
    """Every GPU package has an established CUDA identity (unknown is a warning)."""
    unknown = [p for p in _gpu(f) if p.identity and not p.identity.major and not p.identity.jit_only]
    main = [p for p in _gpu(f) if p.identity and p.identity.kind in
            ("local-version", "index-url", "requires-dist", "binary", "follows-torch")]
    ev = [_desc(p) for p in main]
    if unknown:
        names = ", ".join(f"{p.name} {p.version}" for p in unknown)
        return _f("cuda-identity", "warn",
                  f"CUDA identity unknown for {names}: treat as untested; run the runtime smoke test "
                  "on the GPU host before relying on it", ev + [
                      f"{p.name}: " + "; ".join(e["detail"] for e in p.identity.evidence) for p in unknown
                      if p.identity])
    return _f("cuda-identity", "pass", f"{len(main)} CUDA-linked packages identified", ev)


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
        return _f("torch-pin", "fail",
                  f"{bad[0]}: its compiled ops load only with the torch they were built against "
                  "(`undefined symbol`); lock the pinned versions or choose the release built for the "
                  "locked torch", bad + ok, SRC_TORCH_PIN)
    msg = "torch pins match the lock" if ok else "no package pins torch, torchvision or torchaudio"
    return _f("torch-pin", "pass", msg, ok, SRC_TORCH_PIN)


def rule_cuda_major(f: Facts) -> Finding:
    """Every CUDA-linked package agrees on the CUDA major."""
    by: dict[int, list[str]] = {}
    for p in _gpu(f):
        assert p.identity is not None
        for m in p.identity.major:
            by.setdefault(m, []).append(_desc(p))
    ev = [f"CUDA {m}: {d}" for m, ds in sorted(by.items()) for d in ds]
    if len(by) > 1:
        heads = "; ".join(f"CUDA {m}: {', '.join(d.split(' (')[0] for d in ds[:4])}"
                          for m, ds in sorted(by.items()))
        return _f("cuda-major", "fail",
                  f"CUDA majors mixed ({heads}): one process loads one libcudart, so this fails with "
                  "`libcudart.so.N: cannot open shared object file`; pick builds of every package "
                  "for one CUDA major", ev, SRC_CUDA_MAJOR)
    if not by:
        return _f("cuda-major", "pass", "no CUDA-linked packages", [], SRC_CUDA_MAJOR)
    return _f("cuda-major", "pass", f"every CUDA-linked package is on CUDA {next(iter(by))}", ev,
              SRC_CUDA_MAJOR)


def _locked_components(f: Facts) -> list[tuple[Pkg, cuda.Placement]]:
    out = []
    for p in f.packages.values():
        comp = cuda.package_component(f.k, p.name)
        pl = cuda.place(f.k, comp, p.version) if comp else None
        if pl is not None:
            out.append((p, pl))
    return out


def rule_toolkit_order(f: Facts) -> Finding:
    """The cuBLAS torch brings is not older than the toolkit vLLM's kernels were built with."""
    kb = f.k.known_bad.get("cublas-older-than-build-toolkit", {})
    builders = [p for p in _gpu(f) if p.identity and p.identity.build_toolkit]
    if not builders:
        return _f("cuda-toolkit-order", "pass", "no package says which toolkit built its kernels")
    libs = _locked_components(f)
    warn, info, ok = [], [], []
    for b in builders:
        assert b.identity is not None and b.identity.build_toolkit
        tk = b.identity.build_toolkit
        rt = cuda.release_of(tk)
        for lib, pl in libs:
            if pl.component == "nvcc" or cuda.release_key(pl.release)[0] != cuda.release_key(rt)[0]:
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
    src = str(kb.get("source", ""))
    if warn:
        return _f("cuda-toolkit-order", "warn", warn[0], warn[1:] + info + ok, src)
    if info:
        return _f("cuda-toolkit-order", "info",
                  "cuBLAS matches the build toolkit; other CUDA libraries are older than it: "
                  + "; ".join(info), ok, src)
    return _f("cuda-toolkit-order", "pass", "CUDA libraries are not older than the build toolkit", ok, src)


def native_floor(f: Facts) -> tuple[str | None, str, list[str]]:
    """(driver, what sets it, evidence): max floor over every placed CUDA component."""
    cands: list[tuple[str, str]] = []
    unplaced: list[str] = []
    for p in _gpu(f):
        i = p.identity
        assert i is not None
        for comp, ver, what in (("cudart", i.runtime, "runtime"), ("nvcc", i.build_toolkit, "build toolkit"),
                                ("cublas", i.cublas, "cuBLAS")):
            if not ver:
                continue
            pl = cuda.place(f.k, comp, ver)
            if pl is None:
                unplaced.append(f"{p.name} {what} {ver}")
            else:
                cands.append((pl.driver, f"{p.name} {p.version} {what} {ver} (CUDA {pl.label})"))
        if i.release and not i.runtime and not i.build_toolkit:
            rr = cuda.release_floor(f.k, i.release)
            if rr is not None:
                cands.append((rr.driver, f"{p.name} {p.version} CUDA {i.release} (GA floor)"))
    if not cands:
        return None, "", unplaced
    drv, what = max(cands, key=lambda c: DriverVersion.parse(c[0]))
    ev = [f"{w}: driver >= {d}" for d, w in cands] + [f"not in the table: {u}" for u in unplaced]
    return drv, what, ev


def compat_min(f: Facts) -> str | None:
    majors = {m for p in _gpu(f) if p.identity for m in p.identity.major}
    floors = [cuda.compat_floor(f.k, m) for m in majors]
    return driver_max(*(fl[0] for fl in floors if fl))


def rule_driver_native(f: Facts) -> Finding:
    """Native driver floor of the lock vs the host driver and the matrix's declared floor."""
    native, what, ev = native_floor(f)
    if native is None:
        return _f("driver-native", "pass", "the lock carries no CUDA runtime", ev, SRC_DRIVER)
    declared = f.matrix.driver_floor if f.matrix else None
    host = f.host.driver
    level, msgs = "pass", []
    if declared and DriverVersion.parse(declared) < DriverVersion.parse(native):
        level = "warn"
        msgs.append(f"declared floor {declared} is below the native floor {native} (set by {what}): on drivers "
                    f"from {declared} to {native} {f.matrix.name if f.matrix else 'it'} relies on minor-version "
                    f"compatibility; raise driver-floor to {native} in envs/"
                    f"{f.matrix.name if f.matrix else 'matrix'}.toml")
    if host is None:
        level = "fail" if level == "fail" else "warn"
        msgs.append(f"host driver unknown; the lock needs {native} natively (pass --driver or --probe)")
    elif declared and DriverVersion.parse(host) < DriverVersion.parse(declared):
        level = "fail"
        msgs.insert(0, f"driver upgrade required: host driver {host} is below the matrix's declared floor "
                       f"{declared} (native floor {native}); installing a new driver needs a reboot")
    elif DriverVersion.parse(host) >= DriverVersion.parse(native):
        msgs.append(f"host driver {host} meets the native floor {native}")
    else:
        msgs.append(f"host driver {host} is below the native floor {native} (see driver-compat)")
    return _f("driver-native", level, "; ".join(msgs), [f"native floor {native} set by {what}", *ev], SRC_DRIVER)


def rule_driver_compat(f: Facts) -> Finding:
    """Whether the host runs the lock only under minor-version compatibility."""
    native, _what, _ev = native_floor(f)
    cmin = compat_min(f)
    host = f.host.driver
    if native is None:
        return _f("driver-compat", "pass", "the lock carries no CUDA runtime", [], SRC_COMPAT)
    if host is None:
        return _f("driver-compat", "warn", "host driver unknown: cannot tell whether the lock runs",
                  [], SRC_COMPAT)
    if DriverVersion.parse(host) >= DriverVersion.parse(native):
        return _f("driver-compat", "pass", f"host driver {host} runs the lock natively (>= {native})",
                  [], SRC_COMPAT)
    ev = [f"native floor {native}", f"minor-version compatibility floor {cmin}"]
    if cmin and DriverVersion.parse(host) >= DriverVersion.parse(cmin):
        return _f("driver-compat", "warn",
                  f"host driver {host} runs this lock only under minor-version compatibility (>= {cmin}): "
                  "no JIT of PTX newer than the driver, so Triton/flashinfer JIT kernels are at risk; "
                  f"upgrade the driver to >= {native}", ev, SRC_COMPAT)
    return _f("driver-compat", "fail",
              f"host driver {host} is below the minor-version compatibility floor {cmin}: the CUDA runtime "
              f"will report 'driver too old'; upgrade the driver to >= {native}", ev, SRC_COMPAT)


def rule_gpu_arch(f: Facts) -> Finding:
    """Host compute capability vs the CUDA line, and vs the kernels compiled in."""
    if not f.host.ccs:
        return _f("gpu-arch", "warn", "host GPU compute capability unknown (pass --gpu-cc or --probe)")
    releases = {p.identity.release or (cuda.release_of(p.identity.build_toolkit)
                                       if p.identity.build_toolkit else None)
                for p in _gpu(f) if p.identity}
    releases |= {f"{m}.0" for p in _gpu(f) if p.identity for m in p.identity.major}
    bad, src, info = [], "", []
    for cc in f.host.ccs:
        for rel in sorted(r for r in releases if r):
            prob = cuda.arch_problem(f.k, cc, rel)
            if prob:
                bad.append(prob[0])
                src = prob[1]
        for p in _gpu(f):
            assert p.identity is not None
            archs = [a for a in p.identity.archs if a.startswith(("sm_", "compute_"))]
            if archs and not any(runs_on_name(a, cc) for a in archs):
                member = p.facts.binary.member if p.facts and p.facts.binary else "?"
                info.append(f"{member} ({p.name}) has kernels for {', '.join(archs)} only; none runs on "
                            f"compute capability {cc} (other extensions of {p.name} were not read)")
    if bad:
        return _f("gpu-arch", "fail", "; ".join(sorted(set(bad))) + ": use a CUDA line that supports this GPU",
                  info, src)
    cc_list = ", ".join(f.host.ccs)
    unreadable = f.host.unreadable_gpus
    if unreadable:
        which = ", ".join(f"GPU {g.index if g.index is not None else '?'} ({g.name or 'unnamed'}: "
                          f"{g.compute_capability or 'empty'})" for g in unreadable)
        return _f("gpu-arch", "warn", f"compute capability could not be read for {which}: this GPU is not "
                  f"judged (the others, {cc_list}, are supported by the CUDA line); check `nvidia-smi` "
                  "or pass --gpu-cc", info)
    if info:
        return _f("gpu-arch", "info", f"the CUDA line supports compute capability {cc_list}; " + info[0],
                  info[1:])
    return _f("gpu-arch", "pass", f"the CUDA line supports compute capability {cc_list}")


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
        _f("sdist-only", "fail", f"{len(sdist)} packages have no wheel and would be compiled on the host: "
           f"{'; '.join(sdist)}; pin versions with wheels or change the platform", sdist, SRC_SDIST)
        if sdist else _f("sdist-only", "pass", "every package installs from a wheel", [], SRC_SDIST)]
    if f.host.glibc is None:
        out.append(_f("platform-tag", "warn", "host glibc unknown (pass --glibc)", [], SRC_TAGS))
    elif plat:
        out.append(_f("platform-tag", "fail", f"wheels need a newer platform than the host: {'; '.join(plat)}; "
                      "pin older releases or target the host's glibc", plat, SRC_TAGS))
    else:
        out.append(_f("platform-tag", "pass", f"every wheel installs on glibc {f.host.glibc} {f.arch}",
                      [], SRC_TAGS))
    out.append(_f("python-tag", "fail", f"wheels do not match CPython {f.python}: {'; '.join(py)}; re-lock for "
                  "this Python", py, SRC_TAGS) if py else
               _f("python-tag", "pass", f"every wheel matches CPython {f.python}", [], SRC_TAGS))
    return out


def evaluate(f: Facts) -> list[Finding]:
    """Run every rule, in the documented order."""
    return [rule_identity(f), rule_torch_pin(f), rule_cuda_major(f), rule_toolkit_order(f),
            rule_driver_native(f), rule_driver_compat(f), rule_gpu_arch(f), *tag_rules(f)]


def verdict(findings: list[Finding]) -> str:
    worst = max((LEVELS.index(x.level) for x in findings), default=0)
    return {3: "fail", 2: "warn"}.get(worst, "pass")
