"""Run many builder invocations in one process, auditing every write (tests/test_write_gate.py).

Usage: ``python gate_driver.py CASES.json RESULTS.json`` (run as a subprocess,
possibly inside ``unshare --mount`` after a bind mount).  Each case is
``{"id", "argv", "env": {NAME: value or null}, "abort_under": path or null}``.

For every case the driver records the exit code, the last stderr line, the
paths the write gate approved (:func:`builder.paths.approved`) and every path
builder itself wrote (a ``sys.addaudithook`` hook: ``open`` for writing,
mkdir, rename, replace, remove, rmdir, symlink, link, chmod, rmtree, mkstemp,
mkdtemp).  A write whose path is not covered by an approval is a *violation*:
a write that bypassed the gate.  With ``abort_under`` the case stops at the
first approval under that path (the gate said "this command writes here";
nothing needs to be written to know it).

Children (uv, probes) are not audited: the QL_1 tree digest, taken by the
test, is what shows they wrote nothing there.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
ONE_PATH = {"os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "shutil.rmtree",
            "tempfile.mkstemp", "tempfile.mkdtemp"}


class Abort(BaseException):
    """The gate approved a path under ``abort_under``: the control case has its answer."""


class State:
    active = False
    writes: list[tuple[str, str]] = []
    warnings: list[str] = []  # what the gate warned, as the CLI prints it (kept even when a case aborts)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not State.active:
        return
    found: list[Any] = []
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and set(mode) & set("wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS):
            found.append(path)
    elif event in ONE_PATH:
        # Calls relative to a directory fd (rmtree's inner unlinks) were covered by the outer call.
        if event in ("os.mkdir", "os.remove", "os.rmdir", "os.chmod", "shutil.rmtree") and args[-1] is not None \
                and not isinstance(args[-1], bool):
            return
        found.append(args[0])
    elif event in ("os.rename", "os.replace"):
        found += [args[0], args[1]]
    elif event in ("os.symlink", "os.link"):
        found.append(args[1])
    for p in found:
        if isinstance(p, (str, bytes, os.PathLike)):
            State.writes.append((event, os.path.abspath(os.fsdecode(p))))


def covered(event: str, path: str, approved: list[tuple[Path, str]]) -> bool:
    """Is this write inside something the gate approved?"""
    if path == os.devnull:
        return True  # subprocess opens /dev/null read-write for a child's stdin
    p = Path(path)
    real = Path(os.path.realpath(p.parent)) / p.name
    for a, kind in approved:
        if real == a or (kind == "dir" and a in real.parents):
            return True
        if kind == "file" and real.parent == a.parent and real.name.startswith(f".{a.name}."):
            return True  # atomic_write's temp file beside the approved file
        if event == "os.mkdir" and real in a.parents:
            return True  # a missing parent of an approved directory, created on the way
    return False


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    from click.testing import CliRunner

    from builder import paths
    from builder.cli import main as cli

    real_gate = paths.gate
    abort_under: list[Path] = []

    def gate(*a: Any, **k: Any) -> Path:
        out = real_gate(*a, **k)
        if any(out == b or b in out.parents for b in abort_under):
            raise Abort()
        return out

    paths.gate = gate  # type: ignore[assignment]
    real_on_warning = paths.on_warning

    def on_warning(callback: Any) -> None:
        def record(message: str) -> None:
            State.warnings.append(f"builder: warning: {message}")
            callback(message)

        real_on_warning(record if callback is not None else None)

    paths.on_warning = on_warning  # type: ignore[assignment]
    sys.addaudithook(_hook)
    base_env = dict(os.environ)
    results = []
    for case in cases:
        env = dict(base_env)
        for k, v in case.get("env", {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None  # $TMPDIR is read again
        paths._approved.clear()
        paths._reported.clear()  # each case is its own process: it reports an unguardable env again
        abort_under[:] = [Path(os.path.realpath(case["abort_under"]))] if case.get("abort_under") else []
        State.writes = []
        State.warnings = []
        State.active = True
        aborted = False
        t0 = time.monotonic()
        try:
            res = CliRunner().invoke(cli, case["argv"], catch_exceptions=True)
            rc: int | None = res.exit_code
            err = res.stderr
            if isinstance(res.exception, Abort) or (res.exc_info and res.exc_info[0] is Abort):
                aborted, rc = True, None
        except Abort:
            aborted, rc, err = True, None, ""
        finally:
            State.active = False
        approved = paths.approved()
        violations = sorted({f"{e} {p}" for e, p in State.writes if not covered(e, p, approved)})
        results.append({"id": case["id"], "rc": rc, "aborted": aborted,
                        "stderr": [ln for ln in err.splitlines() if ln.strip()][-3:],
                        "warnings": State.warnings,
                        "approved": [str(a) for a, _k in approved], "violations": violations,
                        "seconds": round(time.monotonic() - t0, 3)})
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
