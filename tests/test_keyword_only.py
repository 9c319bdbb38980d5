"""Core functions take their parameters by keyword past the third, and every bool by keyword:
``_lock_one(project, uv, version, t=..., offline=..., follower=...)``, never nine positional
arguments with two adjacent bools.  Walks every function of builder/ (the click layer aside,
whose signatures click builds) with ast."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

MAX_POSITIONAL = 3


def violations(source: str, where: str = "") -> list[str]:
    """``where:line name(...)`` for every function with more than three positional parameters
    (``self``/``cls`` aside) or a positional ``bool`` parameter."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        pos = node.args.posonlyargs + node.args.args
        if pos and pos[0].arg in ("self", "cls"):
            pos = pos[1:]
        bools = [a.arg for a in pos if a.annotation is not None and "bool" in ast.unparse(a.annotation)]
        if len(pos) > MAX_POSITIONAL or bools:
            why = f"{len(pos)} positional" if len(pos) > MAX_POSITIONAL else f"positional bool {', '.join(bools)}"
            out.append(f"{where}:{node.lineno} {node.name}({', '.join(a.arg for a in pos)}): {why}")
    return out


def test_core_functions_take_their_parameters_by_keyword() -> None:
    found = []
    modules = [p for p in sorted((ROOT / "builder").rglob("*.py"))
               if p.relative_to(ROOT / "builder").parts[0] != "cli"]
    assert len(modules) > 90
    for p in modules:
        found += violations(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    assert found == [], "put a `*` before the fourth parameter and before every bool:\n" + "\n".join(found)


def test_the_walk_finds_each_kind() -> None:
    src = '''
def four(a, b, c, d): ...
def flag(a, quiet: bool): ...
def maybe(a, quiet: bool | None = None): ...
class C:
    def method(self, a, b, c, d=1): ...
def fine(a, b, c, *, d, quiet: bool = False): ...
def varargs(a, *rest, quiet: bool): ...
class D:
    def method(self, a, b, c): ...
'''
    assert [v.split(" ")[1].split("(")[0] for v in violations(src)] == ["four", "flag", "maybe", "method"]
