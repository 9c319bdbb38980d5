"""What core code reports, defined once: progress lines and the level of each verdict.

``Progress(target, message)`` is one line about one target (a lock, a runtime, a slot);
``Say(message)`` one line about the one thing in hand.  The core calls them and never
prints; only the CLI renders them (on stderr, or not at all under ``-q``).

:class:`Level` is how a finding of ``builder check`` or a check of ``preflight`` and
``verify-driver`` ends.  Both use the one order ``pass < info < warn < unknown < fail``:

- ``info`` is a pass that has something to say (check only): it ranks above ``pass`` and
  below ``warn``, and a check's verdict counts it as a pass;
- ``unknown`` is a fact that could not be read (preflight and verify-driver only): worse
  than any warning, since nothing is known to be fine, and better than a failure, since
  nothing is known to be broken.  A report with a ``fail`` is not ready even where other
  checks are unknown.

The values are the strings the reports have always printed (``"pass"``, ``"warn"`` ...):
``Level`` is a ``StrEnum``, so JSON, tables and comparisons with those strings are unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

Progress = Callable[[str, str], None]
Say = Callable[[str], None]


class Level(enum.StrEnum):
    """The level of a finding or a check, in increasing severity (see the module's docstring)."""

    PASS = "pass"
    INFO = "info"
    WARN = "warn"
    UNKNOWN = "unknown"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        """The position in the order ``pass < info < warn < unknown < fail``."""
        return _ORDER[self]


_ORDER = {level: i for i, level in enumerate(Level)}


def worst(levels: Iterable[Level], default: Level = Level.PASS) -> Level:
    """The most severe of ``levels`` (``default`` when there are none), as a :class:`Level`
    (a plain ``"warn"`` counts as ``Level.WARN``)."""
    return Level(max(levels, key=lambda lv: _ORDER[Level(lv)], default=default))
