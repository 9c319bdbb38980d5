"""builder/data/*.toml: one path each, one loader, one level of validation.  A broken copy of
each table is one line naming the file, the table, the row and the key, never a KeyError."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from builder import data as datafiles
from builder.check import kerneldata, toolkit
from builder.check import knowledge as cuda
from builder.driver import branches
from builder.errors import EXIT_USAGE, DataFileError
from tests.conftest import ROOT

LOADERS: dict[str, list[Callable[[Path], Any]]] = {
    "cuda.toml": [cuda.load, toolkit.load],
    "kernels.toml": [kerneldata.load],
    "driver_branches.toml": [branches.load_branches],
}


def _broken(tmp_path: Path, name: str, edit: Callable[[Any], None]) -> Path:
    doc = tomlkit.parse((datafiles.HERE / name).read_text(encoding="utf-8"))
    edit(doc)
    out = tmp_path / name  # the same name: the loader knows the file by it
    out.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return out


def _error(loader: Callable[[Path], Any], path: Path) -> str:
    with pytest.raises(DataFileError) as exc:
        loader(path)
    line = exc.value.line()
    assert "\n" not in line and exc.value.exit_code == EXIT_USAGE
    assert line.startswith(f"{path}: ")
    return line


CASES = [
    ("cuda.toml", lambda d: d["release"][3].pop("driver"), "release[3].driver: required key is missing"),
    ("cuda.toml", lambda d: d["release"][2].__setitem__("update", "1"),
     "release[2].update: must be an integer, got '1'"),
    ("cuda.toml", lambda d: d["component"][0].__setitem__("verison", "1"),
     "component[0].verison: unknown key (did you mean 'version'?)"),
    ("cuda.toml", lambda d: d["cuda-toolkit"][5].pop("release"), "cuda-toolkit[5].release: required key is missing"),
    ("cuda.toml", lambda d: d["cuda-toolkit"][1]["extras"].__setitem__("cublas", "nvidia-cublas"),
     "cuda-toolkit[1].extras: must map each name to an array of strings"),
    ("cuda.toml", lambda d: d["packages"].pop("gpu"), "packages.gpu: required key is missing"),
    ("cuda.toml", lambda d: d.pop("known-bad"), "known-bad: required key is missing"),
    ("cuda.toml", lambda d: d.__setitem__("schema", 2), "schema: expected 1, got 2"),
    ("kernels.toml", lambda d: d["kernels"][1].__setitem__("wheel_size", "big"),
     "kernels[1].wheel_size: must be an integer, got 'big'"),
    ("kernels.toml", lambda d: d["kernels"][0].pop("member"), "kernels[0].member: required key is missing"),
    ("kernels.toml", lambda d: d["kernels"][2].__setitem__("sass", ["sm_8x"]),
     "kernels[2]: bad sass/ptx/groups: not a GPU architecture: 'sm_8x'"),
    ("driver_branches.toml", lambda d: d["branch"][1].pop("kind"), "branch[1].kind: required key is missing"),
    ("driver_branches.toml", lambda d: d["branch"][0].__setitem__("series", "535"),
     "branch[0].series: must be an integer, got '535'"),
    ("driver_branches.toml", lambda d: d["branch"][0].__setitem__("eol_by", "2026-01-01"),
     "branch[0].eol_by: unknown key (did you mean 'eol-by'?)"),
]


@pytest.mark.parametrize(("name", "edit", "problem"), CASES, ids=[c[2].split(":")[0] for c in CASES])
def test_a_broken_row_is_one_line_naming_file_and_row(tmp_path: Path, name: str, edit: Callable[[Any], None],
                                                      problem: str) -> None:
    path = _broken(tmp_path, name, edit)
    for loader in LOADERS[name]:
        line = _error(loader, path)
        assert line.startswith(f"{path}: {problem}"), line
        assert "restore" in line


def test_every_problem_is_counted_and_the_fix_is_named(tmp_path: Path) -> None:
    def two(d: Any) -> None:
        d["release"][0].pop("driver")
        d["compat"][1]["major"] = "13"

    line = _error(cuda.load, _broken(tmp_path, "cuda.toml", two))
    assert line == (f"{tmp_path / 'cuda.toml'}: release[0].driver: required key is missing (and 1 more) (restore "
                    f"{tmp_path / 'cuda.toml'} from builder's release or regenerate it with "
                    "scripts/cuda_toolkit_rows.py (its generated block))")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_a_file_that_is_not_toml_is_one_line(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("[[release]\nrelease = ", encoding="utf-8")
    for loader in LOADERS[name]:
        assert f"{tmp_path / name}: not valid TOML: " in _error(loader, tmp_path / name)


def test_the_shipped_tables_are_valid() -> None:
    for name in LOADERS:
        assert datafiles.problems_of(datafiles.HERE / name, datafiles.read(datafiles.HERE / name)) == []
    assert datafiles.display(datafiles.CUDA) == "builder/data/cuda.toml"


# --------------------------------------------------------------------------- one path each
def test_each_data_file_path_is_defined_once() -> None:
    """Only builder/data/__init__.py names a data file as a path; every reader takes it from there
    (no ``"cuda.toml"`` joined onto a directory, no ``DATA = ...`` alias of it)."""
    names = {f"{pre}{n}" for n in LOADERS for pre in ("", "data/", "builder/data/")}
    sources = [*(ROOT / "builder").rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").rglob("*.py"),
               *(ROOT / "benchmarks").glob("*.py"), ROOT / "noxfile.py"]
    found = []
    for src in sources:
        if src == ROOT / "builder" / "data" / "__init__.py" or src == Path(__file__) or "__pycache__" in src.parts:
            continue
        text = src.read_text(encoding="utf-8")
        found += [f"{src.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(ast.parse(text))
                  if isinstance(n, ast.Constant) and n.value in names]
        found += [f"{src.relative_to(ROOT)}: {m}" for m in re.findall(r"^\w+ = .*$", text, re.M)
                  if re.search(r"datafiles\.(CUDA|KERNELS|DRIVER_BRANCHES)\b|[\"']builder[\"'] / [\"']data[\"']", m)]
    assert found == [], "a data file's path named again: take it from builder.data"


def test_the_data_generators_live_in_scripts() -> None:
    for name, gen in (("cuda.toml", "scripts/cuda_toolkit_rows.py"), ("kernels.toml", "scripts/kernel_data.py")):
        assert (ROOT / gen).is_file()
        assert gen in (datafiles.HERE / name).read_text(encoding="utf-8") or name == "kernels.toml"
    generators = [p for p in (ROOT / "tests" / "data").rglob("*.py")
                  if "builder/data/" in p.read_text(encoding="utf-8") and "__pycache__" not in p.parts]
    assert generators == [], generators
