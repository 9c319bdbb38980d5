"""builder's knowledge tables (TOML, each row with its source): the one path of each, and the
one loader that parses and validates them.

``cuda.toml`` (CUDA releases, driver floors, components; read by :mod:`builder.check.knowledge`
and :mod:`builder.check.toolkit`), ``kernels.toml`` (GPU code of main extensions, by wheel
sha256; :mod:`builder.check.kerneldata`) and ``driver_branches.toml`` (NVIDIA driver branches;
:mod:`builder.driver.branches`) and ``requires.toml`` (what the search reads of the vLLM and
torch wheels' METADATA, by wheel sha256; :mod:`builder.suggest.known`).

:func:`read` checks every table of a file against its :data:`LAYOUTS` entry (keys, their
kinds, unknown keys; :mod:`builder.schema`, as for the specs) before any model is built from
it, so a reader may index a row without a ``KeyError``: a bad row is a
:class:`~builder.errors.DataFileError`, one line naming the file, the table, the row and the key
(``builder/data/cuda.toml: release[3].update: must be an integer, got '1'``).  The generators of
the tables live in ``scripts/``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from builder.errors import DataFileError
from builder.files import tomlread
from builder.schema import Field, Problems, validate

HERE = Path(__file__).resolve().parent
CUDA = HERE / "cuda.toml"
KERNELS = HERE / "kernels.toml"
DRIVER_BRANCHES = HERE / "driver_branches.toml"
REQUIRES = HERE / "requires.toml"


def _string_lists(value: Any) -> str | None:
    ok = all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in value.values())
    return None if ok else "must map each name to an array of strings"


_KINDS = {"str": Field(str, required=True), "int": Field(int, required=True),
          "strs": Field(list, required=True, item=str), "tables": Field(list, required=True, item=dict),
          "str-lists": Field(dict, required=True, check=_string_lists)}


def _keys(required: str, optional: str = "") -> dict[str, Field]:
    """Fields from ``"key:kind key:kind"`` (kinds: str, int, strs, tables, str-lists)."""
    out = {k: _KINDS[v] for k, v in (item.split(":") for item in required.split())}
    for k, v in (item.split(":") for item in optional.split()):
        out[k] = Field(_KINDS[v].kind, item=_KINDS[v].item, check=_KINDS[v].check)
    return out


def _rows(required: str, optional: str = "") -> Field:
    return Field(list, required=True, array_of_tables=True, table=_keys(required, optional))


def _table(required: str) -> Field:
    return Field(dict, required=True, table=_keys(required))


#: A wheel of requires.toml: ``"<sha256> <file name>"`` (checked here, split by builder.suggest.known).
WHEEL_ENTRY = re.compile(r"([0-9a-f]{64}) (\S+\.whl)")


def _wheel_entry(value: Any) -> str | None:
    ok = WHEEL_ENTRY.fullmatch(value)
    return None if ok else f"must be '<sha256> <wheel file name>', got {value!r}"


def _schema(number: int) -> Field:
    return Field(int, required=True, check=lambda v: None if v == number else f"expected {number}, got {v!r}")


#: Every key of every table of each data file, and the command that regenerates the file.
LAYOUTS: dict[str, tuple[Mapping[str, Field], str]] = {
    CUDA.name: ({
        "schema": _schema(1),
        "release": _rows("release:str update:int driver:str source:str"),
        "compat": _rows("major:int driver:str source:str"),
        "components": _table("release-from-version:strs"),
        "component": _rows("component:str version:str release:str update:int source:str"),
        "package": _rows("name:str component:str source:str"),
        "packages": _table("gpu:strs follows-torch:strs neutral:strs source:str name-patterns:strs tools:strs "
                           "tools-source:str"),
        "python-bindings": _rows("package:str source:str", "meta-from:str"),
        "bindings-driver": _rows("major:int driver:str source:str"),
        "bindings-use": _table("users:strs not-imported-by:str not-imported-versions:str source:str"),
        "arch-floor": _rows("major:int min-cc:str source:str"),
        "arch-intro": _rows("cc:str release:str source:str"),
        "known-bad": _rows("id:str component:str symptom:str example:str fix:str source:str", "also:strs"),
        "main-extension": _rows("package:str members:strs source:str"),
        "ptx-isa": _rows("isa:str release:str source:str"),
        "jit": _table("compilers:strs source:str"),
        "cuda-component": _rows("component:str name:str extra:str cu12:str cu13:str versioning:str files12:str "
                                "files13:str files-source:str source:str"),
        "cuda-toolkit": _rows("version:str release:str update:int kind:str uploaded:str sha256:str source:str "
                              "extras:str-lists", "of:str note:str"),
        "toolkit-user": _rows("package:str version:str requires:str also:strs source:str"),
    }, "scripts/cuda_toolkit_rows.py (its generated block)"),
    KERNELS.name: ({
        "schema": _schema(2),
        "kernels": _rows("package:str version:str arch:str wheel:str wheel_sha256:str wheel_size:int uploaded:str "
                         "member:str member_size:int member_crc32:int sass:strs ptx:strs groups:tables "
                         "nvcc_banners:int containers:int entries:int produced_by:str reader_version:int date:str "
                         "source:str bytes_transferred:int", "ptx_isa:str nvcc:str nvcc_release:str"),
    }, "scripts/kernel_data.py"),
    REQUIRES.name: ({
        "schema": _schema(1),
        "gpu": Field(list, required=True, item=str),
        "release": Field(list, required=True, array_of_tables=True, table={
            **_keys("package:str version:str arch:str requires:strs source:str date:str"),
            "wheels": Field(list, required=True, item=str, check=_wheel_entry)}),
    }, "scripts/requires_data.py"),
    DRIVER_BRANCHES.name: ({
        "branch": _rows("series:int kind:str source:str", "eol:str eol-by:str cuda:str"),
    }, ""),
}


def display(path: Path) -> str:
    """How a message names a data file: ``builder/data/cuda.toml`` for a shipped one."""
    return f"builder/data/{path.name}" if path.parent == HERE else str(path)


def problems_of(path: Path, doc: Mapping[str, Any]) -> list[str]:
    """Every problem of a parsed data file, each ``file: table[row].key: what`` (pure)."""
    found = Problems(display(path))
    validate(doc, LAYOUTS[path.name][0], found)
    return found.items


def invalid(path: Path, problems: list[str]) -> DataFileError:
    """One line for a data file's problems: the first (naming file, table, row and key) and how
    many more, with what to do."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    regenerate = LAYOUTS[path.name][1] if path.name in LAYOUTS else ""
    fix = f"restore {display(path)} from builder's release" + (
        f" or regenerate it with {regenerate}" if regenerate else "")
    return DataFileError(f"{problems[0]}{more}", fix)


def require_valid(path: Path, doc: Mapping[str, Any]) -> None:
    """Raise :func:`invalid` if the parsed data file has any problem."""
    problems = problems_of(path, doc)
    if problems:
        raise invalid(path, problems)


def render(path: Path, doc: Any, build: Callable[[Mapping[str, Any]], object]) -> str:
    """The TOML text of a generated data file (a tomlkit document), proven to load before it is
    written: it parses back, passes its layout, and ``build`` (the reader's model constructor)
    accepts it.  For the generators in scripts/."""
    import tomlkit  # only the generators write data files

    text = tomlkit.dumps(doc)
    parsed = tomlkit.parse(text).unwrap()
    require_valid(path, parsed)
    build(parsed)
    return text


@functools.cache
def read(path: Path) -> Mapping[str, Any]:
    """One data file, parsed and validated once per process (kept by content in builder's cache
    when a command has set :data:`builder.files.tomlread.data_hook`; the small branch table is
    parsed directly, as a memo entry would cost more than the parse).

    Every table is checked against :data:`LAYOUTS` before any reader builds a model from it, so
    a reader indexes rows freely; a bad file raises :class:`~builder.errors.DataFileError`.
    """
    if path.name not in LAYOUTS:
        raise ValueError(f"{path}: not one of builder's data files ({', '.join(LAYOUTS)})")
    try:
        if path.name == DRIVER_BRANCHES.name:
            doc = tomlread.loads(path.read_text(encoding="utf-8"))
        else:
            doc = tomlread.load_data(path)
    except (tomlread.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise invalid(path, [f"{display(path)}: not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise invalid(path, [f"{display(path)}: cannot read it: {exc.strerror or exc}"]) from None
    require_valid(path, doc)
    return doc
