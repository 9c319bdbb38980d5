"""Judging a resolved candidate with builder's checker, verdicts kept by content.

The checker's pipeline gathers the facts of each Python's lock (wheels read as ``builder
check`` reads them, cached by sha256), its floors decide the driver floor the policy declares
(:func:`builder.suggest.policy.declared_floor`, the highest over the Pythons), and the rules run
on the candidate's matrix with that floor: exactly what ``builder check --matrix ID`` reports
once the matrix is written.  The judgements of a candidate on a host are kept under
:func:`builder.suggest.stack.verdict_key`, which hashes the checker's code and data too.

The Pythons' resolutions rarely end together: :class:`Early` builds one Python's lock model and
gathers its facts as soon as its uv run ends, while the other's still runs; :func:`judge` then
takes those facts instead of gathering them again.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from builder import memo, pylock
from builder.check import knowledge as cuda
from builder.check.fetchplan import FetchStats
from builder.check.model import Facts
from builder.check.pipeline import CheckOptions, gather, read_ahead, wheel_jobs
from builder.check.rules import driver_summary, evaluate, verdict
from builder.driver.facts import HostFacts
from builder.spec import Matrix
from builder.suggest import policy as pol
from builder.suggest import stack
from builder.suggest.model import Judgement, Line

KIND = "suggest-verdicts"
_PKG = Path(__file__).resolve().parent.parent


@functools.cache
def checker_version() -> str:
    """A hash of the code and data a verdict depends on: the checker, its tables, the lock model,
    the host facts, this module and the policy, builder's and packaging's versions."""
    import packaging

    from builder import __version__

    h = hashlib.sha256(f"{__version__}|{packaging.__version__}".encode())
    files = sorted([*(_PKG / "check").glob("*.py"), *(_PKG / "binaries").glob("*.py"), *(_PKG / "data").glob("*.toml"),
                    _PKG / "pylock.py", _PKG / "versions.py", _PKG / "spec.py", _PKG / "driver" / "facts.py",
                    _PKG / "suggest" / "judge.py", _PKG / "suggest" / "policy.py", _PKG / "suggest" / "model.py"])
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def host_key(host: HostFacts, arch: str) -> dict[str, object]:
    return stack.host_digest(driver=host.driver, ccs=host.ccs, unreadable=len(host.unreadable_gpus),
                             glibc=host.glibc, arch=arch)


def _vllm_cuda(f: Facts) -> str | None:
    p = f.packages.get("vllm")
    i = p.identity if p else None
    if i is None:
        return None
    if i.build_toolkit:
        return cuda.release_of(i.build_toolkit)
    return i.build_release or i.release


def _floors(f: Facts) -> tuple[str | None, bool, str, str | None]:
    d = driver_summary(f)
    raw = d.get("native_unknown")
    unknown = [str(x) for x in raw] if isinstance(raw, list) else []
    native = d.get("native_min")
    exact = native is not None and not d.get("native_is_lower_bound") and not unknown
    note = unknown[0] if unknown else str(d.get("native_from") or "no CUDA runtime placed")
    return (str(native) if native else None), exact, note, (str(d["compat_min"]) if d.get("compat_min") else None)


def judge(locks: Mapping[str, pylock.Lock], *, matrix: Matrix, host: HostFacts, arch: str, policy: str,
          cache: Path, offline: bool, deep: bool, stats: FetchStats,
          gathered: Mapping[str, Facts] | None = None) -> tuple[tuple[Judgement, ...], bool]:
    """The judgements of one candidate on one host, one per Python; and whether they were kept.

    ``gathered``: every Python's facts on this host, gathered already (:class:`Early`).
    Raises Unavailable when a wheel cannot be read (``offline``: not in the cache).
    """
    key = stack.verdict_key(checker=checker_version(), policy=policy,
                            locks={py: lk.sha256 for py, lk in locks.items()}, matrix=matrix,
                            host=host_key(host, arch), deep=deep)
    hit = memo.get_json(cache, KIND, key)
    if isinstance(hit, list):
        try:
            return tuple(Judgement.from_dict(d) for d in hit), True
        except (KeyError, TypeError, ValueError):
            pass
    if gathered is not None and set(gathered) == set(locks):
        facts = {py: gathered[py] for py in locks}
    else:
        opts = {py: _options(py, cache=cache, offline=offline, deep=deep) for py in locks}
        if not offline:  # every Python's wheels in one concurrent read, each file once; then gather from the cache
            read_ahead([j for py, lk in locks.items() for j in wheel_jobs(lk, matrix=matrix, host=host, opts=opts[py])],
                       opts=opts[next(iter(locks))], stats=stats)
        facts = {py: gather(lk, matrix=matrix, host=host, stats=stats, opts=opts[py]) for py, lk in locks.items()}
    floors = {py: _floors(f) for py, f in facts.items()}
    native, compat = pol.stack_floors([(fl[0], fl[3]) for fl in floors.values()])
    declared = pol.declared_floor(policy, native, compat, fallback=host.driver or stack.PLACEHOLDER_FLOOR)
    final = replace(matrix, driver_floor=declared)
    out: list[Judgement] = []
    for py, f in facts.items():
        findings = evaluate(replace(f, matrix=final))
        nf, exact, note, cf = floors[py]
        out.append(Judgement(python=py, verdict=verdict(findings), native_floor=nf, native_exact=exact,
                             native_note=note, compat_floor=cf, declared_floor=declared,
                             findings=tuple(Line(id=x.id, level=x.level, message=x.message) for x in findings),
                             lock_hash=locks[py].content_hash, packages=len(locks[py].packages),
                             vllm_cuda=_vllm_cuda(f)))
    memo.keep_json(cache, KIND, key, value=[j.as_dict() for j in out])
    return tuple(out), False


def _options(py: str, *, cache: Path, offline: bool, deep: bool) -> CheckOptions:
    return CheckOptions(python=py, cache_dir=cache, offline=offline, deep=deep)


def label(vllm: str, py: str) -> str:
    """The name a resolution's lock model carries (in its validation errors)."""
    return f"suggest: vllm {vllm} py{py}"


class Early:
    """Each Python's lock model, and its facts on each host, made as soon as its resolution is
    in (:meth:`resolved`, called on that Python's uv thread), while another Python's uv run may
    still go on.  Best effort: any error (a wheel that cannot be read, an interrupt) drops
    everything made early, and the search builds and gathers as before, meeting (and reporting)
    the same error in the same place.  ``hosts``: None for a host the data rules skipped."""

    def __init__(self, *, vllm: str, matrix: Matrix, hosts: Sequence[HostFacts | None], cache: Path, deep: bool,
                 stats: FetchStats) -> None:
        self._vllm, self._matrix, self._hosts = vllm, matrix, hosts
        self._cache, self._deep, self._stats = cache, deep, stats
        self._lock = threading.Lock()
        self._locks: dict[str, pylock.Lock] = {}
        self._facts: dict[tuple[str, int], Facts] = {}
        self._failed = False

    def resolved(self, py: str, body: str, parsed: pylock.Lock | None = None) -> None:
        """Model ``body`` (``parsed``: the model uv's output was checked with) and gather its
        facts on every host left (never raises)."""
        try:
            lock = lock_model(body, label(self._vllm, py), self._cache, parsed=parsed)
            opts = _options(py, cache=self._cache, offline=False, deep=self._deep)
            facts = {i: gather(lock, matrix=self._matrix, host=h, stats=self._stats, opts=opts)
                     for i, h in enumerate(self._hosts) if h is not None}
        except BaseException:  # an interrupt too: the search meets it again, in its own place
            with self._lock:
                self._failed = True
            return
        with self._lock:
            self._locks[py] = lock
            self._facts |= {(py, i): f for i, f in facts.items()}

    def lock(self, py: str) -> pylock.Lock | None:
        with self._lock:
            return None if self._failed else self._locks.get(py)

    def facts(self, host: int, pythons: Sequence[str]) -> dict[str, Facts] | None:
        """Every Python's facts on host ``host``, or None (not all made early)."""
        with self._lock:
            if self._failed or any((py, host) not in self._facts for py in pythons):
                return None
            return {py: self._facts[py, host] for py in pythons}


def lock_model(body: str, label: str, cache: Path, *, parsed: pylock.Lock | None = None) -> pylock.Lock:
    """The validated lock model of a resolution (kept like every lock model); ``parsed``: the
    model of these bytes this process made already (:func:`builder.memo.lock`)."""
    return memo.lock(body.encode("utf-8"), label, cache, parsed=parsed)

