"""One GPU as a host reports or declares it (pure).

Its own module so that the declared host (``envs/host.toml`` -> :class:`HostFacts`)
does not load the probe-output parsers (:mod:`builder.driver.parse`: ten record
types and a dozen regexes that a warm ``builder check`` never uses).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    index: int | None
    name: str | None
    driver: str | None
    compute_capability: str | None
    memory_mib: int | None
    bus_id: str | None
    uuid: str | None
