"""CUDA identity of a locked package, from the strongest evidence available (pure).

Evidence, strongest first: a local version label or a variant index URL
(``+cu128``, ``/whl/cu128``); ``Requires-Dist`` pins on CUDA component packages
(torch: cudart 12.8.90, cuBLAS 12.8.4.1); the wheel's binaries (``DT_NEEDED``
``libcudart.so.12``, nvcc's banner); "follows torch" for packages built
against torch's CUDA; the package's own name and version for component
packages (``nvidia-cublas-cu12 12.8.4.1``).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.check import knowledge as cuda
from builder.check.model import Identity, Pkg, WheelRef

_VARIANT = re.compile(r"(?:^|[+./-])(cu\d{3})(?:$|[/.+-])")


def pins(reqs: tuple[str, ...], env: dict[str, str]) -> dict[str, Requirement]:
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


def exact(req: Requirement) -> str | None:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator in ("==", "===") else None


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
    var = variant(p.version, url)
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
    if ident.kind == "unknown" and not is_platform(p.wheel) and p.facts is not None:
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
