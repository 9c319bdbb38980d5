"""The docs tell the truth about the code: every ``builder`` command and option they show
exists, the exit-code tables match builder/errors.py, every module and test path they name
exists, and docs/reliability.md's rows point at tests that exist (so none of it can rot)."""

from __future__ import annotations

import ast
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from builder import errors
from builder.cli import main
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# --------------------------------------------------------------------------- commands and options
def _tree(cmd: click.Command = main, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _tree(sub, (*path, name))


COMMANDS = dict(_tree())


def _options(cmd: click.Command) -> set[str]:
    out = {"--help"}
    for p in cmd.params:
        if isinstance(p, click.Option):
            out.update(p.opts)
            out.update(p.secondary_opts)
    return out


def command_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, ``builder ...``) for every command shown: lines of code blocks
    (comments dropped) and inline code spans that start with ``builder``."""
    block = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            block = not block
            continue
        if block:
            line = re.sub(r"(^|\s)#.*", "", line)
            for m in re.finditer(r"(?:^\s*|[;&|(]\s*|\$\(\s*)(builder\s[^#`|;&)]*)", line):
                yield n, m.group(1)
        else:
            for m in re.finditer(r"`(builder\s[^`]*)`", line):
                for part in re.split(r"\s*(?:&&|;|\|)\s*", m.group(1)):
                    if part.startswith("builder "):
                        yield n, part


def problems_of(shown: str) -> list[str]:
    """What does not exist in one shown command line (usage brackets and ``...`` allowed)."""
    toks = [t.strip("[]").rstrip(".").rstrip("]") for t in shown.split()[1:]]
    toks = [t for t in toks if t]
    global_opts = _options(main)
    path: tuple[str, ...] = ()
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.startswith("-") and not path:
            if t.split("=")[0] not in global_opts:
                return [f"no global option {t}"]
            i += 2 if t == "--project" else 1
        elif not t.startswith("-") and (*path, t) in COMMANDS:
            path = (*path, t)
            i += 1
        else:
            break
    if not path:
        return [f"no command {toks[i]!r}"] if i < len(toks) else []
    cmd = COMMANDS[path]
    rest = toks[i:]
    if isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        return [f"`{' '.join(path)}` has no subcommand {rest[0]!r}"]
    known = _options(cmd) | global_opts
    bad = []
    for t in rest:
        for opt in re.findall(r"(?<![\w-])(--[a-zA-Z][\w-]*|-[a-zA-Z])(?![\w-])", t):
            if opt not in known and not (opt.startswith("--no-") and f"--{opt[5:]}" in known):
                bad.append(f"`{' '.join(path)}` has no option {opt}")
    return bad


def test_the_checker_catches_a_wrong_command_subcommand_and_option() -> None:
    assert problems_of("builder lock --chek") == ["`lock` has no option --chek"]
    assert problems_of("builder lokc --check") == ["no command 'lokc'"]
    assert problems_of("builder lock dif") == ["`lock` has no subcommand 'dif'"]
    assert problems_of("builder --projekt . list") == ["no global option --projekt"]
    assert problems_of("builder lock [--matrix A]... [--json]") == []
    assert problems_of("builder build --matrix A --no-gpu") == []
    assert problems_of("builder --help") == []
    text = "```bash\nbuilder list   # not builder chek\n```\nsee `builder spec set a x 1 && builder lock -m a`\n"
    assert [(n, c.strip()) for n, c in command_lines(text)] == [
        (2, "builder list"), (4, "builder spec set a x 1"), (4, "builder lock -m a")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_and_option_shown_exists(doc: Path) -> None:
    found = [f"{doc.name}:{n}: {shown.strip()}: {p}" for n, shown in command_lines(doc.read_text())
             for p in problems_of(shown)]
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- exit codes
def _documented_codes() -> set[int]:
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    return codes | {128 + signal.SIGHUP, 128 + signal.SIGINT, 128 + signal.SIGTERM}


def test_the_readme_exit_code_table_lists_exactly_the_codes_builder_uses() -> None:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Exit codes"):]
    table = table[:table.index("\n\n", table.index("| code |"))]
    codes = [int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert codes == sorted(codes), "keep the table in numeric order"
    assert set(codes) == _documented_codes() == {0, 1, 2, 3, 4, 5, 6, 7, 8, 70, 129, 130, 141, 143}
    # errors.py's one table (which the help prints) says the same.
    assert set(errors.EXIT_CODES) == _documented_codes()


# --------------------------------------------------------------------------- paths
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_module_and_test_paths_named_exist(doc: Path) -> None:
    text = doc.read_text()
    named = set(re.findall(r"(?<![\w/.])((?:builder|tests|benchmarks|scripts)/[\w/.-]*\w)", text))
    missing = sorted(p for p in named if "*" not in p and not (ROOT / p).exists()
                     and not any((ROOT / p).parent.glob(Path(p).name + "*")))
    assert not missing, missing


# --------------------------------------------------------------------------- docs/reliability.md
def _functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def reliability_refs() -> list[tuple[str, str, str | None]]:
    """(row id, test file, test name or None) for every test the "proven by" column names;
    ``::name`` alone continues the last file named in that cell."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    refs = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not re.fullmatch(r"\d+[a-z]?", cells[0]):
            continue
        row, proven = cells[0], cells[3]
        assert proven and "(other change)" not in proven, f"row {row} names no test"
        last: str | None = None
        for m in re.finditer(r"`(tests/[\w/]+\.py)?(?:::(\w+))?", proven):
            file, name = m.group(1), m.group(2)
            if file:
                last = file
            if file or name:
                assert last is not None, f"row {row}: ::{name} before any file"
                refs.append((row, last, name))
    return refs


def test_reliability_rows_point_at_tests_that_exist() -> None:
    refs = reliability_refs()
    assert len(refs) > 40 and {r for r, _f, _n in refs} >= {"1a", "1b", "1c", "2", "3", "4", "5", "6", "7", "8"}
    missing = [f"row {row}: {file}" + (f"::{name}" if name else "") for row, file, name in refs
               if not (ROOT / file).is_file() or (name is not None and name not in _functions(ROOT / file))]
    assert not missing, missing
