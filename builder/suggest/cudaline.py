"""The CUDA line a torch wheel pins, from its ``Requires-Dist`` alone (pure).

torch's Linux wheels pin their CUDA runtime exactly: ``nvidia-cuda-runtime-cu12==12.4.127``
(torch 2.6.0), ``nvidia-cuda-runtime-cu12==12.8.90`` (2.9.0), or through NVIDIA's meta-package
``cuda-toolkit[cudart,...]==13.0.3`` (2.11 on).  The checker's own tables place that version
(:mod:`builder.check.components`: release, update, native driver floor) and give the major's
minor-version-compatibility floor (:mod:`builder.check.knowledge`), so a search can rule a
candidate out before resolving it.  A torch that pins no CUDA runtime (a CPU build, or pins
builder cannot read) has no line: nothing is decided from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builder.check import components, toolkit
from builder.check import knowledge as cuda
from builder.check.identity import component_pins, pins


@dataclass(frozen=True, kw_only=True)
class CudaLine:
    """torch's CUDA runtime: its major, release and update, and the drivers that run it."""

    major: int
    release: str  # 12.8
    update: int | None
    runtime: str  # the pinned cudart version, 12.8.90
    native: str | None  # lowest driver that runs the release natively (None: cuda.toml has no row)
    native_source: str
    compat: str | None  # lowest driver for the major under minor-version compatibility
    compat_source: str
    how: str  # the pin that says it

    @property
    def label(self) -> str:
        return cuda.release_label(self.release, self.update)

    def as_dict(self) -> dict[str, Any]:
        return {"major": self.major, "release": self.release, "update": self.update, "runtime": self.runtime,
                "native_floor": self.native, "compat_floor": self.compat, "how": self.how}


def torch_line(requires_dist: tuple[str, ...], env: dict[str, str], k: cuda.Knowledge,
               *, tk: toolkit.ToolkitKnowledge) -> CudaLine | None:
    """The CUDA line of a torch wheel for the target ``env``, or None when it pins no cudart."""
    for name, version, comp, major, how in component_pins(pins(requires_dist, env), k, tk):
        if comp != "cudart":
            continue
        m = major if major is not None else int(version.split(".")[0])
        pl = components.place(k, tk, "cudart", version=version, name=name)
        release = pl.release if pl else cuda.release_of(version)
        compat = cuda.compat_floor(k, m)
        return CudaLine(major=m, release=release, update=pl.update if pl else None, runtime=version,
                        native=pl.driver if pl else None, native_source=pl.source if pl else "",
                        compat=compat[0] if compat else None, compat_source=compat[1] if compat else "",
                        how=how)
    return None
