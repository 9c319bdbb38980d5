"""The slot record (``serve-state/slots/<slot>.json``): one frozen model, read and written here only.

A record says which server runs in a slot: what ``serve start`` launched (runtime,
port, URL, model, log, argv) and who that process is (pid, process group, start
time in clock ticks since boot, boot id, executable, command line, the random
token every process of the server carries).  It is written before the spawn
(pid still None: a builder killed right then leaves a record through which
``serve stop`` finds the server), again once the process runs, and once more
when it is ready.

A record names the runtime's ``origin`` (``lock`` or ``adopted``, see
:mod:`builder.runtime.manifest`); a record without one names a lock, or nothing.

Formats: 2 (written now) adds ``format`` and ``state``, the identity of the state
directory that wrote it (:func:`builder.serve.process.home_of`), which the
server's environment carries too: a record copied into another project's
state directory names the original's identity and so is never taken for the
copy's own.  1 (no ``format`` key, builder before state identities) still
loads; its server is recognised by its working directory instead (see
:mod:`builder.serve.process`).  A record that is not JSON, not an object, or
has a value of the wrong type does not load (:func:`from_mapping` raises
ValueError; :func:`read` returns None), as a torn or foreign file would not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.files.fsio import atomic_write

FORMAT = 2
READABLE = (1, 2)


@dataclass(frozen=True, kw_only=True)
class SlotRecord:
    """What runs in a slot, and how builder recognises it (see the module docstring)."""

    slot: str
    service: str = ""
    runtime: str | None = None
    runtime_path: str | None = None
    lock: str | None = None
    origin: str | None = None  # the runtime's: lock (built from one) | adopted (no lock)
    host: str = ""
    port: int | None = None
    url: str = ""
    model: str = ""
    log: str = ""
    started_at: str = ""
    argv: tuple[str, ...] = ()
    pid: int | None = None  # None: written before the spawn
    pgid: int | None = None
    start_ticks: int | None = None
    boot_id: str = ""
    exe: str = ""
    cmdline: tuple[str, ...] = ()
    token: str = ""
    state: str | None = None  # the identity of the state directory that wrote it (None: format 1)
    ready_after: float | None = None  # seconds from the start until the probe said ready
    format: int = FORMAT

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON (the file's content and ``serve start --json``'s ``record``)."""
        out: dict[str, Any] = {
            "slot": self.slot, "service": self.service, "runtime": self.runtime, "runtime_path": self.runtime_path,
            "lock": self.lock, "origin": self.origin, "host": self.host, "port": self.port, "url": self.url,
            "model": self.model,
            "log": self.log, "started_at": self.started_at, "argv": list(self.argv), "pid": self.pid,
            "pgid": self.pgid, "start_ticks": self.start_ticks, "boot_id": self.boot_id, "exe": self.exe,
            "cmdline": list(self.cmdline), "token": self.token,
        }
        if self.ready_after is not None:
            out["ready_after"] = self.ready_after
        out.update(state=self.state, format=self.format)
        return out


def _get(d: Mapping[str, Any], key: str, kinds: tuple[type, ...], *, default: Any) -> Any:
    value = d.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{key}: expected {'/'.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
    return value


def _strings(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = d.get(key, [])
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"{key}: expected a list of strings")
    return tuple(value)


def from_mapping(d: Any) -> SlotRecord:
    """Validate a parsed record (format 1 or 2); ValueError names the first bad key."""
    if not isinstance(d, Mapping):
        raise ValueError("not a JSON object")
    fmt = d.get("format", 1)
    if fmt not in READABLE or isinstance(fmt, bool):
        raise ValueError(f"format {fmt!r} is not one this builder reads ({', '.join(map(str, READABLE))})")
    after = _get(d, "ready_after", (int, float), default=None)
    lock = _get(d, "lock", (str,), default=None)
    origin = _get(d, "origin", (str,), default=None)
    if origin not in (None, "lock", "adopted"):
        raise ValueError(f"origin: must be lock or adopted, got {origin!r}")
    return SlotRecord(
        slot=_get(d, "slot", (str,), default=""), service=_get(d, "service", (str,), default=""),
        runtime=_get(d, "runtime", (str,), default=None), runtime_path=_get(d, "runtime_path", (str,), default=None),
        lock=lock, origin=origin or ("lock" if lock else None), host=_get(d, "host", (str,), default=""),
        port=_get(d, "port", (int,), default=None),
        url=_get(d, "url", (str,), default=""), model=_get(d, "model", (str,), default=""),
        log=_get(d, "log", (str,), default=""), started_at=_get(d, "started_at", (str,), default=""),
        argv=_strings(d, "argv"), pid=_get(d, "pid", (int,), default=None),
        pgid=_get(d, "pgid", (int,), default=None), start_ticks=_get(d, "start_ticks", (int,), default=None),
        boot_id=_get(d, "boot_id", (str,), default=""), exe=_get(d, "exe", (str,), default=""),
        cmdline=_strings(d, "cmdline"),
        token=_get(d, "token", (str,), default=""), state=_get(d, "state", (str,), default=None) if fmt >= 2 else None,
        ready_after=None if after is None else float(after), format=fmt,
    )


def read(path: Path) -> SlotRecord | None:
    """The record at ``path``, or None when there is none or it does not load."""
    try:
        return from_mapping(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):
        return None


def write(path: Path, rec: SlotRecord) -> None:
    """Write ``rec`` atomically (temp file, fsync, rename)."""
    atomic_write(path, json.dumps(rec.as_dict(), indent=2) + "\n")
