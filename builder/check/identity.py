"""CUDA identity of a locked package, from the strongest evidence available (pure).

Evidence, strongest first: a local version label or a variant index URL
(``+cu128``, ``/whl/cu128``); ``Requires-Dist`` pins on CUDA component packages
(torch: cudart 12.8.90, cuBLAS 12.8.4.1); the wheel's binaries (``DT_NEEDED``
``libcudart.so.12``, nvcc's banner); "follows torch" for packages built
against torch's CUDA; the package's own name and version for component
packages (``nvidia-cublas-cu12 12.8.4.1``).
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Callable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.check import components, toolkit
from builder.check import knowledge as cuda
from builder.check.model import Identity, KernelEvidence, Pkg, WheelRef

_VARIANT = re.compile(r"(?:^|[+./-])(cu\d{3})(?:$|[/.+-])")


@functools.lru_cache(maxsize=4096)
def _requirement(r: str) -> Requirement | None:
    """One parse per distinct string: a check asks for torch's and vLLM's Requires-Dist (~300
    strings) for each identity, needs_binary decision and pin rule.  Callers only read the result."""
    try:
        return Requirement(r)
    except InvalidRequirement:
        return None


def pins(reqs: tuple[str, ...], env: dict[str, str]) -> dict[str, Requirement]:
    out: dict[str, Requirement] = {}
    for r in reqs:
        req = _requirement(r)
        if req is None:
            continue
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        out[canonicalize_name(req.name)] = req
    return out


def exact(req: Requirement) -> str | None:
    """The version of an exact pin (``==12.8.90``, ``==13.0.96.*``), else None."""
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "==="):
        return specs[0].version.removesuffix(".*")
    return None


def component_pins(pn: dict[str, Requirement], k: cuda.Knowledge,
                   tk: toolkit.ToolkitKnowledge) -> list[tuple[str, str, str, int | None, str]]:
    """Exact pins on CUDA component packages, directly or through ``cuda-toolkit[...]==X``:
    (package, version, component, CUDA major from the name, how it was pinned)."""
    out: list[tuple[str, str, str, int | None, str]] = []

    def add(n: str, req: Requirement, how: str) -> None:
        hit = components.component_of(k, tk, n)
        ver = exact(req)
        if hit is not None and ver is not None:
            out.append((n, ver, hit[0], hit[1], how))

    for n, req in sorted(pn.items()):
        if n == "cuda-toolkit":
            for r in toolkit.expand(tk, str(req)) or ():
                try:
                    inner = Requirement(r)
                except InvalidRequirement:
                    continue
                add(canonicalize_name(inner.name), inner, f"Requires-Dist: {req} -> {r}")
        else:
            add(n, req, f"Requires-Dist: {n}=={exact(req)}")
    return out


def is_platform(ref: WheelRef | None) -> bool:
    """True for a wheel with compiled code (not a pure-Python ``any`` wheel)."""
    return ref is not None and ref.platform


def variant(version: str, url: str | None) -> tuple[str, str] | None:
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


def needs_binary(k: cuda.Knowledge, tk: toolkit.ToolkitKnowledge, name: str,
                 *, env: dict[str, str]) -> Callable[[tuple[str, ...]], bool]:
    """Whether a GPU package's binaries must be read, given its Requires-Dist: not when it
    pins cudart exactly (directly or through cuda-toolkit), nor when it follows torch."""

    def decide(reqs: tuple[str, ...]) -> bool:
        pn = pins(reqs, env)
        if any(comp == "cudart" for _n, _v, comp, _m, _how in component_pins(pn, k, tk)):
            return False
        return not (name in k.follows_torch and "torch" in pn and exact(pn["torch"]))

    return decide


def identify(p: Pkg, k: cuda.Knowledge, env: dict[str, str], *, torch: Pkg | None,
             tk: toolkit.ToolkitKnowledge | None = None) -> Identity:
    """CUDA identity of a GPU package from label/URL, Requires-Dist pins and binaries."""
    tk = tk or toolkit.load()
    ident = Identity()
    url = p.wheel.url if p.wheel else None
    var = variant(p.version, url)
    if var:
        rel = cuda.variant_release(var[1])
        if rel:
            ident.release = rel
            ident.major.add(cuda.release_key(rel)[0])
            ident.add(var[0], f"{p.version} names {var[1]} (CUDA {rel})")
    if p.wheel is None and p.locked is not None and p.locked.source is not None:
        ident.built_on_host = True
        ident.evidence.append({"kind": "unknown", "detail": (
            f"no wheel for the target: the installer would compile {p.name} {p.version} from its sdist "
            "with whatever CUDA toolkit the host has; its CUDA identity is unknown until it is built")})
    pn: dict[str, Requirement] = {}
    if p.facts is not None:
        pn = pins(p.facts.requires_dist, env)
        for n, ver, comp, major, how in component_pins(pn, k, tk):
            pl = components.place(k, tk, comp, version=ver, name=n)
            ident.add("requires-dist", how + (f" (CUDA {pl.label})" if pl else ""))
            if comp == "cudart":
                major = major if major is not None else int(ver.split(".")[0])
                ident.runtime = ver
                ident.release = ident.release or (pl.release if pl else cuda.release_of(ver))
                ident.major.add(major)
                ident.cudart_soname = ident.cudart_soname or f"libcudart.so.{major}"
            elif comp == "cublas":
                ident.cublas = ver
        if "cuda-toolkit" in pn and not ident.runtime and toolkit.expand(tk, str(pn["cuda-toolkit"])) is None:
            ident.evidence.append({"kind": "unknown", "detail": (
                f"Requires-Dist: {pn['cuda-toolkit']}: a cuda-toolkit release builder/data/cuda.toml does not "
                "list (regenerate it with scripts/cuda_toolkit_rows.py)")})
        b = p.facts.binary
        if b is not None:
            ident.cudart_soname = b.cudart_soname
            ident.major.add(int(b.cudart_soname.rsplit(".", 1)[-1])) if b.cudart_soname else None
            ident.build_toolkit = b.toolkit
            if b.toolkit:
                ident.toolkit_from = f"nvcc banner in {b.member}"
            ident.archs = b.archs
            tk_txt = f", built with nvcc {b.toolkit}" if b.toolkit else ", no nvcc banner"
            ident.add("binary", f"{b.member} links {b.cudart_soname}{tk_txt}")
        elif p.facts.binary_scanned and not ident.major:
            ident.evidence.append({"kind": "binary", "detail": (
                f"no libcudart link in {', '.join(p.facts.members_read) or 'any extension read'}"
                f" ({p.facts.extensions} extensions)")})
        if p.facts.skipped:
            ident.evidence.append({"kind": "not-read", "detail": (
                f"not read (over the per-wheel read budget): {', '.join(p.facts.skipped)}")})
        if (ident.kind == "unknown" and p.name in k.follows_torch and torch is not None
                and torch.identity is not None and "torch" in pn and exact(pn["torch"])):
            t = torch.identity
            ident.major |= t.major
            ident.release, ident.runtime, ident.cudart_soname = t.release, t.runtime, t.cudart_soname
            ident.add("follows-torch", f"Requires-Dist: torch=={exact(pn['torch'])}; "
                                       f"built for torch's CUDA {t.release}")
    if ident.kind == "unknown" and not is_platform(p.wheel) and p.facts is not None:
        ident.jit_only = True
        ident.add("pure-python", "no compiled code in the wheel (any CUDA code is compiled at run time)")
    return ident


def own_kernels(p: Pkg, k: cuda.Knowledge) -> bool:
    """Whether ``p`` carries CUDA kernels built by its own toolkit (not torch's, not JIT):
    a package read from its binaries, or named by a variant label, that does not follow torch."""
    i = p.identity
    if i is None or i.jit_only or p.name == "torch" or p.name in k.follows_torch:
        return False
    return i.built_on_host or i.kind in ("binary", "local-version", "index-url") or p.name in k.main_extensions


def apply_kernels(ident: Identity, ev: KernelEvidence, k: cuda.Knowledge) -> None:
    """Attach a main extension's fatbin facts; its PTX ISA names the build toolkit's release
    when no nvcc banner did."""
    ident.kernels = ev
    rel = components.ptx_isa_release(k, ev.ptx_isa)
    if rel is None:
        return
    if ident.build_toolkit and cuda.release_of(ident.build_toolkit) != rel[0]:
        ident.evidence.append({"kind": "kernels", "detail": (
            f"{ev.member} carries PTX ISA {ev.ptx_isa} (CUDA {rel[0]}) while the banner says "
            f"{ident.build_toolkit}: the banner is kept")})
        return
    if not ident.build_toolkit:
        ident.build_release = rel[0]
        ident.toolkit_from = f"PTX ISA {ev.ptx_isa} of {ev.member}, {ev.origin}"
        ident.evidence.append({"kind": "kernels", "detail": f"build toolkit: CUDA {rel[0]} ({ident.toolkit_from})"})


def mark_toolkit_unknown(p: Pkg, k: cuda.Knowledge) -> None:
    """Say why a package with its own kernels has no known build toolkit."""
    i = p.identity
    if i is None or not own_kernels(p, k) or i.build_toolkit or i.build_release:
        return
    if i.built_on_host:
        i.toolkit_unknown = "built on the host from its sdist, by whatever toolkit the host has"
    elif p.facts is not None and p.facts.binary is not None:
        i.toolkit_unknown = (f"{p.facts.binary.member} carries no nvcc banner and builder has no fatbin "
                             f"data for {p.name} {p.version}'s main extension (check --deep reads it)")
    else:
        i.toolkit_unknown = "no extension read tells which toolkit built its kernels"


def nvidia_identity(name: str, version: str, k: cuda.Knowledge,
                    *, tk: toolkit.ToolkitKnowledge | None = None) -> Identity | None:
    """Identity of an nvidia-* / name-tagged package from its name and version alone.

    A CUDA component's major comes from its name (``nvidia-cufft`` is CUDA 13 whatever
    its version); its version is placed by the cuda-toolkit pins.  A component version no
    table places keeps its major but is marked ``unplaced`` (cuda-identity warns).
    """
    tk = tk or toolkit.load()
    hit = components.component_of(k, tk, name)
    ident = Identity()
    if hit is not None:
        comp, major = hit
        major = major if major is not None else int(version.split(".")[0])
        ident.major.add(major)
        pl = components.place(k, tk, comp, version=version, name=name)
        if pl is not None:
            where = f"CUDA {pl.label} ({pl.how})"
        elif components.versioning(tk, comp) == "own":
            where = f"CUDA {major} (released outside the toolkit, one version line for both majors)"
        else:
            where = f"CUDA {major}, a version no cuda-toolkit release in builder/data/cuda.toml pins"
            ident.unplaced = (f"{name} {version}: no cuda-toolkit release in builder/data/cuda.toml pins it "
                              "(newer than the table? regenerate it with scripts/cuda_toolkit_rows.py)")
        ident.add("version", f"{name} {version} is {comp} of {where}")
        if comp == "cudart":
            ident.runtime, ident.cudart_soname = version, f"libcudart.so.{major}"
            ident.release = pl.release if pl else cuda.release_of(version)
        elif comp == "cublas":
            ident.cublas = version
        return ident
    from_name = cuda.name_major(k, name)
    if from_name is not None:
        ident.major.add(from_name)
        ident.add("name", f"the name {name} names CUDA {from_name}")
        return ident
    return None
