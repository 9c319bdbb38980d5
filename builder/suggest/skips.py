"""Candidates that data already rules out, without resolving them (pure, one rule per function).

Each rule returns a :class:`Skip` (its id and the fact that decides it, for the table) or
None.  Only facts that no resolution can change are used: the vLLM release's files on the
index, its own METADATA, the torch it pins and that torch's CUDA runtime pin.  What would
need the whole lock (a CUDA library another package pulls in, vLLM's own kernels) is left to
the checker.  An unknown fact (no host driver, no CUDA line) never skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from builder.check import knowledge as cuda
from builder.suggest.cudaline import CudaLine
from builder.versions import DriverVersion

#: The rule ids, in the order the search applies them.
RULES = ("no-wheel", "torch-pin", "torch-constraint", "cuda-driver", "native-floor", "cuda-arch")

SRC_COMPAT = "https://docs.nvidia.com/deploy/cuda-compatibility/index.html#minor-version-compatibility"


@dataclass(frozen=True, kw_only=True)
class Skip:
    rule: str
    fact: str


def no_wheel(*, found: bool, version: str, python: str, platform: str) -> Skip | None:
    """vLLM ``version`` has no wheel an installer on the target would take."""
    if found:
        return None
    return Skip(rule="no-wheel", fact=f"vLLM {version} has no wheel for CPython {python} on {platform} "
                                      "(an sdist would compile on the host)")


def torch_pin(requirement: str | None, *, available: bool, version: str) -> Skip | None:
    """vLLM ``version`` requires no torch, or a torch the index does not have at the date."""
    if requirement is None:
        return Skip(rule="torch-pin", fact=f"vLLM {version} requires no torch on this target")
    if not available:
        return Skip(rule="torch-pin", fact=f"vLLM {version} requires {requirement}, which the index does not "
                                           "have at the search date")
    return None


def torch_constraint(torch_version: str, spec: SpecifierSet | None, *, version: str) -> Skip | None:
    """The torch vLLM ``version`` needs is outside the operator's ``--torch SPEC``."""
    if spec is None:
        return None
    try:
        ok = spec.contains(Version(torch_version), prereleases=True)
    except InvalidVersion:
        ok = False
    if ok:
        return None
    return Skip(rule="torch-constraint", fact=f"vLLM {version} needs torch {torch_version}, outside --torch {spec}")


def cuda_driver(line: CudaLine | None, driver: str | None) -> Skip | None:
    """The host driver runs no CUDA runtime of torch's major, not even under minor-version
    compatibility (CUDA 12: >= 525.60.13; CUDA 13: >= 580.65.06, NVIDIA's compatibility guide)."""
    if line is None or driver is None or line.compat is None:
        return None
    if DriverVersion.parse(driver) >= DriverVersion.parse(line.compat):
        return None
    return Skip(rule="cuda-driver", fact=f"torch's CUDA {line.label} (cudart {line.runtime}) needs driver >= "
                                         f"{line.compat} even under minor-version compatibility; host has {driver}")


def native_floor(line: CudaLine | None, driver: str | None) -> Skip | None:
    """(``--native``, ``--strict``) The host driver is below the native floor of torch's CUDA
    release: the lock's floor is at least that high."""
    if line is None or driver is None or line.native is None:
        return None
    if DriverVersion.parse(driver) >= DriverVersion.parse(line.native):
        return None
    return Skip(rule="native-floor", fact=f"torch's CUDA {line.label} (cudart {line.runtime}) needs driver >= "
                                          f"{line.native} natively; host has {driver}")


def cuda_arch(line: CudaLine | None, ccs: Sequence[str], k: cuda.Knowledge) -> Skip | None:
    """A GPU of the host is older than torch's CUDA major supports (CUDA 13 starts at 7.5)."""
    if line is None:
        return None
    for cc in ccs:
        prob = cuda.major_floor_problem(k, cc, line.major)
        if prob is not None:
            return Skip(rule="cuda-arch", fact=f"torch's CUDA {line.label}: {prob[0]}")
    return None
