"""Manifests of fake runtimes, as ``builder build`` writes them (for tests that need a runtime
directory without building one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.runtime import manifest as manifests

SMOKE_OK: list[dict[str, str]] = [
    {"step": "import torch", "status": "pass", "reason": ""},
    {"step": "import vllm", "status": "pass", "reason": ""},
    {"step": "import vllm main extension", "status": "skipped", "reason": "no libcuda.so.1 on this host"},
    {"step": "vllm --help", "status": "skipped", "reason": "no GPU: vLLM could not infer a device type"},
    {"step": "torch.cuda.is_available()", "status": "skipped", "reason": "no GPU"},
]


def built(name: str, *, python: str = "3.12", smoke: list[dict[str, str]] | None = None,
          lock_sha256: str = "ab" * 32, base: str | None = None) -> dict[str, Any]:
    """The manifest (JSON) of a runtime built from a lock, called ``name`` (``matrix-<id>-py<XY>-...``)."""
    steps = smoke if smoke is not None else SMOKE_OK
    matrix = name.split("-py")[0].removeprefix("matrix-")
    return {"format": manifests.FORMAT, "name": name, "origin": manifests.LOCK, "matrix": matrix, "python": python,
            "base": base or ("conda" if "-conda-" in name else "venv"),
            "lock": {"path": f"locks/matrix-{matrix}/pylock.py{python.replace('.', '')}.toml",
                     "sha256": lock_sha256, "content": "sha256:" + "cd" * 32, "packages": 3},
            "built_at": "2026-11-30T00:00:00+00:00", "timings": {},
            "smoke": {"python": f"/srv/runtimes/{name}/bin/python", "gpu": False,
                      "ok": all(s["status"] != "fail" for s in steps), "seconds": 1.0,
                      "expected_from": "lock + spec", "steps": steps}}


def write_built(directory: Path, **kw: Any) -> Path:
    """Write the manifest of :func:`built` into ``directory`` (named like a runtime)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / manifests.FILE
    path.write_text(json.dumps(built(directory.name, **kw), indent=2))
    return path
