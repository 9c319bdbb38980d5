"""Which CUDA majors one process loads from a lock, and which per-major builds only sit
beside each other on disk (pure).

A process that imports vLLM loads torch, torchvision, torchaudio, vLLM and their
extensions (the *core*: packages whose CUDA identity comes from a variant label,
``Requires-Dist`` pins, their own binaries or torch), and the CUDA libraries those link.
Only binaries loaded together can disagree.  Packages that ship one build per CUDA
major in separate files (``nvidia-cutlass-dsl-libs-cu12`` / ``-cu13`` install
``nvidia_cutlass_dsl/cu12/...`` vs ``.../cu13/...`` and are picked at run time; CUDA 13
toolkit wheels install into ``nvidia/cu13/lib/``) coexist.  Two builds that install the
same file (cuDNN, NCCL, cuSPARSELt and NVSHMEM use one path for both majors) do not:
the one installed last wins and the process loads it.

:func:`analyze` says, with evidence, what is loaded, what conflicts, what coexists and
what builder cannot tell; ``cuda-major`` and the driver floors read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from builder.check import components
from builder.check.model import Facts, Pkg

CORE_KINDS = ("local-version", "index-url", "requires-dist", "binary", "follows-torch")
_SUFFIX = re.compile(r"-(?:cu\d{2}|cuda\d{2}x)$")
_NEEDED = re.compile(r"lib(cudart|cublas)\.so\.(\d+)$")


@dataclass
class LoadView:
    """What one process loads, and the evidence for it."""

    majors: set[int] = field(default_factory=set)  # the CUDA majors the core runs on
    core: list[str] = field(default_factory=list)  # "name version (CUDA N; evidence kind)"
    not_loaded: set[str] = field(default_factory=set)  # packages proven to sit beside, not load
    conflicts: list[str] = field(default_factory=list)  # fail: loaded together and disagreeing
    coexist: list[str] = field(default_factory=list)  # info: per-major builds in disjoint files
    unsure: list[str] = field(default_factory=list)  # warn: builder cannot tell whether it is loaded

    def loaded(self, p: Pkg) -> bool:
        return p.identity is not None and p.name not in self.not_loaded


def family(f: Facts, p: Pkg) -> str:
    """Packages that are one thing built per CUDA major share a family: a component
    (``nvidia-cublas-cu12`` and ``nvidia-cublas``), or a name without its major suffix
    (``nvidia-cutlass-dsl-libs-cu12`` / ``-cu13``)."""
    hit = components.component_of(f.k, f.tk, p.name)
    return f"component {hit[0]}" if hit is not None else _SUFFIX.sub("", p.name)


def _by_family(f: Facts) -> dict[str, list[Pkg]]:
    out: dict[str, list[Pkg]] = {}
    for p in sorted(f.packages.values(), key=lambda p: p.name):
        if p.identity is not None and p.identity.major:
            out.setdefault(family(f, p), []).append(p)
    return out


def wants_file_lists(f: Facts) -> set[str]:
    """Packages whose file lists decide coexistence: members of a family present for
    more than one CUDA major."""
    out: set[str] = set()
    for members in _by_family(f).values():
        majors = {m for p in members for m in (p.identity.major if p.identity else ())}
        if len(majors) > 1:
            out |= {p.name for p in members}
    return out


def _major(p: Pkg) -> str:
    assert p.identity is not None
    return "/".join(str(m) for m in sorted(p.identity.major))


def _libs(files: tuple[str, ...]) -> set[str]:
    return {x for x in files if components.is_shared_library(x) and ".dist-info/" not in x}


def _dirs(files: set[str]) -> str:
    tops = sorted({"/".join(x.split("/")[:2]) + "/" if x.count("/") >= 2 else x for x in files})
    return ", ".join(tops[:3]) + (f" and {len(tops) - 3} more" if len(tops) > 3 else "")


def _compare(f: Facts, x: Pkg, y: Pkg) -> tuple[str, str] | None:
    """("conflict" | "coexist", evidence) for two builds of one family on different majors,
    from their file lists, else from builder/data/cuda.toml's install paths; None if unknown."""
    if x.files is not None and y.files is not None:
        lx, ly = _libs(x.files), _libs(y.files)
        shared = sorted(lx & ly)
        if shared:
            return "conflict", (f"{x.name} {x.version} (CUDA {_major(x)}) and {y.name} {y.version} (CUDA {_major(y)}) "
                                f"both install {', '.join(shared[:3])}: the one installed last wins, and a process "
                                "loads that build whatever its major")
        return "coexist", (f"{x.name} {x.version} (CUDA {_major(x)}) and {y.name} {y.version} (CUDA {_major(y)}) "
                           f"install disjoint libraries ({len(lx)} under {_dirs(lx) or '-'} vs {len(ly)} under "
                           f"{_dirs(ly) or '-'}; wheel file lists): per-major builds, one is picked at run time")
    hit = components.component_of(f.k, f.tk, x.name)
    if hit is None or x.identity is None or y.identity is None:
        return None
    px = components.install_paths(f.tk, hit[0], min(x.identity.major))
    py = components.install_paths(f.tk, hit[0], min(y.identity.major))
    if not px or not py:
        return None
    if set(px) & set(py):
        return "conflict", (f"{x.name} and {y.name} both install {sorted(set(px) & set(py))[0]} "
                            "(builder/data/cuda.toml): the one installed last wins")
    return "coexist", (f"{x.name} installs {px[0]}, {y.name} installs {py[0]} (builder/data/cuda.toml): "
                       "disjoint per-major builds")


def analyze(f: Facts) -> LoadView:
    """Majors loaded by one process, conflicts, coexisting builds and unknowns."""
    v = LoadView()
    ided = [p for p in sorted(f.packages.values(), key=lambda p: p.name) if p.identity is not None]
    core = [p for p in ided if p.identity and p.identity.major and p.identity.kind in CORE_KINDS]
    by_major: dict[int, list[Pkg]] = {}
    for p in core:
        assert p.identity is not None
        for m in p.identity.major:
            by_major.setdefault(m, []).append(p)
    v.core = [f"{p.name} {p.version} (CUDA {_major(p)}; {p.identity.kind})" for p in core if p.identity]
    if len(by_major) > 1:
        v.conflicts.append("loaded together on different majors: " + "; ".join(
            f"CUDA {m}: {', '.join(f'{p.name} {p.version}' for p in ps)}" for m, ps in sorted(by_major.items())))
    v.majors = set(by_major)
    if not v.majors:  # no framework in the lock: its libraries say what a process would load
        v.majors = {m for p in ided if p.identity for m in p.identity.major}
        if len(v.majors) > 1:
            v.unsure.append("no package that a process imports (torch, vLLM, ...) says which CUDA major it "
                            f"loads; the lock has libraries for CUDA {', '.join(map(str, sorted(v.majors)))}")
            return v
    fams = _by_family(f)
    core_names = {p.name for p in core}
    for p in ided:
        i = p.identity
        if i is None or not i.major or i.major <= v.majors or p.name in core_names:
            continue
        fam = family(f, p)
        peers = [q for q in fams.get(fam, []) if q.identity and q.identity.major <= v.majors]
        if peers:
            verdicts = [c for c in (_compare(f, p, q) for q in peers) if c is not None]
            if any(kind == "conflict" for kind, _ev in verdicts):
                v.conflicts += [ev for kind, ev in verdicts if kind == "conflict"]
            elif verdicts:
                v.coexist += [ev for _kind, ev in verdicts]
                v.not_loaded.add(p.name)
            else:
                v.unsure.append(f"{p.name} {p.version} (CUDA {_major(p)}) beside {peers[0].name} "
                                f"(CUDA {_major(peers[0])}): their file lists were not read")
            continue
        hit = components.component_of(f.k, f.tk, p.name)
        loaded_major = min(v.majors)
        if hit is not None:
            mine = components.install_paths(f.tk, hit[0], min(i.major))
            theirs = components.install_paths(f.tk, hit[0], loaded_major)
            if mine and theirs and set(mine) & set(theirs):
                v.conflicts.append(f"{p.name} {p.version} is the CUDA {_major(p)} build of {hit[0]} and installs "
                                   f"{sorted(set(mine) & set(theirs))[0]}, the file the CUDA {loaded_major} packages "
                                   "load (builder/data/cuda.toml)")
            else:
                v.coexist.append(f"{p.name} {p.version} (CUDA {_major(p)}) installs "
                                 f"{mine[0] if mine else 'its own files'}; the CUDA {loaded_major} packages load "
                                 f"{theirs[0] if theirs else 'their own build'}: installed beside, not loaded")
                v.not_loaded.add(p.name)
            continue
        v.unsure.append(f"{p.name} {p.version} is built for CUDA {_major(p)} ({i.kind}) while the process "
                        f"loads CUDA {loaded_major}: builder cannot tell whether it is imported into that process")
    _providers(f, core, v)
    return v


def _providers(f: Facts, core: list[Pkg], v: LoadView) -> None:
    """An extension that links libcudart.so.N / libcublas.so.N needs a package that installs it."""
    installed: set[str] = set()
    for p in f.packages.values():
        hit = components.component_of(f.k, f.tk, p.name)
        if hit is not None and p.identity is not None:
            for major in p.identity.major:
                installed |= set(components.sonames(f.tk, hit[0], major))
        if p.files is not None:
            installed |= {x.rsplit("/", 1)[-1] for x in _libs(p.files)}
    for p in core:
        b = p.facts.binary if p.facts else None
        if b is None:
            continue
        for lib in b.needed:
            m = _NEEDED.fullmatch(lib)
            # only majors whose component packages builder knows (12, 13): older torch builds
            # bundled their own runtime, which no package name tells
            if m and components.sonames(f.tk, "cudart", int(m.group(2))) and lib not in installed:
                v.conflicts.append(f"{b.member} ({p.name} {p.version}) links {lib}, which no package in the lock "
                                   "installs: it loads only if the host happens to provide it")
