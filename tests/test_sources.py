"""Every fact is cited by its primary source: no file of the repository cites a notes file
outside it, or names a path of a development machine (a home directory, a work tree)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT
from tests.helpers import needs

# Built from pieces so that this file does not match itself.
NOTES_FILE = "FACTS" + ".md"
FORBIDDEN = re.compile(
    re.escape(NOTES_FILE).encode()
    # An absolute path under /work or /root, not a URL's path (".../work/..." after a host name).
    + rb"|(?<![\w.~%/-])/(?:wo" + rb"rk|ro" + rb"ot)/"
)


def _files(scratch: Path) -> list[Path]:
    """Every file of the project as git sees it: tracked or untracked, not ignored.  Outside a git
    checkout (a source archive) a temporary repository over the same tree lists them (all
    untracked there, .gitignore honoured alike)."""
    git = needs.git()
    cmd = [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    top = subprocess.run([git, "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT.resolve():
        subprocess.run([git, "init", "-q", str(scratch)], check=True, capture_output=True)
        cmd[1:1] = [f"--git-dir={scratch / '.git'}", f"--work-tree={ROOT}"]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True).stdout
    return [ROOT / n for n in out.decode().split("\0") if n and (ROOT / n).is_file()]


def offenders(files: list[Path], root: Path = ROOT) -> list[str]:
    """``path:line: text`` for every line that cites the notes file or a machine path."""
    found = []
    for f in files:
        for n, line in enumerate(f.read_bytes().splitlines(), 1):
            if FORBIDDEN.search(line):
                found.append(f"{f.relative_to(root)}:{n}: {line.decode(errors='replace').strip()}")
    return found


def test_no_file_cites_the_notes_file_or_a_machine_path(tmp_path: Path) -> None:
    files = _files(tmp_path / "repo")
    assert len(files) > 300 and ROOT / "builder" / "errors.py" in files
    assert offenders(files) == []


def test_the_scan_finds_each_kind(tmp_path: Path) -> None:
    lines = [f"see {NOTES_FILE}", "python: (/ro" + "ot/.pyenv/bin/python)", "path: `/wo" + "rk/main/x`",
             "ok: https://example.org/work/a", "ok: ~/work/a", "ok: runtimes/work/"]
    f = tmp_path / "probe.txt"
    f.write_text("\n".join(lines) + "\n")
    assert [o.split(": ", 1)[0] for o in offenders([f], tmp_path)] == ["probe.txt:1", "probe.txt:2", "probe.txt:3"]
