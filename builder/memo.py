"""Derived data kept by content: packaging's verdict on locks and parsed data files (like a .pyc).

A warm ``builder check`` or ``build`` re-derives the same things from the same bytes:
packaging's validation of each lock (:func:`builder.pylock.parse`) and the parsed tables of
``builder/data/*.toml``.  Both are pure functions of their input bytes, so their results are
kept in builder's cache directory (the gated check cache, beside the wheel facts), under a key
that hashes the input bytes and the code that derives them:

* ``DIR/locks/``: :func:`builder.pylock.memo_key` (the lock's bytes, the parser's source,
  packaging's version) -> the verdict "these bytes are a valid PEP 751 lock", which must
  name the lock's own sha256 to be believed.  Only the verdict: the model (packages,
  wheels, hashes, content hash) is read from the lock's bytes on every read, so what a build
  installs, what a check judges and a runtime's address follow from the lock alone, whatever
  the cache holds.  A forged verdict can at most spare packaging's validation of bytes that
  builder still reads for itself (a lock it cannot read is refused all the same).
* ``DIR/toml/``: the data file's bytes and the TOML reader.
* ``DIR/interpreters/``: what an interpreter said of itself
  (:func:`builder.runtime.interpreters.probe`), keyed by its file's identity (see there).

Every entry is ``{"key": ..., "value": ...}`` in a file named by the key's sha256
(:func:`get_json`, :func:`keep_json`).

A miss derives and keeps the result; an entry that does not read back exactly (torn,
edited, another format) is ignored and rewritten; an invalid lock raises before anything is
kept; a cache that cannot be written only costs the next run the derivation.  The parsed
data tables and the interpreter answers are trusted as the cache directory is (the
operator's own, like the wheel facts beside them: docs/reliability.md says what those can
change); a lock's content never comes from here.

The pure modules stay pure: they hold the keys and the entry formats; the reading and
writing of entries is here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from builder import pylock
from builder.errors import BuilderError
from builder.files import inputs, tomlread

TOML_FORMAT = 1


def _entry(file: Path) -> bytes | None:
    try:
        return inputs.read_bytes(file)
    except (OSError, BuilderError):
        return None


def _keep(file: Path, text: str) -> None:
    from builder.files.fsio import atomic_write

    try:
        atomic_write(file, text)
    except (OSError, BuilderError):
        pass  # a read-only (full, odd) cache only costs the next run the derivation


def get_json(cache: Path, kind: str, key: str) -> Any:
    """The JSON value kept under ``key`` in ``cache/kind/``, or None (absent, unreadable, torn).

    The entry must repeat its key: a file copied under another name is not believed."""
    entry = _entry(cache / kind / f"{hashlib.sha256(key.encode()).hexdigest()}.json")
    if entry is None:
        return None
    try:
        d = json.loads(entry)
        return d["value"] if d["key"] == key else None
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def keep_json(cache: Path, kind: str, key: str, *, value: Any) -> None:
    """Keep a JSON value under ``key`` in ``cache/kind/`` (best effort).  A value JSON would
    not give back exactly (dates, inf, nan) is not kept."""
    try:
        text = json.dumps({"key": key, "value": value}, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return
    _keep(cache / kind / f"{hashlib.sha256(key.encode()).hexdigest()}.json", text)


def lock(raw: bytes, where: str, cache: Path | None, *, parsed: pylock.Lock | None = None) -> pylock.Lock:
    """:func:`builder.pylock.parse` of ``raw``; packaging's verdict on it kept under ``cache``
    (None: not kept).  The model is always read from ``raw``: only the validation is skipped
    when the cache holds a valid verdict on these very bytes.  ``parsed``: this process's own
    :func:`~builder.pylock.parse` of ``raw`` (validated: uv's output is checked as it arrives),
    taken as the model (named ``where``) instead of parsing the bytes again."""
    sha = hashlib.sha256(raw).hexdigest()
    if parsed is not None and parsed.sha256 != sha:
        parsed = None  # another lock's model: read these bytes
    if parsed is not None:
        parsed = dataclasses.replace(parsed, where=where)
    key = pylock.memo_key(sha) if cache is not None else None
    if cache is None or key is None:
        return parsed or pylock.parse(raw, where)
    believed = pylock.believes(get_json(cache, "locks", key), sha)
    if believed:
        return parsed or pylock.parse(raw, where, validated=True)
    parsed = parsed or pylock.parse(raw, where)  # raises on an invalid lock: nothing is kept
    keep_json(cache, "locks", key, value=pylock.verdict(parsed))
    return parsed


def read_lock(path: Any, cache: Path | None) -> pylock.Lock:
    """:func:`builder.pylock.read`, kept under ``cache``."""
    return lock(pylock.read_raw(path), str(path), cache)


def use_for_data(cache: Path | None) -> None:
    """Keep the parsed data files (:func:`builder.files.tomlread.load_data`) under ``cache`` from now on
    in this process (None: parse them every time)."""
    tomlread.data_hook = None if cache is None else (lambda raw: _data(raw, cache))


def _data(raw: bytes, cache: Path) -> dict[str, Any]:
    key = f"{TOML_FORMAT}|{tomlread.IMPL}|{hashlib.sha256(raw).hexdigest()}"
    kept = get_json(cache, "toml", key)
    if isinstance(kept, dict):
        return kept
    data = tomlread.loads(raw.decode("utf-8"))
    keep_json(cache, "toml", key, value=data)
    return data
