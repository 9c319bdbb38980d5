"""Which judged candidates a policy accepts, and the driver floor a written matrix declares (pure).

* ``default``: the checker's ``warn`` is acceptable, ``fail`` never is; the declared floor
  is the minor-version-compatibility floor (the lock runs there, without PTX JIT newer than
  the driver), and the native floor is named beside it.
* ``native``: as default, and the host driver must meet the lock's native floor, which must be
  known exactly (a lower bound or a release without a driver row is not enough): no reliance
  on minor-version compatibility.  The declared floor is the native floor.
* ``strict``: the checker must say ``pass`` on every Python; the declared floor is the native
  floor (a declared floor below it is itself a warning), so strict implies native.
"""

from __future__ import annotations

from collections.abc import Sequence

from builder.suggest.model import Judgement
from builder.versions import DriverVersion, driver_max

POLICIES = ("default", "native", "strict")
WORDS = {
    "default": "warn accepted, fail never; declared floor: minor-version compatibility",
    "native": "warn accepted, fail never, and the host driver meets the lock's native floor",
    "strict": "pass only, on the lock's native floor",
}


def choose(*, native: bool, strict: bool) -> str:
    """The policy of ``--native`` / ``--strict`` (strict implies native)."""
    return "strict" if strict else "native" if native else "default"


def declared_floor(policy: str, native: str | None, compat: str | None, *, fallback: str) -> str:
    """The driver floor a matrix written under ``policy`` declares.

    ``native`` / ``strict``: the native floor; ``default``: the minor-version-compatibility
    floor.  Either missing falls back to the other, then to ``fallback`` (a lock with no CUDA
    runtime at all).
    """
    first, second = (native, compat) if policy in ("native", "strict") else (compat, native)
    return first or second or fallback


def stack_floors(floors: Sequence[tuple[str | None, str | None]]) -> tuple[str | None, str | None]:
    """(native, compat) floors of a stack from each Python's (native, compat): the highest of each."""
    return driver_max(*(n for n, _c in floors)), driver_max(*(c for _n, c in floors))


def accept(policy: str, judgements: Sequence[Judgement], driver: str | None) -> tuple[bool, str, str]:
    """(accepted, rule, reason) of a candidate judged on every Python for one host.

    ``rule`` names what blocks it (a finding id, or ``native-floor`` for the native policy's
    own requirement); ``reason`` is the fact, or why it was accepted.
    """
    if not judgements:
        return False, "unjudged", "no Python was judged"
    for j in judgements:
        f = j.first("fail")
        if j.verdict == "fail" and f is not None:
            return False, f.id, f"py{j.python}: {f.message}"
    if policy == "strict":
        for j in judgements:
            w = j.first("warn")
            if j.verdict != "pass":
                return False, w.id if w else "verdict", f"py{j.python}: --strict needs pass: " + (
                    w.message if w else j.verdict)
    if policy in ("native", "strict"):
        for j in judgements:
            if j.native_floor is None or not j.native_exact:
                return False, "native-floor", f"py{j.python}: the lock's native driver floor is not known " \
                    f"exactly ({j.native_note})"
            if driver is None:
                return False, "native-floor", "host driver unknown"
            if DriverVersion.parse(driver) < DriverVersion.parse(j.native_floor):
                return False, "native-floor", (f"py{j.python}: host driver {driver} is below the lock's native "
                                               f"floor {j.native_floor} ({j.native_note}): it runs only "
                                               "under minor-version compatibility")
    worst = "warn" if any(j.verdict == "warn" for j in judgements) else "pass"
    if worst == "warn":
        w = next(f for j in judgements for f in j.findings if f.level == "warn")
        return True, "", f"{worst.upper()} accepted; first warning {w.id}: {w.message}"
    return True, "", "PASS on every Python"
