"""The GitHub Actions workflows pass actionlint (with shellcheck on every `run:` script) and
zizmor's offline audits with no findings, and keep the properties issue 13 asks for."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent  # the dev extra installs both tools beside this Python


def _tool(name: str) -> str:
    exe = BIN / name
    assert exe.is_file(), f"{exe} missing: install the dev extra (pip install -e '.[dev]')"
    return str(exe)


def test_both_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "lock-refresh.yml"]


def test_actionlint_finds_nothing() -> None:
    # shellcheck from the dev extra, pyflakes off: the same checks on every host.
    r = subprocess.run([_tool("actionlint"), "-no-color", "-shellcheck", _tool("shellcheck"), "-pyflakes", "",
                        *map(str, WORKFLOWS)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_zizmor_finds_nothing_offline() -> None:
    r = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", "--format", "plain", *map(str, WORKFLOWS)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No findings to report" in r.stdout, r.stdout


def test_actions_are_pinned_by_commit_with_their_version() -> None:
    for wf in WORKFLOWS:
        uses = re.findall(r"^\s*(?:- )?uses: (\S+)(.*)$", wf.read_text(), re.M)
        assert uses, wf
        for ref, comment in uses:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), (wf.name, ref)
            assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", comment), (wf.name, ref, comment)


def test_least_privilege_and_one_run_at_a_time() -> None:
    for wf in WORKFLOWS:
        text = wf.read_text()
        assert re.search(r"^permissions: \{\}$", text, re.M), wf.name  # jobs ask for what they need
        assert re.search(r"^concurrency:$", text, re.M), wf.name
        assert "persist-credentials: false" in text and "secrets." not in text, wf.name


def test_refresh_job_holds_no_token_and_ci_can_be_dispatched_on_the_pr() -> None:
    text = (ROOT / ".github" / "workflows" / "lock-refresh.yml").read_text()
    refresh, propose = text.split("\n  propose:\n", 1)
    # The job that runs uv and builder over the locked packages sees no token.
    assert "github.token" not in refresh and "GH_TOKEN" not in refresh and "nox -s lock-refresh" in refresh
    assert "./dev -s lock-refresh" in refresh and "./dev" not in propose and "nox" not in propose
    # A PR opened with GITHUB_TOKEN starts no workflow: ci.yml is dispatched on its branch.
    assert 'gh workflow run ci.yml --ref "$branch"' in propose and "actions: write" in propose
    assert re.search(r"^  workflow_dispatch:$", (ROOT / ".github" / "workflows" / "ci.yml").read_text(), re.M)


def test_the_refresh_workflow_says_the_date_it_moves_to_and_where_to_pin() -> None:
    """`nox -s lock-refresh` moves exclude-newer to yesterday (UTC), and the workflow force-pushes
    its branch each week: its header says both (it said "today")."""
    text = (ROOT / ".github" / "workflows" / "lock-refresh.yml").read_text()
    head = " ".join(ln.lstrip("# ") for ln in text.split("\nname:", 1)[0].splitlines())
    assert "to yesterday, UTC" in head and "today" not in head
    assert "pin a package back on the base branch" in head
    # The refresh job's title output reaches the job that opens the pull request.
    assert "title: ${{ steps.refresh.outputs.title }}" in text
    assert "TITLE: ${{ needs.refresh.outputs.title }}" in text
