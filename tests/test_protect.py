"""The protected-env guard: QL_1 is never written, whatever path leads into it.

A fake conda root (``$HOME/miniconda3/envs/QL_1``) holds a real Python env.
Its complete tree (paths, modes, contents, mtimes) must hash identically
before and after every builder command run with QL_1 active.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder import protect
from builder.errors import EXIT_PROTECTED, ProtectedEnvError
from tests.conftest import tree_digest
from tests.helpers.runtimes import PY312, World, builder


@pytest.fixture(scope="module")
def home(w: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake HOME with ``miniconda3/envs/QL_1``: a Python 3.12 env with torch installed."""
    home = tmp_path_factory.mktemp("home")
    ql1 = home / "miniconda3" / "envs" / "QL_1"
    from builder import tools
    from builder.runtime import interpreters

    uv = tools.uv_bin()
    py = interpreters.find(PY312, uv=uv).path
    subprocess.run([uv, "venv", str(ql1), "--python", py, "--no-config", "-q"], check=True)
    torch = next((w.index_root / "files").glob("torch-*.whl"))
    subprocess.run([uv, "pip", "install", "--python", str(ql1 / "bin" / "python"), "--no-deps", "--no-config",
                    "--cache-dir", str(w.cache), "-q", str(torch)], check=True)
    (ql1 / "conda-meta").mkdir()
    (ql1 / "conda-meta" / "history").write_text("==> 2025-01-01 <==\n# production\n")
    os.chmod(ql1 / "conda-meta" / "history", 0o600)
    return home


def ql1(home: Path) -> Path:
    return home / "miniconda3" / "envs" / "QL_1"


def active(home: Path, **extra: str) -> dict[str, str]:
    """The operator's shell with QL_1 activated."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), CONDA_PREFIX=str(ql1(home)), CONDA_DEFAULT_ENV="QL_1", CONDA_SHLVL="1",
               PATH=f"{ql1(home) / 'bin'}{os.pathsep}{env['PATH']}")
    env.update(extra)
    return env


def test_every_command_with_ql1_active_leaves_its_tree_identical(w: World, home: Path, tmp_path: Path) -> None:
    before = tree_digest(ql1(home))
    env = active(home)
    proj = tmp_path / "proj"
    shutil.copytree(w.project, proj)
    runs = [
        builder("lock", "--matrix", "t", cwd=proj, env=env),
        builder("lock", "--check", cwd=proj, env=env),
        builder("build", "-m", "t", "-p", PY312, "--root", str(tmp_path / "rt"), "--cache-dir", str(w.cache),
                "--no-gpu", cwd=proj, env=env),
        builder("smoke", "-m", "t", "-p", PY312, "--root", str(tmp_path / "rt"), "--no-gpu", cwd=proj, env=env),
        builder("smoke", "--env", str(ql1(home) / "bin" / "python"), "--no-gpu", cwd=proj, env=env),
        builder("doctor", "--json", cwd=proj, env=env),  # defaults to the active env: QL_1
        builder("doctor", "--python", str(ql1(home) / "bin" / "python"), cwd=proj, env=env),
    ]
    for r in runs:
        assert r.returncode == 0, (r.args, r.stderr)
    doc = json.loads(runs[5].stdout)
    assert doc["python"]["prefix"] == str(ql1(home)) and "conda env QL_1" in doc["python"]["protected"]
    assert doc["torch"]["__version__"] == "2.9.0+cu128" and doc["torch"]["cudart_soname"] == "libcudart.so.12"
    assert tree_digest(ql1(home)) == before


@pytest.mark.parametrize("how", ["direct", "symlink", "dotdot", "active-only"])
def test_build_into_ql1_is_refused_before_anything_is_written(w: World, home: Path, tmp_path: Path,
                                                              how: str) -> None:
    before = tree_digest(ql1(home))
    env = active(home)
    if how == "direct":
        root = ql1(home) / "runtimes"
    elif how == "symlink":
        (tmp_path / "link").symlink_to(ql1(home))
        root = tmp_path / "link" / "runtimes"
    elif how == "dotdot":  # lexically tmp/rt; for the kernel QL_1/rt
        (tmp_path / "lib").symlink_to(ql1(home) / "lib")
        root = Path(f"{tmp_path}/lib/../rt")
    else:  # not in host.toml at all: protected only because it is the active env
        other = home / "work-env"
        other.mkdir()
        env = active(home, CONDA_PREFIX=str(other))
        root = other / "rt"
    r = w.build(root=root, env=env)
    assert r.returncode == EXIT_PROTECTED, r.stderr
    assert "refusing to create runtimes under" in r.stderr and "protected" in r.stderr
    assert r.stderr.count("\n") == 1  # one line, no traceback
    assert tree_digest(ql1(home)) == before
    assert not (ql1(home) / "runtimes").exists() and not (ql1(home) / "rt").exists()


def test_build_through_a_bind_mount_of_ql1_is_refused(w: World, home: Path, tmp_path: Path) -> None:
    """A bind mount has its own path; only (st_dev, st_ino) shows it is QL_1."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("user+mount namespaces are not available here")  # checked available on the dev host
    alias = tmp_path / "alias"
    alias.mkdir()
    before = tree_digest(ql1(home))
    cmd = (f"mount --bind {ql1(home)} {alias} && {sys.executable} -m builder build -m t -p {PY312} "
           f"--root {alias}/rt --cache-dir {w.cache} --no-gpu")
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", cmd], cwd=w.project,
                       env=active(home), capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_PROTECTED, r.stderr
    assert "conda env QL_1" in r.stderr
    assert tree_digest(ql1(home)) == before


def _fake_conda(bin_dir: Path, envs: list[Path]) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "conda"
    exe.write_text("#!/bin/sh\n"
                   f"echo '{json.dumps({'envs': [str(e) for e in envs]})}'\n")
    exe.chmod(0o755)


def _counting_conda(bin_dir: Path, envs: list[Path], log: Path) -> None:
    """A stand-in conda (none can be installed here) that says which envs exist and logs each call."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "conda"
    exe.write_text("#!/bin/sh\n"
                   f"echo \"$*\" >> '{log}'\n"
                   f"echo '{json.dumps({'envs': [str(e) for e in envs]})}'\n")
    exe.chmod(0o755)


def test_a_lazy_set_asks_conda_only_for_a_target_that_could_be_in_a_conda_env(tmp_path: Path) -> None:
    odd = tmp_path / "data" / "conda-envs" / "QL_1"  # where only conda knows it is
    other = tmp_path / "data" / "conda-envs" / "scratch"
    for env in (odd, other):
        (env / "conda-meta").mkdir(parents=True)
    log = tmp_path / "conda-calls"
    _counting_conda(tmp_path / "bin", [odd, other], log)
    environ = {"HOME": str(tmp_path / "home"), "PATH": str(tmp_path / "bin")}
    p = protect.resolve(["QL_1"], environ=environ, lazy=True)
    p.guard_write(tmp_path / "home" / ".cache" / "builder" / "wheels" / "x.json")
    p.guard_write(tmp_path / "runtimes" / "matrix-a-py312-abc")
    assert not log.exists()  # no conda env anywhere above those: conda was not asked
    with pytest.raises(ProtectedEnvError, match=r"conda env QL_1 \(conda env list\)"):
        p.guard_write(odd / "lib" / "python3.12" / "new.py")
    p.guard_write(other / "lib" / "x")  # another env: asked once, allowed
    assert log.read_text().splitlines() == ["env list --json"]
    (tmp_path / "alias").symlink_to(odd)
    with pytest.raises(ProtectedEnvError, match="QL_1"):
        p.guard_write(tmp_path / "alias" / "bin" / "python")
    eager = protect.resolve(["QL_1"], environ=environ)
    assert p.as_dict() == eager.as_dict() and p.whole().roots == eager.roots
    assert len(log.read_text().splitlines()) == 2  # the eager set asked for itself


def test_a_lazy_set_still_refuses_by_name_and_by_active_env_without_conda(tmp_path: Path) -> None:
    log = tmp_path / "conda-calls"
    _counting_conda(tmp_path / "bin", [], log)
    active_env = tmp_path / "venv"
    active_env.mkdir()
    environ = {"HOME": str(tmp_path), "PATH": str(tmp_path / "bin"), "VIRTUAL_ENV": str(active_env)}
    p = protect.resolve(["QL_1"], [str(tmp_path / "prod")], environ=environ, lazy=True)
    for target in (tmp_path / "opt" / "envs" / "QL_1" / "lib", active_env / "lib", tmp_path / "prod" / "x"):
        with pytest.raises(ProtectedEnvError):
            p.guard_write(target)
    assert not log.exists()


def test_an_unreadable_ancestor_counts_as_maybe_a_conda_env(tmp_path: Path) -> None:
    assert not protect.in_some_conda_env(tmp_path / "a" / "b")
    (tmp_path / "a" / "conda-meta").mkdir(parents=True)
    assert protect.in_some_conda_env(tmp_path / "a" / "b" / "c")
    (tmp_path / "f").write_text("")
    assert not protect.in_some_conda_env(tmp_path / "f" / "x")  # ENOTDIR: not an env
    if os.geteuid() != 0:
        (tmp_path / "locked").mkdir(mode=0o000)
        try:
            assert protect.in_some_conda_env(tmp_path / "locked" / "x")
        finally:
            (tmp_path / "locked").chmod(0o700)


def test_a_warm_check_on_a_host_with_conda_does_not_run_it(w: World, home: Path, tmp_path: Path) -> None:
    """On the operator's host conda exists and QL_1 is protected by name: the check cache under
    ~/.cache is in no conda env, so a check never waits for `conda env list`."""
    log = tmp_path / "conda-calls"
    _counting_conda(tmp_path / "bin", [ql1(home)], log)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}")
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "builder", "check", "-m", "t", "--cache-dir",
                            str(tmp_path / "cache")], cwd=w.project, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode in (0, 1), r.stderr
    assert not log.exists()
    r = subprocess.run([sys.executable, "-m", "builder", "check", "-m", "t", "--cache-dir",
                        str(ql1(home) / "cache")], cwd=w.project, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == EXIT_PROTECTED and "conda env QL_1" in r.stderr, r.stderr
    assert not (ql1(home) / "cache").exists()


def test_names_resolve_through_conda_env_list(tmp_path: Path) -> None:
    odd = tmp_path / "data" / "conda-envs" / "QL_1"  # not a standard location
    odd.mkdir(parents=True)
    _fake_conda(tmp_path / "bin", [tmp_path / "data" / "base", odd])
    environ = {"HOME": str(tmp_path / "nohome"), "PATH": str(tmp_path / "bin")}
    p = protect.resolve(["QL_1"], environ=environ)
    assert [r.why for r in p.roots] == ["conda env QL_1 (conda env list)"]
    with pytest.raises(ProtectedEnvError, match="conda env QL_1"):
        p.guard_write(odd / "lib" / "x")
    p.guard_write(tmp_path / "data" / "base" / "x")  # other envs are not protected


@pytest.mark.parametrize("where", ["CONDA_ENVS_PATH", "environments.txt", "~/miniforge3/envs", "~/.conda/envs"])
def test_names_resolve_without_conda(tmp_path: Path, where: str) -> None:
    home = tmp_path / "home"
    environ = {"HOME": str(home), "PATH": str(tmp_path / "empty")}
    if where == "CONDA_ENVS_PATH":
        prefix = tmp_path / "envdir" / "QL_1"
        environ["CONDA_ENVS_PATH"] = f"{tmp_path / 'nothing'}{os.pathsep}{tmp_path / 'envdir'}"
    elif where == "environments.txt":
        prefix = tmp_path / "somewhere" / "QL_1"
        (home / ".conda").mkdir(parents=True)
        (home / ".conda" / "environments.txt").write_text(f"{tmp_path / 'other'}\n{prefix}\n")
    else:
        prefix = home / where.removeprefix("~/") / "QL_1"
    prefix.mkdir(parents=True)
    p = protect.resolve(["QL_1"], environ=environ)
    assert p.unresolved == ()
    assert p.match(prefix / "bin" / "python") is not None
    assert p.match(tmp_path / "elsewhere") is None


def test_an_unresolved_name_is_still_refused_as_an_envs_directory(tmp_path: Path) -> None:
    p = protect.resolve(["QL_1"], environ={"HOME": str(tmp_path), "PATH": ""})
    assert p.unresolved == ("QL_1",) and "still refused" in p.notes[0]
    with pytest.raises(ProtectedEnvError, match="QL_1"):
        p.guard_write(tmp_path / "opt" / "envs" / "QL_1" / "lib")
    p.guard_write(tmp_path / "opt" / "envs" / "QL_2" / "lib")


def test_protected_paths_and_virtual_env_are_roots(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    p = protect.resolve([], [str(tmp_path / "prod")], environ={"HOME": str(tmp_path), "VIRTUAL_ENV": str(venv)})
    assert {r.why for r in p.roots} == {f"protected path {tmp_path / 'prod'}", "active env (VIRTUAL_ENV)"}
    assert p.match(tmp_path / "prod" / "new" / "deeper") is not None  # need not exist yet
    assert p.match(venv / "lib") is not None and p.match(tmp_path / "venv2") is None


def test_inode_check_alone_catches_an_alias(tmp_path: Path) -> None:
    """Even if string resolution were fooled, the (st_dev, st_ino) walk sees the directory."""
    real = tmp_path / "QL_1"
    real.mkdir()
    p = protect.resolve([], [str(real)], environ={"HOME": str(tmp_path)})
    (tmp_path / "alias").symlink_to(real)
    fooled = protect.Protected(tuple(protect.Root(Path("/nonexistent/elsewhere"), r.why, r.dev_ino)
                                     for r in p.roots))
    assert fooled.match(tmp_path / "alias" / "new" / "file") is not None
    assert fooled.match(tmp_path / "other") is None


def test_nox_sessions_with_ql1_active_leave_its_tree_identical(w: World, home: Path, tmp_path: Path) -> None:
    """The project's own noxfile (lock, build, smoke sessions) run with QL_1 active.

    ``--no-venv`` runs them with the builder under test (no installs, offline);
    BUILDER_PROJECT points them at a copy of the test project whose matrices a
    and b are the small local-index matrix.
    """
    from tests.conftest import ROOT
    from tests.helpers import needs

    needs.nox()

    proj = tmp_path / "proj"
    shutil.copytree(w.project, proj)
    spec = (proj / "envs" / "matrix-t.toml").read_text()
    for mid in ("a", "b"):
        (proj / "envs" / f"matrix-{mid}.toml").write_text(spec.replace('id = "t"', f'id = "{mid}"'))
    before = tree_digest(ql1(home))
    bindir = Path(sys.executable).parent  # where this test's builder console script lives
    env = active(home, BUILDER_PROJECT=str(proj), BUILDER_RUNTIMES=str(tmp_path / "rt"),
                 UV_CACHE_DIR=str(w.cache))
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    nox = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--no-venv", "-s"]
    r = subprocess.run([*nox, "lock-matrix-a", "lock-matrix-b"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # --no-gpu: the stand-in torch has no CUDA, and this host may have a GPU.
    r = subprocess.run([*nox, "build-matrix-a", "smoke-matrix-a", "--", "--no-gpu"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Session build-matrix-a was successful" in r.stderr
    assert (tmp_path / "rt" / "matrix-a-py312").is_symlink()
    assert tree_digest(ql1(home)) == before
