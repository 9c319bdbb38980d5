"""Serving on a real GPU (marker ``gpu``; deselected by default).

Run on a GPU host:  pytest -m gpu tests/test_serve_gpu.py
The first two use the stand-in server whose engine process holds real GPU memory
(the interpreter running pytest needs torch): a stop must give that memory back,
even when the server ignores SIGTERM, and the free-memory check must refuse a
slot that would not fit beside it.  The last serves a tiny real model from a
runtime builder built: ``$BUILDER_GPU_RUNTIME`` (a runtime directory), else the
newest built runtime under ``runtimes/``; model ``$BUILDER_GPU_MODEL`` (default
Qwen/Qwen2.5-0.5B-Instruct; a Hugging Face id needs the network or a warm cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from builder.errors import EXIT_FAILED
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


def _setup(tmp_path: Path) -> tuple[Path, dict[str, str], int, int, str]:
    needs.torch()  # the stand-in server holds GPU memory with this interpreter's torch
    project = write_project(tmp_path / "proj", "http://127.0.0.1:9/simple")
    h.make_runtime(tmp_path / "runtimes")
    marker = f"{tmp_path.name}-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV", "FAKE_"))}
    env.update(BUILDER_RUNTIMES=str(tmp_path / "runtimes"), **{h.MARKER: marker})
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


def _real_runtime() -> Path:
    explicit = os.environ.get("BUILDER_GPU_RUNTIME")
    if explicit:
        return Path(explicit).resolve()
    built = sorted((p for p in (ROOT / "runtimes").glob("matrix-*-py3*-*") if (p / "runtime.json").is_file()
                    and (p / "bin" / "vllm").exists()), key=lambda p: p.stat().st_mtime)
    if not built:
        pytest.fail("no built runtime: run `builder build --matrix A --python 3.12` first, "
                    "or set BUILDER_GPU_RUNTIME=/path/to/runtime")
    return built[-1]


def test_serves_a_tiny_real_model_from_a_real_runtime(tmp_path: Path) -> None:
    rt = _real_runtime()
    project = write_project(tmp_path / "proj", "http://127.0.0.1:9/simple")
    blue, green = h.free_port(), h.free_port()
    model = os.environ.get("BUILDER_GPU_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    (project / "envs" / "service.toml").write_text(f"""\
name = "gpu-test"
model = "{model}"
served-model-name = "gpu-test"
startup-timeout = 900
stop-timeout = 30
route-file = "deploy/llm.env"
[vllm]
tensor-parallel-size = 1
gpu-memory-utilization = 0.3
max-model-len = 2048
[env]
CUDA_VISIBLE_DEVICES = "0"
[slots.blue]
port = {blue}
[slots.green]
port = {green}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV"))}
    env["BUILDER_RUNTIMES"] = str(rt.parent)
    run = lambda *a, t=120: h.builder(*a, cwd=project, env=env, timeout=t)  # noqa: E731
    r = run("serve", "start", "--runtime", rt.name, "--slot", "green", t=1000)
    assert r.returncode == 0, r.stderr
    try:
        token, pids = h.token_pids(project, "green")
        r = run("serve", "probe", "--slot", "green", "--json", "--requests", "8", "--concurrency", "4")
        assert r.returncode == 0, r.stdout + r.stderr
        rep = json.loads(r.stdout)
        assert rep["verdict"] == "ready" and all(s["status"] == "pass" for s in rep["steps"])
        assert run("route", "set", "green").returncode == 0
        assert json.loads(run("route", "show", "--json").stdout)["runtime"] == rt.name
        metrics = run("serve", "status", "--json")
        assert json.loads(metrics.stdout)["slots"][1]["running"] == 0
    finally:
        r = run("serve", "stop", "--slot", "green", "--force", t=120)
    assert r.returncode == 0, r.stderr
    assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == []
