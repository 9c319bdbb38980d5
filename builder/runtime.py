"""Isolated runtimes: build a content-addressed environment from a lock.

Layout under the runtimes root (``runtimes/``, ``--root DIR`` or
``$BUILDER_RUNTIMES``)::

    matrix-a-py312-<hash12>/      a finished runtime (never moved, never edited)
        runtime.json              manifest: lock, interpreter, timings, smoke
        bin/python, lib/ ...      a relocatable venv (or a conda prefix)
    matrix-a-py312 -> matrix-a-py312-<hash12>   "current" pointer (symlink)
    .staging-<name>-<pid>-<tok>/  a build in progress (or a killed one)
    .trash-<name>-<tok>/          a replaced runtime being deleted
    .locks/<name>/.builder.lock   flock held by the one build of <name>

``<hash12>`` is the sha256 of the lock file (plus the base's identity for a
non-venv base).  A build happens in staging: base (interpreter), ``uv pip
sync`` of the lock with every hash verified, smoke tests, manifest; only then
is staging renamed into place (one ``rename``) and the pointer switched (a
symlink replaced by ``rename``).  A killed build leaves only a staging
directory, which the next build of any runtime removes once the build that
owned it is provably dead (its flock is free).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import hashlib
import importlib
import json
import os
import secrets
import shutil
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from builder import _proc, lockfile, tools
from builder.errors import (
    BuildError,
    Busy,
    BuilderError,
    LockFileError,
    StaleLock,
    ToolFailed,
    Unavailable,
    UsageError,
)
from builder.project import Project, select_pythons
from builder.protect import Protected
from builder.spec import Matrix

MANIFEST = "runtime.json"
MANIFEST_FORMAT = 1
VENV_TIMEOUT = 120.0
SYNC_TIMEOUT = 3600.0  # a cold matrix download is ~5 GB (FACTS.md)
LOCK_WAIT = 600.0

Progress = Callable[[str, str], None]


# --------------------------------------------------------------------------- bases


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
    folded into the runtime's content hash.
    """

    name: str

    def create(self, req: BaseRequest) -> BaseResult:
        """Create the environment in ``req.staging``; raise a BuilderError on failure."""
        ...


#: Bases by name -> "module:attribute" of a zero-argument factory returning a Base.
BASES: dict[str, str] = {
    "venv": "builder.runtime:VenvBase",
    "conda": "builder.conda_runtime:CondaRuntimeBase",
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


class VenvBase:
    """A relocatable ``uv venv`` on a discovered (or given) CPython X.Y."""

    name = "venv"

    def create(self, req: BaseRequest) -> BaseResult:
        from builder import interpreters

        found = interpreters.find(req.python, explicit=req.interpreter, protected=req.protected,
                                  uv=req.uv, env=req.env)
        # --relocatable: scripts and activators find the env relative to
        # themselves, so renaming staging into place keeps them working.
        argv = [req.uv, "venv", str(req.staging), "--python", found.path, "--relocatable",
                "--no-config", "--no-python-downloads", "--no-project", "--quiet",
                "--prompt", req.staging.name.split("-", 2)[-1] if False else req.matrix.name]
        res = _proc.run(argv, timeout=min(req.timeout, VENV_TIMEOUT), env=req.env, what="uv venv")
        if not res.ok:
            raise BuildError(f"uv venv failed: {res.stderr_tail(4) or 'timed out'}",
                             f"check the interpreter {found.path}")
        return BaseResult(python=req.staging / "bin" / "python", version=found.version,
                          source=found.source, origin=found.path, reason=found.reason,
                          details={"rejected": [list(r) for r in found.rejected]})
