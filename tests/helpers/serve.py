"""A fake runtime whose ``bin/vllm`` is the stand-in server, a service spec, and process checks.

Every fake server a test starts carries ``FAKE_VLLM_TEST=<marker>`` in its
environment (builder passes the operator's scrubbed environment on), so
:func:`stragglers` finds whatever a test left running, whoever started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


SMI = """#!/bin/sh
# fake nvidia-smi
#   --query-gpu=index,uuid,name,memory.total,memory.free --format=csv,noheader,nounits: $FAKE_SMI
#   --query-compute-apps=...: $FAKE_SMI_APPS (rows; exit $FAKE_SMI_APPS_EXIT, after $FAKE_SMI_APPS_SLEEP s)
IFS=';'
case "$1" in
  --query-compute-apps=*)
    sleep "${FAKE_SMI_APPS_SLEEP:-0}"
    for row in $FAKE_SMI_APPS; do echo "$row"; done
    exit "${FAKE_SMI_APPS_EXIT:-0}" ;;
esac
for row in $FAKE_SMI; do echo "$row"; done
"""
ADA = "NVIDIA RTX 6000 Ada Generation"
ROOMY = f"0, GPU-0a, {ADA}, 49140, 48600;1, GPU-1b, {ADA}, 49140, 48600"


@dataclass
class ServeProject:
    """A project with the test service (slots blue and green), a fake runtime, a fake ``QL_1``
    active, a fake ``nvidia-smi`` first on PATH, and the environment builder runs in."""

    project: Path
    root: Path
    env: dict[str, str]
    blue: int
    green: int
    ql1: Path
    marker: str

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return builder_cmd(*args, cwd=self.project, env={**self.env, **env}, timeout=timeout)

    def spec(self, **kw: Any) -> None:
        write_service(self.project, blue=self.blue, green=self.green, **kw)

    @property
    def route_file(self) -> Path:
        return self.project / "deploy" / "llm.env"

    @property
    def state(self) -> Path:
        return self.project / "serve-state"

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/v1"


def make_serve_project(tmp_path: Path) -> ServeProject:
    from tests.conftest import write_project

    project = write_project(tmp_path / "proj", "http://127.0.0.1:9/simple")
    root = tmp_path / "runtimes"
    make_runtime(root)
    home = tmp_path / "home"
    ql1 = home / "miniconda3" / "envs" / "QL_1"
    (ql1 / "bin").mkdir(parents=True)
    (ql1 / "conda-meta").mkdir()
    (ql1 / "conda-meta" / "history").write_text("==> 2025-01-01 <==\n# production\n")
    # QL_1's own vllm: if builder ever ran it, the tree (and the digest) would change.
    (ql1 / "bin" / "vllm").write_text(f"#!/bin/sh\ntouch {ql1}/RAN\nexit 1\n")
    (ql1 / "bin" / "vllm").chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "nvidia-smi").write_text(SMI)
    (tools / "nvidia-smi").chmod(0o755)
    marker = f"{tmp_path.name}-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV", "FAKE_"))}
    env.update(HOME=str(home), CONDA_PREFIX=str(ql1), CONDA_DEFAULT_ENV="QL_1", CONDA_SHLVL="1",
               PATH=os.pathsep.join([str(ql1 / "bin"), str(tools), env["PATH"]]), BUILDER_RUNTIMES=str(root),
               FAKE_SMI=ROOMY, **{MARKER: marker})
    s = ServeProject(project, root, env, free_port(), free_port(), ql1, marker)
    s.spec()
    return s


def no_stragglers(s: ServeProject) -> None:
    left = stragglers(s.marker)
    kill_all(left)
    assert not left, f"the test left processes running: {left}"


def environ_of(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def _live(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in "ZX"


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


def _group(pgid: int) -> list[int]:
    """Live members of process group ``pgid`` (from /proc)."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit()
            and (f := _stat(d)) is not None and int(f[2]) == pgid and f[0] not in "ZX"]


def stop_fake(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the stand-in's whole group and wait until every member is gone: a grandchild
    (a unit's sh runs the server) can still be dying when its parent has been reaped."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait(5)
    deadline = time.monotonic() + 5
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


builder = builder_cmd


def _endless_head() -> Iterator[int]:
    yield from b"HTTP/1.1 200 OK\r\n"
    n = 0
    while True:
        yield from b"X-Drip-%d: a\r\n" % n
        n += 1


@contextlib.contextmanager
def raw_server(handle: Callable[[socket.socket, threading.Event], None],
               port: int = 0) -> Iterator[tuple[int, list[int]]]:
    """A loopback TCP server on ``127.0.0.1:port`` (0: any free port) that gives every accepted
    connection to ``handle(conn, stop)`` on a thread of its own and closes it afterwards.
    Yields (port, connection counts: one entry per accepted connection)."""
    stop = threading.Event()
    conns: list[int] = []
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    srv.settimeout(0.1)

    def serve_one(c: socket.socket) -> None:
        with c:
            try:
                handle(c, stop)
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            conns.append(1)
            threading.Thread(target=serve_one, args=(c,), daemon=True).start()

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        yield srv.getsockname()[1], conns
    finally:
        stop.set()
        th.join(5)
        srv.close()


@contextlib.contextmanager
def drip_server(port: int, interval: float = 0.5) -> Iterator[list[int]]:
    """A hostile server on ``127.0.0.1:port``: it reads a request, then sends a status line and
    headers without end, one byte every ``interval`` seconds (each read arrives well within any
    per-read timeout; only a total deadline ends the exchange).  Yields the list of connection
    counts (one entry per accepted connection)."""
    def drip(c: socket.socket, stop: threading.Event) -> None:
        c.settimeout(5)
        c.recv(65536)
        for byte in _endless_head():
            if stop.is_set():
                return
            c.sendall(bytes([byte]))
            stop.wait(interval)

    with raw_server(drip, port) as (_, conns):
        yield conns


def account() -> str:
    """The spec lines naming the account running the tests as the service's ``user`` (with
    ``allow-root`` when that is root, as on CI containers)."""
    import pwd

    me = pwd.getpwuid(os.geteuid())
    return f'user = "{me.pw_name}"\n' + ("allow-root = true\n" if me.pw_uid == 0 else "")
