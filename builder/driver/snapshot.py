"""Host snapshots: every probe's raw result in one readable JSON file.

A snapshot lets an operator capture on the GPU server (``builder host snapshot
FILE``) and analyse anywhere (``--from-snapshot FILE``).  It holds only what
the probes print plus when and with which builder it was taken.  It holds no
environment variables, no hostname, user name or working directory: the
probes were chosen so that none of them prints those (``uname -r``, not
``uname -a``; nvidia-smi's process *names*, not command lines with their
arguments).  What the tools print is kept verbatim, so a process name that is
a path under a home directory stays as nvidia-smi printed it.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from builder.errors import UsageError

FORMAT = "builder-host-snapshot"
#: The query fields the nvidia-smi probes ask for, in this order (probe.py runs
#: them; facts.py requires exactly that header back).
GPU_FIELDS = ("index", "name", "driver_version", "compute_cap", "memory.total", "pci.bus_id", "uuid")
APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_memory")
#: Version 2 added the ``modinfo`` and ``machine`` probes and each record's
#: ``capped`` flag.  Version 1 files still load: what they lack is reported as
#: "not captured in this snapshot" (``unknown``), never guessed.
VERSION = 2
READS = frozenset({1, 2})


@dataclass(frozen=True)
class ProbeRecord:
    """The raw result of one probe, as stored in a snapshot.

    ``exit`` is the exit code, ``"missing"`` (tool or file absent) or None
    (killed after ``timed_out``).
    """

    id: str
    kind: str
    command: tuple[str, ...] | None
    path: str | None
    stdout: str
    stderr: str
    exit: int | str | None
    duration: float
    timed_out: bool = False
    capped: bool = False  # printed more than the probe's output cap: killed, output cut there

    @property
    def ok(self) -> bool:
        return self.exit == 0 and not self.timed_out and not self.capped

    @property
    def missing(self) -> bool:
        return self.exit == "missing"

    def text(self) -> str:
        """stdout and stderr together (nvidia-smi prints some errors on stdout)."""
        return "\n".join(s for s in (self.stdout.strip(), self.stderr.strip()) if s)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["command"] = list(self.command) if self.command is not None else None
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProbeRecord:
        cmd = d.get("command")
        exit_ = d.get("exit")
        if not (exit_ is None or exit_ == "missing" or isinstance(exit_, int)):
            raise ValueError(f"exit must be an integer, 'missing' or null, got {exit_!r}")
        return cls(
            id=str(d["id"]), kind=str(d.get("kind", "command")),
            command=tuple(str(a) for a in cmd) if cmd is not None else None,
            path=d.get("path"), stdout=str(d.get("stdout", "")), stderr=str(d.get("stderr", "")),
            exit=exit_, duration=float(d.get("duration", 0.0)), timed_out=bool(d.get("timed_out", False)),
            capped=bool(d.get("capped", False)),
        )


@dataclass(frozen=True)
class Snapshot:
    """Probe records by id, plus when they were taken and where from."""

    records: dict[str, ProbeRecord]
    created: str
    builder: str = ""
    source: str = "live"
    version: int = VERSION  # the format version it was written in

    def get(self, probe_id: str) -> ProbeRecord | None:
        return self.records.get(probe_id)


def _builder_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("builder")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def make(records: Iterable[ProbeRecord], source: str = "live") -> Snapshot:
    """A snapshot of ``records`` taken now."""
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return Snapshot({r.id: r for r in records}, now, _builder_version(), source)


def to_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": snap.created,
        "builder": snap.builder,
        "probes": [r.to_json() for r in snap.records.values()],
    }


def render(snap: Snapshot) -> str:
    """The snapshot file's text (the caller writes it atomically)."""
    return json.dumps(to_json(snap), indent=2, ensure_ascii=False) + "\n"


def from_json(data: Any, source: str = "<snapshot>") -> Snapshot:
    """Validate a parsed snapshot; UsageError naming the problem and the file."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{source}: not a builder host snapshot (no \"format\": \"{FORMAT}\")",
                         "create one with `builder host snapshot FILE` on the GPU host")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in READS:
        raise UsageError(f"{source}: snapshot version {version!r} is not supported "
                         f"(this builder reads versions {', '.join(map(str, sorted(READS)))})",
                         "take a new snapshot")
    probes = data.get("probes")
    if not isinstance(probes, list):
        raise UsageError(f"{source}: \"probes\" must be a list", "take a new snapshot")
    records: dict[str, ProbeRecord] = {}
    for n, p in enumerate(probes):
        try:
            rec = ProbeRecord.from_json(p)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{source}: probes[{n}] is invalid: {exc}", "take a new snapshot") from None
        records[rec.id] = rec
    return Snapshot(records, str(data.get("created", "")), str(data.get("builder", "")), source, version)


def load(path: Path) -> Snapshot:
    """Read a snapshot file written by :func:`write`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: snapshot file not found", "check the path") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read snapshot: {exc.strerror}", "check the path") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON: {exc}", "take a new snapshot") from None
    return from_json(data, str(path))
