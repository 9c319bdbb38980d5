"""A stand-in for ``vllm serve``: vLLM 0.13.0's OpenAI-compatible shapes, stdlib only.

Installed as the ``bin/vllm`` of a tiny fake runtime (see tests/helpers/serve.py),
so builder starts, probes and stops it exactly as it would run vLLM.  Shapes
and names are vLLM 0.13.0's (read from the PyPI wheel
``vllm-0.13.0-cp38-abi3-manylinux_2_31_x86_64.whl``):

* ``GET /health``: empty body, 200; 503 once the engine is dead
  (``vllm/entrypoints/serve/instrumentator/health.py``: ``EngineDeadError`` -> 503).
* ``GET /v1/models``: ``ModelList`` ``{"object": "list", "data": [ModelCard]}``, a card being
  ``{"id", "object": "model", "created", "owned_by": "vllm", "root", "parent", "max_model_len",
  "permission": [ModelPermission]}`` (``vllm/entrypoints/openai/protocol.py``,
  ``serving_models.py: show_available_models``).
* ``POST /v1/chat/completions``: ``ChatCompletionResponse`` ``{"id": "chatcmpl-...",
  "object": "chat.completion", "created", "model", "choices": [{"index", "message": {"role":
  "assistant", "content", ...}, "logprobs", "finish_reason", "stop_reason", "token_ids"}],
  "usage": {"prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details"}, ...}``.
* Errors: ``ErrorResponse`` ``{"error": {"message", "type", "param", "code"}}`` with the HTTP
  status in ``code``; an unknown model is 404 ``NotFoundError`` "The model `X` does not exist."
  (``serving_engine.py: _check_model``).  With an API key (``--api-key`` or ``VLLM_API_KEY``),
  ``/v1/*`` without the right bearer token is 401 ``{"error": "Unauthorized"}``
  (``api_server.py: AuthenticationMiddleware``; ``/health`` and ``/metrics`` stay open).
* ``GET /metrics``: Prometheus text; gauges ``vllm:num_requests_running`` and
  ``vllm:num_requests_waiting`` with labels ``model_name`` and ``engine``
  (``vllm/v1/metrics/loggers.py``).

Failure modes, from ``FAKE_VLLM_MODE`` (comma-separated) in its environment:
``never-bind``, ``exit-early``, ``completion-500``, ``health-503``, ``no-served-name``,
``hang-body``, ``ignore-term``.  ``FAKE_VLLM_START_DELAY`` (seconds before binding: a slow
model load) and ``FAKE_VLLM_LATENCY`` (seconds per completion: requests in flight; a request's
``X-Fake-Latency`` header overrides it).
Like vLLM (0.26.0 as it ran on an H100, docs/serve.md "What the real vLLM did") it runs as
three processes in one process group: the API server (this process), a resource tracker and an
engine core (children that sleep; the engine holds ``FAKE_VLLM_GPU_MIB`` of GPU memory if asked),
so stopping it must stop a process tree, and a ``kill -9`` of the API server leaves the other two
running (orphans holding the engine's memory).  Like vLLM it accepts no connection until its
engine is up (``FAKE_VLLM_START_DELAY``), and its SIGTERM handling aborts the requests in flight:
vLLM's ``serve_http`` cancels the uvicorn server task on SIGTERM instead of letting uvicorn drain
(``vllm/entrypoints/launcher.py``, ``signal_handler``), so a request in flight gets no answer;
the drain builder does first is what saves them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = set(filter(None, os.environ.get("FAKE_VLLM_MODE", "").split(",")))
START_DELAY = float(os.environ.get("FAKE_VLLM_START_DELAY", "0"))
LATENCY = float(os.environ.get("FAKE_VLLM_LATENCY", "0"))
ENGINE = """import os, signal, time
{}
mib = int(os.environ.get("FAKE_VLLM_GPU_MIB") or 0)
if mib:  # hold GPU memory like a loaded model (needs torch in this interpreter)
    import torch
    held = torch.empty(mib << 20, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    print("engine: holding %d MiB on %s" % (mib, torch.cuda.get_device_name(0)), flush=True)
while True:
    time.sleep(1)
"""


class State:
    served = "model"
    model = "model"
    max_model_len = 8192
    api_key: str | None = None
    running = 0
    lock = threading.Lock()
    in_flight: set[socket.socket] = set()  # connections of the completions being computed


def abort_in_flight() -> None:
    """What vLLM's SIGTERM does to requests in flight: their connections close unanswered."""
    with State.lock:
        conns = list(State.in_flight)
    for c in conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def log(msg: str) -> None:
    print(msg, flush=True)


def error(code: int, message: str, kind: str) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class Handler(BaseHTTPRequestHandler):
    server_version = "uvicorn"
    sys_version = ""

    def log_message(self, fmt: str, *args: object) -> None:
        log(f"INFO:     {self.client_address[0]} - \"{self.requestline}\" {args[1] if len(args) > 1 else ''}")

    def _send(self, code: int, body: object = None, ctype: str = "application/json") -> None:
        data = b"" if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if not State.api_key or not self.path.startswith("/v1"):
            return True
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(token, State.api_key):
            return True
        self._send(401, {"error": "Unauthorized"})
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._authorized():
            return
        if self.path == "/health":
            self._send(503 if "health-503" in MODES else 200)
        elif self.path == "/v1/models":
            name = "some-other-model" if "no-served-name" in MODES else State.served
            now = int(time.time())
            self._send(200, {"object": "list", "data": [{
                "id": name, "object": "model", "created": now, "owned_by": "vllm", "root": State.model,
                "parent": None, "max_model_len": State.max_model_len,
                "permission": [{"id": f"modelperm-{secrets.token_hex(16)}", "object": "model_permission",
                                "created": now, "allow_create_engine": False, "allow_sampling": True,
                                "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                                "allow_fine_tuning": False, "organization": "*", "group": None,
                                "is_blocking": False}]}]})
        elif self.path == "/version":
            self._send(200, {"version": "0.13.0"})
        elif self.path == "/metrics":
            labels = f'engine="0",model_name="{State.served}"'
            text = (
                "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                "# TYPE vllm:num_requests_running gauge\n"
                f"vllm:num_requests_running{{{labels}}} {float(State.running)}\n"
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
                "# TYPE vllm:num_requests_waiting gauge\n"
                f"vllm:num_requests_waiting{{{labels}}} 0.0\n")
            self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path != "/v1/chat/completions":
            self._send(404, {"detail": "Not Found"})
            return
        if body.get("model") != State.served or "no-served-name" in MODES:
            self._send(404, error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError"))
            return
        with State.lock:
            State.running += 1
            State.in_flight.add(self.connection)
        try:
            time.sleep(float(self.headers.get("X-Fake-Latency") or LATENCY))
            if "completion-500" in MODES:
                self._send(500, error(500, "EngineCore encountered an issue. See stack trace for the root cause.",
                                      "InternalServerError"))
                return
            resp = {
                "id": f"chatcmpl-{secrets.token_hex(16)}", "object": "chat.completion", "created": int(time.time()),
                "model": State.served,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ready", "refusal": None,
                                                     "annotations": None, "audio": None, "function_call": None,
                                                     "tool_calls": [], "reasoning": None, "reasoning_content": None},
                             "logprobs": None, "finish_reason": "stop", "stop_reason": None, "token_ids": None}],
                "service_tier": None, "system_fingerprint": None,
                "usage": {"prompt_tokens": 15, "total_tokens": 17, "completion_tokens": 2,
                          "prompt_tokens_details": None},
                "prompt_logprobs": None, "prompt_token_ids": None, "kv_transfer_params": None,
            }
            if "hang-body" in MODES:
                data = json.dumps(resp).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:20])
                self.wfile.flush()
                time.sleep(3600)
                return
            self._send(200, resp)
        finally:
            with State.lock:
                State.running -= 1
                State.in_flight.discard(self.connection)


TRACKER = """import signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.buffer.read()
"""


def engine_process(tracker_fd: int) -> subprocess.Popen[bytes]:
    """The engine core: a child process in the server's group, like vLLM's EngineCore (it holds
    the resource tracker's pipe too, as a spawned child of multiprocessing does)."""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)" if "ignore-term" in MODES else ""
    return subprocess.Popen([sys.executable, "-c", ENGINE.format(ignore)], pass_fds=(tracker_fd,))


def resource_tracker() -> tuple[subprocess.Popen[bytes], int]:
    """multiprocessing's resource tracker, which vLLM's spawn start method starts beside the
    engine: it ignores SIGINT and SIGTERM and ends when every holder of its pipe has closed it
    (``multiprocessing/resource_tracker.py``, ``main``).  (process, the pipe's write end)."""
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", TRACKER], stdin=r)
    os.close(r)
    return proc, w


def main(argv: list[str]) -> int:
    if argv[:1] != ["serve"]:
        print("usage: vllm [-h] {serve,chat,complete,bench}")
        return 0
    p = argparse.ArgumentParser(prog="vllm serve")
    p.add_argument("model")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name")
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--api-key")
    args, _rest = p.parse_known_args(argv[1:])
    State.model, State.served = args.model, args.served_model_name or args.model
    State.max_model_len = args.max_model_len
    State.api_key = args.api_key or os.environ.get("VLLM_API_KEY") or None
    log(f"INFO: vllm API server version 0.13.0 (fake), pid {os.getpid()}, model {args.model}")
    tracker, tracker_fd = resource_tracker()
    engine = engine_process(tracker_fd)
    stop = threading.Event()
    server: ThreadingHTTPServer | None = None

    def on_term(_sig: int, _frame: object) -> None:
        log("INFO:     Shutting down FastAPI HTTP server.")
        stop.set()
        abort_in_flight()
        if server is not None:
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, signal.SIG_IGN if "ignore-term" in MODES else on_term)
    children = (engine, tracker)

    def release() -> None:  # the API server's end of the tracker's pipe
        try:
            os.close(tracker_fd)
        except OSError:
            pass
    if "exit-early" in MODES:
        log("ERROR: RuntimeError: Engine core initialization failed. See root cause above.")
        release()
        for c in children:
            c.kill()
        return 1
    if "never-bind" in MODES:
        while not stop.wait(0.1):
            pass
        release()
        for c in children:
            c.terminate()
        return 0
    if stop.wait(START_DELAY):  # loading: no listening socket yet (connections are refused)
        release()
        for c in children:
            c.terminate()
        return 0
    try:
        server = ThreadingHTTPServer((args.host, args.port), Handler)
    except OSError as exc:
        log(f"ERROR:    [Errno {exc.errno}] error while attempting to bind on address "
            f"('{args.host}', {args.port}): {exc.strerror.lower() if exc.strerror else exc}")
        release()
        for c in children:
            c.kill()
        return 1
    server.daemon_threads = True
    log(f"INFO:     Started server process [{os.getpid()}]")
    log(f"INFO:     Uvicorn running on http://{args.host}:{args.port} (Press CTRL+C to quit)")
    if not stop.is_set():
        server.serve_forever(poll_interval=0.05)
    release()
    engine.terminate()
    for c in children:
        c.wait(5)
    log("INFO:     Finished server process")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
