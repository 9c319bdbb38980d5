"""Reading TOML: tomli's compiled parser where it is installed, the stdlib's ``tomllib`` otherwise.

Hand-picked rather than ``tomllib`` everywhere: they are the same parser (CPython vendored tomli
2.0 as ``tomllib``), but tomli's PyPI wheels are compiled with mypyc and parse a 70 KB lock about
2x faster (12 ms -> 5.8 ms here with tomli 2.3.0), which every warm ``builder check`` pays for the
lock and the data files.  tomli stays below 2.4 (pyproject.toml): 2.4 reads TOML 1.1 (newlines in
inline tables, the ``\\e`` escape, times without seconds), which tomllib, tomlkit (``spec set``,
``lock --refresh``) and other readers of the specs refuse; builder reads TOML 1.0 either way
(tests/test_tomlread.py).  Both refuse nesting past their limit with RecursionError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from builder.files import inputs

try:
    import tomli as _impl
except ImportError:  # a source checkout run without builder's dependencies installed
    import tomllib as _impl  # type: ignore[no-redef]

TOMLDecodeError = _impl.TOMLDecodeError
#: The parser, for keys of parsed results kept elsewhere (builder.memo).
IMPL = f"{_impl.__name__} {getattr(_impl, '__version__', '')}".strip()
#: Set by :func:`builder.memo.use_for_data`: parses a data file's bytes, keeping the result.
data_hook: Callable[[bytes], dict[str, Any]] | None = None


def loads(text: str) -> dict[str, Any]:
    """Parse TOML text (TOMLDecodeError on bad syntax, RecursionError on absurd nesting)."""
    return _impl.loads(text)


def load_path(path: Any) -> dict[str, Any]:
    """Parse the UTF-8 TOML file at ``path`` (a ``Path``)."""
    return _impl.loads(inputs.read_bytes(path).decode("utf-8"))


def load_data(path: Any) -> dict[str, Any]:
    """Parse one of builder's own data files (``builder/data/*.toml``); a command that resolved
    builder's cache has :mod:`builder.memo` keep the result there (:data:`data_hook`)."""
    raw = inputs.read_bytes(path)
    if data_hook is not None:
        return data_hook(raw)
    return _impl.loads(raw.decode("utf-8"))
