"""The unit runs what ``serve start`` tested (issue 20): the same environment (HOME, HF_HOME,
HF_HUB_OFFLINE, the spec's [env] ...), the spec's account and never root unless the spec says so;
a route to a slot a unit runs records the runtime it runs (so pinning covers it), and rolling back
onto a slot that now runs another runtime needs --force.  Real CLI, real processes: the server
started by ``serve start`` is read in /proc, the unit's sh form is run as is."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import EXIT_FAILED, EXIT_USAGE
from builder.project import Project
from builder.serve.service import pinned_runtimes
from tests.helpers import serve as h

ROOT_USER = os.geteuid() == 0


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[h.ServeProject]:
    s = h.make_serve_project(tmp_path)
    yield s
    h.no_stragglers(s)


def _systemd_env(unit: str) -> dict[str, str]:
    """``Environment=`` lines of a rendered unit, unquoted as systemd reads them."""
    out: dict[str, str] = {}
    for line in unit.splitlines():
        if not line.startswith("Environment="):
            continue
        word = line[len("Environment="):]
        if word.startswith('"'):
            word = re.sub(r'\\(.)', r"\1", word[1:-1])
        word = word.replace("$$", "$").replace("%%", "%")
        k, _, v = word.partition("=")
        out[k] = v
    return out


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode().split("=", 1) for x in raw if b"=" in x)


def test_the_unit_has_the_environment_serve_start_gave_the_server(sp: h.ServeProject, tmp_path: Path) -> None:
    """Before the fix the unit set a minimal PATH and the spec's [env] only: no HOME, HF_HOME or
    HF_HUB_OFFLINE, so the unit looked for the model elsewhere than the server serve start tested."""
    sp.spec(extra=h.account(), green_env='CUDA_VISIBLE_DEVICES = "1", OMP_NUM_THREADS = "4"')
    caller = {**sp.env, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "HF_TOKEN": "hf_s3cret", "VLLM_LOGGING_LEVEL": "DEBUG", "UNRELATED": "x"}
    r = h.builder("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green", cwd=sp.project, env=caller)
    assert r.returncode == 0, r.stderr
    served = _environ(json.loads((sp.state / "slots" / "green.json").read_text())["pid"])
    r = h.builder("serve", "unit", "--runtime", h.RUNTIME_ID, "--slot", "green", cwd=sp.project, env=caller)
    assert r.returncode == 0, r.stderr
    unit = _systemd_env(r.stdout)
    for key in ("HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_LOGGING_LEVEL", "PATH",
                "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "CUDA_DEVICE_ORDER", "PYTHONNOUSERSITE",
                "BUILDER_SERVE_STATE", "BUILDER_SERVE_RUNTIME", "BUILDER_SERVE_LOCK", "BUILDER_SERVE_ORIGIN"):
        assert key in unit, (key, r.stdout)
    differ = {k: (v, served.get(k)) for k, v in unit.items() if served.get(k) != v}
    assert not differ, differ  # every variable the unit sets has the value serve start's server had
    assert (unit["HOME"], unit["HF_HOME"], unit["HF_HUB_OFFLINE"]) == (sp.env["HOME"], str(tmp_path / "hf"), "1")
    assert "hf_s3cret" not in r.stdout and "UNRELATED" not in r.stdout  # no secret in a unit file
    assert f"User={pwd.getpwuid(os.geteuid()).pw_name}" in r.stdout.splitlines()
    # The sh form exports the same.
    r = h.builder("serve", "unit", "--runtime", h.RUNTIME_ID, "--slot", "green", "--format", "sh", cwd=sp.project,
                  env=caller)
    exported = dict(re.findall(r"^export ([A-Z_]+)=(.*)$", r.stdout, re.M))
    assert set(exported) == set(unit)
    assert sp.run("serve", "stop", "--slot", "green").returncode == 0


def test_the_unit_runs_as_the_specs_account_and_never_root_unless_it_says_so(sp: h.ServeProject) -> None:
    unit = ("serve", "unit", "--runtime", h.RUNTIME_ID, "--slot", "green")
    r = sp.run(*unit)
    assert r.returncode == EXIT_USAGE and "names no user" in r.stderr  # the shipped default: say who
    me = pwd.getpwuid(os.geteuid()).pw_name
    other = "nobody" if me != "nobody" else "daemon"
    sp.spec(extra=f'user = "{other}"\n')
    for args in (unit, ("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")):
        r = sp.run(*args)
        assert r.returncode == EXIT_USAGE, r.stderr
        assert f"the service runs as {other} (user in " in r.stderr and f"but this is {me}" in r.stderr
    assert h.stragglers(sp.marker) == []
    if ROOT_USER:
        sp.spec(extra='user = "root"\n')
        r = sp.run(*unit)
        assert r.returncode == EXIT_USAGE and "the unit would run vLLM as root" in r.stderr
        sp.spec(extra='user = "root"\nallow-root = true\n')
    else:
        sp.spec(extra=f'user = "{me}"\n')
    r = sp.run(*unit)
    assert r.returncode == 0, r.stderr
    assert f"User={me}" in r.stdout.splitlines()


def _run_sh_unit(sp: h.ServeProject, tmp_path: Path) -> subprocess.Popen[bytes]:
    """Render the green slot's unit as sh and run it as is, until a probe finds it ready."""
    out = tmp_path / "green.sh"
    r = sp.run("serve", "unit", "--runtime", h.RUNTIME_ID, "--slot", "green", "--format", "sh", "-o", str(out))
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen(["sh", str(out)], env=sp.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while sp.run("serve", "probe", "--slot", "green", "--timeout", "3").returncode != 0:
        assert time.monotonic() < deadline, "the unit's server never became ready"
        time.sleep(0.2)
    return proc


def test_route_set_to_a_slot_a_unit_runs_records_its_runtime_and_pins_it(sp: h.ServeProject,
                                                                        tmp_path: Path) -> None:
    """Before the fix a route to a unit's server recorded no runtime: `build --force` could replace
    the runtime under the running unit."""
    sp.spec(extra=h.account())
    assert sp.run("route", "init", "--url", sp.url(h.free_port()), "--model", "querylake-llm").returncode == 0
    unit = _run_sh_unit(sp, tmp_path)
    try:
        r = sp.run("route", "set", "green", "--json")
        assert r.returncode == 0, r.stderr
        to = json.loads(r.stdout)["entry"]["to"]
        assert (to["slot"], to["runtime"], to["lock"], to["origin"]) == ("green", h.RUNTIME_ID, "ab" * 32, "lock")
        assert f"# runtime: {h.RUNTIME_ID}" in sp.route_file.read_text()
        assert h.RUNTIME_ID in pinned_runtimes(Project(sp.project))
    finally:
        h.stop_fake(unit)  # type: ignore[arg-type]


def test_rollback_onto_a_slot_that_now_runs_another_runtime_needs_force(sp: h.ServeProject) -> None:
    other = "matrix-t-py312-fedcba987654"
    h.make_runtime(sp.root, other)
    start = ("serve", "start", "--slot", "blue", "--runtime")
    assert sp.run("route", "init", "--url", sp.url(h.free_port()), "--model", "querylake-llm").returncode == 0
    assert sp.run(*start, h.RUNTIME_ID).returncode == 0
    assert sp.run("route", "set", "blue").returncode == 0
    assert sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green").returncode == 0
    assert sp.run("route", "set", "green").returncode == 0
    # blue, the rollback target, is restarted with another runtime behind the route's back.
    assert sp.run("serve", "stop", "--slot", "blue").returncode == 0
    assert sp.run(*start, other).returncode == 0
    before = sp.route_file.read_bytes()
    r = sp.run("route", "rollback")
    assert r.returncode == EXIT_FAILED
    assert f"slot blue now runs {other}, not {h.RUNTIME_ID} that the route had there" in r.stderr
    assert sp.route_file.read_bytes() == before
    r = sp.run("route", "rollback", "--force", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["entry"]["to"]["runtime"] == other
    for slot in ("blue", "green"):
        assert sp.run("serve", "stop", "--slot", slot, "--force").returncode == 0
