"""Typed versions with one parse and one comparison each (pure).

* :class:`DriverVersion`: an NVIDIA Linux driver version (``570.26``,
  ``575.57.08``, ``550.107.02``): a three-digit branch, then one or two numeric
  parts, compared field by field as numbers (575.57.08 > 570.124.06).  Used by
  check, preflight, verify-driver and the runbook.
* :func:`compute_capability`: ``"8.9"`` -> ``(8, 9)``, one parse.

The binary-compatibility rule ("does SASS/PTX for sm_X run on cc Y") is
:mod:`builder.binaries.archcompat`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DRIVER = re.compile(r"^(\d{3})\.(\d{1,3})(?:\.(\d{1,3}))?$")
_CC = re.compile(r"^(\d{1,2})\.(\d)$")


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
