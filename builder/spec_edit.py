"""Programmatic spec edits that keep comments and layout (tomlkit)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from builder import paths
from builder.errors import SpecError, UsageError
from builder.files import inputs, tomlread
from builder.files.fsio import atomic_write
from builder.project import Project
from builder.spec import Matrix, matrix_from_mapping, read_toml


def parse_value(raw: str) -> Any:
    """``2.9.1`` stays a string; ``["3.11"]``, ``true`` and ``3`` are TOML values.

    A value nested past the TOML parser's limit is a SpecError (exit 2), as the same
    nesting in a spec file is for ``spec validate``.
    """
    try:
        return tomlread.loads(f"v = {raw}")["v"]
    except tomlread.TOMLDecodeError:
        return raw
    except RecursionError:
        raise SpecError(["the value: TOML nested too deeply"], "a spec value needs only a few levels of arrays "
                        "and tables; nothing was written") from None


def edit_text(text: str, path: Path, dotted: str, *, value: Callable[[Any], Any]) -> tuple[str, Matrix, Any, Any]:
    """Set ``dotted`` in the spec ``text`` (read from ``path``) to ``value(old value)``; write nothing.

    Returns (new text, the validated matrix, old value, new value).  The edited
    document is validated first: an invalid result raises SpecError.
    """
    doc = tomlkit.parse(text)
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
    new = value(old_plain)
    node[keys[-1]] = new
    stem = path.stem
    expect = stem[len("matrix-"):] if stem.startswith("matrix-") else None
    try:
        matrix = matrix_from_mapping(doc.unwrap(), str(path), expect_id=expect)
    except SpecError as exc:
        raise SpecError(exc.problems, "nothing was written") from None
    return tomlkit.dumps(doc), matrix, old_plain, new


def set_value(path: Path, dotted: str, raw: str, *, project: Project | None = None) -> tuple[Any, Any]:
    """Set ``dotted`` (e.g. ``torch.version``) in the spec at ``path``.

    The path passes the write gate first (a project stored inside a protected
    env is refused); the edited document is validated before anything is
    written; the file is replaced atomically.  Returns (old value, new value).
    """
    target = paths.gate(path, what="edit the spec", project=project)
    read_toml(path)  # a readable, valid-TOML spec first: one line if not
    text = inputs.read_text(target)
    new_text, _matrix, old, new = edit_text(text, path, dotted, value=lambda _old: parse_value(raw))
    atomic_write(target, new_text)
    return old, new


def new_matrix_text(fields: Mapping[str, Any], path: Path, *, header: Sequence[str] = (),
                    comments: Mapping[str, str] | None = None) -> tuple[str, Matrix]:
    """A new matrix spec for ``path`` from ``fields`` (keys as in ``envs/matrix-*.toml``; a
    mapping value becomes a table), ``header`` comment lines first and an end-of-line comment
    per top-level or dotted key in ``comments``.  Validated before it is returned; writes nothing.
    """
    doc = tomlkit.document()
    for line in header:
        doc.add(tomlkit.comment(line))
    for key, value in fields.items():
        if isinstance(value, Mapping):
            table = tomlkit.table()
            for k, v in value.items():
                table.add(k, v)
            doc.add(tomlkit.nl())
            doc.add(key, table)
        else:
            doc.add(key, value)
    for dotted, text in (comments or {}).items():
        node: Any = doc
        *parents, last = dotted.split(".")
        for k in parents:
            node = node[k]
        node[last].comment(text)
    stem = path.stem
    expect = stem[len("matrix-"):] if stem.startswith("matrix-") else None
    text = tomlkit.dumps(doc)
    try:
        matrix = matrix_from_mapping(tomlread.loads(text), str(path), expect_id=expect)
    except SpecError as exc:
        raise SpecError(exc.problems, "nothing was written") from None
    return text, matrix


def create(path: Path, text: str, *, project: Project | None = None, replace: bool = False) -> Path:
    """Write a new spec file at ``path`` through the write gate, atomically; an existing file
    is replaced only with ``replace`` (else UsageError, nothing written)."""
    target = paths.gate(path, what="write the spec", project=project)
    if target.exists() and not replace:
        raise UsageError(f"{path} exists", "choose another id, or pass --force to replace it")
    atomic_write(target, text)
    return target
