"""Process control for served runtimes: start detached, recognise our own, stop for good.

A server is started in its own session (:func:`builder._proc.spawn_detached`)
with a random ``BUILDER_SERVE_TOKEN`` in its environment, which every worker it
forks inherits.  Its record holds pid, process group, start time (``/proc/PID/stat``
field 22, clock ticks since boot), boot id, the token, executable and command
line.  A recorded pid counts as ours only while ``/proc`` shows the same boot and
start time and the process still carries the token: after a reboot or pid reuse
it is someone else's and is never signalled.  Executable and command line are
recorded for the operator but not compared: a console script of a relocatable
venv is an ``sh`` trampoline that execs the runtime's python (the executable
changes after the start, the start time and environment do not), and vLLM may
retitle its processes.

Stopping: SIGTERM to the group and to every process carrying the token, a
bounded wait, then SIGKILL, then a bounded wait again; what still exists after
that (uninterruptible sleep) is reported, never waited for.  Zombies count as
gone: their memory, GPU memory included, is already released.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import _proc
from builder.report import Say

TOKEN_VAR = "BUILDER_SERVE_TOKEN"
KILL_GRACE = 5.0
POLL = 0.05


@dataclass(frozen=True)
class Stat:
    pid: int
    state: str
    ppid: int
    pgrp: int
    sid: int
    start_ticks: int

    @property
    def gone(self) -> bool:
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> Stat | None:
    """``/proc/PID/stat``, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and ")": split after the last ")".
    rest = raw[raw.rfind(")") + 2:].split()
    try:
        return Stat(pid, rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[19]))
    except (IndexError, ValueError):
        return None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def cmdline_of(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]]


def carries(pid: int, token: str) -> bool:
    """True when ``pid``'s environment holds our token (readable for our own processes only)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{TOKEN_VAR}={token}".encode() in env.split(b"\0")


def alive(pid: int) -> bool:
    st = read_stat(pid)
    return st is not None and not st.gone


def new_token() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True, kw_only=True)
class Started:
    """What :func:`start` recorded about a new server."""

    pid: int
    pgid: int
    start_ticks: int
    boot_id: str
    exe: str
    cmdline: tuple[str, ...]
    token: str
    handle: Any = field(default=None, compare=False, repr=False)  # the Popen, to reap it while we wait

    def record(self) -> dict[str, Any]:
        return {"pid": self.pid, "pgid": self.pgid, "start_ticks": self.start_ticks, "boot_id": self.boot_id,
                "exe": self.exe, "cmdline": list(self.cmdline), "token": self.token}


def identity(pid: int) -> dict[str, Any]:
    """What ``/proc`` shows now of ``pid``: executable and command line (for the record)."""
    return {"exe": exe_of(pid) or "", "cmdline": cmdline_of(pid) or []}


def start(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, logfile: Path,
          token: str | None = None) -> Started:
    """Start ``argv`` detached (its own session), output to ``logfile``; record who it is."""
    token = token or new_token()
    proc = _proc.spawn_detached(argv, env={**env, TOKEN_VAR: token}, cwd=cwd, logfile=logfile)
    st = read_stat(proc.pid)
    return Started(pid=proc.pid, pgid=st.pgrp if st else proc.pid, start_ticks=st.start_ticks if st else -1,
                   boot_id=boot_id(), exe=exe_of(proc.pid) or "", cmdline=tuple(cmdline_of(proc.pid) or argv),
                   token=token, handle=proc)


def is_ours(rec: Mapping[str, Any]) -> bool:
    """Does the recorded leader still run, as the same process we started?"""
    try:
        pid = int(rec["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    st = read_stat(pid)
    if st is None or st.gone or st.start_ticks != rec.get("start_ticks"):
        return False
    if rec.get("boot_id") and rec.get("boot_id") != boot_id():
        return False
    return bool(rec.get("token")) and carries(pid, str(rec["token"]))


def _all_pids() -> Iterable[int]:
    for d in os.listdir("/proc"):
        if d.isdigit():
            yield int(d)


def members(rec: Mapping[str, Any]) -> list[int]:
    """Live processes of a recorded server: the leader (if ours) and all that carry its token."""
    token = str(rec.get("token") or "")
    me = os.getpid()
    found = {p for p in _all_pids() if p != me and token and carries(p, token) and alive(p)}
    if is_ours(rec):
        found.add(int(rec["pid"]))
    return sorted(found)


def _reap(handle: Any) -> None:
    if handle is not None:
        with contextlib.suppress(Exception):
            handle.poll()


def _signal(rec: Mapping[str, Any], pids: Iterable[int], sig: int) -> None:
    token = str(rec.get("token") or "")
    leader_ours = is_ours(rec)
    pgid = rec.get("pgid")
    pids = list(pids)
    # The group still exists (and so cannot have been reused) while a member of it lives.
    if isinstance(pgid, int) and (leader_ours or any((s := read_stat(p)) and s.pgrp == pgid for p in pids)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for p in pids:
        # Re-check right before signalling: a pid is only ever signalled while it is provably ours.
        if (p == rec.get("pid") and leader_ours) or (token and carries(p, token)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)


def _wait_gone(rec: Mapping[str, Any], pids: list[int], seconds: float, handle: Any) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        _reap(handle)
        left = [p for p in pids if alive(p)]
        left = sorted(set(left) | set(members(rec)))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)


@dataclass
class StopOutcome:
    pids: list[int]  # what was running when the stop began
    terminated: bool  # everything exited after SIGTERM
    killed: list[int]  # needed SIGKILL
    left: list[int]  # could not be killed (reported, not waited for)
    seconds: float


def stop(rec: Mapping[str, Any], *, term_timeout: float, kill_timeout: float = KILL_GRACE,
         handle: Any = None, say: Say | None = None) -> StopOutcome:
    """SIGTERM the server's group, wait at most ``term_timeout``, then SIGKILL what is left."""
    t0 = time.monotonic()
    pids = members(rec)
    if not pids:
        return StopOutcome([], True, [], [], 0.0)
    _signal(rec, pids, signal.SIGTERM)
    left = _wait_gone(rec, pids, term_timeout, handle)
    killed: list[int] = []
    if left:
        if say:
            say(f"still running after SIGTERM and {term_timeout:g}s: pid {', '.join(map(str, left))}; "
                "sending SIGKILL")
        killed = list(left)
        _signal(rec, left, signal.SIGKILL)
        left = _wait_gone(rec, left, kill_timeout, handle)
    return StopOutcome(pids, not killed, killed, left, time.monotonic() - t0)


# --------------------------------------------------------------------------- ports


def port_free(host: str, port: int) -> bool:
    """Can a server bind ``host:port`` now?  (SO_REUSEADDR, like uvicorn: TIME_WAIT is not busy.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def listeners(port: int) -> list[int]:
    """Pids (readable ones) with a listening TCP socket on ``port``: for the error message."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    pids: list[int] = []
    if not inodes:
        return pids
    for pid in _all_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    pids.append(pid)
                    break
            except OSError:
                continue
    return pids
