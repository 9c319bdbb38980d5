"""What a wheel read is asked for and what it cost (pure): the size under which a wheel is
fetched whole, whether its CUDA binaries are wanted, and the network counters of one check.

Shared by :mod:`builder.check.wheels` (the cache) and :mod:`builder.check.wheelread` (the
reader), so neither imports the other's module for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

SMALL_WHEEL = 256 * 1024  # wheels up to this size are fetched whole and hash-checked


@dataclass
class FetchStats:
    """Network use of one check (thread-safe counters)."""

    requests: int = 0
    bytes: int = 0
    deep_requests: int = 0  # check --deep: the main extension's member, streamed
    deep_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += n

    def add_deep(self, requests: int, n: int) -> None:
        with self._lock:
            self.deep_requests += requests
            self.deep_bytes += n

    def as_dict(self) -> dict[str, int]:
        out = {"requests": self.requests, "bytes": self.bytes}
        if self.deep_requests:
            out |= {"deep_requests": self.deep_requests, "deep_bytes": self.deep_bytes}
        return out


NeedBinary = bool | Callable[[tuple[str, ...]], bool]
"""Read binaries always, never, or as decided from the wheel's Requires-Dist."""


def wants(need: NeedBinary, reqs: tuple[str, ...]) -> bool:
    return need(reqs) if callable(need) else need
