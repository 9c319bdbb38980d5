"""Architecture rules: click only in builder/cli, subprocess only in builder/_proc,
importing builder modules runs no tool, and `builder --help` is cheap."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "builder"
MODULES = sorted(p for p in PKG.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(cwd)})


def test_import_contracts_hold() -> None:
    """The layer and purity contracts in pyproject.toml (import-linter) hold for the package."""
    r = _lint_imports(PKG.parent)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "Contracts: 8 kept, 0 broken." in r.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("pylock.py", "import click", "Only the CLI imports click"),
    ("driver/parse.py", "import subprocess", "Only builder._proc imports subprocess"),
    ("check/rules.py", "from builder.files import fsio", "Pure modules do no I/O"),
    ("driver/facts.py", "from builder.driver import preflight", "Inside driver"),
    ("check/knowledge.py", "from builder.check import toolkit", "Inside check"),
    ("runtime/layout.py", "from builder.runtime import build", "Inside runtime"),
    ("suggest/releases.py", "from builder.suggest import search", "Inside suggest"),
    ("suggest/policy.py", "from builder.files import fsio", "Pure modules do no I/O"),
    ("suggest/search.py", "import click", "Only the CLI imports click"),
    ("check/rules.py", "from builder.runtime import layout", "Layers"),
])
def test_import_contracts_bite(tmp_path: Path, module: str, line: str, contract: str) -> None:
    """Each contract fails when the import it forbids is added (so it is not vacuous)."""
    shutil.copytree(PKG, tmp_path / "builder", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PKG.parent / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "builder" / module
    target.write_text(target.read_text().replace("from __future__ import annotations\n",
                                                 f"from __future__ import annotations\n\n{line}  # noqa\n", 1))
    r = _lint_imports(tmp_path)
    assert r.returncode != 0 and contract in r.stdout.split("Broken contracts", 1)[-1], r.stdout[-2000:]


def _graph() -> dict[str, set[str]]:
    """builder's import graph as import-linter sees it (grimp): every import statement counts,
    function-level and TYPE_CHECKING imports included."""
    import grimp

    g = grimp.build_graph("builder", include_external_packages=False)
    return {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _folder(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_no_import_cycle_between_modules() -> None:
    """No two modules import each other, directly or around a loop (function-level imports too)."""
    assert _cycles(_graph()) == []


def test_no_import_cycle_between_folders() -> None:
    """Folders and flat modules, collapsed to one node each, form no loop."""
    folders: dict[str, set[str]] = {}
    for m, deps in _graph().items():
        folders.setdefault(_folder(m), set()).update(_folder(d) for d in deps if _folder(d) != _folder(m))
    assert _cycles(folders) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_at_most_sixteen_flat_modules_and_every_package_says_what_lives_there() -> None:
    flat = sorted(p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(flat) <= 16, flat
    for init in PKG.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "TODO" not in doc and len(doc) > 40, f"{init.relative_to(PKG.parent)}: {doc!r}"


def test_errors_module_imports_nothing_from_builder() -> None:
    assert "builder" not in _imports(PKG / "errors.py")


def test_core_modules_import_cleanly_without_running_tools() -> None:
    mods = [
        "builder." + ".".join(p.relative_to(PKG).with_suffix("").parts)
        for p in MODULES
        if p.name not in ("__main__.py",) and p.relative_to(PKG).parts[0] != "cli"
    ]
    code = (
        "import sys, builder._proc as P\n"
        "calls = []\n"
        "orig = P.subprocess.Popen\n"
        "P.subprocess.Popen = lambda *a, **k: calls.append(a) or orig(*a, **k)\n"
        f"for m in {mods!r}:\n"
        "    __import__(m)\n"
        "assert 'click' not in sys.modules, 'core imported click'\n"
        "assert not calls, calls\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


#: Modules that may parse TOML (through builder.files.tomlread, the one module importing tomllib or
#: tomli), and what they read with it (never a lock).
TOML_READERS = {
    "pylock.py": "PEP 751 locks: the one lock parser",
    "spec.py": "matrix and host specs",
    "spec_edit.py": "one TOML value given on the command line",
    "data/__init__.py": "builder/data/*.toml (the one reader of the knowledge tables, cached per process)",
    "memo.py": "builder/data/*.toml on a memo miss (tomlread.load_data); locks go through builder.pylock",
}


def test_one_lock_parser() -> None:
    """Only builder/pylock.py parses lock TOML: packaging.pylock is imported nowhere else, and every
    other TOML reader (through builder.files.tomlread) is listed with what it reads."""
    for path in MODULES:
        rel = path.relative_to(PKG).as_posix()
        tree = ast.parse(path.read_text())
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if "packaging.pylock" in mods:
            assert rel == "pylock.py", f"{rel} imports packaging.pylock"
        if mods & {"tomllib", "tomli"}:
            assert rel == "files/tomlread.py", f"{rel} imports a TOML parser: read TOML through files.tomlread"
        uses_tomlread = "builder.files.tomlread" in mods or any(
            isinstance(n, ast.ImportFrom) and n.module in ("builder", "builder.files")
            and any(a.name == "tomlread" for a in n.names)
            for n in ast.walk(tree))
        if uses_tomlread:
            assert rel in TOML_READERS, f"{rel} parses TOML: lock files go through builder.pylock"
