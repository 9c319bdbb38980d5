"""Serving on a real GPU (marker ``gpu``; deselected by default).

Run on a GPU host, from the repository:  python3 -m pytest -m gpu tests/test_serve_gpu.py
(nothing else is needed: no nox, no conda extra; builder runs from this checkout through
``PYTHONPATH``; see docs/serve.md, "The GPU test", for bringing vLLM's wheels to a host).
The first two use the stand-in server whose engine process holds real GPU memory
(the interpreter running pytest needs torch): a stop must give that memory back,
even when the server ignores SIGTERM, and the free-memory check must refuse a
slot that would not fit beside it.  The last serves a tiny real model, made on the spot
by scripts/tiny_model.py (no download), from a real runtime:

* ``$BUILDER_GPU_RUNTIME``: a runtime directory (built or adopted), else
* ``$BUILDER_GPU_PYTHON``: an environment's interpreter, adopted first
  (``builder runtime adopt --python ... --gpu``, into the test's own runtimes root), else
* the newest runtime built under ``runtimes/``.

It starts two slots, probes one under load (50 requests, 8 at a time), switches the route
between them and back, stops one with requests in flight (``--drain``: every request
answers 200) and checks the GPU memory comes back, then kills the other's API server
with SIGKILL and checks ``serve status`` reports the orphaned engine and ``serve stop``
ends it (memory back again).  It prints its figures (time to ready, p50/p95, drain,
memory) for the record.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from builder.errors import EXIT_FAILED
from builder.serve.process import TOKEN_VAR
from tests.conftest import ROOT, write_project
from tests.helpers import needs
from tests.helpers import serve as h

pytestmark = pytest.mark.gpu


def _used_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return int(out.split()[0])


def _total_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return int(out.split()[0])


def _env(**extra: str) -> dict[str, str]:
    """builder's environment: no active env, and builder importable from this checkout (a bare GPU
    host has not installed it; builder scrubs PYTHONPATH from every child it starts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV", "FAKE_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _setup(tmp_path: Path) -> tuple[Path, dict[str, str], int, int, str]:
    needs.torch()  # the stand-in server holds GPU memory with this interpreter's torch
    project = write_project(tmp_path / "proj", "http://127.0.0.1:9/simple")
    h.make_runtime(tmp_path / "runtimes")
    marker = f"{tmp_path.name}-{os.getpid()}"
    env = _env(BUILDER_RUNTIMES=str(tmp_path / "runtimes"), **{h.MARKER: marker})
    return project, env, h.free_port(), h.free_port(), marker


def _wait_used(at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while (used := _used_mib()) < at_least:
        assert time.monotonic() < deadline, f"GPU memory never reached {at_least} MiB (at {used})"
        time.sleep(0.5)
    return used


def test_stop_gives_back_the_gpu_memory_of_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    project, env, blue, green, marker = _setup(tmp_path)
    hold = 4096
    h.write_service(project, blue=blue, green=green, startup=120, stop=2,
                    green_env=h.mode_env("ignore-term", gpu_mib=hold), green_vllm="gpu-memory-utilization = 0.1")
    base = _used_mib()
    try:
        r = h.builder("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green", cwd=project, env=env, timeout=200)
        assert r.returncode == 0, r.stderr
        _wait_used(base + hold)
        token, pids = h.token_pids(project, "green")
        t = time.monotonic()
        r = h.builder("serve", "stop", "--slot", "green", "--json", cwd=project, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["killed"] and res["left"] == []
        assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == []
        deadline = time.monotonic() + 30
        while _used_mib() > base + 256:
            assert time.monotonic() < deadline, "the GPU memory was not given back"
            time.sleep(0.2)
        print(f"stop: {len(pids)} processes, SIGKILL after 2s, memory back in {time.monotonic() - t:.1f}s")
    finally:
        h.kill_all(h.stragglers(marker))


def test_free_memory_check_refuses_a_slot_that_would_not_fit_beside_another(tmp_path: Path) -> None:
    project, env, blue, green, marker = _setup(tmp_path)
    total = _total_mib()
    hold = int(total * 0.5)
    h.write_service(project, blue=blue, green=green, startup=300, stop=5,
                    blue_env=h.mode_env(gpu_mib=hold), blue_vllm="gpu-memory-utilization = 0.1")
    try:
        r = h.builder("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "blue", cwd=project, env=env, timeout=400)
        assert r.returncode == 0, r.stderr
        _wait_used(hold)
        r = h.builder("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green", cwd=project, env=env, timeout=60)
        assert r.returncode == EXIT_FAILED, r.stderr
        assert f"free of {total} MiB, needs 0.85 x {total}" in r.stderr and "planned stop" in r.stderr, r.stderr
        print(r.stderr.strip())
        assert h.builder("serve", "stop", "--slot", "blue", cwd=project, env=env, timeout=60).returncode == 0
    finally:
        h.kill_all(h.stragglers(marker))


def _tiny_model(dest: Path) -> Path:
    """scripts/tiny_model.py's model (scripts/ is not a package: loaded from its file)."""
    spec = importlib.util.spec_from_file_location("tiny_model", ROOT / "scripts" / "tiny_model.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return Path(mod.write_tiny_model(dest, seed=0))


def _real_runtime(tmp_path: Path) -> tuple[Path, str]:
    """(runtimes root, runtime id) of the runtime to serve (see the module docstring)."""
    explicit = os.environ.get("BUILDER_GPU_RUNTIME")
    if explicit:
        rt = Path(explicit).resolve()
        return rt.parent, rt.name
    python = os.environ.get("BUILDER_GPU_PYTHON")
    if python:
        root = tmp_path / "runtimes"
        r = h.builder("runtime", "adopt", "--python", python, "--root", str(root), "--gpu", "--json",
                      cwd=ROOT, env=_env(), timeout=1200)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        steps = {s["step"]: s for s in res["manifest"]["smoke"]["steps"]}
        print(f"adopted {python} as {res['name']}: " + "; ".join(f"{k} {v['status']}" for k, v in steps.items()))
        return root, str(res["name"])
    built = sorted((p for p in (ROOT / "runtimes").glob("matrix-*-py3*-*") if (p / "runtime.json").is_file()
                    and (p / "bin" / "vllm").exists()), key=lambda p: p.stat().st_mtime)
    if not built:
        pytest.fail("no runtime: set BUILDER_GPU_PYTHON=/path/to/env/bin/python (adopted by the test) or "
                    "BUILDER_GPU_RUNTIME=/path/to/runtime, or run `builder build --matrix A --python 3.12`")
    return built[-1].parent, built[-1].name


SERVICE = """\
name = "gpu-test"
model = "{model}"
served-model-name = "gpu-test"
startup-timeout = 900
stop-timeout = 30
route-file = "deploy/llm.env"
[vllm]
tensor-parallel-size = 1
gpu-memory-utilization = 0.25
max-model-len = 2048
[env]
CUDA_VISIBLE_DEVICES = "0"
HF_HUB_OFFLINE = "1"
VLLM_USE_FLASHINFER_SAMPLER = "0"
[slots.blue]
port = {blue}
[slots.green]
port = {green}
"""


def _record(project: Path, slot: str) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads((project / "serve-state" / "slots" / f"{slot}.json").read_text())
    return rec


def _in_flight(port: int) -> float:
    """vLLM's running-requests gauge (summed over its label sets), from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", text, re.M))


def _long_request(port: int, out: list[int]) -> None:
    """One chat completion that generates 1,500 tokens (ignore_eos): seconds in flight."""
    body = json.dumps({"model": "gpu-test", "messages": [{"role": "user", "content": "Count to a thousand."}],
                       "max_tokens": 1500, "ignore_eos": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            resp.read()
            out.append(resp.status)
    except urllib.error.HTTPError as exc:
        out.append(exc.code)
    except OSError:
        out.append(-1)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _wait_mib(at_most: int, timeout: float = 90) -> tuple[int, float]:
    """Until GPU 0's used memory is at most ``at_most`` MiB: (used, seconds it took)."""
    t0 = time.monotonic()
    while (used := _used_mib()) > at_most:
        assert time.monotonic() - t0 < timeout, f"GPU memory not given back: {used} MiB used, expected <= {at_most}"
        time.sleep(0.5)
    return used, time.monotonic() - t0


def test_serves_a_tiny_real_model_from_a_real_runtime(tmp_path: Path) -> None:
    root, rid = _real_runtime(tmp_path)
    model = _tiny_model(tmp_path / "tiny-model")
    project = write_project(tmp_path / "proj", "http://127.0.0.1:9/simple")
    blue, green = h.free_port(), h.free_port()
    (project / "envs" / "service.toml").write_text(SERVICE.format(model=model, blue=blue, green=green))
    env = _env(BUILDER_RUNTIMES=str(root))

    def run(*a: str, t: float = 120) -> subprocess.CompletedProcess[str]:
        return h.builder(*a, cwd=project, env=env, timeout=t)

    figures: dict[str, object] = {"runtime": rid}
    base = _used_mib()
    tokens: list[str] = []
    try:
        # -- start both slots from the runtime (cold start first, then warm caches)
        for slot in ("blue", "green"):
            t = time.monotonic()
            r = run("serve", "start", "--runtime", rid, "--slot", slot, "--json", t=1000)
            assert r.returncode == 0, r.stdout + r.stderr
            tokens.append(str(_record(project, slot)["token"]))
            figures[f"{slot}_ready_s"] = round(time.monotonic() - t, 1)
        figures["used_mib_two_slots"] = _used_mib()

        # -- probe with load
        r = run("serve", "probe", "--slot", "blue", "--json", "--requests", "50", "--concurrency", "8", t=600)
        assert r.returncode == 0, r.stdout + r.stderr
        rep = json.loads(r.stdout)
        assert rep["verdict"] == "ready" and all(s["status"] == "pass" for s in rep["steps"]), rep
        load = next(s for s in rep["steps"] if s["step"] == "load")
        assert "0 error(s)" in load["detail"], load
        figures["load"] = load["detail"]

        # -- route between the two real slots, and back
        assert run("route", "set", "blue").returncode == 0
        assert run("route", "set", "green").returncode == 0
        shown = json.loads(run("route", "show", "--json").stdout)
        assert (shown["slot"], shown["runtime"]) == ("green", rid), shown
        r = run("route", "rollback")
        assert r.returncode == 0, r.stderr
        shown = json.loads(run("route", "show", "--json").stdout)
        assert (shown["slot"], shown["runtime"]) == ("blue", rid), shown

        # -- drain: green (not routed) stops with 4 requests in flight; every one answers 200
        statuses: list[int] = []
        threads = [threading.Thread(target=_long_request, args=(green, statuses)) for _ in range(4)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 60
        while _in_flight(green) < 1:
            assert time.monotonic() < deadline, "no request came in flight"
            time.sleep(0.1)
        before_stop = _used_mib()
        t = time.monotonic()
        r = run("serve", "stop", "--slot", "green", "--drain", "120", "--json", t=300)
        assert r.returncode == 0, r.stdout + r.stderr
        stopped = json.loads(r.stdout)
        for th in threads:
            th.join(timeout=300)
        assert statuses == [200] * 4, statuses
        assert stopped["drain"]["drained"] is True, stopped
        used, back = _wait_mib(before_stop - 1024)
        figures["drain"] = {"stop_s": round(time.monotonic() - t, 1), "statuses": statuses,
                            "mib_before": before_stop, "mib_after": used, "memory_back_s": round(back, 1)}

        # -- kill -9 of blue's API server (the routed slot): its engine core lives on as an orphan
        rec = _record(project, "blue")
        os.kill(int(rec["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(int(rec["pid"])):
            assert time.monotonic() < deadline, "the API server outlived SIGKILL"
            time.sleep(0.1)
        held = _used_mib()
        assert held > base + 1024, (held, base)  # its engine core still holds the model and KV cache
        r = run("serve", "status", "--json", t=120)
        status = json.loads(r.stdout)
        row = next(s for s in status["slots"] if s["slot"] == "blue")
        assert not row["alive"] and row["orphans"] and row["orphans"]["pids"], row
        # The memory they hold, where nvidia-smi can map pids to them (None: it could not).
        assert row["orphans"]["gpu_mib"] is None or row["orphans"]["gpu_mib"] > 0, row
        assert r.returncode == EXIT_FAILED, r.stderr  # the route points at a slot that is not ready
        figures["orphans"] = row["orphans"]
        t = time.monotonic()
        r = run("serve", "stop", "--slot", "blue", "--force", "--json", t=120)
        assert r.returncode == 0, r.stdout + r.stderr
        used, back = _wait_mib(base + 512)
        figures["orphan_stop"] = {"stop_s": round(time.monotonic() - t, 1), "mib_before": held, "mib_after": used,
                                  "memory_back_s": round(back, 1), "stopped": json.loads(r.stdout)}
        assert h.with_env(f"{TOKEN_VAR}={tokens[0]}") == []
    finally:
        for slot in ("green", "blue"):
            run("serve", "stop", "--slot", slot, "--force", t=120)
        h.kill_all([p for tok in tokens for p in h.with_env(f"{TOKEN_VAR}={tok}")])
        print("GPU test figures: " + json.dumps(figures, indent=1))
    assert _used_mib() <= base + 512
