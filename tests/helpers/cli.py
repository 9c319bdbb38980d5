"""Run the real ``builder`` CLI in a subprocess, as an operator would (shared by tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def builder_cmd(*args: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ if env is None else env)
    e.pop("BUILDER_PROJECT", None)
    return subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)
