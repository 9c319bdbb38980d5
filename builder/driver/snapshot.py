"""Host snapshots: every probe's raw result in one readable JSON file.

A snapshot lets an operator capture on the GPU server (``builder host snapshot
FILE``) and analyse anywhere (``--from-snapshot FILE``).  It holds only what
the probes print plus when and with which builder it was taken.  It holds no
environment variables, no hostname, user name or working directory: the
probes were chosen so that none of them prints those (``uname -r``, not
``uname -a``; nvidia-smi's process *names*, not command lines with their
arguments).  What the tools print is kept verbatim, so a process name that is
a path under a home directory stays as nvidia-smi printed it.

builder's own fields hold no absolute path of the project: the torch probe of
a runtime is recorded relative to the project
(``runtimes/matrix-a-py312-<hash>/bin/python``), or to the runtimes root
(``<runtimes>/...``) when that lies outside it (:func:`relative_commands`).
Older files with absolute paths load the same: only probe ids and outputs are
read.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from builder.errors import UsageError
from builder.files import inputs

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
    def from_json(cls, d: Any) -> ProbeRecord:
        """Validate one probe object; ValueError/TypeError/KeyError say what is wrong."""
        if not isinstance(d, Mapping):
            raise TypeError(f"must be an object, got {type(d).__name__}")
        cmd = d.get("command")
        exit_ = d.get("exit")
        if not (exit_ is None or exit_ == "missing" or (isinstance(exit_, int) and not isinstance(exit_, bool))):
            raise ValueError(f"exit must be an integer, 'missing' or null, got {exit_!r}")
        if not (cmd is None or (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd))):
            raise ValueError("command must be a list of strings or null")
        for key in ("id", "kind", "stdout", "stderr"):
            if key in d and not isinstance(d[key], str):
                raise ValueError(f"{key} must be a string")
        path = d.get("path")
        if not (path is None or isinstance(path, str)):
            raise ValueError("path must be a string or null")
        duration = d.get("duration", 0.0)
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise ValueError("duration must be a number")
        return cls(
            id=d["id"], kind=d.get("kind", "command"),
            command=tuple(cmd) if cmd is not None else None,
            path=path, stdout=d.get("stdout", ""), stderr=d.get("stderr", ""),
            exit=exit_, duration=float(duration), timed_out=bool(d.get("timed_out", False)),
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
        except KeyError as exc:
            raise UsageError(f"{source}: probes[{n}] is invalid: missing {exc}", "take a new snapshot") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{source}: probes[{n}] is invalid: {exc}", "take a new snapshot") from None
        records[rec.id] = rec
    created, builder = data.get("created", ""), data.get("builder", "")
    return Snapshot(records, created if isinstance(created, str) else "",
                    builder if isinstance(builder, str) else "", source, version)


def relative_commands(snap: Snapshot, project_root: Path, runtimes_root: Path) -> Snapshot:
    """``snap`` with each torch probe's interpreter path relative to the project.

    Only builder's own argv is rewritten; what the tools printed stays verbatim.
    """
    def rel(arg: str) -> str:
        p = Path(arg)
        for base, label in ((project_root, ""), (runtimes_root, "<runtimes>/")):
            if p.is_absolute() and p.is_relative_to(base):
                return label + str(p.relative_to(base))
        return arg

    out = {}
    for key, rec in snap.records.items():
        if key.startswith("torch:") and rec.command:
            rec = replace(rec, command=(rel(rec.command[0]), *rec.command[1:]))
        out[key] = rec
    return replace(snap, records=out)


def load(path: Path) -> Snapshot:
    """Read a snapshot file written by :func:`write`."""
    try:
        raw = inputs.read_bytes(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: snapshot file not found", "check the path") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read snapshot: {exc.strerror or exc}", "check the path") from None
    return parse(raw, str(path))


def parse(raw: bytes, source: str = "<snapshot>") -> Snapshot:
    """A snapshot from the bytes of a file: any malformed input is one UsageError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                         "take a new snapshot") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON: {exc}", "take a new snapshot") from None
    except RecursionError:
        raise UsageError(f"{source}: JSON nested too deeply to be a snapshot", "take a new snapshot") from None
    return from_json(data, source)
