"""NVIDIA driver branches and the driver-series advice built on them (pure).

``builder/data/driver_branches.toml`` carries each branch's kind (long-term
support, production, new feature) and its end of life, each row with its
source.  Whether a branch is end of life is judged against *today* (passed in,
so tests can fix it), never stored as a status that silently goes stale.

:class:`DriverTarget` is the advice preflight and the runbook print: the
matrix's own series (a matrix that declares 570 keeps 570), with the whole
truth about it: its end of life, the lock's native driver floor when that is
above the declared one (:class:`LockFloor`, computed by the checker in
``builder.ops.lockfloor``), and the supported branches that meet every floor.
"""

from __future__ import annotations

import calendar
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

from builder import data as datafiles
from builder.versions import DriverVersion

KINDS = {"lts": "long-term support", "production": "production", "new-feature": "new feature"}


def _month(text: str) -> str:
    """``2026-02`` -> ``February 2026``."""
    y, m = (int(x) for x in text.split("-")[:2])
    return f"{calendar.month_name[m]} {y}"


@dataclass(frozen=True)
class Branch:
    """One driver branch (``series`` 580 is R580).

    ``eol`` is the end-of-life month NVIDIA publishes (``2026-02``); ``eol_by``
    a date by which NVIDIA already listed the branch as end of life without a
    month (``2025-08-04``).
    """

    series: int
    kind: str = "unknown"
    eol: str = ""
    eol_by: str = ""
    cuda: str = ""
    source: str = ""

    def end(self) -> _dt.date | None:
        """The last day the branch is supported, or None when no end is known."""
        if self.eol:
            y, m = (int(x) for x in self.eol.split("-")[:2])
            return _dt.date(y, m, calendar.monthrange(y, m)[1])
        if self.eol_by:
            return _dt.date.fromisoformat(self.eol_by) - _dt.timedelta(days=1)
        return None

    def status(self, today: _dt.date) -> str:
        """``eol`` once past its end, else its kind (``lts``, ``production`` ...)."""
        end = self.end()
        return "eol" if end is not None and today > end else self.kind

    def life(self, today: _dt.date) -> str:
        """``long-term support until June 2028``, ``end of life since February 2026`` ..."""
        if self.status(today) == "eol":
            if self.eol:
                return f"reached end of life in {_month(self.eol)}"
            return f"is end of life (listed by NVIDIA as end of life by {self.eol_by})"
        kind = KINDS.get(self.kind, self.kind)
        return f"{kind} until {_month(self.eol)}" if self.eol else kind


def load_branches(path: Path = datafiles.DRIVER_BRANCHES) -> list[Branch]:
    """The branch table in ``builder/data/driver_branches.toml`` (validated by :func:`builder.data.read`)."""
    return [Branch(b["series"], b["kind"], b.get("eol", ""), b.get("eol-by", ""), b.get("cuda", ""), b["source"])
            for b in datafiles.read(path)["branch"]]


@dataclass(frozen=True)
class LockFloor:
    """The native driver floor of a matrix's lock, as the checker computes it.

    ``exact`` is False when it is a lower bound (the wheels' own kernels were
    not read: the check cache was cold and the network was not used).
    """

    driver: str
    what: str
    lock: str
    source: str
    exact: bool = True

    def phrase(self) -> str:
        if self.exact:
            return f"a native floor of {self.driver} (set by {self.what}; {self.source})"
        return (f"a native floor of at least {self.driver} (set by {self.what}; a lower bound from {self.source}, "
                "the wheels' own kernels not read)")


@dataclass(frozen=True)
class DriverTarget:
    """The ``nvidia-driver-NNN`` series that meets ``floor`` and the supported alternatives."""

    floor: str
    branch: Branch
    alternatives: tuple[Branch, ...] = ()
    today: _dt.date = field(default_factory=_dt.date.today)
    lock_floor: LockFloor | None = None
    matrix: str = ""

    @property
    def package(self) -> str:
        return f"nvidia-driver-{self.branch.series}"

    @property
    def label(self) -> str:
        return f"{self.branch.series}.x"

    @property
    def status(self) -> str:
        return self.branch.status(self.today)

    @property
    def native_above_floor(self) -> bool:
        """The lock needs more natively than the matrix declares."""
        lf = self.lock_floor
        return lf is not None and DriverVersion.parse(lf.driver) > DriverVersion.parse(self.floor)

    def top_floor(self) -> DriverVersion:
        floors = [DriverVersion.parse(self.floor)]
        if self.lock_floor is not None:
            floors.append(DriverVersion.parse(self.lock_floor.driver))
        return max(floors)

    def meets_every_floor(self, b: Branch) -> bool:
        """Every release of ``b`` is at or above every floor (a later branch than the highest floor's)."""
        return b.series > self.top_floor().branch

    def note(self) -> str:
        """The whole truth about the series, in sentences: end of life, the lock's native floor, alternatives."""
        parts = []
        own = self.branch
        if own.status(self.today) == "eol":
            parts.append(f"R{own.series} {own.life(self.today)}")
        if self.native_above_floor:
            assert self.lock_floor is not None
            who = f"{self.matrix}'s lock" if self.matrix else "the lock"
            parts.append(f"{who} has {self.lock_floor.phrase()}: the {own.series} series runs it only under "
                         "minor-version compatibility (no JIT of PTX newer than the driver)")
        every = "meets every floor" if self.lock_floor is not None else f"also meets the floor {self.floor}"
        for alt in self.alternatives:
            if self.meets_every_floor(alt):
                parts.append(f"R{alt.series} ({alt.life(self.today)}) {every}")
            else:
                parts.append(f"R{alt.series} ({alt.life(self.today)}) meets the declared floor {self.floor} only")
        return "; ".join(parts)


def driver_target(floor: str, branches: list[Branch] | None = None, today: _dt.date | None = None,
                  *, lock_floor: LockFloor | None = None, matrix: str = "") -> DriverTarget:
    """Which series to install for a driver floor: the floor's own branch, plus the
    nearest later long-term-support branch and the nearest later production branch
    still supported on ``today`` (long-term support first)."""
    table = branches if branches is not None else load_branches()
    day = today or _dt.date.today()
    major = DriverVersion.parse(floor).branch
    own = next((b for b in table if b.series == major), Branch(major))
    later = sorted((b for b in table if b.series > major and b.status(day) != "eol"), key=lambda b: b.series)
    nearest = (next((b for b in later if b.kind == kind), None) for kind in ("lts", "production"))
    alts = tuple(b for b in nearest if b is not None)
    return DriverTarget(floor, own, alts, day, lock_floor, matrix)
