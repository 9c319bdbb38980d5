"""Driver floors of a lock (pure): the native floor (lowest driver that runs every loaded
CUDA component natively), the minor-version-compatibility floor, and the run-time
compilers that are newer than a driver.

The native floor is the highest floor over what a process loads (:mod:`builder.check.loaded`):
the CUDA runtime, the toolkit the loaded kernels were built with, and cuBLAS.  What is
not known is never a floor: a package whose build toolkit is unknown makes the floor a
*lower bound* (said, with why), and a release builder/data/cuda.toml has no driver row
for is named, never guessed.  Run-time compilers (nvJitLink, NVRTC, nvcc, crt, nvvm)
do not raise the floor: code they emit needs a driver of their release, a JIT risk
:func:`jit_risks` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.check import components
from builder.check import knowledge as cuda
from builder.check.loaded import LoadView
from builder.check.model import Facts, Pkg
from builder.versions import DriverVersion, driver_max


@dataclass
class NativeFloor:
    driver: str | None = None
    what: str = ""
    evidence: list[str] = field(default_factory=list)
    lower_bound: list[str] = field(default_factory=list)  # why the true floor may be higher
    no_row: list[str] = field(default_factory=list)  # releases without a driver row in cuda.toml


def _major(p: Pkg) -> int | None:
    return min(p.identity.major) if p.identity and p.identity.major else None


def _component_name(f: Facts, p: Pkg, component: str) -> str | None:
    """The package itself when it is that component (its pins place it exactly)."""
    hit = components.component_of(f.k, f.tk, p.name)
    return p.name if hit is not None and hit[0] == component else None


def native_floor(f: Facts, view: LoadView) -> NativeFloor:
    """Highest driver floor over every placed CUDA component a process loads."""
    out = NativeFloor()
    cands: list[tuple[str, str]] = []
    for p in sorted(f.packages.values(), key=lambda p: p.name):
        i = p.identity
        if i is None or not view.loaded(p):
            continue
        places: list[tuple[components.Place | None, str]] = []
        for comp, ver, what in (("cudart", i.runtime, "runtime"), ("nvcc", i.build_toolkit, "build toolkit"),
                                ("cublas", i.cublas, "cuBLAS")):
            if ver:
                pl = components.place(f.k, f.tk, comp, version=ver, name=_component_name(f, p, comp), major=_major(p))
                places.append((pl, f"{p.name} {p.version} {what} {ver}"))
        if i.build_release and not i.build_toolkit:
            places.append((components.release_place(f.k, "nvcc", i.build_release, release=i.build_release,
                                                    how=i.toolkit_from),
                           f"{p.name} {p.version} build toolkit ({i.toolkit_from})"))
        if i.release and not i.runtime and not i.build_toolkit and not i.build_release:
            rr = cuda.release_floor(f.k, i.release)
            places.append((components.Place("cudart", i.release, i.release, 0, rr.driver if rr else None,
                                            "GA floor", rr.source if rr else ""),
                           f"{p.name} {p.version} CUDA {i.release} (GA floor)"))
        for pl, label in places:
            if pl is None:
                out.evidence.append(f"not in the table: {label}")
                out.lower_bound.append(f"{label} is a version builder/data/cuda.toml cannot place")
            elif pl.driver is None:
                out.no_row.append(f"{label} (CUDA {pl.label}): builder/data/cuda.toml has no driver row for "
                                  f"CUDA {pl.release}")
            else:
                cands.append((pl.driver, f"{label} (CUDA {pl.label})"))
        if i.toolkit_unknown:
            out.lower_bound.append(f"{p.name} {p.version}'s build toolkit is unknown: {i.toolkit_unknown}")
    if cands:
        out.driver, out.what = max(cands, key=lambda c: DriverVersion.parse(c[0]))
    out.evidence = [f"{w}: driver >= {d}" for d, w in cands] + out.evidence + out.no_row
    return out


def compat_min(f: Facts, view: LoadView) -> str | None:
    """The minor-version-compatibility floor: the highest over the majors a process loads."""
    majors = {m for p in f.packages.values() if p.identity and view.loaded(p) for m in p.identity.major}
    floors = [cuda.compat_floor(f.k, m) for m in majors]
    return driver_max(*(fl[0] for fl in floors if fl))


def jit_risks(f: Facts, view: LoadView, host: str) -> list[str]:
    """Loaded run-time compilers of a newer CUDA release than the driver runs natively."""
    have, newest = components.driver_release(f.k, host)
    out: list[str] = []
    for p in sorted(f.packages.values(), key=lambda p: p.name):
        hit = components.component_of(f.k, f.tk, p.name)
        if hit is None or hit[0] not in f.k.jit_compilers or not view.loaded(p):
            continue
        pl = components.place(f.k, f.tk, hit[0], version=p.version, name=p.name)
        if pl is None:
            out.append(f"{p.name} {p.version}: a {hit[0]} release builder/data/cuda.toml cannot place, so whether "
                       f"driver {host} loads what it emits is unknown")
        elif have is None or cuda.release_key(pl.release) > cuda.release_key(have):
            if newest and not cuda.updates(f.k, pl.release):
                out.append(f"{p.name} {p.version} ({hit[0]}, CUDA {pl.label}): builder/data/cuda.toml has no driver "
                           f"row for CUDA {pl.release}, so whether driver {host} (CUDA {have} or newer) loads what "
                           "it emits is unknown")
            else:
                out.append(f"{p.name} {p.version} ({hit[0]}, CUDA {pl.label}) is newer than driver {host} "
                           f"(CUDA {have or 'older than the table'})")
    return out
