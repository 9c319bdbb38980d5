"""Run the real ``builder`` CLI in a subprocess, as an operator would (shared by tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def builder_cmd(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
                wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m builder ARGS`` in ``cwd`` (``BUILDER_PROJECT`` removed from ``env``), run
    under ``wrap`` (e.g. ``["prlimit", "--fsize=64", "--"]``) when given."""
    e = dict(os.environ if env is None else env)
    e.pop("BUILDER_PROJECT", None)
    return subprocess.run([*(wrap or []), sys.executable, "-m", "builder", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)
