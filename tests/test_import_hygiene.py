"""The cheap commands stay cheap by construction: what `builder --help` and `builder lock --check`
import, checked in a fresh interpreter (the speed budgets themselves are measured in benchmarks/)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs the real CLI in this interpreter and reports, on the last stderr line, its exit
# code, every module it loaded and every TOML text builder.files.tomlread parsed.  No json here: the
# harness must not load what the commands are checked for.
HARNESS = r"""
import sys
startup = sorted(sys.modules)  # what the interpreter and its site-packages' .pth files loaded
parsed = []
if sys.argv[1] == "toml":
    from builder.files import tomlread  # every TOML builder parses goes through its _impl.loads
    _impl = tomlread._impl
    class _Spy:
        TOMLDecodeError = _impl.TOMLDecodeError
        @staticmethod
        def loads(s, **kw):
            parsed.append("<a PEP 751 lock>" if "lock-version" in s or "[[packages]]" in s else "<text>")
            return _impl.loads(s, **kw)
    tomlread._impl = _Spy
sys.argv = ["builder", *sys.argv[2:]]
code = 0
try:  # what `python -m builder` runs, but click's main: builder.cli.app.run ends the process itself
    from builder.cli import main
    main()
except SystemExit as e:
    code = e.code
sys.stderr.write("\n" + repr({"code": code, "modules": sorted(sys.modules), "startup": startup,
                               "toml": parsed}) + "\n")
"""


def _run(*args: str, toml: bool = False) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-c", HARNESS, "toml" if toml else "-", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    out: dict[str, object] = ast.literal_eval(r.stderr.strip().splitlines()[-1])
    assert out["code"] in (0, None), r.stderr
    return out


def _loaded(out: dict[str, object], *prefixes: str) -> list[str]:
    mods = out["modules"]
    assert isinstance(mods, list)
    return [m for m in mods if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_help_loads_click_and_the_command_table_only() -> None:
    out = _run("--help")
    assert _loaded(out, "packaging", "tomllib", "tomli", "json", "logging", "subprocess", "dataclasses") == []
    # The CLI layer, its errors and the stop flag its signal handlers set (builder.cancel).
    cli = set(_loaded(out, "builder.cli"))
    assert set(_loaded(out, "builder")) <= {"builder", "builder.errors", "builder.cancel"} | cli


def test_lock_check_runs_no_tool_and_parses_no_lock() -> None:
    out = _run("lock", "--check", toml=True)
    # No uv, no subprocess wrapper, no thread pool, no packaging: plain specs need none of it.
    assert _loaded(out, "packaging", "subprocess", "builder._proc", "builder.lock.uv", "builder.tools",
                   "concurrent", "logging") == []
    assert _loaded(out, "tomllib") == []  # every TOML goes through builder.files.tomlread (the spy below sees it)
    parsed = out["toml"]
    # The two matrix specs are TOML and are parsed (from a path or from their text); no lock is.
    assert isinstance(parsed, list) and len(parsed) == len(list((ROOT / "envs").glob("matrix-*.toml"))), parsed
    assert all(p == "<text>" or (Path(p).parent == ROOT / "envs" and Path(p).suffix == ".toml")
               for p in parsed), parsed
