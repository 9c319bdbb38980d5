"""The service spec (``envs/service.toml``): load, validate into frozen dataclasses (pure).

Validated like the matrix specs (:mod:`builder.spec`): every problem is
collected in one pass, each with its file, dotted path and a "did you mean"
for unknown keys, then raised as one :class:`SpecError` (exit 2).

A slot (``[slots.green]``) may override ``[vllm]`` and ``[env]``; the merged
values are what :class:`Slot` carries.  The API key is never stored: the spec
names the environment variable that holds it (``api-key-env``) and, for the
systemd unit, an ``EnvironmentFile`` that defines that variable
(``api-key-file``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import SpecError, UsageError
from builder.schema import Field, Problems, suggest, validate
from builder.serve import endpoint
from builder.spec import read_toml

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A POSIX user name as useradd takes it (man 8 useradd: [a-z_][a-z0-9_-]*[$]?, at most 32).
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}\$?$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: Variable names that hold secrets: reference them by name (api-key-env), never inline.
_SECRET_RE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
#: Variables builder sets itself for the server.
RESERVED_ENV = frozenset({"CUDA_DEVICE_ORDER", "VLLM_API_KEY", "BUILDER_SERVE_TOKEN"})
#: ``vllm serve`` options builder derives from the spec; ``args`` must not repeat them.
RESERVED_ARGS = ("--host", "--port", "--served-model-name", "--api-key", "--revision", "--model",
                 "--tensor-parallel-size", "-tp", "--gpu-memory-utilization", "--max-model-len", "--dtype")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be greater than 0, got {v!r}"


def _utilization(v: Any) -> str | None:
    return None if 0 < v <= 1 else f"must be a fraction in (0, 1], got {v!r}"


def _port(v: Any) -> str | None:
    return None if 1 <= v <= 65535 else f"must be a TCP port (1-65535), got {v!r}"


def _dtype(v: Any) -> str | None:
    return None if v in DTYPES else f"must be one of {', '.join(DTYPES)}, got {v!r}"


def _arg(v: Any) -> str | None:
    flag = str(v).split("=", 1)[0]
    if flag in RESERVED_ARGS:
        return f"{flag} is set by builder from the spec; use the spec's key instead"
    return None


def _env_name(v: Any) -> str | None:
    return None if _ENV_RE.match(str(v)) else f"must be an environment variable name, got {v!r}"


def _nonempty(v: Any) -> str | None:
    return None if str(v).strip() else "must not be empty"


VLLM_SCHEMA: dict[str, Field] = {
    "tensor-parallel-size": Field(int, check=_positive),
    "gpu-memory-utilization": Field((int, float), check=_utilization),
    "max-model-len": Field(int, check=_positive),
    "dtype": Field(str, check=_dtype),
    "args": Field(list, item=str, check=_arg),
}

SERVICE_SCHEMA: dict[str, Field] = {
    "name": Field(str, required=True, check=lambda v: None if _NAME_RE.match(v) else
                  f"must be lowercase letters, digits, '-', got {v!r}"),
    "model": Field(str, required=True, check=_nonempty),
    "revision": Field(str, check=_nonempty),
    "served-model-name": Field(str, check=endpoint.check_model),
    "host": Field(str, check=endpoint.check_host),
    "startup-timeout": Field((int, float), check=_positive),
    "stop-timeout": Field((int, float), check=_positive),
    "lock-wait": Field((int, float), check=lambda v: None if v >= 0 else f"must be >= 0, got {v!r}"),
    "route-file": Field(str, required=True, check=_nonempty),
    "state-dir": Field(str, check=_nonempty),
    "api-key-env": Field(str, check=_env_name),
    "api-key-file": Field(str, check=lambda v: None if str(v).startswith("/") else
                          f"must be an absolute path (a systemd EnvironmentFile), got {v!r}"),
    "user": Field(str, check=lambda v: None if _USER_RE.match(v) else
                  f"must be a user name (letters, digits, '_', '-'; at most 32), got {v!r}"),
    "allow-root": Field(bool),
    "vllm": Field(dict, table=VLLM_SCHEMA),
    "env": Field(dict),
    "slots": Field(dict, required=True),
}

SLOT_SCHEMA: dict[str, Field] = {
    "port": Field(int, required=True, check=_port),
    "vllm": Field(dict, table=VLLM_SCHEMA),
    "env": Field(dict),
}


@dataclass(frozen=True, kw_only=True)
class VllmArgs:
    """What ``vllm serve`` gets besides model, host, port and name (None: vLLM's default)."""

    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    dtype: str | None = None
    args: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        out: list[str] = []
        if self.tensor_parallel_size is not None:
            out += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.gpu_memory_utilization is not None:
            out += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        if self.max_model_len is not None:
            out += ["--max-model-len", str(self.max_model_len)]
        if self.dtype is not None:
            out += ["--dtype", self.dtype]
        return out + list(self.args)


@dataclass(frozen=True, kw_only=True)
class Slot:
    """One place a server of the service can run (its own port; GPUs from its env)."""

    name: str
    port: int
    vllm: VllmArgs
    env: Mapping[str, str] = field(default_factory=dict)

    def visible_devices(self) -> list[str] | None:
        """``CUDA_VISIBLE_DEVICES`` as a list, or None when it is not set (every GPU)."""
        raw = self.env.get("CUDA_VISIBLE_DEVICES")
        if raw is None:
            return None
        return [d.strip() for d in raw.split(",") if d.strip()]

    def target_devices(self) -> list[str] | None:
        """The devices vLLM will use: the first tensor-parallel-size visible ones."""
        vis = self.visible_devices()
        tp = self.vllm.tensor_parallel_size or 1
        return None if vis is None else vis[:tp]


@dataclass(frozen=True, kw_only=True)
class Service:
    """The vLLM service, as declared in ``envs/service.toml``."""

    name: str
    model: str
    revision: str | None = None
    served_model_name: str
    host: str = "127.0.0.1"
    startup_timeout: float = 900.0
    stop_timeout: float = 60.0
    lock_wait: float = 30.0
    route_file: str
    state_dir: str = "serve-state"
    api_key_env: str | None = None
    api_key_file: str | None = None
    user: str | None = None  # the account that runs the server (the unit's User=)
    allow_root: bool = False
    slots: Mapping[str, Slot]
    path: str = ""

    def slot(self, name: str) -> Slot:
        if name not in self.slots:
            known = sorted(self.slots)
            raise UsageError(f"{self.path or 'service spec'} declares no slot {name!r}{suggest(name, known)}",
                             f"its slots: {', '.join(known)}")
        return self.slots[name]

    def root_url(self, slot: Slot) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{slot.port}"

    def base_url(self, slot: Slot) -> str:
        """What QueryLake gets as ``OPENAI_BASE_URL``."""
        return self.root_url(slot) + "/v1"

    def serve_argv(self, vllm: str, slot: Slot) -> list[str]:
        """``vllm serve MODEL ...`` for ``slot`` (no secret: the key travels in the environment)."""
        argv = [vllm, "serve", self.model, "--host", self.host, "--port", str(slot.port),
                "--served-model-name", self.served_model_name]
        if self.revision:
            argv += ["--revision", self.revision]
        return argv + slot.vllm.argv()


def _vllm(d: Mapping[str, Any], base: VllmArgs | None = None) -> VllmArgs:
    b = base or VllmArgs()
    util = d.get("gpu-memory-utilization", b.gpu_memory_utilization)
    tp = d.get("tensor-parallel-size", b.tensor_parallel_size)
    # Tolerant of wrong types: those are reported as problems, never built into a Service.
    return VllmArgs(
        tensor_parallel_size=tp if isinstance(tp, int) else None,
        gpu_memory_utilization=float(util) if isinstance(util, (int, float)) else None,
        max_model_len=d.get("max-model-len", b.max_model_len),
        dtype=d.get("dtype", b.dtype),
        args=tuple(d["args"]) if "args" in d else b.args,
    )


def _env(value: dict[str, Any], path: str, problems: Problems) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in value.items():
        where = f"{path}.{k}"
        if not _ENV_RE.match(k):
            problems.add(where, "not an environment variable name")
        elif k in RESERVED_ENV:
            problems.add(where, "is set by builder; remove it")
        elif _SECRET_RE.search(k):
            problems.add(where, "looks like a secret: never put secrets in the spec; name the variable "
                                "that holds it with api-key-env (and api-key-file for the unit)")
        elif not isinstance(v, str):
            problems.add(where, f"must be a string, got {v!r}")
        else:
            out[k] = v
    return out


def _model(data: Mapping[str, Any], problems: Problems) -> None:
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        return
    if model.startswith(("./", "../", "~")) or (not model.startswith("/") and model.count("/") > 1):
        problems.add("model", f"must be a Hugging Face id (org/name) or an absolute path, got {model!r}")
    if model.startswith("/") and data.get("revision"):
        problems.add("revision", "only applies to a Hugging Face model id, not a local path")


def _slot(name: str, d: Any, base_vllm: VllmArgs, *, base_env: Mapping[str, str],
          problems: Problems) -> Slot | None:
    path = f"slots.{name}"
    if not _NAME_RE.match(name):
        problems.add(path, "slot names are lowercase letters, digits, '-'")
    if not isinstance(d, dict):
        problems.add(path, f"must be a table like {{ port = 8001 }}, got {d!r}")
        return None
    before = len(problems.items)
    validate(d, SLOT_SCHEMA, problems, prefix=f"{path}.")
    env = dict(base_env)
    if isinstance(d.get("env"), dict):
        env.update(_env(d["env"], f"{path}.env", problems))
    if len(problems.items) > before:
        return None
    vllm = d.get("vllm", {})
    slot = Slot(name=name, port=d["port"], vllm=_vllm(vllm if isinstance(vllm, dict) else {}, base_vllm), env=env)
    vis = slot.visible_devices()
    tp = slot.vllm.tensor_parallel_size or 1
    if vis is not None and len(vis) < tp:
        problems.add(path, f"tensor-parallel-size {tp} needs {tp} GPUs but CUDA_VISIBLE_DEVICES "
                           f"= {env['CUDA_VISIBLE_DEVICES']!r} names {len(vis)}")
    return slot


def _line_breaks(value: Any, path: str, problems: Problems) -> None:
    """No string of the spec may hold a control character or line break: its values reach the
    server's command line, a systemd unit (one setting per line) and the route file."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if _CONTROL.search(str(k)):
                problems.add(f"{path}.{endpoint.shown(k)}" if path else endpoint.shown(k),
                             "the key contains a control character or line break")
                continue
            _line_breaks(v, where, problems)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _line_breaks(v, f"{path}[{i}]", problems)
    elif isinstance(value, str) and _CONTROL.search(value):
        problems.add(path, f"contains a control character or line break: {endpoint.shown(value)}")


def service_from_mapping(data: Mapping[str, Any], source: str = "<service>") -> Service:
    """Validate a parsed service spec; raise SpecError listing every problem."""
    problems = Problems(source)
    _line_breaks(data, "", problems)
    if problems.items:  # every later message would quote the bytes again
        raise SpecError(problems.items, "fix the service spec and run the command again")
    validate(data, SERVICE_SCHEMA, problems)
    _model(data, problems)
    if data.get("api-key-file") and not data.get("api-key-env"):
        problems.add("api-key-file", "needs api-key-env: the variable the file defines")
    base_vllm = _vllm(data["vllm"]) if isinstance(data.get("vllm"), dict) else VllmArgs()
    base_env = _env(data["env"], "env", problems) if isinstance(data.get("env"), dict) else {}
    slots: dict[str, Slot] = {}
    raw_slots = data.get("slots")
    if isinstance(raw_slots, dict):
        if not raw_slots:
            problems.add("slots", "must declare at least one slot, e.g. [slots.blue] port = 8001")
        ports: dict[int, str] = {}
        for name, d in raw_slots.items():
            s = _slot(str(name), d, base_vllm, base_env=base_env, problems=problems)
            if s is None:
                continue
            if s.port in ports:
                problems.add(f"slots.{name}.port", f"{s.port} is also the port of slot {ports[s.port]!r}")
            ports.setdefault(s.port, s.name)
            slots[s.name] = s
    if problems.items:
        raise SpecError(problems.items, "fix the service spec and run the command again")
    return Service(
        name=data["name"],
        model=data["model"],
        revision=data.get("revision"),
        served_model_name=data.get("served-model-name", data["name"]),
        host=data.get("host", "127.0.0.1"),
        startup_timeout=float(data.get("startup-timeout", 900)),
        stop_timeout=float(data.get("stop-timeout", 60)),
        lock_wait=float(data.get("lock-wait", 30)),
        route_file=data["route-file"],
        state_dir=data.get("state-dir", "serve-state"),
        api_key_env=data.get("api-key-env"),
        api_key_file=data.get("api-key-file"),
        user=data.get("user"),
        allow_root=bool(data.get("allow-root", False)),
        slots=slots,
        path=source,
    )


def load_service(path: Path) -> Service:
    """Read and validate ``path`` (``envs/service.toml``)."""
    return service_from_mapping(read_toml(path), str(path))
