"""Render a service unit the operator installs: systemd, or a plain sh script (pure).

builder never runs systemctl.  The unit starts the runtime's ``bin/vllm`` by
its content-addressed path (never the pointer symlink, so a rebuild cannot
change a running service), as the spec's ``user``, with the same environment
``builder serve start`` gives it (:mod:`builder.serve.environment`),
``KillMode=control-group`` (workers die with the server),
``Restart=on-failure`` and a bounded stop timeout.  The API key reaches vLLM
as ``VLLM_API_KEY`` in its environment (vLLM 0.13 reads it when no
``--api-key`` is given), loaded from the ``EnvironmentFile``; never on the
command line, where ``ps`` would show it.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

KEY_VAR = "VLLM_API_KEY"


@dataclass(frozen=True, kw_only=True)
class UnitRequest:
    service: str
    slot: str
    runtime: str
    argv: Sequence[str]  # vllm serve ... (content-addressed bin/vllm first)
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str
    user: str | None = None  # User= (systemd); the sh form runs as whoever runs it
    api_key_env: str | None = None
    api_key_file: str | None = None
    startup_timeout: float = 900.0
    stop_timeout: float = 60.0
    command: str = ""  # the builder command that rendered it


def unit_name(service: str, slot: str) -> str:
    return f"{service}-{slot}.service"


_SYSTEMD_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def systemd_quote(arg: str) -> str:
    """One ExecStart word: ``$`` and ``%`` escaped (no expansion), quoted when needed."""
    s = arg.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_SAFE.match(s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _env_line(k: str, v: str) -> str:
    return "Environment=" + systemd_quote(f"{k}={v}")


def render_systemd(req: UnitRequest) -> str:
    argv = [systemd_quote(a) for a in req.argv]
    if req.api_key_env and req.api_key_env != KEY_VAR:
        # Hand the key to vLLM under the name it reads, without putting it in argv.
        argv = ["/bin/sh", "-c", systemd_quote(f'export {KEY_VAR}="${{{req.api_key_env}}}"; exec "$0" "$@"'), *argv]
    lines = [
        f"# {unit_name(req.service, req.slot)}: rendered by `{req.command}`",
        f"# runtime {req.runtime} (content-addressed: a rebuild cannot change this service)",
        f"# install: sudo cp {unit_name(req.service, req.slot)} /etc/systemd/system/ && "
        "sudo systemctl daemon-reload",
        "[Unit]",
        f"Description=vLLM {req.service} (slot {req.slot}, runtime {req.runtime})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        *([f"User={req.user}"] if req.user else []),
        f"WorkingDirectory={req.workdir}",
        *[_env_line(k, v) for k, v in req.env.items()],
    ]
    if req.api_key_file:
        lines.append(f"EnvironmentFile={req.api_key_file}")
    elif req.api_key_env:
        lines.append(f"# {req.api_key_env} (the API key) must come from a drop-in: the spec names no api-key-file")
    lines += [
        "ExecStart=" + " ".join(argv),
        "Restart=on-failure",
        "RestartSec=10",
        "KillMode=control-group",
        "KillSignal=SIGTERM",
        f"TimeoutStartSec={math.ceil(req.startup_timeout)}",
        f"TimeoutStopSec={math.ceil(req.stop_timeout)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def render_sh(req: UnitRequest) -> str:
    lines = [
        "#!/bin/sh",
        f"# {req.service} slot {req.slot}: rendered by `{req.command}`",
        f"# runtime {req.runtime} (content-addressed: a rebuild cannot change what this starts)",
        "set -eu",
        f"mkdir -p {shlex.quote(req.workdir)} && cd {shlex.quote(req.workdir)}",
        *[f"export {k}={shlex.quote(v)}" for k, v in req.env.items()],
    ]
    if req.api_key_file:
        lines += ["set -a", f". {shlex.quote(req.api_key_file)}", "set +a"]
    if req.api_key_env:
        lines.append(f'export {KEY_VAR}="${{{req.api_key_env}:?{req.api_key_env} is not set}}"')
    lines.append("exec " + " ".join(shlex.quote(a) for a in req.argv))
    return "\n".join(lines) + "\n"


def render(req: UnitRequest, fmt: str) -> str:
    return render_systemd(req) if fmt == "systemd" else render_sh(req)
