"""What ``builder suggest`` answers: frozen, keyword-only records with ``as_dict`` (pure).

One :class:`Row` per candidate tried (a vLLM release and the torch it pins), with one
:class:`Outcome` per host: skipped by data (the rule and the fact), judged (one
:class:`Judgement` per Python: the checker's verdict, floors and findings), unresolvable
(uv could not lock it) or not judged (``--offline`` and the cache lacks it).  The
:class:`SuggestResult` adds the answer per host, the newest stack every host runs, what was
left out and the exit code the CLI gives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE
from builder.report import Level, worst
from builder.suggest.cudaline import CudaLine
from builder.suggest.releases import LeftOut
from builder.versions import driver_max

#: Outcome statuses.
SKIPPED, JUDGED, UNRESOLVABLE, NOT_JUDGED = "skipped", "judged", "unresolvable", "not-judged"
FORMAT = 1  # of the kept judgements (builder's cache) and of --json


@dataclass(frozen=True, kw_only=True)
class Line:
    """One finding of the checker, as the search keeps it."""

    id: str
    level: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "level": self.level, "message": self.message}


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """The checker on one resolved lock (one Python) on one host, with the declared floor the
    written matrix would carry."""

    python: str
    verdict: str
    native_floor: str | None
    native_exact: bool  # False: unknown, a lower bound, or a release without a driver row
    native_note: str  # why it is not exact, or what sets it
    compat_floor: str | None
    declared_floor: str
    findings: tuple[Line, ...]
    lock_hash: str  # the lock's package content (pylock content hash)
    packages: int
    vllm_cuda: str | None  # the CUDA release vLLM's kernels were built with, when known

    def first(self, *levels: str) -> Line | None:
        return next((f for f in self.findings if f.level in levels), None)

    def as_dict(self) -> dict[str, Any]:
        return {"python": self.python, "verdict": self.verdict, "native_floor": self.native_floor,
                "native_exact": self.native_exact, "native_note": self.native_note,
                "compat_floor": self.compat_floor, "declared_floor": self.declared_floor,
                "findings": [f.as_dict() for f in self.findings], "lock_hash": self.lock_hash,
                "packages": self.packages, "vllm_cuda": self.vllm_cuda}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Judgement:
        return cls(python=str(d["python"]), verdict=str(d["verdict"]), native_floor=d.get("native_floor"),
                   native_exact=bool(d["native_exact"]), native_note=str(d.get("native_note", "")),
                   compat_floor=d.get("compat_floor"), declared_floor=str(d["declared_floor"]),
                   findings=tuple(Line(id=str(f["id"]), level=str(f["level"]), message=str(f["message"]))
                                  for f in d["findings"]),
                   lock_hash=str(d["lock_hash"]), packages=int(d["packages"]), vllm_cuda=d.get("vllm_cuda"))


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A candidate on one host."""

    status: str  # skipped | judged | unresolvable | not-judged
    accepted: bool = False
    rule: str = ""  # the skip rule, the blocking finding's id, or the policy's reason
    reason: str = ""  # the fact that decides it
    judgements: tuple[Judgement, ...] = ()

    @property
    def verdict(self) -> str | None:
        """The worst verdict over the Pythons (None unless judged)."""
        if self.status != JUDGED or not self.judgements:
            return None
        return worst(Level(j.verdict) for j in self.judgements)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "verdict": self.verdict, "accepted": self.accepted, "rule": self.rule,
                "reason": self.reason, "judgements": [j.as_dict() for j in self.judgements]}


@dataclass(frozen=True, kw_only=True)
class Row:
    """One candidate: a vLLM release, the torch it pins and that torch's CUDA line."""

    vllm: str
    torch: str | None
    line: CudaLine | None
    vllm_wheel: str | None
    outcomes: tuple[Outcome, ...]
    lock_hashes: tuple[str, ...] = ()  # per Python, when resolved

    @property
    def resolved(self) -> bool:
        return bool(self.lock_hashes)

    @property
    def native_floor(self) -> str | None:
        """The lock's native floor when judged (highest over Pythons), else torch's line's."""
        judged = [j.native_floor for o in self.outcomes for j in o.judgements if j.native_floor]
        return driver_max(*judged) if judged else (self.line.native if self.line else None)

    @property
    def cuda(self) -> str | None:
        return self.line.release if self.line else None

    def as_dict(self) -> dict[str, Any]:
        return {"vllm": self.vllm, "torch": self.torch, "cuda": self.line.as_dict() if self.line else None,
                "vllm_wheel": self.vllm_wheel, "native_floor": self.native_floor,
                "lock_hashes": list(self.lock_hashes), "outcomes": [o.as_dict() for o in self.outcomes]}


@dataclass(frozen=True, kw_only=True)
class HostView:
    """A host as the search judged it."""

    origin: str
    driver: str | None
    ccs: tuple[str, ...]
    glibc: str | None
    arch: str

    def as_dict(self) -> dict[str, Any]:
        return {"origin": self.origin, "driver": self.driver, "gpu_cc": list(self.ccs), "glibc": self.glibc,
                "arch": self.arch}


@dataclass(frozen=True, kw_only=True)
class Stats:
    candidates: int = 0  # rows
    skipped: int = 0  # rows skipped by data on every host
    resolved: int = 0  # rows resolved (the ones --max-candidates counts)
    uv_runs: int = 0  # uv pip compile runs (0 on a warm run)
    kept_resolutions: int = 0  # resolutions answered from builder's cache
    kept_verdicts: int = 0
    not_tried: int = 0  # older releases left untried when the search stopped
    uv_ahead: int = 0  # uv runs started ahead, for the candidate guessed from shipped data
    uv_ahead_taken: int = 0  # ... that the search took (the rest were killed)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "skipped": self.skipped, "resolved": self.resolved,
                "uv_runs": self.uv_runs, "kept_resolutions": self.kept_resolutions,
                "kept_verdicts": self.kept_verdicts, "not_tried": self.not_tried, "uv_ahead": self.uv_ahead,
                "uv_ahead_taken": self.uv_ahead_taken,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True, kw_only=True)
class SuggestResult:
    policy: str
    pythons: tuple[str, ...]
    platform: str
    exclude_newer: str
    index_url: str
    extra_index_urls: tuple[str, ...]
    hosts: tuple[HostView, ...]
    rows: tuple[Row, ...]
    answers: tuple[int | None, ...]  # per host: the index of its row in ``rows``
    common: int | None  # the newest row every host accepts
    decided: bool  # no candidate newer than the answer went unjudged
    unjudged: tuple[str, ...]  # vLLM versions not judged (``--offline`` and the cache lacks them)
    left_out: tuple[LeftOut, ...]
    stopped: str  # why the search stopped: "found", "bound", "exhausted"
    max_candidates: int
    stats: Stats = field(default_factory=Stats)
    written: Path | None = None
    page_dates: tuple[str, ...] = ()  # when each simple page used was read

    @property
    def winner(self) -> Row | None:
        return self.rows[self.common] if self.common is not None else None

    @property
    def exit_code(self) -> int:
        """0 found, 1 nothing meets the policy, 3 the cache cannot decide (``--offline``)."""
        if not self.decided:
            return EXIT_UNAVAILABLE
        return EXIT_OK if self.common is not None else EXIT_FAILED

    def as_dict(self) -> dict[str, Any]:
        w = self.winner
        return {
            "format": FORMAT, "policy": self.policy, "pythons": list(self.pythons), "platform": self.platform,
            "exclude_newer": self.exclude_newer, "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls), "hosts": [h.as_dict() for h in self.hosts],
            "answer": None if w is None else {"vllm": w.vllm, "torch": w.torch, "cuda": w.cuda,
                                              "native_floor": w.native_floor, "row": self.common},
            "answers": [None if a is None else {"vllm": self.rows[a].vllm, "torch": self.rows[a].torch, "row": a}
                        for a in self.answers],
            "decided": self.decided, "unjudged": list(self.unjudged), "stopped": self.stopped,
            "max_candidates": self.max_candidates,
            "candidates": [r.as_dict() for r in self.rows],
            "left_out": [{"vllm": x.version, "why": x.why} for x in self.left_out],
            "stats": self.stats.as_dict(), "written": str(self.written) if self.written else None,
            "index_read": list(self.page_dates), "exit_code": self.exit_code,
        }
