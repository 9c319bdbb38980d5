"""How core code reports progress: the two callback types, defined once.

``Progress(target, message)`` is one line about one target (a lock, a runtime, a slot);
``Say(message)`` one line about the one thing in hand.  The core calls them and never
prints; only the CLI renders them (on stderr, or not at all under ``-q``).
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, str], None]
Say = Callable[[str], None]
