"""The runtime layout: one module knows names, roots and discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.project import Project
from builder.runtime import layout
from tests.conftest import ROOT
from tests.helpers import manifests

A = Project(ROOT).matrix("a")


def _runtime(root: Path, name: str, *, manifest: bool = True, python: bool = True) -> Path:
    d = root / name
    (d / "bin").mkdir(parents=True)
    if python:
        (d / "bin" / "python").write_text("#!/bin/sh\n")
    if manifest:
        manifests.write_built(d)
    return d


def test_names_round_trip_for_every_base() -> None:
    h = "sha256:" + "1" * 64
    venv = layout.runtime_name(A, "3.12", h)
    conda = layout.runtime_name(A, "3.12", h, base="conda", base_identity="ident")
    assert venv.startswith("matrix-a-py312-") and len(venv) == len("matrix-a-py312-") + 12
    assert conda.startswith("matrix-a-py312-conda-")
    assert layout.content_address(h) != layout.content_address(h, "conda", "ident")
    for name, base in ((venv, "venv"), (conda, "conda")):
        parsed = layout.parse_name(name)
        assert parsed is not None and (parsed.matrix_id, parsed.python, parsed.base) == ("a", "3.12", base)
    assert layout.parse_name("matrix-a-py312") is None  # the pointer, not a runtime
    assert layout.parse_name("matrix-a-py312-XYZ") is None
    multi = layout.parse_name("matrix-big-one-py311-0123456789ab")
    assert multi is not None and (multi.matrix_id, multi.python) == ("big-one", "3.11")


def test_discover_finds_finished_runtimes_of_any_base_only(tmp_path: Path) -> None:
    _runtime(tmp_path, "matrix-a-py312-0123456789ab")
    _runtime(tmp_path, "matrix-a-py311-conda-abcdefabcdef")
    _runtime(tmp_path, "matrix-b-py312-0123456789ab")
    _runtime(tmp_path, "matrix-a-py312-aaaaaaaaaaaa", manifest=False)  # unfinished
    _runtime(tmp_path, "matrix-a-py312-bbbbbbbbbbbb", python=False)
    _runtime(tmp_path, ".staging-matrix-a-py312-cccccccccccc-1-ab")
    (tmp_path / "matrix-a-py312").symlink_to("matrix-a-py312-0123456789ab")
    found = [r.name.name for r in layout.discover(tmp_path, "a")]
    assert found == ["matrix-a-py311-conda-abcdefabcdef", "matrix-a-py312-0123456789ab"]
    assert len(layout.discover(tmp_path)) == 3
    assert layout.discover(tmp_path / "missing") == []
    assert layout.find(tmp_path, "matrix-a-py312-0123456789ab") is not None
    assert layout.find(tmp_path, "matrix-a-py312-aaaaaaaaaaaa") is None


def test_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = Project(tmp_path)
    monkeypatch.delenv("BUILDER_RUNTIMES", raising=False)
    assert layout.runtimes_root(proj) == (tmp_path / "runtimes").resolve()
    monkeypatch.setenv("BUILDER_RUNTIMES", str(tmp_path / "env"))
    assert layout.runtimes_root(proj) == (tmp_path / "env").resolve()
    assert layout.runtimes_root(proj, tmp_path / "opt") == (tmp_path / "opt").resolve()


def test_content_address_ignores_the_stamp() -> None:
    """Re-stamping the same packages (moved date, new builder) keeps the runtime's address."""
    from builder import pylock

    wheel = '{ url = "https://h/x-1-py3-none-any.whl", hashes = { sha256 = "' + "a" * 64 + '" } }'
    body = ('lock-version = "1.0"\ncreated-by = "uv"\nrequires-python = ">=3.12"\n\n[[packages]]\n'
            f'name = "x"\nversion = "1"\nwheels = [{wheel}]\n')
    one = pylock.parse(pylock.render("# one\n", body, {"uv-command": "--exclude-newer 2025-01-01"}).encode(), "x")
    two = pylock.parse(pylock.render("# two\n", body, {"uv-command": "--exclude-newer 2026-01-01"}).encode(), "x")
    assert one.sha256 != two.sha256 and one.content_hash == two.content_hash
    assert layout.runtime_name(A, "3.12", one.content_hash) == layout.runtime_name(A, "3.12", two.content_hash)
