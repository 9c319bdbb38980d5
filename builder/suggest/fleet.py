"""Answers over a fleet (pure): each host's newest accepted candidate, the newest that every
host accepts, whether the cache could decide it, and the one platform a fleet is locked for.

Candidates are in search order (newest first), so a host's answer is its first accepted row
and the fleet's is the first row every host accepts; it is never newer than any host's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from builder.suggest.model import NOT_JUDGED, Row


def answer(rows: Sequence[Row], host: int) -> int | None:
    """The index of the first row host ``host`` accepts."""
    return next((i for i, r in enumerate(rows) if r.outcomes[host].accepted), None)


def common(rows: Sequence[Row]) -> int | None:
    """The index of the first row every host accepts."""
    return next((i for i, r in enumerate(rows) if r.outcomes and all(o.accepted for o in r.outcomes)), None)


def unjudged_before(rows: Sequence[Row], stop: int | None) -> list[str]:
    """vLLM versions newer than row ``stop`` (all rows when None) that some host could not
    judge: while any exists, the answer is not decided."""
    end = len(rows) if stop is None else stop
    return [r.vllm for r in rows[:end] if any(o.status == NOT_JUDGED for o in r.outcomes)]


def platform(archs: Sequence[str], glibcs: Sequence[str | None]) -> str:
    """The uv target of a fleet: one architecture, the oldest glibc (a wheel for an older
    glibc installs on a newer one).  ValueError for mixed architectures or no glibc at all."""
    if len(set(archs)) != 1:
        raise ValueError(f"hosts of different architectures ({', '.join(sorted(set(archs)))}) share no lock")
    known = [g for g in glibcs if g]
    if not known:
        raise ValueError("no host's glibc is known")
    oldest = min(known, key=lambda g: tuple(int(x) for x in g.split(".")[:2]))
    major, minor = oldest.split(".")[:2]
    return f"{archs[0]}-manylinux_{major}_{minor}"
