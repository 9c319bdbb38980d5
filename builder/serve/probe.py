"""The readiness verdict of an OpenAI-compatible vLLM server (network I/O, bounded).

vLLM's ``/health`` is liveness only (200 while the engine may be unable to run
a request; 503 once the engine is dead, vllm-project/vllm#24897) and
``/v1/models`` is a static list, so only a real completion proves that the
server serves (vllm-project/vllm#36960, #39863:
https://github.com/vllm-project/vllm/issues/36960).  Steps, each ``pass``/``fail``/``skipped`` with a
reason and its seconds:

``health``      GET /health answers 200
``models``      GET /v1/models lists the served name
``completion``  one POST /v1/chat/completions (temperature 0, a few tokens),
                response shape checked
``load``        optional: N requests, C at a time; p50/p95 latency and errors

Verdict: ``ready`` (every step passed), ``not-ready``, or ``unreachable``
(nothing accepts connections).  Shapes: vLLM 0.13.0,
``vllm/entrypoints/openai/protocol.py`` (ModelList, ChatCompletionResponse,
ErrorResponse ``{"error": {"message", "type", "param", "code"}}``; older
releases answered ``{"object": "error", "message", ...}``, also understood).

HTTP goes through the one bounded reader (:func:`builder._http.exchange`):
one deadline for the whole exchange, connect, status line, headers and body
together, enforced by a watchdog that shuts the socket down, so a server that
drips its headers or its body one byte at a time cannot hold a probe past its
timeout.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from builder import _http
from builder.serve.endpoint import split_url

PASS, FAIL, SKIP = "pass", "fail", "skipped"
READY, NOT_READY, UNREACHABLE = "ready", "not-ready", "unreachable"
MAX_BODY = 8 << 20
DEFAULT_TIMEOUT = 30.0
PROMPT = "Reply with the single word: ready"


class Unreachable(Exception):
    """Nothing accepted the connection."""


class Stalled(Exception):
    """Connected, but no complete response before the deadline."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def request(url: str, method: str, path: str, *, deadline: float, body: Any = None,
            api_key: str | None = None) -> Response:
    """One HTTP exchange that ends by ``deadline`` (time.monotonic) whatever the server does."""
    scheme, host, port, root = split_url(url)
    left = deadline - time.monotonic()
    if left <= 0:
        raise Stalled("no time left")
    headers = {"Accept": "application/json", "Connection": "close"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    h = f"[{host}]" if ":" in host else host
    try:
        reply = _http.exchange(f"{scheme}://{h}:{port}{root}{path}", method=method, what=f"{method} {path}",
                               deadline=left, max_bytes=MAX_BODY, body=data, headers=headers)
    except _http.NoConnection as exc:
        raise Unreachable(exc.reason) from None
    except _http.Incomplete as exc:
        raise Stalled(exc.reason) from None
    return Response(reply.status, reply.body)


def error_text(resp: Response) -> str:
    """``HTTP 500: <message>`` from vLLM's error body (either shape), else the body's start."""
    msg = ""
    try:
        data = resp.json()
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict):
                msg = str(err.get("message") or err.get("type") or "")
            elif isinstance(err, str):
                msg = err
            elif data.get("object") == "error":
                msg = str(data.get("message", ""))
            elif "detail" in data:  # FastAPI's HTTPException body (vLLM raises it for engine errors)
                msg = str(data["detail"])
    except (ValueError, UnicodeDecodeError):
        msg = resp.body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {resp.status}" + (f": {msg}" if msg else "")


@dataclass(frozen=True, kw_only=True)
class Step:
    step: str
    status: str
    detail: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "status": self.status, "detail": self.detail, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True, kw_only=True)
class Report:
    """A probe's verdict and its steps."""

    verdict: str
    url: str
    model: str
    steps: tuple[Step, ...] = ()
    seconds: float = 0.0

    @property
    def ready(self) -> bool:
        return self.verdict == READY

    def failing(self) -> Step | None:
        return next((s for s in self.steps if s.status == FAIL), None)

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "url": self.url, "model": self.model,
                "steps": [s.as_dict() for s in self.steps], "seconds": round(self.seconds, 3)}

    def brief(self) -> str:
        bad = self.failing()
        return self.verdict + (f" ({bad.step}: {bad.detail})" if bad else "")


def _timed(name: str, fn: Callable[[], tuple[str, str]]) -> Step:
    t = time.monotonic()
    try:
        status, detail = fn()
    except Stalled as exc:
        status, detail = FAIL, str(exc)
    except Unreachable as exc:
        status, detail = FAIL, f"unreachable: {exc}"
    return Step(step=name, status=status, detail=detail, seconds=time.monotonic() - t)


def completion_body(model: str, max_tokens: int = 4) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0, "max_tokens": max_tokens, "stream": False}


def check_completion(data: Any, model: str) -> str | None:
    """What is wrong with a chat completion response (vLLM's ChatCompletionResponse), or None."""
    if not isinstance(data, dict):
        return "response is not a JSON object"
    if data.get("object") != "chat.completion":
        return f"object is {data.get('object')!r}, expected 'chat.completion'"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "no choices in the response"
    msg = choices[0].get("message")
    if not isinstance(msg, dict) or msg.get("role") != "assistant":
        return "choices[0].message is not an assistant message"
    if not isinstance(msg.get("content"), str | None):
        return "choices[0].message.content is not text"
    usage = data.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("completion_tokens"), int) \
            or usage["completion_tokens"] < 1:
        return "usage.completion_tokens missing or 0: nothing was generated"
    return None


def _completion(url: str, model: str, deadline: float, *, api_key: str | None) -> tuple[str, str]:
    resp = request(url, "POST", "/v1/chat/completions", deadline=deadline,
                   body=completion_body(model), api_key=api_key)
    if resp.status != 200:
        return FAIL, error_text(resp)
    try:
        data = resp.json()
    except (ValueError, UnicodeDecodeError):
        return FAIL, "HTTP 200 but the body is not JSON"
    problem = check_completion(data, model)
    if problem:
        return FAIL, f"HTTP 200 but {problem}"
    text = (data["choices"][0]["message"].get("content") or "").strip()
    return PASS, f"{data['usage']['completion_tokens']} token(s): {text[:40]!r}"


def _load(url: str, model: str, n: int, *, c: int, per_request: float, api_key: str | None) -> tuple[str, str]:
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    todo = list(range(n))

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            t = time.monotonic()
            try:
                status, detail = _completion(url, model, t + per_request, api_key=api_key)
            except (Stalled, Unreachable) as exc:
                status, detail = FAIL, str(exc)
            except Exception as exc:  # a thread must not die with a traceback: count it as an error
                status, detail = FAIL, f"{type(exc).__name__}: {exc}"
            with lock:
                if status == PASS:
                    lat.append(time.monotonic() - t)
                else:
                    errors.append(detail)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(c, n)))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    lat.sort()

    def pct(p: float) -> str:
        return f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.3f}s" if lat else "n/a"

    detail = f"{n} requests, {c} concurrent: p50 {pct(0.5)}, p95 {pct(0.95)}, {len(errors)} error(s)"
    if errors:
        detail += f" (first: {errors[0]})"
    return (FAIL if errors else PASS), detail


def probe(url: str, model: str, *, timeout: float = 30.0, api_key: str | None = None,
          requests: int = 0, concurrency: int = 1) -> Report:
    """Probe ``url`` (``http://host:port`` or ``.../v1``) serving ``model``, within ``timeout`` seconds
    (the load step, if asked for, gets ``timeout`` per request on top)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    steps: list[Step] = []
    unreachable = False

    def health() -> tuple[str, str]:
        nonlocal unreachable
        try:
            resp = request(url, "GET", "/health", deadline=deadline)
        except Unreachable:
            unreachable = True
            raise
        if resp.status == 200:
            return PASS, "HTTP 200"
        if resp.status == 503:
            return FAIL, "HTTP 503: the engine is dead (vLLM answers 503 once its engine died)"
        return FAIL, error_text(resp)

    def models() -> tuple[str, str]:
        resp = request(url, "GET", "/v1/models", deadline=deadline, api_key=api_key)
        if resp.status != 200:
            return FAIL, error_text(resp) + (" (wrong or missing API key)" if resp.status == 401 else "")
        try:
            data = resp.json()
            ids = [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]
        except (ValueError, UnicodeDecodeError, AttributeError):
            return FAIL, "HTTP 200 but not a model list"
        if model in ids:
            return PASS, f"serves {model!r}"
        return FAIL, f"{model!r} is not served (served: {', '.join(ids) or 'none'})"

    steps.append(_timed("health", health))
    if unreachable:
        verdict = UNREACHABLE
        for name in ("models", "completion", *(["load"] if requests else [])):
            steps.append(Step(step=name, status=SKIP, detail="server unreachable", seconds=0.0))
    else:
        steps.append(_timed("models", models))
        steps.append(_timed("completion", lambda: _completion(url, model, deadline, api_key=api_key)))
        if requests:
            if all(s.status == PASS for s in steps):
                steps.append(_timed("load", lambda: _load(url, model, requests, c=concurrency, per_request=timeout,
                                                          api_key=api_key)))
            else:
                steps.append(Step(step="load", status=SKIP, detail="the server is not ready", seconds=0.0))
        verdict = READY if all(s.status == PASS for s in steps) else NOT_READY
    return Report(verdict=verdict, url=url, model=model, steps=tuple(steps), seconds=time.monotonic() - t0)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {metric name: sum over its label sets (engines, models)}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m:
            continue  # comments (# HELP / # TYPE) and blank lines
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + value
    return out


RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"


def in_flight(url: str, timeout: float = 5.0) -> tuple[int, int] | None:
    """(running, waiting) from ``/metrics``, or None when it cannot be read."""
    try:
        resp = request(url, "GET", "/metrics", deadline=time.monotonic() + timeout)
    except (Stalled, Unreachable):
        return None
    if resp.status != 200:
        return None
    m = parse_metrics(resp.body.decode("utf-8", "replace"))
    if RUNNING not in m and WAITING not in m:
        return None
    return int(m.get(RUNNING, 0)), int(m.get(WAITING, 0))
