"""Finding external tools, lazily: importing this module runs nothing."""

from __future__ import annotations

import functools
import os
import re
import sys

from builder import _proc
from builder.errors import ToolNotFound

#: The uv release builder pins (pyproject.toml): lock bytes depend on it.
UV_PINNED = "0.13.9"


def explicit_exe(var: str, hint: str) -> str | None:
    """The executable the environment variable ``var`` names, None when it is unset or
    empty; ToolNotFound (with ``hint``) when it names no executable."""
    explicit = os.environ.get(var)
    if explicit and not os.access(explicit, os.X_OK):
        raise ToolNotFound(f"{var}={explicit} is not an executable", hint)
    return explicit or None


def uv_bin() -> str:
    """The uv executable: $BUILDER_UV, else the pinned ``uv`` package's binary, else PATH."""
    explicit = explicit_exe("BUILDER_UV", "unset BUILDER_UV or point it at uv")
    if explicit:
        return explicit
    try:
        import uv  # the PyPI package that ships the binary

        path: str = uv.find_uv_bin()
        return path
    except (ImportError, FileNotFoundError):
        pass
    beside = os.path.join(os.path.dirname(sys.executable), "uv")
    if os.access(beside, os.X_OK):
        return beside
    found = _proc.which("uv")
    if found:
        return found
    raise ToolNotFound("uv not found", f"pip install uv=={UV_PINNED} (builder pins it)")


@functools.cache
def uv_version(exe: str) -> str:
    """``0.13.9`` for the given uv binary."""
    res = _proc.run([exe, "--version"], timeout=30, check=True, what="uv --version")
    m = re.search(r"uv (\d+\.\d+\.\d+\S*)", res.stdout)
    return m.group(1) if m else res.stdout.strip()
