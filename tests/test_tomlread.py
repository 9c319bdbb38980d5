"""builder reads TOML 1.0, whichever parser builder/files/tomlread.py found: what tomllib, tomlkit
(`spec set`, `lock --refresh` edit the specs with it) and other readers of the specs accept.
tomli 2.4+ reads TOML 1.1; pyproject.toml keeps it below 2.4."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomlkit

from builder.files import tomlread

TOML_1_1_ONLY = [
    'a = {b = 1,\n c = 2}',  # newline in an inline table
    'a = {b = 1, c = 2,}',  # trailing comma in an inline table
    'a = "\\e"',  # the \e escape
    't = 07:32',  # a time without seconds
]


@pytest.mark.parametrize("text", TOML_1_1_ONLY)
def test_toml_1_1_only_syntax_is_refused_as_tomllib_refuses_it(text: str) -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(text)
    with pytest.raises(tomlread.TOMLDecodeError):
        tomlread.loads(text)


def test_a_refused_spec_is_one_line_exit_2(tmp_path: Path) -> None:
    from builder.errors import SpecError
    from builder.spec import parse_toml

    with pytest.raises(SpecError, match="not valid TOML"):
        parse_toml(b'id = "t"\n[torch]\nversion = {v = "2.9.0",\n}\n', str(tmp_path / "matrix-t.toml"))


def test_what_it_accepts_tomlkit_reads_the_same() -> None:
    text = 'a = {b = 1, c = "x"}\nt = 07:32:00\n[s]\nd = 2026-11-30\n'
    assert tomlread.loads(text) == tomlkit.parse(text).unwrap()
