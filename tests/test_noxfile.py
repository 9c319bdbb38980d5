"""The noxfile: per-matrix sessions come from envs/matrix-*.toml, and the
lock-refresh session's order, outputs and exit status (``nox`` run for real)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers import needs

needs.nox()  # every test here runs nox


def _project(tmp_path: Path) -> Path:
    """A copy of the noxfile and the matrix specs: what nox reads to list sessions."""
    proj = tmp_path / "proj"
    (proj / "envs").mkdir(parents=True)
    shutil.copy2(ROOT / "noxfile.py", proj / "noxfile.py")
    for spec in (ROOT / "envs").glob("*.toml"):
        shutil.copy2(spec, proj / "envs" / spec.name)
    return proj


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BUILDER_PROJECT", "GITHUB_OUTPUT")}
    return {**env, **extra}


def _nox(proj: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nox", "-f", str(proj / "noxfile.py"), *args],
                          env=env or _env(), capture_output=True, text=True, timeout=120)


def _listed(proj: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``nox -l``: session name -> its line ('* name -> doc' selected, '- name' not)."""
    r = _nox(proj, "-l", *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln[:2] in ("* ", "- ")]
    return {ln[2:].split(" ")[0]: ln for ln in rows}


def test_a_new_matrix_file_gets_its_sessions_without_a_noxfile_edit(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    before = _listed(proj)
    spec = (proj / "envs" / "matrix-a.toml").read_text()
    (proj / "envs" / "matrix-z.toml").write_text(spec.replace('id = "a"', 'id = "z"'))
    after = _listed(proj)
    new = {"lock-matrix-z", "build-matrix-z-3.11", "build-matrix-z-3.12", "smoke-matrix-z-3.11",
           "smoke-matrix-z-3.12", "serve-matrix-z-3.11", "serve-matrix-z-3.12"}
    assert set(after) - set(before) == new
    assert "Build and smoke-test matrix Z runtimes" in after["build-matrix-z-3.12"]
    # The shipped matrices and the fixed sessions are there too.
    assert {"tests", "lint", "lock", "lock-refresh", "main", "lock-matrix-a", "build-matrix-b-3.12"} <= set(after)


def test_sessions_follow_each_matrix_pythons_and_id(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    spec = (proj / "envs" / "matrix-a.toml").read_text()
    (proj / "envs" / "matrix-y.toml").write_text(
        spec.replace('id = "a"', 'id = "y"').replace('pythons = ["3.11", "3.12"]', 'pythons = ["3.12"]'))
    names = set(_listed(proj))
    assert {"build-matrix-y-3.12", "smoke-matrix-y-3.12"} <= names
    assert "build-matrix-y-3.11" not in names


def test_an_unreadable_matrix_file_keeps_its_sessions(tmp_path: Path) -> None:
    """builder, not nox, reports a broken spec: the matrix must not vanish from `nox -l`."""
    proj = _project(tmp_path)
    (proj / "envs" / "matrix-q.toml").write_text('id = "q\npythons = [\n')
    assert {"lock-matrix-q", "build-matrix-q-3.11", "build-matrix-q-3.12"} <= set(_listed(proj))


def test_sessions_come_from_the_project_builder_runs_on(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    other = tmp_path / "other"
    (other / "envs").mkdir(parents=True)
    spec = (proj / "envs" / "matrix-b.toml").read_text()
    (other / "envs" / "matrix-t.toml").write_text(spec.replace('id = "b"', 'id = "t"'))
    names = set(_listed(proj, env=_env(BUILDER_PROJECT=str(other))))
    assert "lock-matrix-t" in names and "lock-matrix-a" not in names


def test_only_lock_refresh_carries_the_ci_tag(tmp_path: Path) -> None:
    rows = _listed(_project(tmp_path), "-t", "ci-lock-refresh")
    assert [n for n, ln in rows.items() if ln.startswith("* ")] == ["lock-refresh"]
    assert "[ci-lock-refresh]" not in rows["lock"] and "[ci-lock-refresh]" not in rows["lock-matrix-a"]


# --------------------------------------------------------------------------- lock-refresh
# `builder lock --refresh/--verify` and `builder lock diff` are built on another
# branch: a stand-in records each call and answers like them (diff: exit 1 on a
# regression), so the session's own logic is what is tested here.
FAKE_BUILDER = """#!/bin/sh
echo "$*" >> "$LOG"
case "$*" in
  "lock diff --git HEAD --format md") echo "# lock refresh"; exit "$DIFF_RC" ;;
  "lock diff --git HEAD --format json") printf '%s\\n' "$DIFF_JSON"; exit "$DIFF_RC" ;;
esac
"""
SAME = '{"locks": [{"added": [], "removed": [], "changed": [], "rehashed": [], "regression": false}]}'
MOVED = ('{"locks": [{"added": [], "removed": [], "changed": [{"name": "nvidia-cublas-cu12", "old": "12.9.1.4", '
         '"new": "12.9.2.10"}], "rehashed": [], "regression": false}]}')


def _refresh(tmp_path: Path, diff_json: str, diff_rc: int) -> tuple[subprocess.CompletedProcess[str], Path, str]:
    proj = _project(tmp_path)
    fake = tmp_path / "bin" / "builder"
    fake.parent.mkdir()
    fake.write_text(FAKE_BUILDER)
    fake.chmod(0o755)
    log, out = tmp_path / "calls.log", tmp_path / "github-output"
    env = _env(PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", LOG=str(log), DIFF_JSON=diff_json,
               DIFF_RC=str(diff_rc), GITHUB_OUTPUT=str(out))
    r = _nox(proj, "--no-venv", "-s", "lock-refresh", "--", "--exclude-newer", "2026-01-05", env=env)
    assert log.read_text().splitlines() == [
        "lock --refresh --exclude-newer 2026-01-05", "lock --verify",
        "lock diff --git HEAD --format md", "lock diff --git HEAD --format json"], r.stderr
    assert (proj / "lock-refresh.md").read_text() == "# lock refresh\n"
    return r, proj, out.read_text()


@pytest.mark.parametrize(("diff_json", "changed"), [(SAME, "false"), (MOVED, "true")])
def test_lock_refresh_proposes_only_package_changes(tmp_path: Path, diff_json: str, changed: str) -> None:
    r, _proj, outputs = _refresh(tmp_path, diff_json, 0)
    assert r.returncode == 0, r.stderr
    assert outputs.splitlines() == [f"changed={changed}", "regression=false", "title=Lock refresh"]
    # The count is of locks, not of packages.
    assert ("1 lock with package changes" if changed == "true" else "nothing to propose") in r.stderr


WARNED = ('{"locks": [{"changed": [{"name": "a", "old": "1", "new": "2"}], "new_warnings": '
          '["new warn: cuda-toolkit-order: x", "new warn: gpu-arch: y"]}, {"changed": [{"name": "b", "old": "1", '
          '"new": "2"}], "new_warnings": ["new warn: gpu-arch: y", "new warn: $(touch pwned)\\nx: z"]}, '
          '{"added": [], "changed": []}]}')


def test_lock_refresh_counts_locks_and_titles_new_warnings(tmp_path: Path) -> None:
    r, _proj, outputs = _refresh(tmp_path, WARNED, 0)
    assert r.returncode == 0, r.stderr
    title = "Lock refresh: 2 new warnings (cuda-toolkit-order, gpu-arch)"  # only rule ids reach the title
    assert outputs.splitlines() == ["changed=true", "regression=false", f"title={title}"]
    assert f"lock-refresh: 2 locks with package changes: propose them as {title!r}" in r.stderr


def test_lock_refresh_fails_on_a_regression_and_keeps_the_report(tmp_path: Path) -> None:
    r, _proj, outputs = _refresh(tmp_path, MOVED, 1)
    assert r.returncode != 0
    assert "regression (see lock-refresh.md)" in r.stderr
    assert outputs.splitlines() == ["changed=false", "regression=true"]


# A stand-in for scripts/kernel_data.py: logs its call, writes the summary the session reads.
FAKE_KERNEL_SCRIPT = """import json, os, sys
with open(os.environ["LOG"], "a") as f:
    f.write("kernel_data " + " ".join(a if not a.endswith("kernel-data.json") else "SUMMARY" for a in sys.argv[1:])
            + "\\n")
added = json.loads(os.environ["KERNEL_ADDED"])
path = sys.argv[sys.argv.index("--summary") + 1]
json.dump({"data": "builder/data/kernels.toml", "rows": 111, "failed": [], "added": added}, open(path, "w"))
"""
# ... and for scripts/requires_data.py.
FAKE_REQUIRES_SCRIPT = """import json, os, sys
with open(os.environ["LOG"], "a") as f:
    f.write("requires_data " + " ".join(a if not a.endswith("requires-data.json") else "SUMMARY"
                                        for a in sys.argv[1:]) + "\\n")
path = sys.argv[sys.argv.index("--summary") + 1]
json.dump({"data": "builder/data/requires.toml", "wheels": 262, "failed": [],
           "added": json.loads(os.environ["REQUIRES_ADDED"])}, open(path, "w"))
"""
NEW_WHEEL = ["torch-2.14.0-cp314-cp314-manylinux_2_28_x86_64.whl"]
NEW_ROW = [{"version": "0.35.0", "arch": "aarch64", "wheel": "vllm-0.35.0-cp38-abi3-manylinux_2_28_aarch64.whl",
            "member": "vllm/_C_stable_libtorch.abi3.so", "sass": ["sm_90", "sm_100"], "ptx": ["compute_90"],
            "ptx_isa": "9.0", "nvcc": None, "nvcc_release": "13.0",
            "source": "https://files.pythonhosted.org/packages/x/vllm-0.35.0-cp38-abi3-manylinux_2_28_aarch64.whl"}]


@pytest.mark.parametrize(("added", "facts", "changed"), [([], [], "false"), (NEW_ROW, [], "true"),
                                                         ([], NEW_WHEEL, "true")])
def test_lock_refresh_adds_kernel_rows_first_and_proposes_them(tmp_path: Path, added: list[object],
                                                               facts: list[str], changed: str) -> None:
    import json

    proj = _project(tmp_path)
    (proj / "scripts").mkdir()
    (proj / "scripts" / "kernel_data.py").write_text(FAKE_KERNEL_SCRIPT)
    (proj / "scripts" / "requires_data.py").write_text(FAKE_REQUIRES_SCRIPT)
    fake = tmp_path / "bin" / "builder"
    fake.parent.mkdir()
    fake.write_text(FAKE_BUILDER)
    fake.chmod(0o755)
    log, out = tmp_path / "calls.log", tmp_path / "github-output"
    env = _env(PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", LOG=str(log), DIFF_JSON=SAME, DIFF_RC="0",
               GITHUB_OUTPUT=str(out), KERNEL_ADDED=json.dumps(added), REQUIRES_ADDED=json.dumps(facts),
               BUILDER_KERNEL_INDEX="http://127.0.0.1:9/simple")
    r = _nox(proj, "--no-venv", "-s", "lock-refresh", "--", "--exclude-newer", "2026-01-05", env=env)
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == [
        "kernel_data --all --summary SUMMARY --index http://127.0.0.1:9/simple",
        "requires_data --all --summary SUMMARY --index http://127.0.0.1:9/simple",
        "lock --refresh --exclude-newer 2026-01-05", "lock --verify",
        "lock diff --git HEAD --format md", "lock diff --git HEAD --format json"]
    title = "Lock refresh (+1 kernel row)" if added else "Lock refresh"
    assert out.read_text().splitlines() == [f"changed={changed}", "regression=false", f"title={title}"]
    md = (proj / "lock-refresh.md").read_text()
    if added:
        assert "### Kernel data: 1 new row(s) in `builder/data/kernels.toml`" in md
        assert ("| [vllm-0.35.0-cp38-abi3-manylinux_2_28_aarch64.whl](https://files.pythonhosted.org/packages/x/"
                "vllm-0.35.0-cp38-abi3-manylinux_2_28_aarch64.whl) | `vllm/_C_stable_libtorch.abi3.so` | "
                "sm_90, sm_100 | 9.0 | 13.0 |") in md
        assert "0 locks with package changes, 1 new kernel row(s): propose them as 'Lock refresh (+1 kernel row)'" \
            in r.stderr
    if facts:
        assert ("### Search data: 1 wheel(s) added to `builder/data/requires.toml`\n\n"
                "- `torch-2.14.0-cp314-cp314-manylinux_2_28_x86_64.whl`\n") in md
        assert "1 wheel(s) of new search data" in r.stderr
    if not added and not facts:
        assert md == "# lock refresh\n" and "nothing to propose" in r.stderr
