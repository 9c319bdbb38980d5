"""Reading TOML: tomli's compiled parser where it is installed, the stdlib's ``tomllib`` otherwise.

Hand-picked rather than ``tomllib`` everywhere: they are the same parser (CPython vendored tomli
2.0 as ``tomllib``), but tomli's PyPI wheels are compiled with mypyc and parse a 70 KB lock or
builder/data/cuda.toml about 3x faster (12 ms -> 4 ms here), which every warm ``builder check``
pays for the lock and the data files.  Both refuse nesting past their limit with RecursionError.
"""

from __future__ import annotations

from typing import Any

try:
    import tomli as _impl
except ImportError:  # a source checkout run without builder's dependencies installed
    import tomllib as _impl  # type: ignore[no-redef]

TOMLDecodeError = _impl.TOMLDecodeError


def loads(text: str) -> dict[str, Any]:
    """Parse TOML text (TOMLDecodeError on bad syntax, RecursionError on absurd nesting)."""
    return _impl.loads(text)


def load_path(path: Any) -> dict[str, Any]:
    """Parse the UTF-8 TOML file at ``path`` (a ``Path``)."""
    from builder import inputs

    return _impl.loads(inputs.read_bytes(path).decode("utf-8"))
