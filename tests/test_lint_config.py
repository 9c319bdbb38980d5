"""The lint configuration keeps up with the tree: the import-linter contract
"click only in builder.cli" names every builder module outside the CLI."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_click_contract_covers_every_module_outside_the_cli() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in cfg["contracts"] if c["name"] == "click only in builder.cli"]
    assert contract["type"] == "forbidden" and contract["forbidden_modules"] == ["click"]
    pkg = ROOT / "builder"
    top = {f"builder.{p.stem}" for p in pkg.glob("*.py")} | {
        f"builder.{p.parent.name}" for p in pkg.glob("*/__init__.py")}
    # The package root holds only __version__; __main__ is the entry point into the CLI.
    assert set(contract["source_modules"]) == top - {"builder.__init__", "builder.__main__", "builder.cli"}
