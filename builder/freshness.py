"""Freshness of a generated lock file: one judge for the PyPI and the conda locks (pure-ish I/O).

A lock is ``fresh`` (matches its spec), ``stale`` (the spec changed),
``modified`` (edited since builder wrote it), ``missing`` or ``invalid``.
The format-specific part (how to read the stamp, what the hash covers) is a
:data:`Judge`; reading the file and mapping errors is shared here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.errors import LockFileError
from builder.files import inputs

STATES = ("fresh", "stale", "modified", "missing", "invalid")


@dataclass(frozen=True, kw_only=True)
class LockState:
    """Freshness of one lock: ``fresh``, ``stale``, ``modified``, ``missing`` or ``invalid``."""

    matrix: str
    python: str
    path: Path
    state: str
    reason: str
    command: str

    @property
    def ok(self) -> bool:
        return self.state == "fresh"


Judge = Callable[[str, str], tuple[str, str]]
"""(file text, where) -> (state, reason) for a readable lock; raises LockFileError if invalid."""


def judge_file(path: Path, *, matrix: str, python: str, command: str, judge: Judge,
               what: str = "lock file") -> LockState:
    """Freshness of the lock file at ``path``: missing/invalid here, the rest by ``judge``."""

    def state(s: str, reason: str) -> LockState:
        return LockState(matrix=matrix, python=python, path=path, state=s, reason=reason, command=command)

    try:
        text = inputs.read_text(path)  # bytes as they are: CR too, the stamp hash covers them
    except FileNotFoundError:
        return state("missing", f"no {what}")
    except IsADirectoryError:
        return state("invalid", f"{path.name} is a directory")
    except UnicodeDecodeError as exc:
        return state("invalid", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        return state("invalid", f"unreadable: {exc.strerror or exc}")
    try:
        s, reason = judge(text, str(path))
    except LockFileError as exc:
        s, reason = "invalid", exc.message
    return state(s, reason)
