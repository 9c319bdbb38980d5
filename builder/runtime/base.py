"""Runtime bases: what creates the bare environment (an interpreter, no packages).

A base is a small protocol (pypa/build's backends are the model): ``venv``
makes a relocatable ``uv venv`` on a discovered CPython; ``conda`` makes a
prefix from the matrix's conda lock (:mod:`builder.runtime.condabase`).  Bases are
registered by name and imported lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from builder import _proc
from builder.errors import BuildError, FilesystemRefused, UsageError
from builder.protect import Protected
from builder.spec import Matrix

VENV_TIMEOUT = 120.0


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
    protected: Protected | None = None
    final: Path | None = None  # where staging will be renamed to (conda prefixes embed it)
    cache: Path | None = None  # builder's (gated) cache: interpreter probe answers are kept there


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
    """Creates the bare environment (interpreter, no packages) of a runtime.

    A base may also define ``identity(matrix, python) -> str``: a string that
    changes whenever what it installs changes (e.g. its own lock's hash).  It is
    folded into the runtime's content address.  And ``finish(staging, final)``:
    called after the smoke tests, before the rename, to make the prefix hold at
    its final path.
    """

    name: str

    def create(self, req: BaseRequest) -> BaseResult:
        """Create the environment in ``req.staging``; raise a BuilderError on failure."""
        ...


#: Bases by name -> "module:attribute" of a zero-argument factory returning a Base.
BASES: dict[str, str] = {
    "venv": "builder.runtime.base:VenvBase",
    "conda": "builder.runtime.condabase:CondaRuntimeBase",
}


def get_base(name: str) -> Base:
    """Instantiate the base registered as ``name``."""
    if name not in BASES:
        raise UsageError(f"unknown base {name!r}", f"choose one of {', '.join(BASES)}")
    mod, attr = BASES[name].split(":")
    try:
        factory = getattr(importlib.import_module(mod), attr)
    except (ModuleNotFoundError, AttributeError):
        raise UsageError(f"base {name!r} is not available in this installation ({mod})") from None
    base: Base = factory()
    return base


def default_base(matrix: Matrix) -> str:
    """The base a matrix asks for: ``conda`` when its spec declares ``[conda]``, else ``venv``."""
    return "conda" if matrix.conda is not None else "venv"


def identity(base: Base, matrix: Matrix, python: str) -> str:
    """The base's identity for (matrix, python), "" when it has none."""
    fn = getattr(base, "identity", None)
    return str(fn(matrix, python)) if callable(fn) else ""


class VenvBase:
    """A relocatable ``uv venv`` on a discovered (or given) CPython X.Y."""

    name = "venv"

    def create(self, req: BaseRequest) -> BaseResult:
        from builder.runtime import interpreters

        found = interpreters.find(req.python, explicit=req.interpreter, protected=req.protected,
                                  uv=req.uv, env=req.env, cache=req.cache)
        # --relocatable: scripts and activators find the env relative to
        # themselves, so renaming staging into place keeps them working.
        argv = [req.uv, "venv", str(req.staging), "--python", found.path, "--relocatable",
                "--no-config", "--no-python-downloads", "--no-project", "--quiet",
                "--prompt", f"{req.matrix.name}-py{req.python}"]
        res = _proc.run(argv, timeout=min(req.timeout, VENV_TIMEOUT), env=req.env, what="uv venv")
        if not res.ok:
            refused = FilesystemRefused.from_tool_output(res.stderr, req.staging, "create the environment in")
            if refused is not None:
                raise refused
            raise BuildError(f"uv venv failed: {res.brief(4) or 'timed out'}",
                             f"check the interpreter {found.path}")
        return BaseResult(python=req.staging / "bin" / "python", version=found.version,
                          source=found.source, origin=found.path, reason=found.reason,
                          details={"rejected": [list(r) for r in found.rejected]})
