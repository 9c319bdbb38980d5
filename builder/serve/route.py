"""The route file QueryLake reads, and its journal.

The route file is an env file (``KEY=VALUE`` lines, ``#`` comments) holding
exactly two variables, ``OPENAI_BASE_URL`` and ``OPENAI_MODEL``; builder's
comment lines name the slot, runtime id, lock hash, time and the journal entry
that wrote it.  It is replaced atomically (temp file in the same directory,
fsync, rename, fsync of the directory: readers see the old or the new file,
never a mix; ``ln -sfn`` would not be atomic: ``ln -f`` removes the destination
first, https://www.gnu.org/software/coreutils/manual/html_node/ln-invocation.html,
while rename(2) replaces it atomically,
https://pubs.opengroup.org/onlinepubs/9699919799/functions/rename.html).

The journal (``<route-file>.journal``, JSON lines) gets one entry per change
*before* the file is replaced: ``{id, time, action, from, to, prev, restores,
probe, forced}``.  The entry id in the file's comments says which entry is in
effect; an entry that no file carries never took effect (a killed ``set``).
``prev`` is the id of the entry in effect when it was written, which makes
rollback an undo: it returns to the route that was in effect before the
current one (undoing a rollback's own base step by step), never to "the
previous slot by number".
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from builder.errors import UsageError
from builder.files import inputs
from builder.files.fsio import atomic_write
from builder.serve import endpoint

URL_VAR = "OPENAI_BASE_URL"
MODEL_VAR = "OPENAI_MODEL"
_META = re.compile(r"^#\s*([a-z-]+):\s*(.*?)\s*$")
_VAR = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class Route:
    """Where QueryLake points: URL (``.../v1``) and model, plus what builder knows of it."""

    url: str
    model: str
    slot: str | None = None
    runtime: str | None = None
    lock: str | None = None
    origin: str | None = None  # the runtime's: "lock" (built from one) or "adopted" (no lock); None outside

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Route | None:
        if not isinstance(d, dict) or not d.get("url") or not d.get("model"):
            return None
        return cls(str(d["url"]), str(d["model"]), d.get("slot"), d.get("runtime"), d.get("lock"), d.get("origin"))

    def label(self) -> str:
        where = f"slot {self.slot}" if self.slot else "an endpoint outside builder"
        return f"{where} ({self.url}, model {self.model})"

    def problems(self) -> list[str]:
        """Why this route must not be written into the route file (``field: why``), if anything."""
        return endpoint.route_problems(url=self.url, model=self.model, slot=self.slot, runtime=self.runtime,
                                       lock=self.lock, origin=self.origin)


@dataclass(frozen=True)
class Entry:
    id: str
    time: str
    action: str  # adopt (route init) | set | rollback | stop-forced
    to: Route | None
    frm: Route | None = None
    prev: str | None = None
    restores: str | None = None
    probe: str = ""
    forced: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.time, "action": self.action,
                "from": self.frm.as_dict() if self.frm else None, "to": self.to.as_dict() if self.to else None,
                "prev": self.prev, "restores": self.restores, "probe": self.probe, "forced": self.forced,
                "runtime": self.to.runtime if self.to else None, "lock": self.to.lock if self.to else None,
                "origin": self.to.origin if self.to else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        return cls(str(d["id"]), str(d.get("time", "")), str(d.get("action", "")), Route.from_dict(d.get("to")),
                   Route.from_dict(d.get("from")), d.get("prev"), d.get("restores"), str(d.get("probe", "")),
                   bool(d.get("forced")))


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def new_id() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class RouteFile:
    """A parsed route file: its variables and builder's comment fields."""

    vars: dict[str, str]
    meta: dict[str, str]

    @property
    def entry(self) -> str | None:
        return self.meta.get("entry")


def parse(text: str) -> RouteFile:
    env: dict[str, str] = {}
    meta: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = _META.match(s)
            if m:
                meta.setdefault(m.group(1), m.group(2))
            continue
        v = _VAR.match(s)
        if v:
            val = v.group(2).strip()
            if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
                val = val[1:-1]
            env[v.group(1)] = val
    return RouteFile(env, meta)


def read(path: Path) -> tuple[bytes, RouteFile] | None:
    """The route file's bytes and parse, or None when there is none."""
    try:
        raw = inputs.read_bytes(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the route file: {exc.strerror or exc}",
                         "give the env file QueryLake reads (--route-file), a regular file") from None
    return raw, parse(raw.decode("utf-8", "replace"))


def render(route: Route, entry: Entry, command: str) -> str:
    """The route file's text; UsageError (nothing written) for a value that would not stay one line."""
    bad = route.problems()
    if bad:
        raise UsageError(f"refusing to write the route file: {'; '.join(bad)}",
                         "give an http(s) URL and a model name of letters, digits and . _ : / @ + = , -")
    lines = [
        f"# Written by `{command}`; QueryLake reads this file. Change it with `builder route`,",
        "# not by hand (builder refuses to switch a file it did not write until `builder route init`).",
        f"# slot: {route.slot or '-'}",
        f"# runtime: {route.runtime or '-'}",
        f"# origin: {_origin_label(route)}",
        f"# lock: {route.lock or '-'}",
        f"# since: {entry.time}",
        f"# entry: {entry.id}",
        f"{URL_VAR}={route.url}",
        f"{MODEL_VAR}={route.model}",
    ]
    return "\n".join(lines) + "\n"


def _origin_label(route: Route) -> str:
    if route.origin == "adopted":
        return "adopted (no lock, no hash verification)"
    return route.origin or "-"


def write(path: Path, route: Route, entry: Entry, *, command: str) -> None:
    """Replace the route file atomically (temp + fsync + rename + directory fsync)."""
    clean_temp(path)
    atomic_write(path, render(route, entry, command))


def clean_temp(path: Path) -> None:
    """Remove temp files a killed writer of *this* file left (``.<name>.*.tmp``)."""
    for p in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            p.unlink()
        except OSError:
            pass


# --------------------------------------------------------------------------- the journal


def read_journal(path: Path) -> list[Entry]:
    """Every complete entry (a torn last line from a killed writer is ignored)."""
    try:
        text = inputs.read_bytes(path).decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the route journal: {exc.strerror or exc}",
                         "the journal sits beside the route file; restore or remove it") from None
    out: list[Entry] = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
            if isinstance(d, dict) and d.get("id"):
                out.append(Entry.from_dict(d))
        except (ValueError, KeyError, TypeError, RecursionError):  # torn, foreign or absurdly nested
            continue
    return out


def append(path: Path, entry: Entry) -> None:
    """Append one entry and fsync it (and the directory when the journal is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # A torn line from a killed writer must not glue onto ours.
        if not new and os.fstat(fd).st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    os.write(fd, b"\n")
        os.write(fd, (json.dumps(entry.as_dict(), separators=(",", ":")) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --------------------------------------------------------------------------- what is in effect


@dataclass(frozen=True)
class Current:
    """The route in effect, and whether builder may change it."""

    exists: bool
    route: Route | None  # what the file says (None: no file or no URL in it)
    entry: Entry | None  # the journal entry that wrote it (None: not builder's)
    foreign: str | None  # why builder does not own the file, when it does not
    vars: dict[str, str]


def current(route_file: Path, journal: list[Entry]) -> Current:
    got = read(route_file)
    if got is None:
        return Current(False, None, None, None, {})
    _raw, rf = got
    url, model = rf.vars.get(URL_VAR), rf.vars.get(MODEL_VAR)
    route = Route(url, model) if url and model else None
    by_id = {e.id: e for e in journal}
    entry = by_id.get(rf.entry or "")
    foreign = None
    if rf.entry is None:
        foreign = "builder did not write it"
    elif entry is None or entry.to is None:
        foreign = f"its entry {rf.entry} is not in the journal"
    elif route is None or (entry.to.url, entry.to.model) != (route.url, route.model):
        foreign = "it was changed since builder wrote it"
    elif set(rf.vars) - {URL_VAR, MODEL_VAR}:
        foreign = f"it defines other variables ({', '.join(sorted(set(rf.vars) - {URL_VAR, MODEL_VAR}))})"
    if foreign is None and entry is not None:
        route = entry.to
    return Current(True, route, entry if foreign is None else None, foreign, rf.vars)


def rollback_target(journal: list[Entry], cur: Entry) -> Entry | None:
    """The entry whose route was in effect before ``cur``'s change (undo semantics)."""
    by_id = {e.id: e for e in journal}
    base: Entry | None = cur
    # Undoing a rollback goes further back: its base is the entry whose route it restored.
    while base is not None and base.action == "rollback" and base.restores:
        base = by_id.get(base.restores)
    if base is None or not base.prev:
        return None
    return by_id.get(base.prev)
