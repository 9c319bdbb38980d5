"""A fake runtime whose ``bin/vllm`` is the stand-in server, a service spec, and process checks.

Every fake server a test starts carries ``FAKE_VLLM_TEST=<marker>`` in its
environment (builder passes the operator's scrubbed environment on), so
:func:`stragglers` finds whatever a test left running, whoever started it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import manifests
from tests.helpers.cli import builder_cmd

FAKE = Path(__file__).with_name("fake_vllm.py")
MARKER = "FAKE_VLLM_TEST"
RUNTIME_ID = "matrix-t-py312-0123456789ab"

SMOKE_OK = manifests.SMOKE_OK


def make_runtime(root: Path, rid: str = RUNTIME_ID, smoke: list[dict[str, str]] | None = None) -> Path:
    """``root/rid`` with a runtime.json (the layout's format), a ``bin/python`` and the stand-in
    server as ``bin/vllm``."""
    rt = root / rid
    (rt / "bin").mkdir(parents=True)
    manifests.write_built(rt, smoke=smoke)
    install_fake(rt / "bin" / "vllm")
    (rt / "bin" / "python").symlink_to(sys.executable)
    return rt


def install_fake(path: Path) -> None:
    """``bin/vllm`` as an sh trampoline that execs python, like the console scripts of uv's
    relocatable venvs: the executable of the started pid changes after the start."""
    path.unlink(missing_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I "{FAKE}" "$@"\n')
    path.chmod(0o755)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVICE = """\
name = "querylake-llm"
model = "Qwen/Qwen2.5-0.5B-Instruct"
served-model-name = "querylake-llm"
host = "127.0.0.1"
startup-timeout = {startup}
stop-timeout = {stop}
lock-wait = 0.5
route-file = "deploy/llm.env"
state-dir = "serve-state"
{extra}
[vllm]
tensor-parallel-size = 1
gpu-memory-utilization = 0.85
max-model-len = 4096

[env]
CUDA_VISIBLE_DEVICES = "0"

[slots.blue]
port = {blue}
env = {{ {blue_env} }}
vllm = {{ {blue_vllm} }}

[slots.green]
port = {green}
env = {{ {green_env} }}
vllm = {{ {green_vllm} }}
"""


def write_service(project: Path, *, blue: int, green: int, startup: float = 8, stop: float = 3,
                  extra: str = "", blue_env: str = "", green_env: str = "", blue_vllm: str = "",
                  green_vllm: str = "") -> Path:
    """The test service: slots blue and green; ``*_env``/``*_vllm`` are inline-table bodies."""
    path = project / "envs" / "service.toml"
    path.write_text(SERVICE.format(blue=blue, green=green, startup=startup, stop=stop, extra=extra,
                                   blue_env=blue_env, green_env=green_env, blue_vllm=blue_vllm,
                                   green_vllm=green_vllm))
    return path


def mode_env(mode: str = "", **kw: float) -> str:
    """An inline TOML table body for a slot's env: the stand-in's failure mode."""
    items = [f'FAKE_VLLM_MODE = "{mode}"'] if mode else []
    items += [f'FAKE_VLLM_{k.upper()} = "{v}"' for k, v in kw.items()]
    return ", ".join(items)


def environ_of(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _live(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def with_env(needle: str) -> list[int]:
    """Live pids whose environment holds ``needle`` (``NAME=value``)."""
    want = needle.encode()
    return sorted(int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) != os.getpid()
                  and want in environ_of(int(d)) and _live(int(d)))


def token_pids(project: Path, slot: str) -> tuple[str, list[int]]:
    """The slot record's token and the live processes carrying it (from /proc)."""
    rec = json.loads((project / "serve-state" / "slots" / f"{slot}.json").read_text())
    return rec["token"], with_env(f"BUILDER_SERVE_TOKEN={rec['token']}")


def stragglers(marker: str) -> list[int]:
    return with_env(f"{MARKER}={marker}")


def kill_all(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while any(_live(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_fake(port: int, env: dict[str, str], mode: str = "", name: str = "querylake-llm",
             **kw: float) -> subprocess.Popen[bytes]:
    """Start the stand-in directly (not through builder): production's server, or a broken one."""
    e = dict(env)
    if mode:
        e["FAKE_VLLM_MODE"] = mode
    e.update({f"FAKE_VLLM_{k.upper()}": str(v) for k, v in kw.items()})
    proc = subprocess.Popen([sys.executable, "-I", str(FAKE), "serve", "m", "--host", "127.0.0.1", "--port",
                             str(port), "--served-model-name", name], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the stand-in did not bind port {port}")


def stop_fake(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait(5)


builder = builder_cmd
