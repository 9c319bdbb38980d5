"""Process control for served runtimes: start detached, recognise our own, stop for good.

A server is started in its own session (:func:`builder._proc.spawn_detached`)
with a random ``BUILDER_SERVE_TOKEN`` and the identity of the state directory
that records it (``BUILDER_SERVE_STATE``, :func:`home_of`) in its environment,
which every worker it forks inherits.  Its record (:mod:`builder.serve.record`)
holds pid, process group, start time (``/proc/PID/stat`` field 22, clock ticks
since boot), boot id, the token, the state identity, executable and command
line.  A recorded pid counts as ours only while ``/proc`` shows the same boot
and start time and the process still carries the token and the identity of
*this* state directory: after a reboot or pid reuse it is someone else's, and a
record copied with a project into another state directory names a server that
is not the copy's.  Neither is ever signalled.  (A record of format 1, written
before state identities, is recognised by the server's working directory, which
``serve start`` sets to the state directory.)  Executable and command line are
recorded for the operator but not compared: a console script of a relocatable
venv is an ``sh`` trampoline that execs the runtime's python (the executable
changes after the start, the start time and environment do not), and vLLM may
retitle its processes.

Stopping: SIGTERM to the group and to every process carrying the token, a
bounded wait, then SIGKILL, then a bounded wait again; what still exists after
that (uninterruptible sleep) is reported, never waited for.  Zombies count as
gone: their memory, GPU memory included, is already released.  The outcome
names the pids actually signalled.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from builder import _proc
from builder.report import Say

TOKEN_VAR = "BUILDER_SERVE_TOKEN"
STATE_VAR = "BUILDER_SERVE_STATE"
#: What a server runs, in its environment (started here or by a unit ``serve unit`` rendered).
RUNTIME_VAR = "BUILDER_SERVE_RUNTIME"
LOCK_VAR = "BUILDER_SERVE_LOCK"
ORIGIN_VAR = "BUILDER_SERVE_ORIGIN"
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


def environ_of(pid: int) -> list[bytes] | None:
    """``NAME=value`` entries of ``pid``'s environment (readable for our own processes only)."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None


def alive(pid: int) -> bool:
    st = read_stat(pid)
    return st is not None and not st.gone


def new_token() -> str:
    return secrets.token_hex(12)


# --------------------------------------------------------------------------- whose process


@dataclass(frozen=True)
class Home:
    """The state directory servers belong to: an identity derived from its device and inode.

    A copy of the directory (a copied project) is another inode, so another
    identity; the same directory reached by another path (a symlink, a bind
    mount) keeps it.  ``identity`` is empty when the directory does not exist.
    """

    identity: str
    dev: int
    ino: int


def home_of(state_dir: Path) -> Home:
    try:
        st = os.stat(state_dir)
    except OSError:
        return Home("", -1, -1)
    digest = hashlib.sha256(f"builder-serve-state:{st.st_dev}:{st.st_ino}".encode()).hexdigest()
    return Home(digest[:24], st.st_dev, st.st_ino)


class Owner(Protocol):
    """What a slot record says of its server's processes (:class:`builder.serve.record.SlotRecord`)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def pgid(self) -> int | None: ...
    @property
    def start_ticks(self) -> int | None: ...
    @property
    def boot_id(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def state(self) -> str | None: ...


def _cwd_is(pid: int, home: Home) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (home.dev, home.ino)


def belongs(pid: int, owner: Owner, home: Home) -> bool:
    """Does ``pid`` carry the owner's token, as a server of the state directory ``home``?"""
    if not owner.token or not home.identity:
        return False
    env = environ_of(pid)
    if env is None or f"{TOKEN_VAR}={owner.token}".encode() not in env:
        return False
    if owner.state is not None:
        return owner.state == home.identity and f"{STATE_VAR}={home.identity}".encode() in env
    return _cwd_is(pid, home)  # a format-1 record: the server's working directory is the state dir


def is_ours(owner: Owner, home: Home) -> bool:
    """Does the recorded leader still run, as the same process this state directory started?"""
    pid = owner.pid
    if not isinstance(pid, int) or pid <= 0:
        return False
    st = read_stat(pid)
    if st is None or st.gone or st.start_ticks != owner.start_ticks:
        return False
    if owner.boot_id and owner.boot_id != boot_id():
        return False
    return belongs(pid, owner, home)


def _all_pids() -> Iterable[int]:
    for d in os.listdir("/proc"):
        if d.isdigit():
            yield int(d)


def members(owner: Owner, home: Home) -> list[int]:
    """Live processes of a recorded server: the leader (if ours) and all that carry its token."""
    me = os.getpid()
    found = {p for p in _all_pids() if p != me and belongs(p, owner, home) and alive(p)}
    if is_ours(owner, home) and owner.pid is not None:
        found.add(owner.pid)
    return sorted(found)


def orphans(owner: Owner, home: Home) -> list[int]:
    """Processes of a server whose leader is gone (an engine core after ``kill -9`` of the API
    server): they still carry the token, and may still hold GPU memory."""
    if is_ours(owner, home):
        return []
    return members(owner, home)


# --------------------------------------------------------------------------- start


@dataclass(frozen=True, kw_only=True)
class Started:
    """Who a new server is, as :func:`start` found it in ``/proc``."""

    pid: int
    pgid: int
    start_ticks: int
    boot_id: str
    exe: str
    cmdline: tuple[str, ...]
    token: str
    handle: Any = field(default=None, compare=False, repr=False)  # the Popen, to reap it while we wait


def start(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, logfile: Path, home: Home,
          token: str | None = None) -> Started:
    """Start ``argv`` detached (its own session), output to ``logfile``; record who it is."""
    token = token or new_token()
    proc = _proc.spawn_detached(argv, env={**env, TOKEN_VAR: token, STATE_VAR: home.identity}, cwd=cwd,
                                logfile=logfile)
    st = read_stat(proc.pid)
    return Started(pid=proc.pid, pgid=st.pgrp if st else proc.pid, start_ticks=st.start_ticks if st else -1,
                   boot_id=boot_id(), exe=exe_of(proc.pid) or "", cmdline=tuple(cmdline_of(proc.pid) or argv),
                   token=token, handle=proc)


# --------------------------------------------------------------------------- stop


def _reap(handle: Any) -> None:
    if handle is not None:
        with contextlib.suppress(Exception):
            handle.poll()


def _signal(owner: Owner, home: Home, pids: Iterable[int], *, sig: int) -> set[int]:
    """Send ``sig`` to the server's group and to each of ``pids`` still provably ours; the pids signalled."""
    done: set[int] = set()
    leader_ours = is_ours(owner, home)
    pgid = owner.pgid
    pids = list(pids)
    # The group still exists (and so cannot have been reused) while a member of it lives.
    if isinstance(pgid, int) and pgid > 0 and (
            leader_ours or any((s := read_stat(p)) and s.pgrp == pgid for p in pids)):
        group = [p for p in _all_pids() if (s := read_stat(p)) is not None and s.pgrp == pgid and not s.gone]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
            done.update(group)
    for p in pids:
        # Re-check right before signalling: a pid is only ever signalled while it is provably ours.
        if (p == owner.pid and leader_ours) or belongs(p, owner, home):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
                done.add(p)
    return done


def _wait_gone(owner: Owner, home: Home, pids: list[int], *, seconds: float, handle: Any) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        _reap(handle)
        left = [p for p in pids if alive(p)]
        left = sorted(set(left) | set(members(owner, home)))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)


@dataclass(frozen=True, kw_only=True)
class StopOutcome:
    pids: tuple[int, ...]  # what was running when the stop began
    signalled: tuple[int, ...]  # every pid a signal was sent to (the group's members included)
    terminated: bool  # everything exited after SIGTERM
    killed: tuple[int, ...]  # needed SIGKILL
    left: tuple[int, ...]  # could not be killed (reported, not waited for)
    seconds: float


def stop(owner: Owner, home: Home, *, term_timeout: float, kill_timeout: float = KILL_GRACE,
         handle: Any = None, say: Say | None = None) -> StopOutcome:
    """SIGTERM the server's group, wait at most ``term_timeout``, then SIGKILL what is left."""
    t0 = time.monotonic()
    pids = members(owner, home)
    if not pids:
        return StopOutcome(pids=(), signalled=(), terminated=True, killed=(), left=(), seconds=0.0)
    signalled = _signal(owner, home, pids, sig=signal.SIGTERM)
    left = _wait_gone(owner, home, pids, seconds=term_timeout, handle=handle)
    killed: list[int] = []
    if left:
        if say:
            say(f"still running after SIGTERM and {term_timeout:g}s: pid {', '.join(map(str, left))}; "
                "sending SIGKILL")
        killed = list(left)
        signalled |= _signal(owner, home, left, sig=signal.SIGKILL)
        left = _wait_gone(owner, home, left, seconds=kill_timeout, handle=handle)
    return StopOutcome(pids=tuple(pids), signalled=tuple(sorted(signalled)), terminated=not killed,
                       killed=tuple(killed), left=tuple(left), seconds=time.monotonic() - t0)


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


@dataclass(frozen=True, kw_only=True)
class Served:
    """What a server runs: the runtime's id, its lock's sha256 and its origin (lock | adopted)."""

    runtime: str | None
    lock: str | None
    origin: str | None


def unit_server(port: int, home: Home) -> Served | None:
    """What the server listening on ``port`` runs, when its environment says it is a server of the
    state directory ``home`` (``serve unit`` renders ``BUILDER_SERVE_STATE``, ``BUILDER_SERVE_RUNTIME``,
    ``BUILDER_SERVE_LOCK`` and ``BUILDER_SERVE_ORIGIN`` into the unit); None when no listener whose
    environment builder may read says so (another user's process needs root to read)."""
    if not home.identity:
        return None
    for pid in listeners(port):
        env = environ_of(pid)
        if env is None:
            continue
        values: dict[str, str] = {}
        for item in env:
            key, sep, value = item.partition(b"=")
            if sep:
                values[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        if values.get(STATE_VAR) == home.identity and values.get(RUNTIME_VAR):
            return Served(runtime=values[RUNTIME_VAR], lock=values.get(LOCK_VAR) or None,
                          origin=values.get(ORIGIN_VAR) or None)
    return None
