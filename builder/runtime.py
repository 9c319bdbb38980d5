"""Isolated runtimes: build a content-addressed environment from a lock.

(Work in progress: the Base protocol below is stable; the build follows.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from builder.spec import Matrix


@dataclass(frozen=True, kw_only=True)
class BaseRequest:
    """What a base gets to create the interpreter of a runtime.

    ``staging`` exists and is empty; the base must create the environment *in*
    it (``staging`` itself is the environment prefix), never elsewhere.
    ``env`` is already scrubbed (``_proc.clean_env``): pass it to every child.
    """

    staging: Path
    python: str  # "3.12"
    matrix: Matrix
    uv: str  # the uv executable builder uses
    env: Mapping[str, str]
    interpreter: str | None = None  # --interpreter PATH, if the user gave one
    timeout: float = 600.0


@dataclass(frozen=True, kw_only=True)
class BaseResult:
    """The environment a base created.

    ``python`` is the interpreter *inside* ``staging`` (e.g. staging/bin/python)
    that ``uv pip sync --python`` installs into; ``source``/``reason`` say where
    its Python came from (shown by ``builder build`` and in the manifest).
    """

    python: Path
    version: str  # full version, e.g. "3.12.1"
    source: str  # "interpreter" | "path" | "pyenv" | "uv" | "conda" ...
    origin: str  # the base interpreter or conda lock used
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


class Base(Protocol):
    """Creates the bare environment (interpreter, no packages) of a runtime."""

    name: str

    def create(self, req: BaseRequest) -> BaseResult:
        """Create the environment in ``req.staging``; raise a BuilderError on failure."""
        ...


#: Bases by name -> "module:attribute" of a zero-argument factory returning a Base.
BASES: dict[str, str] = {
    "venv": "builder.runtime:VenvBase",
    "conda": "builder.conda_runtime:CondaRuntimeBase",
}
