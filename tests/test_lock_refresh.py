"""The refresh loop with real uv against a local index whose files have upload times:
``lock --refresh`` (one transaction over specs and locks), ``lock --verify`` (a lock is
uv's output) and ``lock diff`` (packages and CUDA view, regressions), as CI runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import pylock
from builder.errors import EXIT_FAILED, EXIT_TOOL_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE
from builder.lock import state as lockstate
from builder.project import Project
from builder.runtime import layout
from tests.conftest import ROOT, builder_cmd
from tests.helpers import needs, refresh_world, wheels
from tests.helpers.refresh_world import World

K = Path("locks/matrix-k/pylock.py312.toml")
R = Path("locks/matrix-r/pylock.py312.toml")
AFTER = "2026-02-01"  # after filelock 3.20.0 and cuBLAS 12.9.1.4 appeared


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return refresh_world.build_wheelhouse(tmp_path_factory.mktemp("refresh-house"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment with a private wheel-facts cache."""
    return dict(os.environ, BUILDER_CACHE_DIR=str(tmp_path / "builder-cache"))


def _world(house: tuple[Path, dict[str, str]], tmp_path: Path, env: dict[str, str],
           matrices: dict[str, dict[str, str]] | None = None, date: str = "2025-12-30") -> Iterator[World]:
    from builder.lock.resolve import LockRequest, run_lock

    with refresh_world.served(house, tmp_path, matrices, date=f'"{date}"') as w:
        assert [o.error for o in run_lock(Project(w.project), LockRequest())] == [None] * len(matrices or "k")
        _git(w.project, "init", "-q")
        _git(w.project, "add", "-A")
        _git(w.project, "commit", "-qm", f"locks as of {date}")
        yield w


@pytest.fixture
def world(house: tuple[Path, dict[str, str]], tmp_path: Path, env: dict[str, str]) -> Iterator[World]:
    yield from _world(house, tmp_path, env)


def _git(cwd: Path, *args: str) -> str:
    r = subprocess.run([needs.git(), "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                       capture_output=True, text=True, timeout=60, check=True)
    return r.stdout


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for d in ("envs", "locks") for p in (root / d).rglob("*")
            if p.is_file()}


def _versions(path: Path) -> dict[str, str]:
    return pylock.read(path).versions()


# --------------------------------------------------------------------------- refresh


def test_refresh_picks_up_newer_versions_keeps_pins_and_comments_and_the_diff_shows_them(
        world: World, env: dict[str, str]) -> None:
    proj = world.project
    before = _versions(proj / K)
    assert (before["filelock"], before["nvidia-cublas-cu12"]) == ("3.19.1", "12.8.4.1")
    r = builder_cmd("lock", "--refresh", "--exclude-newer", AFTER, cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    assert "envs/matrix-k.toml: exclude-newer 2025-12-30 -> 2026-02-01" in r.stdout
    assert "locks/matrix-k/pylock.py312.toml: changed (2 packages)" in r.stdout
    after = _versions(proj / K)
    assert (after["filelock"], after["nvidia-cublas-cu12"]) == ("3.20.0", "12.9.1.4")
    assert (after["torch"], after["vllm"]) == ("2.9.0", "0.13.0")  # pins stay pins
    spec = (proj / "envs/matrix-k.toml").read_text()
    assert 'exclude-newer = "2026-02-01"   # the resolution date' in spec
    assert spec.startswith("# refresh test matrix k: this comment must survive a refresh\n")
    assert builder_cmd("lock", "--check", cwd=proj, env=env).returncode == 0

    r = builder_cmd("lock", "diff", "--git", "HEAD", "--format", "json", cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["regression"] is False and out["locks_with_package_changes"] == 1
    d = out["locks"][0]
    assert {(c["name"], c["old"], c["new"]) for c in d["changed"]} == {
        ("filelock", "3.19.1", "3.20.0"), ("nvidia-cublas-cu12", "12.8.4.1", "12.9.1.4")}
    assert d["added"] == [] and d["removed"] == [] and d["rehashed"] == []
    cuda = {c["name"]: c for c in d["cuda"]}
    assert cuda["nvidia-cublas-cu12"]["old"]["cublas"] == "12.8.4.1"
    assert cuda["nvidia-cublas-cu12"]["new"]["cublas"] == "12.9.1.4"
    assert cuda["vllm"]["changed"] == [] and cuda["vllm"]["new"]["build_toolkit"] == "12.9.86"
    assert cuda["torch"]["new"]["runtime"] == "12.8.90"
    # The newer cuBLAS line matches vLLM's build toolkit: the warning goes, the floor stays.
    assert d["driver"] == {"old": {"native_min": "575.57.08", "compat_min": "525.60.13"},
                           "new": {"native_min": "575.57.08", "compat_min": "525.60.13"}}
    # gpu-arch stays a warning: this test's vLLM has no main extension in builder's kernel data
    assert d["verdict"] == {"old": "warn", "new": "warn"}
    assert {"id": "cuda-toolkit-order", "old": "warn", "new": "info"} == {
        k: v for k, v in next(f for f in d["findings"] if f["id"] == "cuda-toolkit-order").items() if k != "message"}
    assert d["host"]["driver"] == "575.57.08" and d["host"]["gpu_cc"] == ["8.9"]

    r = builder_cmd("lock", "diff", "--format", "md", cwd=proj, env=env)  # --git HEAD is the default
    assert r.returncode == 0, r.stderr
    md = r.stdout
    assert md.startswith("## Lock changes: 1 of 1 locks with package changes, no regression")
    assert "| filelock | 3.19.1 | **3.20.0** |" in md
    assert "12.8.4.1 → **12.9.1.4**" in md and "`cuda-toolkit-order` warn → info" in md


def test_refresh_is_idempotent_and_a_date_without_news_only_restamps(world: World, env: dict[str, str]) -> None:
    proj = world.project
    old = pylock.read(proj / K)
    name = layout.runtime_name(Project(proj).matrix("k"), "3.12", old.content_hash)
    r = builder_cmd("lock", "--refresh", "--exclude-newer", "2026-01-10", "--json", cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["locks"][0]["state"] == "unchanged" and out["locks"][0]["written"] is True
    new = pylock.read(proj / K)
    assert new.sha256 != old.sha256 and new.content_hash == old.content_hash
    assert layout.runtime_name(Project(proj).matrix("k"), "3.12", new.content_hash) == name  # runtimes stay valid
    assert builder_cmd("lock", "--check", cwd=proj, env=env).returncode == 0
    snap = _snapshot(proj)
    r = builder_cmd("lock", "--refresh", "--exclude-newer", "2026-01-10", cwd=proj, env=env)
    assert r.returncode == 0 and "unchanged" in r.stdout and "(re-stamped)" not in r.stdout
    assert _snapshot(proj) == snap
    r = builder_cmd("lock", "diff", cwd=proj, env=env)
    assert r.returncode == 0 and "packages: unchanged (re-stamped)" in r.stdout


def test_unsatisfiable_refresh_leaves_specs_and_locks_byte_identical(
        house: tuple[Path, dict[str, str]], tmp_path: Path, env: dict[str, str]) -> None:
    """Two matrices refreshed together; one cannot resolve at the new date: nothing is written."""
    for w in _world(house, tmp_path, env, {"k": {}, "u": {"extra": '["lateextra"]'}}):
        snap = _snapshot(w.project)
        r = builder_cmd("lock", "--refresh", "--exclude-newer", "2025-07-01", cwd=w.project, env=env)
        assert r.returncode == EXIT_TOOL_FAILED, r.stderr
        assert "refresh to 2025-07-01 failed: matrix-u/py3.12" in r.stderr and "lateextra" in r.stderr
        assert "nothing was written" in r.stderr and "Traceback" not in r.stderr
        assert _snapshot(w.project) == snap  # no spec, no lock, no temp file changed


def test_refresh_refuses_a_date_that_has_not_ended_and_bad_combinations(world: World, env: dict[str, str]) -> None:
    import datetime as dt

    proj = world.project
    snap = _snapshot(proj)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    for args in (["--refresh", "--exclude-newer", today], ["--refresh", "--exclude-newer", "31.01.2026"],
                 ["--exclude-newer", AFTER], ["--refresh", "--python", "3.12"], ["--refresh", "--offline"],
                 ["--refresh", "--verify"], ["--check", "--verify"]):
        r = builder_cmd("lock", *args, cwd=proj, env=env)
        assert r.returncode == EXIT_USAGE, (args, r.stderr)
        assert r.stderr.startswith("builder: error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert _snapshot(proj) == snap


def test_a_date_is_a_utc_day_whatever_the_callers_time_zone(house: tuple[Path, dict[str, str]],
                                                            tmp_path: Path, env: dict[str, str]) -> None:
    with refresh_world.served(house, tmp_path, {"k": {"extra": '["tzprobe"]'}}) as w:
        for tz in ("Asia/Tokyo", "America/Los_Angeles"):
            r = builder_cmd("lock", cwd=w.project, env=dict(env, TZ=tz))
            assert r.returncode == 0, r.stderr
            assert _versions(w.project / K)["tzprobe"] == "2.0", tz  # uploaded 2025-12-30T20:00Z


def test_refresh_keeps_a_toml_date_a_date(tmp_path: Path) -> None:
    from builder.lock.refresh import edit_spec

    root = refresh_world.write_project(tmp_path, "http://127.0.0.1:9/simple", date="2025-12-30")
    change, matrix = edit_spec(root / "envs/matrix-k.toml", __import__("datetime").date(2026, 1, 31))
    assert "exclude-newer = 2026-01-31   # the resolution date" in change.text
    assert (change.old, change.new, change.changed, matrix.exclude_newer) == (
        "2025-12-30", "2026-01-31", True, "2026-01-31")


# --------------------------------------------------------------------------- diff: rehash, regression, clean tree


def test_diff_on_a_clean_tree_reports_no_changes(world: World, env: dict[str, str]) -> None:
    r = builder_cmd("lock", "diff", "--git", "HEAD", "--format", "json", cwd=world.project, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["regression"] is False and out["locks_with_package_changes"] == 0
    (d,) = out["locks"]
    assert d["identical"] and d["same_bytes"] and d["changed"] == d["added"] == d["removed"] == d["rehashed"] == []
    r = builder_cmd("lock", "diff", "--git", "HEAD", cwd=world.project, env=env)
    assert r.returncode == 0 and "packages: unchanged" in r.stdout and "REGRESSION" not in r.stdout


def test_a_reuploaded_wheel_shows_as_rehashed(world: World, env: dict[str, str]) -> None:
    proj = world.project
    old = proj / K
    tmp = proj.parent / "old-lock.toml"
    tmp.write_bytes(old.read_bytes())
    # Same name, same version, other bytes: the index now serves another file under the old name.
    wheels.make_wheel(world.house, "filelock", "3.19.1", files={"filelock/__init__.py": "# re-uploaded\n"})
    world.republish()
    r = builder_cmd("lock", cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    r = builder_cmd("lock", "diff", str(tmp), str(old), "--format", "json", cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["changed"] == [] and d["added"] == [] and d["removed"] == []
    (rh,) = d["rehashed"]
    assert (rh["name"], rh["version"]) == ("filelock", "3.19.1")
    (f,) = rh["files"]
    assert f["kind"] == "rehashed" and f["filename"] == "filelock-3.19.1-py3-none-any.whl"
    assert f["old"] != f["new"] and f["new"] == wheels.sha256_file(world.house / f["filename"])
    r = builder_cmd("lock", "diff", "--format", "md", cwd=proj, env=env)
    assert "re-uploaded" in r.stdout and "[!WARNING]" in r.stdout


def test_a_refresh_that_raises_the_native_floor_above_the_declared_one_is_a_regression(
        house: tuple[Path, dict[str, str]], tmp_path: Path, env: dict[str, str]) -> None:
    for w in _world(house, tmp_path, env, {"r": {}}):
        r = builder_cmd("lock", "--refresh", "--exclude-newer", AFTER, cwd=w.project, env=env)
        assert r.returncode == 0, r.stderr  # the locks are written so that a human can look
        r = builder_cmd("lock", "diff", "--git", "HEAD", "--format", "json", cwd=w.project, env=env)
        assert r.returncode == EXIT_FAILED, r.stderr
        out = json.loads(r.stdout)
        (d,) = out["locks"]
        assert out["regression"] and d["regression"]
        assert d["driver"]["old"]["native_min"] == "570.124.06" and d["driver"]["new"]["native_min"] == "575.57.08"
        assert any(x.startswith("native driver floor rose: 570.124.06 -> 575.57.08") for x in d["regressions"])
        assert d["host"]["driver"] == "570.124.06"  # judged on the host after the window (r's floor)
        # The same holds on another driver: the floor rose whatever the host.  The host named is the
        # one judged on: --driver's driver, not the matrix's floor.
        r = builder_cmd("lock", "diff", "--driver", "580.95.05", "--format", "md", cwd=w.project, env=env)
        assert r.returncode == EXIT_FAILED
        assert "**1 regression**" in r.stdout and "[!CAUTION]" in r.stdout and "native driver floor rose" in r.stdout
        assert ("**CUDA**, judged on driver 580.95.05, GPU compute capability 8.9 (envs/host.toml + --driver):"
                in r.stdout), r.stdout
        r = builder_cmd("lock", "diff", "--driver", "580.95.05", "--gpu-cc", "9.0", cwd=w.project, env=env)
        assert ("judged on: driver 580.95.05, GPU compute capability 9.0 (envs/host.toml + --driver, --gpu-cc)"
                in r.stdout), r.stdout
        r = builder_cmd("lock", "diff", "--gpu-cc", "9.0", cwd=w.project, env=env)
        assert ("judged on: driver 570.124.06, GPU compute capability 9.0 (envs/host.toml after the window: "
                "driver = matrix-r's floor + --gpu-cc)" in r.stdout), r.stdout
        r = builder_cmd("lock", "diff", cwd=w.project, env=env)
        assert r.returncode == EXIT_FAILED and "REGRESSION: native driver floor rose" in r.stdout
        # Pin back, as the README says: a constraint in the spec, re-lock; the rest of the refresh stays.
        r = builder_cmd("spec", "set", "r", "packages.constraints", '["nvidia-cublas-cu12<12.9"]', cwd=w.project)
        assert r.returncode == 0, r.stderr
        assert builder_cmd("lock", "--matrix", "r", cwd=w.project, env=env).returncode == 0
        r = builder_cmd("lock", "diff", "--format", "json", cwd=w.project, env=env)
        assert r.returncode == 0, r.stderr
        (d,) = json.loads(r.stdout)["locks"]
        assert d["changed"] == [{"name": "filelock", "old": "3.19.1", "new": "3.20.0"}] and not d["regression"]


# --------------------------------------------------------------------------- the CI loop, for real
def _ci_refresh(w: World, env: dict[str, str], tmp_path: Path, date: str = AFTER
                ) -> tuple[subprocess.CompletedProcess[str], str]:
    """``nox --no-venv -s lock-refresh`` (the CI job's command) with the shipped noxfile and the
    installed builder on PATH, in the world's git checkout; returns (result, GitHub step outputs)."""
    needs.nox()
    shutil.copy2(ROOT / "noxfile.py", w.project / "noxfile.py")
    outputs = tmp_path / "github-output"
    e = {k: v for k, v in env.items() if k != "BUILDER_PROJECT"}
    e.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")]),
             GITHUB_OUTPUT=str(outputs))
    r = subprocess.run([sys.executable, "-m", "nox", "--no-venv", "-f", "noxfile.py", "-s", "lock-refresh", "--",
                        "--exclude-newer", date], cwd=w.project, env=e, capture_output=True, text=True, timeout=300)
    return r, outputs.read_text() if outputs.exists() else ""


def _ran(r: subprocess.CompletedProcess[str]) -> list[str]:
    """The builder commands the session ran, in order (nox logs each as ``nox > builder ...``)."""
    return [ln.split("nox > ", 1)[1] for ln in r.stderr.splitlines() if "nox > builder " in ln]


def test_ci_lock_refresh_session_runs_the_real_commands_and_proposes_the_change(
        house: tuple[Path, dict[str, str]], tmp_path: Path, env: dict[str, str]) -> None:
    for w in _world(house, tmp_path, env, {"k": {}}):
        r, outputs = _ci_refresh(w, env, tmp_path)
        assert r.returncode == 0, r.stderr
        assert _ran(r) == [f"builder lock --refresh --exclude-newer {AFTER}", "builder lock --verify",
                           "builder lock diff --git HEAD --format md", "builder lock diff --git HEAD --format json"]
        assert 'exclude-newer = "2026-02-01"' in (w.project / "envs/matrix-k.toml").read_text()
        assert _git(w.project, "status", "--porcelain", "--", "envs", "locks").split() == [
            "M", "envs/matrix-k.toml", "M", str(K)]
        after = _versions(w.project / K)
        assert (after["filelock"], after["nvidia-cublas-cu12"]) == ("3.20.0", "12.9.1.4")
        md = (w.project / "lock-refresh.md").read_text()
        assert md.startswith("## Lock changes: 1 of 1 locks with package changes, no regression")
        assert "| filelock | 3.19.1 | **3.20.0** |" in md and "12.8.4.1 → **12.9.1.4**" in md
        assert json.loads((w.project / "lock-refresh.json").read_text())["locks_with_package_changes"] == 1
        assert outputs.splitlines() == ["changed=true", "regression=false", "title=Lock refresh"]
        # The count is of locks (this lock changed 2 packages).
        assert "lock-refresh: 1 lock with package changes: propose them as 'Lock refresh'" in r.stderr, r.stderr
        # Pinning back goes on the base branch: the workflow force-pushes the refresh branch weekly.
        advice = md.split("\n---\n", 1)[1]
        assert "on the base branch" in advice and "push to this branch" not in advice
        assert "builder spec set <id> packages.constraints" in advice


def _propose(tmp_path: Path, outputs: str) -> list[list[str]]:
    """Run the `propose` job's script of lock-refresh.yml with the refresh job's outputs, a stand-in
    `gh` and `git` that record their arguments; returns the `gh` calls."""
    text = (ROOT / ".github" / "workflows" / "lock-refresh.yml").read_text()
    lines = text.split("\n  propose:\n", 1)[1].split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "run: |") + 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    script = "\n".join(ln[indent:] for ln in lines[start:] if ln.startswith(" " * indent) or not ln.strip())
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    log = tmp_path / "gh-calls.jsonl"
    for tool in ("gh", "git"):
        (fake / tool).write_text(f"#!{sys.executable}\nimport json, sys\n"
                                 f"open({str(log)!r}, 'a').write(json.dumps(['{tool}', *sys.argv[1:]]) + '\\n')\n"
                                 "print(0 if sys.argv[1:3] == ['pr', 'list'] else '')\n")
        (fake / tool).chmod(0o755)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "lock-refresh.md").write_text("body\n")
    out = dict(ln.split("=", 1) for ln in outputs.splitlines())
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "BASE": "main", "DIR": str(artifact),
           "RUNNER_TEMP": str(tmp_path), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"), "GH_TOKEN": "x",
           "TITLE": out["title"]}
    subprocess.run(["bash", "-e", "-c", script], env=env, check=True, timeout=60, capture_output=True, text=True)
    calls = [json.loads(ln) for ln in log.read_text().splitlines()]
    return [c[1:] for c in calls if c[0] == "gh"]


def test_a_refresh_that_adds_a_warning_says_so_in_the_pull_request_title(
        house: tuple[Path, dict[str, str]], tmp_path: Path, env: dict[str, str]) -> None:
    """Back from 2026-02-01 to 2025-12-30, cuBLAS goes 12.9 -> 12.8, below vLLM's build toolkit:
    `cuda-toolkit-order` becomes a warning.  No regression (same floor): the pull request is
    proposed, and its title and body name the new warning."""
    for w in _world(house, tmp_path, env, {"k": {}}, date=AFTER):
        r, outputs = _ci_refresh(w, env, tmp_path, date="2025-12-30")
        assert r.returncode == 0, r.stderr
        title = "Lock refresh: 1 new warning (cuda-toolkit-order)"
        assert outputs.splitlines() == ["changed=true", "regression=false", f"title={title}"]
        assert f"propose them as {title!r}" in r.stderr
        md = (w.project / "lock-refresh.md").read_text()
        assert md.startswith("## Lock changes: 1 of 1 locks with package changes, no regression, 1 new warning\n")
        assert "> [!WARNING]\n> A new warning (it does not block)" in md
        assert "> - `matrix-k/py3.12`: new warn: cuda-toolkit-order: " in md
        d = json.loads((w.project / "lock-refresh.json").read_text())["locks"][0]
        assert [x.split(":")[:2] for x in d["new_warnings"]] == [["new warn", " cuda-toolkit-order"]]
        assert not d["regression"]
        # The workflow's propose step hands that title to gh.
        create = next(c for c in _propose(tmp_path, outputs) if c[:2] == ["pr", "create"])
        assert create[create.index("--title") + 1] == title


def test_ci_lock_refresh_session_fails_on_a_regression_and_leaves_the_locks_for_review(
        house: tuple[Path, dict[str, str]], tmp_path: Path, env: dict[str, str]) -> None:
    for w in _world(house, tmp_path, env, {"r": {}}):
        r, outputs = _ci_refresh(w, env, tmp_path)
        assert r.returncode != 0
        assert "lock diff: regression (see lock-refresh.md)" in r.stderr
        assert _ran(r)[:2] == [f"builder lock --refresh --exclude-newer {AFTER}", "builder lock --verify"]
        assert _versions(w.project / R)["nvidia-cublas-cu12"] == "12.9.1.4"  # written, for a human to look at
        assert _git(w.project, "status", "--porcelain", "--", "locks").split() == ["M", str(R)]
        md = (w.project / "lock-refresh.md").read_text()
        assert "**1 regression**" in md and "native driver floor rose: 570.124.06 -> 575.57.08" in md
        assert outputs.splitlines() == ["changed=false", "regression=true"]


def test_diff_usage_errors_are_one_line_exit_2(world: World, env: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from builder.cli import main

    proj = world.project
    monkeypatch.chdir(proj)
    for args in (["diff", str(K)], ["diff", str(K), str(K), "--git", "HEAD"], ["diff", "--git", "nosuchref"],
                 ["diff", "--driver", "banana"], ["diff", "--gpu-cc", "x"], ["diff", "--python", "3"],
                 ["--matrix", "k", "diff"], ["diff", "--matrix", "nope"], ["diff", "missing.toml", str(K)]):
        r = CliRunner().invoke(main, ["--project", str(proj), "lock", *args], env=env)
        assert r.exit_code == EXIT_USAGE, (args, r.output)
        assert r.output.startswith("builder: error: ") and len(r.output.strip().splitlines()) == 1, (args, r.output)
    r = CliRunner().invoke(main, ["--project", str(proj), "lock", "diff", "--format", "yaml"], env=env)
    assert r.exit_code == EXIT_USAGE and "'yaml' is not one of 'text', 'md', 'json'" in r.output


# --------------------------------------------------------------------------- verify


def _forge(path: Path, matrix: object) -> None:
    """Change a package in the body and re-stamp the lock so that ``--check`` calls it fresh."""
    text = path.read_text()
    st = pylock.stamp_state(text)
    assert st.stamp is not None
    head = lockstate.header(matrix, "3.12")  # type: ignore[arg-type]
    body = text[len(head):text.index(pylock.STAMP_MARKER) + 1]
    lock = pylock.read(path)
    wheel = lock.by_name["filelock"].wheels[0]
    assert wheel.sha256 is not None
    body = body.replace(wheel.sha256, "0" * 64)
    fields = {k: v for k, v in st.stamp.fields.items() if k not in (pylock.HASH_KEY, "stamp-format")}
    path.write_text(pylock.render(head, body, fields))


def test_verify_passes_on_fresh_locks_and_catches_a_forged_one(house: tuple[Path, dict[str, str]],
                                                               tmp_path: Path, env: dict[str, str]) -> None:
    for w in _world(house, tmp_path, env, {"k": {}, "r": {}}):
        proj = w.project
        r = builder_cmd("lock", "--verify", cwd=proj, env=env)
        assert r.returncode == 0, r.stderr
        assert "all 2 locks are identical to uv's resolution" in r.stdout
        _forge(proj / K, Project(proj).matrix("k"))
        snap = _snapshot(proj)
        assert builder_cmd("lock", "--check", cwd=proj, env=env).returncode == 0  # the stamp is fooled
        r = builder_cmd("lock", "--verify", cwd=proj, env=env)
        assert r.returncode == EXIT_FAILED, r.stderr
        assert "locks/matrix-k/pylock.py312.toml: differs: packages differ: 1 with other files or hashes (filelock)" \
            in r.stderr
        assert "locks/matrix-r" not in r.stderr
        r = builder_cmd("lock", "--verify", "--json", cwd=proj, env=env)
        states = {(o["matrix"], o["state"], o["how"]) for o in json.loads(r.stdout)}
        assert states == {("k", "differs", "online"), ("r", "identical", "offline")}
        assert _snapshot(proj) == snap  # verify writes nothing


def test_verify_without_network_or_cache_is_exit_3(world: World, env: dict[str, str], tmp_path: Path) -> None:
    empty = dict(env, UV_CACHE_DIR=str(tmp_path / "empty-uv-cache"))
    r = builder_cmd("lock", "--verify", "--offline", cwd=world.project, env=empty)
    assert r.returncode == EXIT_UNAVAILABLE, r.stderr
    assert "run `builder lock --verify` online once" in r.stderr
    # Online, but the index refuses: data unavailable too (a 403 is not retried, a dead port is for ~10 s).
    world.stats.fail_with = 403
    r = builder_cmd("lock", "--verify", cwd=world.project, env=empty)
    assert r.returncode == EXIT_UNAVAILABLE, r.stderr
    assert "could not reach" in r.stderr and "403" in r.stderr


@pytest.mark.usefixtures("rattler_cache")  # fixtures: tests/helpers/conda_channel.py
def test_refresh_of_a_conda_based_matrix_keeps_its_conda_lock_fresh(tmp_path: Path, index: str,
                                                                    channel: Path) -> None:
    """A conda base's lock records the spec hash, which the date is part of: it is re-solved
    in the same transaction."""
    from tests.conftest import write_project
    from tests.helpers import conda_channel

    root = write_project(tmp_path / "proj", index, {"c": {"pythons": f'["{conda_channel.MM}"]'}})
    conda_channel.add_conda_base(root / "envs" / "matrix-c.toml", str(channel))
    assert builder_cmd("lock", cwd=root).returncode == 0
    tag = conda_channel.MM.replace(".", "")
    clock = root / f"locks/matrix-c/conda-lock.py{tag}.yml"
    before = clock.read_bytes()
    r = builder_cmd("lock", "--refresh", "--exclude-newer", "2026-01-01", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["conda_locks"] == [f"locks/matrix-c/conda-lock.py{tag}.yml"]
    assert [o["state"] for o in out["locks"]] == ["unchanged"]
    assert clock.read_bytes() != before
    r = builder_cmd("lock", "--check", cwd=root)
    assert r.returncode == 0 and "all 2 locks are fresh" in r.stdout, r.stderr
