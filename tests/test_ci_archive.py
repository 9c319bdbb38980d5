"""CI runs the README's test command from a source archive (issue 22): `.ci/from-archive` runs a
command in a `git archive` copy of HEAD (no .git, nothing uncommitted), passes its exit status
on and removes the copy; `.ci/run` runs `./dev test -q` through it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT
from tests.helpers import needs


def _git(cwd: Path, *args: str) -> None:
    subprocess.run([needs.git(), "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                   check=True, capture_output=True, timeout=60)


def test_from_archive_runs_the_command_in_a_copy_of_head_without_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(ROOT / ".ci" / "from-archive", repo / ".ci" / "from-archive")
    (repo / "committed.txt").write_text("in HEAD\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "x")
    (repo / "committed.txt").write_text("edited, not committed\n")
    (repo / "untracked.txt").write_text("not in HEAD\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    report = tmp_path / "report"
    probe = (f'pwd > "{report}"; test ! -e .git && test ! -e untracked.txt && cat committed.txt >> "{report}"; '
             'exit 7')
    r = subprocess.run([str(repo / ".ci" / "from-archive"), "sh", "-c", probe],
                       env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 7, r.stderr  # the command's status is the script's
    where, content = report.read_text().splitlines()
    assert Path(where).parent == tmp and content == "in HEAD"  # HEAD's bytes, in a temp copy
    assert not list(tmp.iterdir())  # the copy is gone
    r = subprocess.run([str(repo / ".ci" / "from-archive")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr


def test_ci_runs_the_test_command_from_the_archive() -> None:
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert ".ci/from-archive ./dev test -q || rc=$?" in lines
    assert not any(ln.startswith("./dev test") for ln in lines)  # the clone's own run would only repeat it
