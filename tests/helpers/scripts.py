"""Stand-in executables for tests (a fake ``nvidia-smi``, ``uv``, ``pyenv`` ...)."""

from __future__ import annotations

from pathlib import Path


def sh(path: Path, body: str) -> Path:
    """An executable ``#!/bin/sh`` script at ``path`` (parent directories made) running ``body``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + ("" if body.endswith("\n") else "\n"))
    path.chmod(0o755)
    return path
