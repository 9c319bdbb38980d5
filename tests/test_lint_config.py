"""The lint configuration keeps up with the tree: the import-linter contracts that
forbid click and subprocess name every builder module outside the one allowed place."""

from __future__ import annotations

import tomllib

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(("name", "allowed"), [("Only the CLI imports click", "builder.cli"),
                                               ("Only builder._proc imports subprocess", "builder._proc")])
def test_forbidden_contracts_cover_every_module(name: str, allowed: str) -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in cfg["contracts"] if c["name"] == name]
    assert contract["type"] == "forbidden"
    pkg = ROOT / "builder"
    top = {f"builder.{p.stem}" for p in pkg.glob("*.py")} | {
        f"builder.{p.parent.name}" for p in pkg.glob("*/__init__.py")}
    # The package root holds only __version__; __main__ is the entry point into the CLI.
    assert set(contract["source_modules"]) == top - {"builder.__init__", "builder.__main__", allowed}
