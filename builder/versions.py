"""Typed versions with one parse and one comparison each (pure).

* :class:`DriverVersion`: an NVIDIA Linux driver version (``570.26``,
  ``575.57.08``, ``550.107.02``): a three-digit branch, then one or two numeric
  parts, compared field by field as numbers (575.57.08 > 570.124.06).  Used by
  check, preflight, verify-driver and the runbook.
* :func:`runs_on`: the one binary-compatibility rule, "does code for ``sm_X``
  (SASS) or ``compute_X`` (PTX) run on a GPU of compute capability ``Y``".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DRIVER = re.compile(r"^(\d{3})\.(\d{1,3})(?:\.(\d{1,3}))?$")
_CC = re.compile(r"^(\d{1,2})\.(\d{1,2})$")
_ARCH = re.compile(r"^(sm|compute)_(\d+)(\d)([af]?)$")


@dataclass(frozen=True, order=True)
class DriverVersion:
    """An NVIDIA driver version; ``DriverVersion.parse("575.57.08")``."""

    parts: tuple[int, ...]
    text: str = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> DriverVersion:
        """Parse NVIDIA's shape; ValueError for anything else (``999999999999.1.1``, ``575``, ``''``)."""
        s = str(text).strip()
        m = _DRIVER.match(s)
        if m is None:
            raise ValueError(f"not an NVIDIA driver version: {text!r} (expected e.g. 575.57.08 or 570.26)")
        return cls(tuple(int(g) for g in m.groups() if g is not None), s)

    @classmethod
    def maybe(cls, text: str | None) -> DriverVersion | None:
        """``parse``, or None for None/invalid text."""
        if text is None:
            return None
        try:
            return cls.parse(text)
        except ValueError:
            return None

    @property
    def branch(self) -> int:
        """The driver branch (series): 575 for 575.57.08."""
        return self.parts[0]

    def __str__(self) -> str:
        return self.text


def is_driver_version(text: str) -> bool:
    return DriverVersion.maybe(text) is not None


def driver_max(*versions: str | None) -> str | None:
    """The highest of some driver version strings (None ignored)."""
    present = [DriverVersion.parse(v) for v in versions if v]
    return str(max(present)) if present else None


def compute_capability(text: str) -> tuple[int, int]:
    """``"8.9"`` -> ``(8, 9)``; ValueError for anything else."""
    m = _CC.match(str(text).strip())
    if m is None:
        raise ValueError(f"not a compute capability: {text!r} (expected e.g. 8.9)")
    return int(m.group(1)), int(m.group(2))


def runs_on(arch: str, cc: str) -> bool:
    """Whether code for ``arch`` (``sm_89`` SASS, ``compute_80`` PTX) runs on a GPU of ``cc``.

    SASS for sm_XY runs on devices of the same major with minor >= Y; PTX for
    compute_XY is JIT-compiled for any device >= X.Y; ``a``/``f`` variants
    (sm_90a, sm_100f) use architecture-specific features and run only on that
    exact architecture (``f``: the same family, i.e. same major, minor >= Y).
    Source: NVIDIA CUDA C++ Programming Guide, "Binary Compatibility" and
    "PTX Compatibility",
    https://docs.nvidia.com/cuda/cuda-c-programming-guide/#binary-compatibility
    """
    m = _ARCH.match(arch)
    if m is None:
        return False
    want = (int(m.group(2)), int(m.group(3)))
    try:
        have = compute_capability(cc)
    except ValueError:
        return False
    kind, suffix = m.group(1), m.group(4)
    if suffix == "a":
        return have == want
    if suffix == "f" or kind == "sm":
        return have[0] == want[0] and have[1] >= want[1]
    return have >= want
