"""A protected env builder cannot locate is said, not silently unguarded.

QL_1 declared in envs/host.toml, listed by no conda, in no usual env directory and not in
``[protected] paths``: builder could refuse writes into it only where a path shows
``envs/QL_1``.  ``preflight`` reports it as a check, ``doctor`` and every command that writes
(derived from the click tree) as one stderr line:
``cannot guard QL_1: add its path to `[protected] paths` in envs/host.toml``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder import protect
from tests.helpers.runtimes import World
from tests.test_write_gate import Host, case, drive, invocation, make_host, modes

MESSAGE = "cannot guard QL_1: add its path to `[protected] paths` in envs/host.toml"
WARNING = f"builder: warning: {MESSAGE}"


def _counting_conda(bin_dir: Path, envs: list[Path], log: Path) -> dict[str, str]:
    """A conda on PATH that lists ``envs`` and logs each call; the environment to use it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "conda"
    exe.write_text(f"#!/bin/sh\necho \"$*\" >> '{log}'\necho '{json.dumps({'envs': [str(e) for e in envs]})}'\n")
    exe.chmod(0o755)
    return {"PATH": str(bin_dir)}


@pytest.mark.parametrize("lazy", [True, False])
def test_a_name_is_unlocatable_only_where_no_conda_no_env_directory_and_no_path_has_it(
        tmp_path: Path, lazy: bool) -> None:
    home = tmp_path / "home"
    nowhere = {"HOME": str(home), "PATH": str(tmp_path / "empty")}
    assert protect.resolve(["QL_1"], environ=nowhere, lazy=lazy).unlocatable() == ("QL_1",)
    # Two names, one of them found.
    assert protect.resolve(["QL_1", "QL_2"], ["/srv/QL_2"], environ=nowhere, lazy=lazy).unlocatable() == ("QL_1",)
    # Named by its path in [protected] paths (a conda env's name is its directory's).
    assert protect.resolve(["QL_1"], ["/srv/prod/QL_1"], environ=nowhere, lazy=lazy).unlocatable() == ()
    # In a usual env directory.
    (home / "miniforge3" / "envs" / "QL_1").mkdir(parents=True)
    log = tmp_path / "conda-calls"
    scanned = {**nowhere, **_counting_conda(tmp_path / "bin", [], log)}
    assert protect.resolve(["QL_1"], environ=scanned, lazy=lazy).unlocatable() == ()
    assert not log.exists() or not lazy  # found without asking conda
    # Only a conda knows where it is.
    odd = tmp_path / "data" / "QL_1"
    odd.mkdir(parents=True)
    listed = {"HOME": str(tmp_path / "other-home"), **_counting_conda(tmp_path / "bin2", [odd], log)}
    assert protect.resolve(["QL_1"], environ=listed, lazy=lazy).unlocatable() == ()
    # Active: guarded as the active env.
    active = {**nowhere, "CONDA_PREFIX": str(odd)}
    assert protect.resolve(["QL_1"], environ=active, lazy=lazy).unlocatable() == ()


@pytest.fixture(scope="module")
def host(w: World, tmp_path_factory: pytest.TempPathFactory) -> Host:
    return make_host(w, tmp_path_factory.mktemp("unguarded"))


def _lost(host: Host) -> dict[str, str | None]:
    """The host's environment with QL_1 nowhere to be found: an empty HOME, no micromamba root;
    the host's conda stays on PATH and does not list it."""
    empty = host.scratch / "empty-home"
    empty.mkdir(exist_ok=True)
    return {"HOME": str(empty), "MAMBA_ROOT_PREFIX": None, "CONDA_ENVS_PATH": None, "CONDA_ROOT": None}


def test_every_writing_command_says_it_cannot_guard_ql1_once(host: Host) -> None:
    """Each command and mode from the click tree, stopped at its first write (the gate approved a
    path: it was about to write): the warning comes once, before that write; a command that
    writes nothing says nothing (doctor reports it by design).  With QL_1 where builder looks
    (the host's HOME), no command says it."""
    cases = []
    for name, cmd in modes():
        argv = invocation(name, cmd)
        if name == "host snapshot":
            argv = [*name.split(), str(host.scratch / "snap.json")]
        cases.append(case(name, host.project, argv, _lost(host), abort_under=Path("/")))
        cases.append(case(f"{name} (guarded)", host.project, argv, {}, abort_under=Path("/")))
    res = drive(host, cases)
    wrote = {k for k, r in res.items() if r["aborted"] and "(guarded)" not in k}
    assert {"lock", "spec set", "build", "check", "host snapshot", "serve start", "route init"} <= wrote
    wrong = {k: r["warnings"] for k, r in res.items() if "(guarded)" not in k
             and r["warnings"] != ([WARNING] if k in wrote else [])}
    assert not wrong, wrong
    assert WARNING in res["doctor"]["stderr"]  # doctor writes nothing, and says it itself
    guarded = {k: r["warnings"] for k, r in res.items() if "(guarded)" in k and r["warnings"]}
    assert not guarded, guarded


def _builder(host: Host, *args: str, env: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in {**host.env, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "builder", "--project", str(host.project), *args], env=e,
                          capture_output=True, text=True, timeout=180)


def test_preflight_and_doctor_report_it(host: Host) -> None:
    r = _builder(host, "preflight", "--matrix", "t", "--json", env=_lost(host))
    checks = {c["id"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["protected-envs"]["level"] == "warn" and checks["protected-envs"]["message"] == MESSAGE
    r = _builder(host, "preflight", "--matrix", "t", env=_lost(host))
    assert f"protected-envs: {MESSAGE}" in r.stdout.replace("  ", " ") or MESSAGE in r.stdout, r.stdout
    r = _builder(host, "doctor", "--python", sys.executable, "--json", env=_lost(host))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["unguarded"] == [MESSAGE] and r.stderr.splitlines() == [WARNING]
    # Where builder finds it (the host's HOME), neither says anything.
    r = _builder(host, "preflight", "--matrix", "t", "--json", env={})
    assert "protected-envs" not in {c["id"] for c in json.loads(r.stdout)["checks"]}
    r = _builder(host, "doctor", "--python", sys.executable, "--json", env={})
    assert json.loads(r.stdout)["unguarded"] == [] and WARNING not in r.stderr
    # Nor from a snapshot: the guard is this machine's, a snapshot's host another one.
    snap = host.scratch / "preflight-snap.json"
    assert _builder(host, "host", "snapshot", str(snap), env={}).returncode == 0
    r = _builder(host, "preflight", "--matrix", "t", "--from-snapshot", str(snap), "--json", env=_lost(host))
    assert "protected-envs" not in {c["id"] for c in json.loads(r.stdout)["checks"]}


def test_naming_its_path_in_host_toml_silences_it(host: Host, tmp_path: Path) -> None:
    import shutil

    proj = tmp_path / "proj"
    shutil.copytree(host.project, proj, symlinks=True)
    hosttoml = proj / "envs" / "host.toml"
    text = hosttoml.read_text()
    assert text.count("\npaths = []\n") == 1
    hosttoml.write_text(text.replace("\npaths = []\n", f'\npaths = ["{host.ql1}"]\n'))
    e = {k: v for k, v in {**host.env, **_lost(host)}.items() if v is not None}
    r = subprocess.run([sys.executable, "-m", "builder", "--project", str(proj), "spec", "set", "t",
                        "torch.version", "2.9.0"], env=e, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and WARNING not in r.stderr, r.stderr
    assert os.path.isdir(host.ql1)
