"""Which GPU code runs on which GPU: NVIDIA's binary-compatibility rule, once (pure).

A CUDA binary carries SASS (``cubin``, machine code for one architecture) and/or
PTX (virtual ISA that the driver JIT-compiles).  Whether a GPU of compute
capability X.Y can run it (CUDA C++ Programming Guide, "Binary Compatibility" and
"PTX Compatibility"; Blackwell Compatibility Guide, 1.2
https://docs.nvidia.com/cuda/blackwell-compatibility-guide/ ;
"Family-Specific Architecture Features",
https://developer.nvidia.com/blog/nvidia-blackwell-and-nvidia-cuda-12-9-introduce-family-specific-architecture-features/):

* SASS ``sm_XY`` runs on X.Z with Z >= Y (same major, equal or newer minor);
* PTX ``compute_XY`` is JIT-compiled for any X'.Y' >= X.Y;
* ``a`` (architecture-specific, ``sm_90a``) code, SASS or PTX, runs on X.Y only;
* ``f`` (family-specific, ``sm_100f``, CUDA 12.9+) code runs on the same major
  with an equal or newer minor (``compute_100f`` JITs on 10.0 and 10.3, never on 11.x/12.x).

This is the only copy of the rule: the checker (``gpu-arch``), the smoke test's
``torch.cuda.get_arch_list()`` step and the fatbin coverage all call it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from builder.versions import compute_capability

_ARCH = re.compile(r"(?:(sm|compute)_)?(\d{2,3})([af]?)")


@dataclass(frozen=True, order=True)
class Arch:
    """One architecture target: ``number`` 89 is compute capability 8.9, 100 is 10.0."""

    number: int
    variant: str = ""  # "" | "a" (architecture-specific) | "f" (family-specific)

    def __post_init__(self) -> None:
        if self.variant not in ("", "a", "f") or not 10 <= self.number <= 999:
            raise ValueError(f"not a GPU architecture: {self.number}{self.variant}")

    @classmethod
    def parse(cls, text: str) -> Arch:
        """``"89"``, ``"sm_89"``, ``"compute_90a"``, ``"100f"`` -> Arch."""
        m = _ARCH.fullmatch(text.strip())
        if not m:
            raise ValueError(f"not a GPU architecture: {text!r}")
        return cls(int(m.group(2)), m.group(3))

    @property
    def cc(self) -> tuple[int, int]:
        return divmod(self.number, 10)

    @property
    def sm(self) -> str:
        return f"sm_{self.number}{self.variant}"

    @property
    def compute(self) -> str:
        return f"compute_{self.number}{self.variant}"

    def __str__(self) -> str:
        return f"{self.number}{self.variant}"


@dataclass(frozen=True)
class CodeGroup:
    """Fatbin containers (one per compiled source file) that carry the same targets."""

    containers: int
    sass: frozenset[Arch] = frozenset()
    ptx: frozenset[Arch] = frozenset()

    def names(self) -> list[str]:
        return [a.sm for a in sorted(self.sass)] + [a.compute for a in sorted(self.ptx)]


@dataclass(frozen=True)
class KernelArchs:
    """The code a binary carries: SASS and PTX targets, and (when read from the fatbin)
    how they are grouped per container.  Without groups only the union is known."""

    sass: frozenset[Arch] = frozenset()
    ptx: frozenset[Arch] = frozenset()
    groups: tuple[CodeGroup, ...] = ()

    @classmethod
    def of(cls, sass: list[str] | tuple[str, ...] = (), ptx: list[str] | tuple[str, ...] = (),
           groups: tuple[CodeGroup, ...] = ()) -> KernelArchs:
        return cls(frozenset(Arch.parse(s) for s in sass), frozenset(Arch.parse(p) for p in ptx), groups)

    def sass_names(self) -> list[str]:
        return [a.sm for a in sorted(self.sass)]

    def ptx_names(self) -> list[str]:
        return [a.compute for a in sorted(self.ptx)]

    def __bool__(self) -> bool:
        return bool(self.sass or self.ptx)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/TOML): ``sass``, ``ptx`` and ``groups`` as lists of names."""
        return {"sass": self.sass_names(), "ptx": self.ptx_names(),
                "groups": [{"containers": g.containers, "sass": [a.sm for a in sorted(g.sass)],
                            "ptx": [a.compute for a in sorted(g.ptx)]} for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KernelArchs:
        """Inverse of :meth:`to_dict`; raises ValueError/KeyError/TypeError on bad data."""
        groups = tuple(CodeGroup(int(g["containers"]), frozenset(Arch.parse(a) for a in g["sass"]),
                                 frozenset(Arch.parse(a) for a in g["ptx"])) for g in d.get("groups", ()))
        return cls.of(list(d["sass"]), list(d["ptx"]), groups)


def parse_cc(cc: str | tuple[int, int]) -> tuple[int, int]:
    """``"8.9"`` or ``(8, 9)`` -> (8, 9)."""
    return cc if isinstance(cc, tuple) else compute_capability(cc)


def runs_on(arch: Arch, cc: str | tuple[int, int], *, ptx: bool) -> bool:
    """Whether SASS (``ptx=False``) or PTX (``ptx=True``) for ``arch`` runs on ``cc``."""
    have, want = parse_cc(cc), arch.cc
    if arch.variant == "a":
        return have == want
    if arch.variant == "f" or not ptx:
        return have[0] == want[0] and have[1] >= want[1]
    return have >= want


def runs_on_name(name: str, cc: str) -> bool:
    """:func:`runs_on` for a target name as torch and nvcc spell it (``sm_89``, ``compute_80``,
    ``sm_90a``); False for a name or capability that does not parse."""
    m = re.fullmatch(r"(sm|compute)_(\d{2,3}[af]?)", name.strip())
    if m is None:
        return False
    try:
        return runs_on(Arch.parse(m.group(2)), cc, ptx=m.group(1) == "compute")
    except ValueError:
        return False


def _best(sass: frozenset[Arch], ptx: frozenset[Arch], cc: tuple[int, int]) -> tuple[str, Arch | None]:
    """("native" | "sass" | "jit" | "none", the target that runs)."""
    runs = sorted((a for a in sass if runs_on(a, cc, ptx=False)), reverse=True)
    if runs:
        return ("native" if runs[0].cc == cc else "sass"), runs[0]
    jit = sorted((a for a in ptx if runs_on(a, cc, ptx=True)), reverse=True)
    return ("jit", jit[0]) if jit else ("none", None)


def _union(sass: frozenset[Arch], ptx: frozenset[Arch], cc: tuple[int, int]) -> tuple[bool, str]:
    here = f"{cc[0]}.{cc[1]}"
    how, arch = _best(sass, ptx, cc)
    if arch is None:
        have = ", ".join([a.sm for a in sorted(sass)] + [a.compute for a in sorted(ptx)]) or "no GPU code at all"
        return False, (f"nothing runs on {here}: no SASS sm_{cc[0]}Y with Y <= {cc[1]} "
                       f"and no PTX at or below {here} ({have})")
    if how == "native":
        return True, f"{arch.sm} SASS runs natively on {here}"
    if how == "sass":
        return True, f"{arch.sm} SASS runs on {here} (same major, older minor)"
    return True, (f"no SASS for {here}; PTX {arch.compute} is JIT-compiled by the driver at first load "
                  "(slow first start; the driver must support the PTX's ISA version)")


def _relevant(g: CodeGroup, cc: tuple[int, int]) -> bool:
    """False for containers that only carry arch- or family-specific code for other GPUs:
    they were built for those GPUs (vLLM's Hopper/Blackwell-only kernels) and never run here."""
    return any(not a.variant for a in g.sass | g.ptx) or _best(g.sass, g.ptx, cc)[1] is not None


def covers(archs: KernelArchs, cc: str | tuple[int, int]) -> tuple[bool, str]:
    """Can a GPU of compute capability ``cc`` run this code, and why (one line).

    With per-container groups, the answer is that of the *main* group (the most
    containers among those meant for this GPU: the build's arch list), and the
    reason counts how many containers have code for ``cc``: one stray container
    with old PTX (vLLM 0.13.0 carries ``compute_52`` in one of 100) does not make
    a GPU supported, and kernels built only for newer GPUs (FP8 on 8.9+) are
    named as missing rather than failing the whole binary.  Without groups, the
    union of targets decides.
    """
    have = parse_cc(cc)
    if not archs.groups:
        return _union(archs.sass, archs.ptx, have)
    here = f"{have[0]}.{have[1]}"
    relevant = [g for g in archs.groups if _relevant(g, have)]
    if not relevant:
        return False, f"nothing runs on {here}: only arch-specific code for other GPUs"
    main = max(relevant, key=lambda g: (g.containers, len(g.sass | g.ptx), g.names()))
    ok, why = _union(main.sass, main.ptx, have)
    total = sum(g.containers for g in relevant)
    how = [(_best(g.sass, g.ptx, have)[0], g) for g in relevant]
    runnable = sum(g.containers for h, g in how if h != "none")
    jit = sum(g.containers for h, g in how if h == "jit")
    tail = f"{runnable} of {_n(total, 'kernel container')} have code for {here}"
    if jit:
        tail += f" ({jit} only as PTX)"
    missing = [g for h, g in how if h == "none"]
    if missing:
        named = [f"{g.containers} with {'/'.join(g.names())}" for g in missing]
        more = f" and {len(named) - 3} more groups" if len(named) > 3 else ""
        tail += "; no code in " + ", ".join(named[:3]) + more
    return ok, f"main arch list ({_n(main.containers, 'container')}, {'/'.join(main.names())}): {why}; {tail}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
