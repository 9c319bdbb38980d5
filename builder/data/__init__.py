"""builder's knowledge tables (TOML, each row with its source) and the one path of each.

``cuda.toml`` (CUDA releases, driver floors, components; read by :mod:`builder.check.knowledge`
and :mod:`builder.check.toolkit`), ``kernels.toml`` (GPU code of main extensions, by wheel
sha256; :mod:`builder.check.kerneldata`) and ``driver_branches.toml`` (NVIDIA driver branches;
:mod:`builder.driver.branches`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder.files import tomlread

HERE = Path(__file__).resolve().parent
CUDA = HERE / "cuda.toml"
KERNELS = HERE / "kernels.toml"
DRIVER_BRANCHES = HERE / "driver_branches.toml"


@functools.cache
def read(path: Path) -> Mapping[str, Any]:
    """One data file, parsed once per process (kept by content in builder's cache when a
    command has set :data:`builder.files.tomlread.data_hook`; the small branch table is
    parsed directly, as a memo entry would cost more than the parse)."""
    if path == DRIVER_BRANCHES:
        return tomlread.loads(path.read_text(encoding="utf-8"))
    return tomlread.load_data(path)
