"""A dead server's leftovers (issue 18): when the recorded API server is gone but processes of its
group remain (vLLM's engine core and resource tracker after a ``kill -9`` of the API server, still
holding GPU memory), ``serve status`` says so, with the GPU memory they hold where nvidia-smi
answers, and ``serve stop`` ends them (``--force`` only where the route points at the slot).  And
monitoring can rely on ``serve status``: it exits 1 when the routed slot is not ready (issue 20).
The stand-in's children really outlive it; signals are real; nvidia-smi is a script on PATH."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import EXIT_BUSY, EXIT_FAILED, EXIT_USAGE
from builder.serve import process
from tests.helpers import serve as h


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[h.ServeProject]:
    s = h.make_serve_project(tmp_path)
    yield s
    h.no_stragglers(s)


def _one_line(r: object) -> str:
    err = r.stderr  # type: ignore[attr-defined]
    lines = [x for x in err.splitlines() if x.startswith("builder: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _kill_the_api_server(sp: h.ServeProject) -> tuple[str, list[int]]:
    """``kill -9`` the recorded leader; the token and the processes that outlive it."""
    rec = json.loads((sp.state / "slots" / "green.json").read_text())
    token, pids = h.token_pids(sp.project, "green")
    assert rec["pid"] in pids and len(pids) == 3
    os.kill(rec["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process.alive(rec["pid"]):
        assert time.monotonic() < deadline, "the API server did not die"
        time.sleep(0.05)
    left = h.with_env(f"BUILDER_SERVE_TOKEN={token}")
    assert sorted(left) == sorted(p for p in pids if p != rec["pid"]) and len(left) == 2
    return token, left


def _green(r: object) -> dict[str, object]:
    st = json.loads(r.stdout)  # type: ignore[attr-defined]
    return next(s for s in st["slots"] if s["slot"] == "green")  # type: ignore[no-any-return]


def test_orphans_of_a_killed_server_are_shown_with_their_gpu_memory_and_stopped(sp: h.ServeProject) -> None:
    assert sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green").returncode == 0
    token, left = _kill_the_api_server(sp)
    apps = f"{left[0]}, 16000;{left[1]}, 755;999999, 4000"  # a process of someone else's too

    r = sp.run("serve", "status", "--json", FAKE_SMI_APPS=apps)
    assert r.returncode == 0, r.stderr  # not routed: monitoring has nothing to say about the route
    green = _green(r)
    assert green["alive"] is False and green["orphans"] == {"pids": left, "gpu_mib": 16755}
    r = sp.run("serve", "status", FAKE_SMI_APPS=apps)
    assert f"slot green: its server is gone but 2 orphaned process(es) (pid {left[0]}, {left[1]}), holding " \
           "16755 MiB of GPU memory; end them with `builder serve stop --slot green`" in r.stdout
    assert "dead, 2 orphan(s)" in r.stdout

    # nvidia-smi failing, or not answering within the status bound: the memory is unknown, never 0.
    r = sp.run("serve", "status", "--json", FAKE_SMI_APPS=apps, FAKE_SMI_APPS_EXIT="9")
    assert _green(r)["orphans"] == {"pids": left, "gpu_mib": None}
    t = time.monotonic()
    r = sp.run("serve", "status", "--json", "--timeout", "2", FAKE_SMI_APPS=apps, FAKE_SMI_APPS_SLEEP="60")
    assert time.monotonic() - t < 2 + 4 and _green(r)["orphans"] == {"pids": left, "gpu_mib": None}
    r = sp.run("serve", "status", FAKE_SMI_APPS=apps, FAKE_SMI_APPS_EXIT="9")
    assert "GPU memory unknown" in r.stdout

    r = sp.run("serve", "stop", "--slot", "green", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["orphans"] is True and res["pids"] == left and res["signalled"] == left
    assert "ending 2 orphaned process(es)" in r.stderr
    assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == []
    assert not (sp.state / "slots" / "green.json").exists()


def test_orphans_of_the_routed_slot_need_force_and_status_exits_1(sp: h.ServeProject) -> None:
    assert sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm").returncode == 0
    assert sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green").returncode == 0
    assert sp.run("route", "set", "green").returncode == 0
    r = sp.run("serve", "status")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr  # the control: routed and ready
    token, left = _kill_the_api_server(sp)

    r = sp.run("serve", "status", FAKE_SMI_APPS=f"{left[0]}, 16755")
    assert r.returncode == EXIT_FAILED
    assert _one_line(r) == (f"builder: the route points at slot green, which is dead, 2 orphaned process(es) "
                            f"(pid {left[0]}, {left[1]}), holding 16755 MiB of GPU memory")
    assert "`builder serve stop --slot green --force`" in r.stdout
    r = sp.run("serve", "stop", "--slot", "green")
    assert r.returncode == EXIT_BUSY
    assert "is the route" in _one_line(r) and "its server is dead but 2 process(es) of it remain" in _one_line(r)
    assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == left
    r = sp.run("serve", "stop", "--slot", "green", "--force", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["signalled"] == left
    assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == []
    journal = [json.loads(x) for x in sp.route_file.with_name("llm.env.journal").read_text().splitlines()]
    assert journal[-1]["action"] == "stop-forced"


def test_status_exits_1_naming_the_routed_slot_when_it_is_not_ready(sp: h.ServeProject) -> None:
    """Before the fix `serve status` exited 0 with no word when the route pointed at a dead slot."""
    production = sp.url(h.free_port())  # not a slot's port
    assert sp.run("route", "init", "--url", production, "--model", "querylake-llm").returncode == 0
    assert sp.run("route", "set", "green", "--force").returncode == 0  # nothing runs there
    for args in (("serve", "status"), ("serve", "status", "--json")):
        r = sp.run(*args, "--timeout", "3")
        assert r.returncode == EXIT_FAILED
        assert _one_line(r) == "builder: the route points at slot green, which is not running (unreachable)"
    assert json.loads(r.stdout)["route"]["slot"] == "green"
    # A server that answers but is not ready (completions fail): named with its probe.
    broken = h.run_fake(sp.green, sp.env, mode="completion-500")
    try:
        r = sp.run("serve", "status", "--timeout", "3")
        assert r.returncode == EXIT_FAILED
        assert "builder: the route points at slot green, which is not running (not-ready (completion: HTTP 500" \
            in _one_line(r)
    finally:
        h.stop_fake(broken)
    # The route on production's endpoint (not a slot): not serve status's to judge.
    assert sp.run("route", "rollback", "--force").returncode == 0
    r = sp.run("serve", "status", "--timeout", "3")
    assert r.returncode == 0 and "builder: " not in r.stderr


def test_stop_of_a_routed_slot_that_is_already_dead_says_it_is_dead(sp: h.ServeProject) -> None:
    """Before the fix it refused (exit 7) as if a server were running there."""
    assert sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm").returncode == 0
    assert sp.run("route", "set", "green", "--force").returncode == 0
    r = sp.run("serve", "stop", "--slot", "green")
    assert r.returncode == 0, r.stderr
    assert "slot green: not running (its server is dead; the route still points at it)" in r.stdout
    assert "its server is dead, and the route still points at it" in r.stderr


def test_probe_of_a_slot_says_when_its_api_key_variable_is_unset(sp: h.ServeProject) -> None:
    """Before the fix it probed without the key (and reported 401 as not ready, or unreachable)."""
    sp.spec(extra='api-key-env = "QL_TEST_KEY"\n')
    env = {k: v for k, v in sp.env.items() if k != "QL_TEST_KEY"}
    r = h.builder("serve", "probe", "--slot", "green", "--timeout", "3", cwd=sp.project, env=env)
    assert r.returncode == EXIT_USAGE
    assert "the service needs an API key but $QL_TEST_KEY is not set" in _one_line(r)
    assert "verdict" not in r.stdout and "health" not in r.stdout
