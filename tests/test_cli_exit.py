"""The process entry (`builder`, `python -m builder`): builder.cli.app.run ends the process
with os._exit once output is flushed and the exit handlers ran, skipping the interpreter's
finalization (issue 19's cold suggest: about 40 ms); where a thread still runs, the ordinary exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_output_is_flushed_handlers_run_and_finalization_is_skipped(tmp_path: Path) -> None:
    r = _run("""
        import atexit, sys
        class Noisy:
            def __del__(self):
                sys.stdout.write("finalized\\n")
        keep = Noisy()  # freed by the interpreter's finalization, which a fast exit skips
        atexit.register(lambda: sys.stdout.write("handler ran\\n"))  # buffered: flushed after the handlers
        sys.argv = ["builder", "--version"]
        from builder.cli.app import run
        run()
        """, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("builder, version ")
    assert "handler ran" in r.stdout.splitlines()
    assert "finalized" not in r.stdout


def test_the_exit_code_and_the_error_line_come_through(tmp_path: Path) -> None:
    r = _run("""
        import sys
        sys.argv = ["builder", "--project", ".", "check", "--matrix", "nope"]
        from builder.cli.app import run
        run()
        """, cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("builder: ")


def test_a_running_thread_gets_the_ordinary_exit(tmp_path: Path) -> None:
    mark = tmp_path / "thread-finished"
    r = _run(f"""
        import sys, threading, time
        from pathlib import Path
        def late():
            time.sleep(0.5)
            Path({str(mark)!r}).write_text("done")
        threading.Thread(target=late).start()  # not a daemon: the interpreter waits for it
        sys.argv = ["builder", "--version"]
        from builder.cli.app import run
        run()
        """, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert mark.read_text() == "done"


def test_python_dash_m_builder_takes_the_entry(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "builder", "--version"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.startswith("builder, version "), r.stderr
