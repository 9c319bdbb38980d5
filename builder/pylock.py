"""The PEP 751 lock model: parsed once from bytes, frozen, hashed (pure).

Every consumer of a ``pylock.toml`` (check, build, smoke, doctor, the uv
backend, freshness, ``lock diff``) reads it through :func:`parse`; no other
module parses lock TOML.  Validation is ``packaging.pylock``'s; wheel choice
is ``packaging.tags``' selector; this module adds what builder needs on top:

* **The stamp.**  builder appends one ``[tool.builder]`` table to uv's output.
  It must be the *last* table, and its ``lock-hash`` covers every other byte of
  the file (the whole text without the ``lock-hash`` line itself).  Anything
  appended after the stamp, a second stamp, or any edit of the body makes the
  lock ``modified``.  :func:`stamp_state` checks this without parsing the TOML
  body (``lock --check`` stays cheap).  An unkeyed hash catches accidents, not
  an attacker; ``builder lock --verify`` (re-resolve and compare bytes) does.
* **The content hash.**  :attr:`Lock.content_hash` hashes the package content
  (``requires-python`` and every ``[[packages]]`` table) and nothing of the
  stamp or header: re-stamping the same packages (a moved ``exclude-newer``,
  a new builder) keeps the content address of runtimes built from it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from builder.errors import LockFileError
from builder.files import inputs

if TYPE_CHECKING:
    from packaging.tags import Tag

STAMP_TABLE = "[tool.builder]"
STAMP_MARKER = f"\n{STAMP_TABLE}\n"
HASH_KEY = "lock-hash"
#: Version of the stamp layout; 1 hashed only the text above the stamp.
STAMP_FORMAT = "2"
_STAMP_LINE = re.compile(r'^([a-z][a-z0-9-]*) = ("(?:[^"\\\n]|\\.)*")$')
_HASH_LINE = re.compile(rf'^{HASH_KEY} = "[^"\n]*"\n', re.M)


# --------------------------------------------------------------------------- the stamp (cheap path)


@dataclass(frozen=True, kw_only=True)
class Stamp:
    """builder's ``[tool.builder]`` table: what generated the lock and from which spec."""

    fields: Mapping[str, str]

    def get(self, key: str) -> str:
        return self.fields.get(key, "")

    @property
    def matrix(self) -> str:
        return self.get("matrix")

    @property
    def python(self) -> str:
        return self.get("python")

    @property
    def spec_hash(self) -> str:
        return self.get("spec-hash")

    @property
    def uv_version(self) -> str:
        return self.get("uv-version")

    @property
    def command(self) -> str:
        return self.get("command")


@dataclass(frozen=True, kw_only=True)
class StampState:
    """What :func:`stamp_state` found: the stamp (None if absent) and whether the file is intact."""

    stamp: Stamp | None
    intact: bool
    reason: str


def sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _hashed_text(text: str) -> str:
    """The text a lock's ``lock-hash`` covers: everything but the ``lock-hash`` line."""
    return _HASH_LINE.sub("", text, count=1)


def stamp_state(text: str) -> StampState:
    """Read the stamp and check integrity without parsing the TOML body.

    The stamp is ``[tool.builder]`` followed only by ``key = "string"`` lines to
    the end of the file.  Hand-written on purpose: a TOML parse of a 900-line
    lock costs more than the whole ``lock --check`` budget.
    """
    count = text.count(STAMP_MARKER) + (1 if text.startswith(STAMP_TABLE + "\n") else 0)
    if count == 0:
        return StampState(stamp=None, intact=False, reason="no [tool.builder] table: not written by builder")
    if count > 1:
        return StampState(stamp=None, intact=False, reason="more than one [tool.builder] table")
    idx = text.find(STAMP_MARKER) + 1
    tail = text[idx + len(STAMP_TABLE) + 1:]
    fields: dict[str, str] = {}
    for n, line in enumerate(tail.split("\n")):
        if line == "" and n == len(tail.split("\n")) - 1:
            break  # the final newline
        m = _STAMP_LINE.match(line)
        if m is None:
            return StampState(stamp=None, intact=False,
                              reason="content after the [tool.builder] table (it must be the last table)")
        key = m.group(1)
        if key in fields:
            return StampState(stamp=None, intact=False, reason=f"duplicate key {key!r} in [tool.builder]")
        try:
            fields[key] = str(json.loads(m.group(2)))
        except ValueError:
            return StampState(stamp=None, intact=False, reason=f"unreadable value of {key!r} in [tool.builder]")
    stamp = Stamp(fields=MappingProxyType(fields))
    if fields.get("stamp-format") != STAMP_FORMAT:
        return StampState(stamp=stamp, intact=False,
                          reason="stamped by an older builder (stamp format "
                                 f"{fields.get('stamp-format', '1')}); re-lock to re-stamp it")
    if not text.endswith("\n") or fields.get(HASH_KEY) != sha256_text(_hashed_text(text)):
        return StampState(stamp=stamp, intact=False, reason="edited by hand since builder wrote it")
    return StampState(stamp=stamp, intact=True, reason="intact")


def _toml_str(s: str) -> str:
    # TOML basic strings share JSON's escapes for the characters we emit.
    return json.dumps(s, ensure_ascii=False)


def render(header: str, body: str, fields: Mapping[str, str]) -> str:
    """Assemble a lock: comment ``header``, uv's ``body``, then the stamp (last).

    ``fields`` are the stamp's keys in order; ``stamp-format`` and ``lock-hash``
    are added here.  The hash covers every byte except its own line.
    """
    top = header + body.rstrip("\n") + "\n"
    table = "".join(f"{k} = {_toml_str(v)}\n" for k, v in {"stamp-format": STAMP_FORMAT, **fields}.items()
                    if k != HASH_KEY)
    unhashed = top + STAMP_TABLE + "\n" + table
    digest = sha256_text(unhashed)
    return top + STAMP_TABLE + "\n" + f"{HASH_KEY} = {_toml_str(digest)}\n" + table


# --------------------------------------------------------------------------- the model


def _filename(w: Mapping[str, Any]) -> str:
    import urllib.parse

    name = w.get("name") or urllib.parse.unquote(str(w.get("url") or w.get("path") or "").rsplit("/", 1)[-1])
    return str(name)


@dataclass(frozen=True, kw_only=True)
class Wheel:
    """One wheel file of a locked package."""

    filename: str
    url: str | None = None
    path: str | None = None
    size: int | None = None
    hashes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256") or None

    @functools.cached_property
    def tags(self) -> frozenset[Tag]:
        """The wheel's tags from its file name (empty for an invalid name)."""
        from packaging.utils import InvalidWheelFilename, parse_wheel_filename

        try:
            return frozenset(parse_wheel_filename(self.filename)[3])
        except InvalidWheelFilename:
            return frozenset()

    @property
    def is_platform(self) -> bool:
        """True for a wheel with compiled code for a platform (not ``any``)."""
        return any(t.platform != "any" for t in self.tags)

    def verified(self) -> bool:
        """Every hash present is non-empty and there is at least one."""
        return bool(self.hashes) and all(str(v).strip() for v in self.hashes.values())


@dataclass(frozen=True, kw_only=True)
class Package:
    """One ``[[packages]]`` entry."""

    name: str  # canonical (PEP 503)
    version: str
    marker: str | None = None
    requires_python: str | None = None
    wheels: tuple[Wheel, ...] = ()
    source: str | None = None  # "sdist" | "vcs" | "directory" | "archive" when the entry has one

    def applies(self, env: Mapping[str, str]) -> bool:
        """Whether the package is installed in the marker environment ``env``."""
        if not self.marker:
            return True
        from packaging.markers import InvalidMarker, Marker

        try:
            return Marker(self.marker).evaluate({**env, "extra": ""})
        except InvalidMarker:
            return True  # packaging.pylock validated it; keep the package

    @property
    def source_only(self) -> bool:
        """No wheel at all: installing it would build it on the host."""
        return not self.wheels and self.source is not None

    def pick_wheel(self, tags: Sequence[Tag]) -> Wheel | None:
        """The wheel an installer picks for ``tags`` (best first), or None."""
        return next(_selector(tags)((w, w.tags) for w in self.wheels), None)


_last_selector: tuple[Sequence[Tag], Callable[[Any], Iterator[Any]]] | None = None


def _selector(tags: Sequence[Tag]) -> Callable[[Any], Iterator[Any]]:
    """packaging's selector for ``tags``, built once per tag list.

    Callers pick a wheel for every package (~180) with the same list of ~1,000
    tags, and building the selector ranks the whole list: once per call it was
    most of a warm ``builder check``.  One entry keyed by identity (the entry
    keeps the list alive, so its id cannot be reused).
    """
    global _last_selector
    last = _last_selector
    if last is not None and last[0] is tags:
        return last[1]
    from packaging.tags import create_compatible_tags_selector

    select = create_compatible_tags_selector(tags)
    _last_selector = (tags, select)
    return select


@dataclass(frozen=True, kw_only=True)
class Lock:
    """A parsed, validated PEP 751 lock."""

    where: str  # path or label, for messages
    sha256: str  # of the file's bytes
    text: str
    stamp: StampState
    requires_python: str | None
    packages: tuple[Package, ...]
    content_hash: str

    @functools.cached_property
    def by_name(self) -> Mapping[str, Package]:
        return MappingProxyType({p.name: p for p in self.packages})

    def source_only(self) -> list[Package]:
        return [p for p in self.packages if p.source_only]

    def applicable(self, env: Mapping[str, str]) -> list[Package]:
        return [p for p in self.packages if p.applies(env)]

    def versions(self) -> dict[str, str]:
        """name -> version of every package (markers not applied)."""
        return {p.name: p.version for p in self.packages if p.version}

    @property
    def python(self) -> str | None:
        """The Python the lock is for: the stamp's, else ``requires-python``'s lower bound."""
        if self.stamp.stamp is not None and self.stamp.stamp.python:
            return self.stamp.stamp.python
        m = re.search(r"pylock\.py(\d)(\d+)\.toml$", self.where)
        if m:
            return f"{m.group(1)}.{m.group(2)}"
        m2 = re.match(r"\s*>=\s*(\d+\.\d+)", self.requires_python or "")
        return m2.group(1) if m2 else None


def content_hash(data: Mapping[str, Any]) -> str:
    """Hash of a parsed lock's package content: ``requires-python`` and ``packages``."""
    payload = {"requires-python": data.get("requires-python"), "packages": data.get("packages", [])}
    return "sha256:" + hashlib.sha256(
        json.dumps(payload, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()


def parse(raw: bytes, where: str, *, validated: bool = False) -> Lock:
    """Parse and validate lock bytes; LockFileError names ``where`` and the problem.

    The model always derives from ``raw``.  ``validated``: packaging has already found
    these very bytes a valid PEP 751 lock (:mod:`builder.memo` keeps that verdict by the
    bytes' hash), so its validation is not run again.  A verdict that lied would let
    through a lock packaging refuses, never another lock's content: what the model holds is
    read from ``raw`` here, and a shape this code cannot read is still a LockFileError.
    """
    from packaging.utils import canonicalize_name

    from builder.files import tomlread

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LockFileError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                            "regenerate it with `builder lock`") from None
    try:
        data = tomlread.loads(text)
    except tomlread.TOMLDecodeError as exc:
        raise LockFileError(f"{where}: not a readable TOML file: {exc}", "regenerate the lock") from None
    except RecursionError:
        raise LockFileError(f"{where}: TOML nested too deeply", "regenerate the lock") from None
    if not validated:
        from packaging.pylock import Pylock, PylockValidationError

        try:
            Pylock.from_dict(data)
        except PylockValidationError as exc:
            raise LockFileError(f"{where}: not a valid PEP 751 lock: {exc}", "regenerate the lock") from None
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # shapes packaging does not expect
            raise LockFileError(f"{where}: not a valid PEP 751 lock: {exc}", "regenerate the lock") from None
    tool = data.get("tool")
    if tool is not None and not isinstance(tool, dict):
        raise LockFileError(f"{where}: `tool` must be a table", "regenerate the lock")
    try:
        packages = []
        for entry in data.get("packages", []):
            wheels = tuple(
                Wheel(filename=_filename(w), url=w.get("url"), path=w.get("path"), size=w.get("size"),
                      hashes=MappingProxyType({str(k): str(v) for k, v in (w.get("hashes") or {}).items()}))
                for w in entry.get("wheels", []) or [])
            source = next((k for k in ("sdist", "vcs", "directory", "archive") if k in entry), None)
            packages.append(Package(
                name=str(canonicalize_name(entry["name"])), version=str(entry.get("version", "")),
                marker=entry.get("marker"), requires_python=entry.get("requires-python"),
                wheels=wheels, source=source))
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # only after a verdict that lied
        raise LockFileError(f"{where}: not a valid PEP 751 lock: {type(exc).__name__}: {exc}",
                            "regenerate the lock") from None
    return Lock(where=where, sha256=hashlib.sha256(raw).hexdigest(), text=text, stamp=stamp_state(text),
                requires_python=data.get("requires-python"), packages=tuple(packages),
                content_hash=content_hash(data))


def read_raw(path: Any) -> bytes:
    """The bytes of the lock at ``path``; a missing or unreadable file is a LockFileError."""
    try:
        return inputs.read_bytes(path)
    except FileNotFoundError:
        raise LockFileError(f"{path}: no such lock file", "check the path or run `builder lock`") from None
    except IsADirectoryError:
        raise LockFileError(f"{path}: is a directory, not a lock file", "pass a pylock.toml file") from None
    except OSError as exc:
        raise LockFileError(f"{path}: cannot read: {exc.strerror or exc}", "check the path") from None


def read(path: Any) -> Lock:
    """Read and parse the lock at ``path`` (a ``Path``); a missing file is a LockFileError."""
    return parse(read_raw(path), str(path))


# --------------------------------------------------------------------------- packaging's verdict, kept
#
# Validating a lock with packaging.pylock is a pure function of its bytes, and on a warm
# `builder check` it was the largest single cost (packaging.pylock's import alone costs as
# much as the rest of the lock handling).  :mod:`builder.memo` keeps packaging's *verdict*
# by content, like a .pyc: "the bytes with this sha256 are a valid PEP 751 lock".  It keeps
# nothing the model is made of: the packages, wheels, hashes and content hash are read from
# the lock's bytes on every read (:func:`parse` with ``validated=True``), so an edited cache
# entry cannot change what a build installs, what a check judges or a runtime's address.
# These are the pure halves: the key (the lock's bytes, this module's source and packaging's
# version, so a changed byte, parser or packaging misses) and the entry.

MEMO_FORMAT = 2  # 1 kept the whole model
_code_id: str | None = None


def memo_key(raw_sha: str) -> str | None:
    """The memo key of lock bytes with sha256 ``raw_sha`` (None: this module's source is unreadable)."""
    global _code_id
    if _code_id is None:
        import packaging

        try:
            with open(__file__, "rb") as f:
                source = f.read()
        except OSError:  # no readable source (a zipapp): no memo
            return None
        _code_id = hashlib.sha256(b"%d|%s|" % (MEMO_FORMAT, packaging.__version__.encode()) + source).hexdigest()
    return hashlib.sha256(f"{_code_id}|{raw_sha}".encode()).hexdigest()


def verdict(lock: Lock) -> dict[str, Any]:
    """The entry (JSON) saying packaging found ``lock``'s bytes valid."""
    return {"format": MEMO_FORMAT, "sha256": lock.sha256, "valid": True}


def believes(d: Any, raw_sha: str) -> bool:
    """Whether an entry (JSON, or None) is exactly a valid verdict on the bytes with sha256 ``raw_sha``."""
    return (isinstance(d, dict) and d.get("format") == MEMO_FORMAT and d.get("sha256") == raw_sha
            and d.get("valid") is True)


# --------------------------------------------------------------------------- targets


@functools.lru_cache(maxsize=16)
def target_tags(python: str, arch: str, glibc: str | None) -> tuple[Tag, ...]:
    """Wheel tags CPython ``python`` accepts on ``arch`` Linux with ``glibc``, best first.

    Cached (a check asks for the same ~1,000 tags several times per lock), and a
    tuple, so the cached value cannot be changed by a caller.
    """
    from packaging.tags import compatible_tags, cpython_tags

    major, minor = (int(x) for x in python.split(".")[:2])
    gmaj, gmin = (int(x) for x in (glibc or "2.17").split(".")[:2])
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    plats = []
    for m in range(gmin, 4, -1):
        plats.append(f"manylinux_{gmaj}_{m}_{arch}")
        if m in legacy:
            plats.append(f"{legacy[m]}_{arch}")
    plats.append(f"linux_{arch}")
    return (*cpython_tags((major, minor), platforms=plats),
            *compatible_tags((major, minor), interpreter=f"cp{major}{minor}", platforms=plats))


@functools.lru_cache(maxsize=8)
def host_tags(version: str) -> tuple[Tag, ...]:
    """Wheel tags a CPython ``version`` ("3.12.1") accepts on *this* host, best first (cached, as
    :func:`target_tags`)."""
    from packaging import tags

    major, minor = (int(x) for x in version.split(".")[:2])
    plats = list(tags.platform_tags())
    return (*tags.cpython_tags((major, minor), platforms=plats),
            *tags.compatible_tags((major, minor), f"cp{major}{minor}", plats))


def target_env(python: str, arch: str) -> dict[str, str]:
    """Marker environment of a Linux CPython target rather than this machine.

    Every key of ``packaging.markers.default_environment()`` (tests/test_lock_memo.py holds
    them equal), written out rather than copied from this machine's: the target's
    interpreter is not the one running builder (``implementation_version`` is the
    target's), and asking ``platform`` about this one compiled nine regexes per check.
    Only the kernel (``platform_release``, ``platform_version``) is this machine's.
    """
    u = os.uname()
    return {"implementation_name": "cpython", "implementation_version": f"{python}.0", "os_name": "posix",
            "platform_machine": arch, "platform_release": u.release, "platform_system": "Linux",
            "platform_version": u.version, "python_full_version": f"{python}.0",
            "platform_python_implementation": "CPython", "python_version": python, "sys_platform": "linux"}

