"""What the serve and route commands return: frozen, keyword-only models (pure).

The CLI renders them; ``as_dict()`` is their ``--json`` form.  Slot records are
:class:`builder.serve.record.SlotRecord`, probe verdicts
:class:`builder.serve.probe.Report`, routes and journal entries
:class:`builder.serve.route.Route` and :class:`~builder.serve.route.Entry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builder.serve.probe import Report
from builder.serve.process import StopOutcome
from builder.serve.record import SlotRecord
from builder.serve.route import Entry, Route

# --------------------------------------------------------------------------- serve start / stop


@dataclass(frozen=True, kw_only=True)
class Started:
    """``serve start``: the slot is ready; its record and the probe that said so."""

    slot: str
    record: SlotRecord
    probe: Report

    def as_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "ready": True, "record": self.record.as_dict(), "probe": self.probe.as_dict()}


@dataclass(frozen=True, kw_only=True)
class Drain:
    """How the wait for requests in flight ended (``serve stop --drain``)."""

    drained: bool
    in_flight: tuple[int, int] | None = None  # (running, waiting) at the end
    reason: str | None = None  # why there was no drain (no metrics)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"drained": self.drained}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.in_flight is not None:
            out["in_flight"] = list(self.in_flight)
        return out


@dataclass(frozen=True, kw_only=True)
class Stopped:
    """``serve stop``: what ran, what was signalled, how it ended."""

    slot: str
    was_running: bool
    routed: bool = False  # the route points at the slot
    pid: int | None = None  # the recorded leader
    orphans: bool = False  # the leader was gone; what was stopped were its leftover processes
    drain: Drain | None = None
    outcome: StopOutcome | None = None

    def as_dict(self) -> dict[str, Any]:
        if not self.was_running or self.outcome is None:
            return {"slot": self.slot, "was_running": False, "routed": self.routed, "stopped": True}
        o = self.outcome
        out: dict[str, Any] = {"slot": self.slot, "was_running": True, "pid": self.pid}
        if self.drain is not None:
            out["drain"] = self.drain.as_dict()
        out.update(pids=list(o.pids), terminated=o.terminated, killed=list(o.killed), left=list(o.left),
                   seconds=round(o.seconds, 2), signalled=list(o.signalled), orphans=self.orphans,
                   routed=self.routed, stopped=True)
        return out


# --------------------------------------------------------------------------- serve status


@dataclass(frozen=True, kw_only=True)
class Orphans:
    """Processes of a slot's server whose leader is gone (they still carry its token)."""

    pids: tuple[int, ...]
    gpu_mib: int | None  # GPU memory they hold; None: unknown (no nvidia-smi, or it did not answer)

    def as_dict(self) -> dict[str, Any]:
        return {"pids": list(self.pids), "gpu_mib": self.gpu_mib}

    def describe(self) -> str:
        mem = "GPU memory unknown" if self.gpu_mib is None else f"holding {self.gpu_mib} MiB of GPU memory"
        return f"{len(self.pids)} orphaned process(es) (pid {', '.join(map(str, self.pids))}), {mem}"


@dataclass(frozen=True, kw_only=True)
class SlotStatus:
    slot: str
    port: int
    url: str
    runtime: str | None
    origin: str | None  # the runtime's: lock | adopted
    pid: int | None
    alive: bool  # the record is ours and its leader runs
    ready: bool
    verdict: str | None
    running: int | None
    waiting: int | None
    routed: bool
    started_at: str | None
    log: str | None
    record: str | None  # ours | stale | foreign (another state directory's) | None (no record)
    orphans: Orphans | None = None

    @property
    def state(self) -> str:
        """One word or phrase for the slot's server: ready, not ready, dead, stale, not running."""
        if self.ready:
            return "ready"
        if self.alive:
            return f"not ready ({self.verdict})"
        if self.orphans is not None:
            return f"dead, {self.orphans.describe()}"
        if self.record == "foreign":
            return "not running here (its record belongs to another state directory)"
        if self.record == "stale":
            return f"dead (stale record, {self.verdict})"
        return f"not running ({self.verdict})"

    def as_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "port": self.port, "url": self.url, "runtime": self.runtime, "origin": self.origin,
                "pid": self.pid,
                "alive": self.alive, "ready": self.ready, "verdict": self.verdict, "running": self.running,
                "waiting": self.waiting, "routed": self.routed, "started_at": self.started_at, "log": self.log,
                "record": self.record, "orphans": self.orphans.as_dict() if self.orphans else None}


@dataclass(frozen=True, kw_only=True)
class RouteStatus:
    file: str
    slot: str | None  # the slot whose URL the route file names
    route: Route | None

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "slot": self.slot, **(self.route.as_dict() if self.route else {})}


@dataclass(frozen=True, kw_only=True)
class Status:
    """``serve status``: every slot, and where the route points."""

    service: str
    route: RouteStatus | None
    slots: tuple[SlotStatus, ...]

    def routed_problem(self) -> str | None:
        """One line when the route points at a slot that is not ready (``serve status`` exits 1)."""
        for s in self.slots:
            if s.routed and not s.ready:
                return f"the route points at slot {s.slot}, which is {s.state}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "route": self.route.as_dict() if self.route else None,
                "slots": [s.as_dict() for s in self.slots]}


# --------------------------------------------------------------------------- route


@dataclass(frozen=True, kw_only=True)
class RouteShown:
    """``route show``: what the route file says, who wrote it, where a rollback would go."""

    file: str
    route: Route | None
    entry: Entry | None  # the journal entry in effect (None: not builder's)
    foreign: str | None  # why builder does not own the file
    rollback_to: Route | None

    def as_dict(self) -> dict[str, Any]:
        r = self.route
        return {"file": self.file, "slot": r.slot if r else None, "url": r.url if r else None,
                "model": r.model if r else None, "runtime": r.runtime if r else None, "lock": r.lock if r else None,
                "origin": r.origin if r else None,
                "since": self.entry.time if self.entry else None, "entry": self.entry.id if self.entry else None,
                "builder": self.foreign is None, "foreign": self.foreign,
                "rollback_to": self.rollback_to.as_dict() if self.rollback_to else None}


@dataclass(frozen=True, kw_only=True)
class RouteChange:
    """``route init``, ``set`` and ``rollback``: the entry written, or (set) the route kept."""

    file: str
    entry: Entry | None  # None: already routed there, nothing written
    to: Route

    @property
    def changed(self) -> bool:
        return self.entry is not None

    def as_dict(self) -> dict[str, Any]:
        if self.entry is None:
            return {"changed": False, "file": self.file, "to": self.to.as_dict()}
        if self.entry.action == "adopt":
            return {"file": self.file, "entry": self.entry.as_dict()}
        return {"changed": True, "file": self.file, "entry": self.entry.as_dict()}
