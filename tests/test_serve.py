"""builder serve / route end to end: the real CLI, real processes and sockets.

The runtime is a tiny fake (``runtime.json`` + the stand-in server as
``bin/vllm``, tests/helpers/fake_vllm.py); every command runs with a fake
``QL_1`` active, whose tree must hash identically afterwards; no test may
leave a process behind (checked through /proc, stragglers are killed).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import EXIT_BUSY, EXIT_FAILED, EXIT_PROTECTED, EXIT_UNAVAILABLE, EXIT_USAGE
from tests.conftest import tree_digest
from tests.helpers import serve as h

ADA = h.ADA
SP = h.ServeProject
_make_sp = h.make_serve_project
_no_stragglers = h.no_stragglers


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[SP]:
    s = _make_sp(tmp_path)
    yield s
    _no_stragglers(s)


def _json(r: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert r.stdout, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, dict)
    return data


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in r.stderr.splitlines() if x.startswith("builder: ")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def _wait_in_flight(port: int, timeout: float = 15) -> None:
    """Until the stand-in's /metrics shows one request running."""
    deadline = time.monotonic() + timeout
    want = 'vllm:num_requests_running{engine="0",model_name="querylake-llm"} 1.0'
    while want not in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode():
        assert time.monotonic() < deadline, "no request came in flight"
        time.sleep(0.05)


def test_cutover_story_start_probe_route_rollback_stop(sp: SP) -> None:
    """build (given) -> serve green -> probe -> route set green -> rollback -> stop; QL_1 untouched."""
    before = tree_digest(sp.ql1)
    prod = h.run_fake(sp.blue, sp.env)  # production's server today: not a builder slot
    try:
        r = sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm")
        assert r.returncode == 0, r.stderr
        initial = sp.route_file.read_bytes()
        assert f"OPENAI_BASE_URL={sp.url(sp.blue)}\nOPENAI_MODEL=querylake-llm\n".encode() in initial

        r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")
        assert r.returncode == 0, r.stderr
        assert f"slot green: ready at {sp.url(sp.green)}" in r.stdout
        assert "GPU 0: 48600 of 49140 MiB free" in r.stderr  # the memory check ran (fake nvidia-smi)
        rec = json.loads((sp.project / "serve-state" / "slots" / "green.json").read_text())
        assert rec["runtime"] == h.RUNTIME_ID and rec["argv"][:2] == [str(sp.root / h.RUNTIME_ID / "bin" / "vllm"),
                                                                      "serve"]
        assert rec["cmdline"][-2:] == ["--max-model-len", "4096"]  # what runs now (sh exec'd python)
        log = Path(rec["log"]).read_text()
        assert "Uvicorn running on" in log

        r = sp.run("serve", "probe", "--slot", "green", "--json", "--requests", "6", "--concurrency", "3")
        assert r.returncode == 0, r.stderr
        probe = _json(r)
        assert probe["verdict"] == "ready" and probe["url"] == f"http://127.0.0.1:{sp.green}"
        steps = {s["step"]: s for s in probe["steps"]}  # type: ignore[union-attr]
        assert [s for s in steps] == ["health", "models", "completion", "load"]
        assert all(s["status"] == "pass" and s["seconds"] >= 0 for s in steps.values())
        assert "6 requests, 3 concurrent: p50" in steps["load"]["detail"] and "0 error(s)" in steps["load"]["detail"]

        r = sp.run("route", "set", "green")
        assert r.returncode == 0, r.stderr
        assert "probe completion: pass" in r.stderr
        shown = _json(sp.run("route", "show", "--json"))
        assert {k: shown[k] for k in ("slot", "url", "model", "runtime")} == {
            "slot": "green", "url": sp.url(sp.green), "model": "querylake-llm", "runtime": h.RUNTIME_ID}
        assert shown["since"] and shown["rollback_to"]["url"] == sp.url(sp.blue)  # type: ignore[index]
        text = sp.route_file.read_text()
        assert f"# runtime: {h.RUNTIME_ID}" in text and f"# lock: {'ab' * 32}" in text

        st = _json(sp.run("serve", "status", "--json"))
        green = next(s for s in st["slots"] if s["slot"] == "green")  # type: ignore[union-attr]
        assert green["alive"] and green["ready"] and green["routed"] and green["runtime"] == h.RUNTIME_ID
        assert (green["running"], green["waiting"]) == (0, 0)
        assert st["route"]["slot"] == "green"  # type: ignore[index]

        r = sp.run("serve", "stop", "--slot", "green")  # the routed slot
        assert r.returncode == EXIT_BUSY and "is the route" in _one_line(r)

        r = sp.run("route", "rollback")
        assert r.returncode == 0, r.stderr
        assert "rolled back to the endpoint outside builder" in r.stdout
        shown = _json(sp.run("route", "show", "--json"))
        assert shown["url"] == sp.url(sp.blue) and shown["slot"] is None and shown["rollback_to"] is None
        r = sp.run("route", "rollback")
        assert r.returncode == EXIT_FAILED and "nothing to roll back to" in _one_line(r)

        token, pids = h.token_pids(sp.project, "green")
        assert len(pids) == 3  # the API server, its resource tracker and its engine core
        r = sp.run("serve", "stop", "--slot", "green")
        assert r.returncode == 0, r.stderr
        assert "nothing of it left running" in r.stdout
        assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == []
        assert not (sp.project / "serve-state" / "slots" / "green.json").exists()
        journal = [json.loads(x) for x in (sp.project / "deploy" / "llm.env.journal").read_text().splitlines()]
        assert [e["action"] for e in journal] == ["adopt", "set", "rollback"]
        assert journal[1]["probe"] == "ready" and journal[1]["runtime"] == h.RUNTIME_ID
        assert journal[1]["lock"] == "ab" * 32 and journal[1]["from"]["url"] == sp.url(sp.blue)
    finally:
        h.stop_fake(prod)
    assert tree_digest(sp.ql1) == before and not (sp.ql1 / "RAN").exists()


@pytest.fixture(scope="module")
def routed_to_production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SP]:
    """A project whose route points at production's server (a stand-in outside builder)."""
    s = _make_sp(tmp_path_factory.mktemp("prod"))
    prod = h.run_fake(s.blue, s.env)
    try:
        assert s.run("route", "init", "--url", s.url(s.blue), "--model", "querylake-llm").returncode == 0
        yield s
    finally:
        h.stop_fake(prod)
        _no_stragglers(s)


@pytest.mark.parametrize(("mode", "step", "detail"), [
    ("completion-500", "completion", "HTTP 500: EngineCore encountered an issue"),
    ("health-503", "health", "HTTP 503"),
    ("no-served-name", "models", "'querylake-llm' is not served (served: some-other-model)"),
    ("hang-body", "completion", "body stalled after 20 of"),
])
def test_a_not_ready_target_never_becomes_the_route(routed_to_production: SP, mode: str, step: str,
                                                    detail: str) -> None:
    sp = routed_to_production
    before = sp.route_file.read_bytes()
    journal = (sp.project / "deploy" / "llm.env.journal").read_bytes()
    broken = h.run_fake(sp.green, sp.env, mode=mode)
    try:
        t = time.monotonic()
        r = sp.run("serve", "probe", "--slot", "green", "--timeout", "1", "--json")
        assert time.monotonic() - t < 6
        assert r.returncode == EXIT_FAILED
        rep = _json(r)
        failing = next(s for s in rep["steps"] if s["status"] == "fail")  # type: ignore[union-attr]
        assert rep["verdict"] == "not-ready" and failing["step"] == step and detail in failing["detail"]
        r = sp.run("route", "set", "green", "--timeout", "1")
        assert r.returncode == EXIT_FAILED
        assert f"route unchanged: slot green (http://127.0.0.1:{sp.green}/v1" in _one_line(r)
        assert sp.route_file.read_bytes() == before
        assert (sp.project / "deploy" / "llm.env.journal").read_bytes() == journal
    finally:
        h.stop_fake(broken)


def test_probe_on_nothing_listening_is_unreachable_within_its_timeout(sp: SP) -> None:
    port = h.free_port()
    t = time.monotonic()
    r = sp.run("serve", "probe", "--url", f"http://127.0.0.1:{port}", "--model", "m", "--timeout", "2", "--json")
    assert r.returncode == EXIT_UNAVAILABLE and time.monotonic() - t < 2 + 2
    rep = _json(r)
    assert rep["verdict"] == "unreachable"
    assert [(s["step"], s["status"]) for s in rep["steps"]] == [  # type: ignore[union-attr]
        ("health", "fail"), ("models", "skipped"), ("completion", "skipped")]
    # Something that accepts connections but never answers is there, but not ready; still bounded.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        t = time.monotonic()
        r = sp.run("serve", "probe", "--url", f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "--model", "m",
                   "--timeout", "1")
        assert r.returncode == EXIT_FAILED and time.monotonic() - t < 1 + 2
        assert "no response within" in r.stdout


def test_killed_route_set_leaves_the_old_file_byte_identical(sp: SP) -> None:
    prod = h.run_fake(sp.blue, sp.env)
    slow = h.run_fake(sp.green, sp.env, latency=30)  # its completion never comes back in time
    try:
        assert sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm").returncode == 0
        before = sp.route_file.read_bytes()
        journal = (sp.project / "deploy" / "llm.env.journal").read_bytes()
        env = {**sp.env}
        env.pop("BUILDER_PROJECT", None)
        proc = subprocess.Popen([sys.executable, "-m", "builder", "route", "set", "green"], cwd=sp.project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_in_flight(sp.green)  # the probe's completion is in flight: kill it mid-way
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        assert sp.route_file.read_bytes() == before
        assert (sp.project / "deploy" / "llm.env.journal").read_bytes() == journal
        assert not list(sp.route_file.parent.glob(".llm.env.*"))
        # The lock died with it: the next command runs.
        shown = _json(sp.run("route", "show", "--json"))
        assert shown["url"] == sp.url(sp.blue) and shown["builder"] is True
    finally:
        h.stop_fake(prod)
        h.stop_fake(slow)


def test_start_refuses_a_busy_port_and_a_runtime_that_failed_its_smoke_test(sp: SP) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", sp.green))
        s.listen(1)
        r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")
        assert r.returncode == EXIT_BUSY
        assert f"port {sp.green} on 127.0.0.1 is already in use (pid {os.getpid()})" in _one_line(r)
    assert not (sp.project / "serve-state" / "slots" / "green.json").exists()
    bad = [*h.SMOKE_OK, {"step": "torch.version.cuda", "status": "fail", "reason": "12.8, expected 13.0"}]
    h.make_runtime(sp.root, "matrix-t-py312-badbadbadbad", bad)
    r = sp.run("serve", "start", "--runtime", "matrix-t-py312-badbadbadbad", "--slot", "green")
    assert r.returncode == EXIT_FAILED
    assert "its smoke test failed (torch.version.cuda: 12.8, expected 13.0)" in _one_line(r)
    r = sp.run("serve", "start", "--runtime", "fake-py312-0123456789ac", "--slot", "green")
    assert r.returncode == EXIT_FAILED and f"did you mean '{h.RUNTIME_ID}'" in _one_line(r)
    r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "gren")
    assert r.returncode == 2 and "did you mean 'green'" in _one_line(r)


def test_start_refuses_when_the_gpus_lack_free_memory_with_the_numbers(sp: SP) -> None:
    # Production holds 28 GiB of GPU 0: 0.85 x 49140 MiB does not fit beside it.
    busy = f"0, GPU-0a, {ADA}, 49140, 20110;1, GPU-1b, {ADA}, 49140, 48600"
    r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green", FAKE_SMI=busy)
    assert r.returncode == EXIT_FAILED
    line = _one_line(r)
    assert "GPU 0 (NVIDIA RTX 6000 Ada Generation) has 20110 MiB free of 49140 MiB, needs 0.85 x 49140 = 41769 MiB" \
        in line
    assert "another GPU" in line and "at most 0.40 fits now" in line and "planned stop of the old slot" in line
    assert h.stragglers(sp.marker) == []
    # Green on GPU 1, which is free: starts.
    sp.spec(green_env='CUDA_VISIBLE_DEVICES = "1"')
    r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green", FAKE_SMI=busy)
    assert r.returncode == 0, r.stderr
    assert sp.run("serve", "stop", "--slot", "green").returncode == 0


def test_a_server_that_never_binds_is_stopped_at_the_startup_timeout(sp: SP) -> None:
    sp.spec(startup=1, green_env=h.mode_env("never-bind"))
    t = time.monotonic()
    r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")
    assert r.returncode == EXIT_FAILED and time.monotonic() - t < 1 + 5
    line = _one_line(r)
    assert "was not ready within its startup-timeout of 1s (last probe: unreachable" in line
    assert "it was stopped" in line
    assert h.stragglers(sp.marker) == [] and not (sp.project / "serve-state" / "slots" / "green.json").exists()
    sp.spec(startup=5, green_env=h.mode_env("exit-early"))
    r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")
    assert r.returncode == EXIT_FAILED
    assert "vllm exited (code 1)" in _one_line(r) and "Engine core initialization failed" in _one_line(r)


def test_a_slow_start_is_waited_for_with_progress(sp: SP) -> None:
    sp.spec(startup=10, green_env=h.mode_env(start_delay=0.6))
    r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")
    assert r.returncode == 0, r.stderr
    assert "waiting: unreachable (health: unreachable: connection refused)" in r.stderr
    assert "ready after" in r.stderr
    r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")  # already running
    assert r.returncode == EXIT_BUSY and "slot green already runs" in _one_line(r)
    assert sp.run("serve", "stop", "--slot", "green").returncode == 0
    r = sp.run("serve", "stop", "--slot", "green")
    assert r.returncode == 0 and "not running" in r.stdout


def test_stop_kills_a_server_that_ignores_sigterm_and_leaves_no_process(sp: SP) -> None:
    sp.spec(stop=1, green_env=h.mode_env("ignore-term"))
    assert sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green").returncode == 0
    token, pids = h.token_pids(sp.project, "green")
    assert len(pids) == 3
    r = sp.run("serve", "stop", "--slot", "green", "--json")
    assert r.returncode == 0, r.stderr
    res = _json(r)
    assert res["terminated"] is False and sorted(res["killed"]) == pids and res["left"] == []  # type: ignore[arg-type]
    assert "sending SIGKILL" in r.stderr
    assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == []


@pytest.mark.parametrize(("latency", "drain", "expect"), [
    (4, 10, "drained: no requests running or waiting"),  # 4 s: in flight still when the CLI is up, under load
    (30, 0.6, "still in flight after 0.6s: 1 running, 0 waiting; stopping anyway"),
])
def test_stop_drains_requests_in_flight(sp: SP, latency: float, drain: float, expect: str) -> None:
    assert sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green").returncode == 0
    result: dict[str, object] = {}

    def client() -> None:
        body = json.dumps({"model": "querylake-llm", "messages": [{"role": "user", "content": "hi"}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{sp.green}/v1/chat/completions", body,
                                     {"Content-Type": "application/json", "X-Fake-Latency": str(latency)})
        try:
            with urllib.request.urlopen(req, timeout=40) as resp:
                result["status"] = resp.status
        except OSError as exc:
            result["error"] = exc

    th = threading.Thread(target=client)
    th.start()
    _wait_in_flight(sp.green)
    token, _pids = h.token_pids(sp.project, "green")
    r = sp.run("serve", "stop", "--slot", "green", "--drain", str(drain))
    th.join(45)
    assert r.returncode == 0, r.stderr
    assert "in flight: 1 running, 0 waiting" in r.stderr and expect in r.stderr
    assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == []
    if latency < drain:
        assert result == {"status": 200}  # the request in flight was served before the stop
    else:
        assert "error" in result


def test_unit_renders_the_content_addressed_runtime_and_its_sh_form_serves(sp: SP, tmp_path: Path) -> None:
    (sp.root / "current").symlink_to(h.RUNTIME_ID)  # a pointer must never appear in a unit
    sp.spec(extra='api-key-env = "QL_TEST_KEY"\napi-key-file = "/etc/querylake/llm-key.env"\n' + h.account(),
            green_env='CUDA_VISIBLE_DEVICES = "1"')
    r = sp.run("serve", "unit", "--runtime", h.RUNTIME_ID, "--slot", "green")
    assert r.returncode == 0, r.stderr
    unit = r.stdout
    vllm = sp.root / h.RUNTIME_ID / "bin" / "vllm"
    assert f" {vllm} serve Qwen/Qwen2.5-0.5B-Instruct --host 127.0.0.1 --port {sp.green} " in unit
    assert "current" not in unit
    for line in ("Restart=on-failure", "KillMode=control-group", "TimeoutStopSec=3", "TimeoutStartSec=8",
                 'Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID', "Environment=CUDA_VISIBLE_DEVICES=1",
                 "EnvironmentFile=/etc/querylake/llm-key.env"):
        assert line in unit.splitlines(), line
    # The key reaches vLLM as VLLM_API_KEY through the environment, never argv.
    assert 'ExecStart=/bin/sh -c "export VLLM_API_KEY=\\"$${QL_TEST_KEY}\\"; exec \\"$$0\\" \\"$$@\\""' in unit
    # The sh form, run as is, starts a server that a probe with the key finds ready.
    out = tmp_path / "green.sh"
    r = sp.run("serve", "unit", "--runtime", h.RUNTIME_ID, "--slot", "green", "--format", "sh", "-o", str(out))
    assert r.returncode == 0, r.stderr
    script = out.read_text().replace("set -a\n. /etc/querylake/llm-key.env\nset +a\n", "")
    out.write_text(script)
    env = {**sp.env, "QL_TEST_KEY": "s3cret"}
    proc = subprocess.Popen(["sh", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        r = sp.run("serve", "probe", "--slot", "green", "--timeout", "10", QL_TEST_KEY="s3cret")
        deadline = time.monotonic() + 10
        while r.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            r = sp.run("serve", "probe", "--slot", "green", "--timeout", "10", QL_TEST_KEY="s3cret")
        assert r.returncode == 0, r.stdout + r.stderr
        r = sp.run("serve", "probe", "--slot", "green", "--timeout", "5", QL_TEST_KEY="wrong")
        assert r.returncode == EXIT_FAILED and "HTTP 401: Unauthorized (wrong or missing API key)" in r.stdout
        assert "s3cret" not in Path(f"/proc/{proc.pid}/cmdline").read_text()
    finally:
        h.stop_fake(proc)  # type: ignore[arg-type]


def test_route_set_refuses_a_file_builder_did_not_write_until_init(sp: SP) -> None:
    prod = h.run_fake(sp.blue, sp.env)
    green = h.run_fake(sp.green, sp.env)
    try:
        sp.route_file.parent.mkdir(parents=True)
        hand = f"OPENAI_BASE_URL={sp.url(sp.blue)}\nOPENAI_MODEL=querylake-llm\n".encode()
        sp.route_file.write_bytes(hand)
        r = sp.run("route", "set", "green")
        assert r.returncode == EXIT_FAILED and "builder did not write it" in _one_line(r)
        assert sp.route_file.read_bytes() == hand
        r = sp.run("route", "init", "--url", f"http://127.0.0.1:{sp.green}", "--model", "querylake-llm")
        assert r.returncode == EXIT_FAILED and f"points at {sp.url(sp.blue)}" in _one_line(r)
        assert sp.route_file.read_bytes() == hand
        assert sp.run("route", "init", "--url", f"http://127.0.0.1:{sp.blue}", "--model", "querylake-llm"
                      ).returncode == 0
        r = sp.run("route", "set", "green")
        assert r.returncode == 0, r.stderr
        assert "runtime -" in r.stdout  # served by something builder did not start: no runtime to name
        sp.route_file.write_text(sp.route_file.read_text().replace(str(sp.green), str(sp.blue)))
        r = sp.run("route", "rollback")
        assert r.returncode == EXIT_FAILED and "it was changed since builder wrote it" in _one_line(r)
    finally:
        h.stop_fake(prod)
        h.stop_fake(green)


def test_a_route_file_in_ql1_is_refused_by_any_path(sp: SP, tmp_path: Path) -> None:
    before = tree_digest(sp.ql1)
    (tmp_path / "alias").symlink_to(sp.ql1)
    for target in (sp.ql1 / "llm.env", tmp_path / "alias" / "deploy" / "llm.env",
                   Path(f"{sp.ql1}/bin/../llm.env")):
        r = sp.run("route", "init", "--url", "http://127.0.0.1:1/v1", "--model", "m", "--route-file", str(target))
        assert r.returncode == EXIT_PROTECTED and "refusing to write the route file" in _one_line(r)
    (sp.project / "envs" / "service.toml").write_text(
        (sp.project / "envs" / "service.toml").read_text().replace('"serve-state"', f'"{sp.ql1}/state"'))
    r = sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")
    assert r.returncode == EXIT_PROTECTED and "refusing to keep serve state in" in _one_line(r)
    assert tree_digest(sp.ql1) == before


def test_a_route_file_the_user_names_needs_its_directory_the_specs_relative_one_is_created(sp: SP,
                                                                                         tmp_path: Path) -> None:
    """--route-file, or an absolute route-file in the spec, is the user's path: a missing directory is
    exit 2 with one line and nothing is created; the spec's relative deploy/llm.env is builder's own."""
    init = ("route", "init", "--url", "http://127.0.0.1:1/v1", "--model", "m")
    missing = tmp_path / "nope"
    r = sp.run(*init, "--route-file", str(missing / "r.env"))
    assert r.returncode == EXIT_USAGE and f"{missing} does not exist" in _one_line(r)
    service = sp.project / "envs" / "service.toml"
    text = service.read_text()
    assert 'route-file = "deploy/llm.env"' in text
    service.write_text(text.replace('route-file = "deploy/llm.env"', f'route-file = "{missing}/llm.env"'))
    r = sp.run(*init)
    assert r.returncode == EXIT_USAGE and f"{missing} does not exist" in _one_line(r)
    assert not missing.exists() and not (sp.project / "deploy").exists()
    service.write_text(text)
    r = sp.run(*init)
    assert r.returncode == 0, r.stderr
    assert sp.route_file.is_file() and sp.route_file.with_name("llm.env.journal").is_file()


def test_serve_and_route_commands_serialise_on_one_lock(sp: SP) -> None:
    state = sp.project / "serve-state"
    state.mkdir()
    fd = os.open(state / ".builder.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for args in (("route", "init", "--url", sp.url(sp.blue), "--model", "m"),
                     ("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")):
            r = sp.run(*args)
            assert r.returncode == EXIT_BUSY and "another builder process holds" in _one_line(r)
        assert not sp.route_file.exists() and h.stragglers(sp.marker) == []
    finally:
        os.close(fd)


def _journal(sp: SP) -> list[dict[str, object]]:
    return [json.loads(x) for x in (sp.project / "deploy" / "llm.env.journal").read_text().splitlines()]


def test_route_set_and_rollback_with_force_switch_to_a_dead_target_and_are_journaled(sp: SP) -> None:
    """Nothing listens on either port: --force skips the probe, switches, and says so in the journal."""
    assert sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm").returncode == 0
    r = sp.run("route", "set", "green")
    assert r.returncode == EXIT_FAILED and "route unchanged" in _one_line(r)  # the control: no --force

    r = sp.run("route", "set", "green", "--force")
    assert r.returncode == 0, r.stderr
    assert f"not probing {sp.url(sp.green)} (--force)" in r.stderr
    text = sp.route_file.read_text()
    assert f"OPENAI_BASE_URL={sp.url(sp.green)}\nOPENAI_MODEL=querylake-llm\n" in text
    last = _journal(sp)[-1]
    assert (last["action"], last["forced"], last["probe"]) == ("set", True, "skipped (--force)")
    assert last["to"]["slot"] == "green" and last["from"]["url"] == sp.url(sp.blue)  # type: ignore[index]
    assert last["runtime"] is None  # no server of builder's in the slot: no runtime to name

    r = sp.run("route", "rollback")
    assert r.returncode == EXIT_FAILED and "route unchanged" in _one_line(r)
    r = sp.run("route", "rollback", "--force")
    assert r.returncode == 0, r.stderr
    assert f"not probing {sp.url(sp.blue)} (--force)" in r.stderr
    assert f"OPENAI_BASE_URL={sp.url(sp.blue)}\nOPENAI_MODEL=querylake-llm\n" in sp.route_file.read_text()
    journal = _journal(sp)
    assert [e["action"] for e in journal] == ["adopt", "set", "rollback"]
    last = journal[-1]
    assert (last["forced"], last["probe"], last["restores"]) == (True, "skipped (--force)", journal[0]["id"])
    assert last["to"]["url"] == sp.url(sp.blue) and last["from"]["slot"] == "green"  # type: ignore[index]


def test_rollback_refuses_a_previous_route_that_is_not_ready(sp: SP) -> None:
    """Production's server (the journaled previous route) went down: rollback probes it, refuses, and
    leaves the route file and the journal byte-identical."""
    prod = h.run_fake(sp.blue, sp.env)
    green = h.run_fake(sp.green, sp.env)
    try:
        assert sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm").returncode == 0
        r = sp.run("route", "set", "green")
        assert r.returncode == 0, r.stderr
        h.stop_fake(prod)
        before = sp.route_file.read_bytes()
        journal = (sp.project / "deploy" / "llm.env.journal").read_bytes()
        r = sp.run("route", "rollback", "--timeout", "1")
        assert r.returncode == EXIT_FAILED
        assert f"route unchanged: an endpoint outside builder ({sp.url(sp.blue)}, model querylake-llm) is unreachable" \
            in _one_line(r)
        assert "probe health: fail" in r.stderr
        assert sp.route_file.read_bytes() == before
        assert (sp.project / "deploy" / "llm.env.journal").read_bytes() == journal
        assert _json(sp.run("route", "show", "--json"))["slot"] == "green"
    finally:
        h.stop_fake(prod)
        h.stop_fake(green)
