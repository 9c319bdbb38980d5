"""The CLI's shared options are defined once (builder/cli/options.py), every command that reports
takes ``--json``, bounds in seconds are real bounds, and the exit-code text of every help comes
from builder/errors.py's one table."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import click
import pytest

from builder import errors
from builder.cli import main
from builder.cli.options import MAX_SECONDS
from tests.conftest import ROOT, builder_cmd

CLI = ROOT / "builder" / "cli"


def _defined_options(path: Path) -> list[str]:
    """Every option string (``--json``, ``-m``) a ``click.option(...)`` call in ``path`` defines."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "option":
            for a in node.args:
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-"):
                    out.extend(a.value.split("/"))
    return out


def test_each_shared_option_is_defined_once_in_options_py() -> None:
    shared = Counter(_defined_options(CLI / "options.py"))
    # doctor's --python is an interpreter path, not a matrix's Python: the one name with two meanings.
    assert {o: n for o, n in shared.items() if n > 1} == {"--python": 2}
    for name in ("--json", "-m", "--matrix", "-p", "--timeout", "--root", "--offline", "--force", "--cache-dir",
                 "--driver", "--gpu-cc", "--gpu", "--base", "--format", "--service", "--route-file", "--slot"):
        assert name in shared, name
    for mod in sorted(CLI.glob("*.py")):
        if mod.name != "options.py":
            again = sorted(set(_defined_options(mod)) & set(shared))
            assert again == [], f"{mod.name} defines {again} again: take it from builder/cli/options.py"


def _commands(cmd: click.Command = main, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            out += _commands(sub, (*path, name))
    return out


REPORTING = {("lock",), ("lock", "diff"), ("list",), ("check",), ("spec", "validate"), ("spec", "set"),
             ("build",), ("smoke",), ("doctor",), ("preflight",), ("verify-driver",), ("serve", "start"),
             ("serve", "stop"), ("serve", "status"), ("serve", "probe"), ("route", "show"), ("route", "init"),
             ("route", "set"), ("route", "rollback")}


def test_every_command_that_reports_takes_json() -> None:
    takes = {path for path, cmd in _commands() if any("--json" in getattr(p, "opts", ()) for p in cmd.params)}
    assert takes >= REPORTING, sorted(REPORTING - takes)


# --------------------------------------------------------------------------- exit codes in help
def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_root_help_prints_the_exit_code_table_of_errors_py() -> None:
    r = builder_cmd("--help", cwd=ROOT)
    assert r.returncode == 0
    assert _flat(errors.exit_help()) in _flat(r.stdout)
    assert [int(c) for c in re.findall(r"(\d+) ", errors.exit_help().removeprefix("Exit codes: "))] == sorted(
        errors.EXIT_CODES)


def test_no_help_writes_exit_codes_by_hand() -> None:
    said = 0
    for path, cmd in _commands():
        doc = (cmd.callback.__doc__ or "") if cmd.callback else ""
        assert not re.search(r"\b[Ee]xit(s| codes?:?)? \d", doc), f"builder {' '.join(path)}: exit codes by hand"
        for p in cmd.params:
            assert not re.search(r"\b[Ee]xit \d", getattr(p, "help", None) or ""), (path, p.name)
        help_text = cmd.help or ""
        if "Exit codes:" in help_text:
            said += 1
            line = help_text[help_text.index("Exit codes:"):]
            codes = [int(c) for c in re.findall(r"(?:: |, )(\d+) ", line)]
            assert codes == sorted(codes) and set(codes) <= set(errors.EXIT_CODES), path
    assert said >= 8  # the root, check, lock, lock diff, preflight, verify-driver, serve, serve probe, route


def test_exit_help_refuses_a_code_the_table_does_not_have() -> None:
    assert errors.exit_help({0: "ready", 2: None}) == "Exit codes: 0 ready, 2 usage or spec error."
    with pytest.raises(KeyError):
        errors.exit_help({42: "the answer"})


# --------------------------------------------------------------------------- --json
def test_spec_validate_json_lists_specs_and_every_problem(tmp_path: Path) -> None:
    r = builder_cmd("spec", "validate", "--json", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"valid": True, "problems": [], "specs": [
        *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "envs").glob("matrix-*.toml"))), "envs/host.toml"]}
    bad = tmp_path / "matrix-z.toml"
    bad.write_text((ROOT / "envs" / "matrix-a.toml").read_text().replace('id = "a"', 'id = "z"')
                   .replace("driver-floor", "driver_flor"))
    r = builder_cmd("spec", "validate", str(bad), "--json", cwd=ROOT)
    assert r.returncode == 2 and r.stderr == ""
    out = json.loads(r.stdout)
    assert out["valid"] is False and out["specs"] == [str(bad)]
    assert any("driver_flor: unknown key (did you mean 'driver-floor'?)" in p for p in out["problems"]), out


def test_spec_set_json_says_old_and_new(tmp_path: Path) -> None:
    proj = tmp_path / "p"
    shutil.copytree(ROOT / "envs", proj / "envs")
    r = builder_cmd("--project", str(proj), "spec", "set", "b", "torch.version", "2.9.1", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"path": "envs/matrix-b.toml", "key": "torch.version", "old": "2.9.0",
                                    "new": "2.9.1"}


def test_lock_diff_json_is_format_json(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(ROOT / "tests" / "data" / "lock-diff" / "wheel-cache", cache)
    env = dict(os.environ, BUILDER_CACHE_DIR=str(tmp_path / "unused"))
    args = ("lock", "diff", "locks/matrix-b/pylock.py312.toml", "locks/matrix-a/pylock.py312.toml", "--offline",
            "--cache-dir", str(cache))
    as_json = builder_cmd(*args, "--json", cwd=ROOT, env=env)
    fmt = builder_cmd(*args, "--format", "json", cwd=ROOT, env=env)
    assert as_json.returncode == fmt.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == json.loads(fmt.stdout) and json.loads(fmt.stdout)["changed"]
    r = builder_cmd(*args, "--json", "--format", "md", cwd=ROOT, env=env)
    assert r.returncode == 2 and "--json and --format md are exclusive" in r.stderr


def test_lock_check_json(tmp_path: Path) -> None:
    r = builder_cmd("lock", "--check", "--json", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert {s["state"] for s in json.loads(r.stdout)} == {"fresh"}


# --------------------------------------------------------------------------- seconds
@pytest.fixture(scope="module")
def served_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    proj = tmp_path_factory.mktemp("seconds") / "p"
    shutil.copytree(ROOT / "envs", proj / "envs")
    return proj


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "0", "-1", str(MAX_SECONDS * 2)])
@pytest.mark.parametrize("command", [("serve", "probe", "--url", "http://127.0.0.1:9", "--model", "m"),
                                     ("serve", "status"), ("route", "set", "green"), ("route", "rollback")])
def test_a_timeout_that_bounds_nothing_is_a_usage_error(served_project: Path, command: tuple[str, ...],
                                                        value: str) -> None:
    r = builder_cmd("--project", str(served_project), *command, "--timeout", value, cwd=served_project)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Invalid value for '--timeout'" in r.stderr and "is not a number of seconds" in r.stderr
    assert "internal error" not in r.stderr and not (served_project / "deploy").exists()


def test_drain_takes_zero_but_not_nan(served_project: Path) -> None:
    r = builder_cmd("--project", str(served_project), "serve", "stop", "--slot", "green", "--drain", "nan",
                    cwd=served_project)
    assert r.returncode == 2 and "'nan' is not a number of seconds at least 0" in r.stderr
