"""Programmatic spec edits that keep comments and layout (tomlkit)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from builder import paths
from builder.errors import SpecError, UsageError
from builder.fsio import atomic_write
from builder.project import Project
from builder.spec import matrix_from_mapping, read_toml


def parse_value(raw: str) -> Any:
    """``2.9.1`` stays a string; ``["3.11"]``, ``true`` and ``3`` are TOML values."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def set_value(path: Path, dotted: str, raw: str, project: Project | None = None) -> tuple[Any, Any]:
    """Set ``dotted`` (e.g. ``torch.version``) in the spec at ``path``.

    The path passes the write gate first (a project stored inside a protected
    env is refused); the edited document is validated before anything is
    written; the file is replaced atomically.  Returns (old value, new value).
    """
    target = paths.gate(path, what="edit the spec", project=project)
    data = read_toml(path)  # a readable, valid-TOML spec first: one line if not
    del data
    doc = tomlkit.parse(target.read_text(encoding="utf-8"))
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise UsageError(f"empty key path {dotted!r}", "use a dotted path like torch.version")
    node: Any = doc
    for i, k in enumerate(keys[:-1]):
        if k not in node:
            node[k] = tomlkit.table()
        node = node[k]
        if not isinstance(node, (Table, dict)):
            raise UsageError(f"{'.'.join(keys[: i + 1])} is not a table in {path}",
                             "set a key inside a table, e.g. torch.version")
    old = node.get(keys[-1])
    old_plain = old.unwrap() if hasattr(old, "unwrap") else old
    new = parse_value(raw)
    node[keys[-1]] = new
    stem = path.stem
    expect = stem[len("matrix-"):] if stem.startswith("matrix-") else None
    try:
        matrix_from_mapping(doc.unwrap(), str(path), expect_id=expect)
    except SpecError as exc:
        raise SpecError(exc.problems, "nothing was written") from None
    atomic_write(target, tomlkit.dumps(doc))
    return old_plain, new
