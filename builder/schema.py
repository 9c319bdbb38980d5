"""A tiny declarative validator for TOML mappings (pure).

Hand-written rather than using a schema library on purpose: we need every
problem reported in one pass, each with its file, dotted path and a "did you
mean" for unknown keys, and exact messages that tests can assert.  jsonschema
or pydantic would need as much glue to produce those messages as this does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Check = Callable[[Any], str | None]
"""Returns None when the value is fine, else a short reason."""


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    required: bool = False
    check: Check | None = None
    item: type | None = None  # for lists: the type of each item
    table: Mapping[str, Field] | None = None  # for nested tables
    array_of_tables: bool = False


@dataclass
class Problems:
    """Collects problems; each one is ``file: dotted.path: message``."""

    source: str
    items: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        where = f"{self.source}: {path}" if path else self.source
        self.items.append(f"{where}: {message}")


def suggest(name: str, known: list[str]) -> str:
    import difflib  # only for a problem: valid specs need not load it

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "an array",
             dict: "a table", float: "a number", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def validate(
    data: Mapping[str, Any], schema: Mapping[str, Field], problems: Problems, *, prefix: str = ""
) -> None:
    """Check ``data`` against ``schema``, adding every problem to ``problems``."""
    known = sorted(schema)
    for key in data:
        if key not in schema:
            path = f"{prefix}{key}"
            problems.add(path, "unknown key" + suggest(str(key), known))
    for key, spec in schema.items():
        path = f"{prefix}{key}"
        if key not in data:
            if spec.required:
                problems.add(path, "required key is missing")
            continue
        value = data[key]
        if spec.array_of_tables:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                problems.add(path, "must be an array of tables")
                continue
            for i, sub in enumerate(value):
                validate(sub, spec.table or {}, problems, prefix=f"{path}[{i}].")
            continue
        if not _is(value, spec.kind):
            problems.add(path, f"must be {_type_name(spec.kind)}, got {value!r}")
            continue
        if spec.table is not None and isinstance(value, dict):
            validate(value, spec.table, problems, prefix=f"{path}.")
        if spec.item is not None and isinstance(value, list):
            for i, v in enumerate(value):
                if not _is(v, spec.item):
                    problems.add(f"{path}[{i}]", f"must be {_type_name(spec.item)}, got {v!r}")
                elif spec.check is not None:
                    reason = spec.check(v)
                    if reason:
                        problems.add(f"{path}[{i}]", reason)
        elif spec.check is not None:
            reason = spec.check(value)
            if reason:
                problems.add(path, reason)
