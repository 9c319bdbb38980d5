"""The search: vLLM releases newest first; each is skipped by data, or resolved and judged,
until one meets the policy on every host (or the bound is reached).

For each candidate: the wheel the target installs (:func:`~builder.suggest.releases.pick_wheel`),
its METADATA (the torch it pins), that torch's wheel and METADATA (its CUDA line,
:mod:`builder.suggest.cudaline`); then the data rules (:mod:`builder.suggest.skips`) per host.
A candidate no host can take costs no resolution.  The others are resolved with uv
(:mod:`builder.suggest.resolve`) and judged per host (:mod:`builder.suggest.judge`), and the
policy (:mod:`builder.suggest.policy`) accepts or names what blocks it.  ``max_candidates``
bounds the candidates *resolved*; data skips do not count (they cost a cached METADATA read).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from packaging.version import InvalidVersion, Version

from builder import pylock
from builder.check import kernels, toolkit
from builder.check import knowledge as cuda
from builder.check.fetchplan import FetchStats
from builder.check.identity import exact, pins
from builder.check.model import WheelFacts, WheelRef
from builder.driver.facts import HostFacts
from builder.errors import SdistOnly, ToolFailed, Unavailable, UsageError
from builder.report import Progress
from builder.spec import PYPI_SIMPLE, Matrix
from builder.suggest import fleet, hosts, index, known, releases, skips, stack
from builder.suggest import policy as pol
from builder.suggest.cudaline import CudaLine, torch_line
from builder.suggest.model import (
    JUDGED,
    NOT_JUDGED,
    SKIPPED,
    UNRESOLVABLE,
    Outcome,
    Row,
    Stats,
    SuggestResult,
)

DEFAULT_MAX = 8
DEFAULT_PYTHONS = ("3.11", "3.12")
AHEAD = 32  # candidates whose METADATA (vLLM's, then the torch it pins) is being read ahead of the search


@dataclass(frozen=True, kw_only=True)
class SuggestRequest:
    """What ``builder suggest`` was asked (built by the CLI)."""

    pythons: tuple[str, ...] = DEFAULT_PYTHONS
    policy: str = "default"
    vllm: str | None = None  # a PEP 440 specifier the vLLM release must meet
    torch: str | None = None  # ... and the torch it pins
    index_url: str = PYPI_SIMPLE
    extra_index_urls: tuple[str, ...] = ()
    exclude_newer: str | None = None  # None: yesterday, UTC
    max_candidates: int = DEFAULT_MAX
    pre: bool = False
    include_yanked: bool = False
    offline: bool = False
    deep: bool = False
    cache_dir: Path | None = None
    snapshots: tuple[Path, ...] = ()
    probe: bool = False
    driver: str | None = None
    ccs: tuple[str, ...] = ()
    glibc: str | None = None
    arch: str | None = None
    write: str | None = None  # write the answer as envs/matrix-<id>.toml
    replace: bool = False  # ... replacing an existing file
    command: str = ""  # the command line, for the written spec's comment


@dataclass
class _Ctx:
    req: SuggestRequest
    hosts: list[HostFacts]
    arch: str
    platform: str
    date: str
    cache: Path
    uv_cache: Path | None
    uv: str
    uv_version: str
    k: cuda.Knowledge
    tk: toolkit.ToolkitKnowledge
    torch_releases: list[releases.Release]
    fetch: FetchStats = field(default_factory=FetchStats)
    uv_runs: int = 0
    kept_res: int = 0
    kept_verdicts: int = 0
    picks: dict[tuple[str, str, str], releases.IndexFile | None] = field(default_factory=dict)
    pinned: dict[tuple[str, str], Any] = field(default_factory=dict)
    lines: dict[tuple[str, str | None, str], CudaLine | None] = field(default_factory=dict)
    torch_ready: threading.Event = field(default_factory=threading.Event)  # torch_releases is set
    say: Progress = lambda _t, _m: None  # noqa: E731

    def tags(self, py: str) -> tuple[Any, ...]:
        return pylock.target_tags(py, self.arch, _glibc(self.platform))

    def pick(self, r: releases.Release, py: str) -> releases.IndexFile | None:
        """:func:`releases.pick_wheel` for the target, once per release and Python (it ranks
        every file's tags against about a thousand: a search asks several times per candidate)."""
        key = (r.project, r.version, py)
        if key not in self.picks:
            self.picks[key] = releases.pick_wheel(r, self.tags(py), py)
        return self.picks[key]

    def env(self, py: str) -> dict[str, str]:
        return pylock.target_env(py, self.arch)

    def torch_pin(self, f: WheelFacts, py: str) -> Any:
        """The torch requirement of a vLLM wheel's METADATA on the target (None: none), once per
        wheel and Python (the reader's follow-up and the data rules both ask)."""
        key = (f.filename, py)
        if key not in self.pinned:
            self.pinned[key] = pins(f.requires_dist, self.env(py)).get("torch")
        return self.pinned[key]

    def torch_line(self, f: WheelFacts, py: str) -> CudaLine | None:
        """:func:`~builder.suggest.cudaline.torch_line` of a torch wheel on the target, once per
        wheel and Python (most torch releases are pinned by several vLLM releases)."""
        key = (f.filename, f.sha256, py)
        if key not in self.lines:
            self.lines[key] = torch_line(f.requires_dist, self.env(py), self.k, tk=self.tk)
        return self.lines[key]


def _cancel_token(*, offline: bool) -> Any:
    """A Cancel for the page reads (None offline: nothing to cancel, and no socket code loaded)."""
    if offline:
        return None
    from builder import _http

    return _http.Cancel()


def _validate(req: SuggestRequest) -> None:
    if req.policy not in pol.POLICIES:
        raise UsageError(f"unknown policy {req.policy!r}", f"one of {', '.join(pol.POLICIES)}")
    if not req.pythons:
        raise UsageError("no Python to judge", "pass --python 3.12")
    for py in req.pythons:
        if not re.fullmatch(r"3\.\d{1,2}", py):
            raise UsageError(f"not a Python version: {py!r}", "e.g. --python 3.12")
    if req.write is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", req.write):
        raise UsageError(f"--write: not a matrix id: {req.write!r}",
                         "lowercase letters, digits and '-', e.g. --write c")
    if req.max_candidates < 1:
        raise UsageError(f"--max-candidates must be at least 1, got {req.max_candidates}", "e.g. --max-candidates 8")
    for opt, text in (("--vllm", req.vllm), ("--torch", req.torch)):
        try:
            releases.spec_set(text, opt)
        except ValueError as exc:
            raise UsageError(str(exc), "use a PEP 440 specifier such as '>=0.10,<0.14'") from None


def _glibc(platform: str) -> str | None:
    m = re.search(r"manylinux_(\d+)_(\d+)$", platform)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _skip_row(r: releases.Release, n: int, skip: skips.Skip, *, torch: str | None = None,
              line: CudaLine | None = None, wheel: str | None = None) -> Row:
    return Row(vllm=r.version, torch=torch, line=line, vllm_wheel=wheel,
               outcomes=tuple(Outcome(status=SKIPPED, rule=skip.rule, reason=skip.fact) for _ in range(n)))


def _unjudged_row(r: releases.Release, n: int, why: str, **kw: Any) -> Row:
    return Row(vllm=r.version, outcomes=tuple(Outcome(status=NOT_JUDGED, rule="cache", reason=why) for _ in range(n)),
               **{"torch": None, "line": None, "vllm_wheel": None, **kw})


def _torch_release(c: _Ctx, requirement: Any) -> releases.Release | None:
    pin = exact(requirement)
    if pin is not None:  # an exact pin takes a yanked or pre-release file too (PEP 592), as uv does
        try:
            want = Version(pin)
        except InvalidVersion:  # ``===nightly``: no release of the index is that (its versions are PEP 440)
            return None
        return next((t for t in c.torch_releases if t.key == want), None)
    usable, _ = releases.select(c.torch_releases, until=releases.cutoff(c.date), pre=c.req.pre)
    return releases.newest_matching(usable, requirement.specifier)


@dataclass
class _Pending:
    """A candidate whose data rules ran: what to resolve, and per host, a skip or None."""

    release: releases.Release
    torch: str
    line: CudaLine | None
    wheel: str
    wheels: dict[str, str | None]  # name -> sha256 of the wheels read
    host_skips: list[skips.Skip | None]
    vllm_refs: list[WheelRef]  # the vLLM wheel(s) the target installs, for the checker's read-ahead
    vllm_facts: dict[str, WheelFacts]  # their METADATA, per Python
    torch_unread: dict[str, WheelRef]  # per Python, torch's wheel if its facts were shipped (not in the cache)


def _vllm_refs(c: _Ctx, batch: list[releases.Release]) -> list[WheelRef]:
    """The vLLM wheels the target installs for ``batch``, once each (an abi3 wheel serves every Python)."""
    out: dict[str, WheelRef] = {}
    for r in batch:
        for py in c.req.pythons:
            w = c.pick(r, py)
            if w is not None:
                out.setdefault(w.filename, index.ref(w, "vllm", r.version))
    return list(out.values())


def _pinned_torch(c: _Ctx) -> Callable[[WheelRef, WheelFacts], list[WheelRef]]:
    """For the METADATA reader: the torch wheels a vLLM wheel's METADATA pins, per Python."""

    def then(_ref: WheelRef, f: WheelFacts) -> list[WheelRef]:
        c.torch_ready.wait()  # vLLM's reads start before torch's page is in
        out = []
        for py in c.req.pythons:
            req = c.torch_pin(f, py)
            t = _torch_release(c, req) if req is not None else None
            tw = c.pick(t, py) if t is not None else None
            if t is not None and tw is not None:
                out.append(index.ref(tw, "torch", t.version))
        return out

    return then


class _Reads(Protocol):
    def wait(self, refs: Iterable[WheelRef]) -> dict[str, WheelFacts]: ...


class _ShippedFacts:
    """The METADATA :func:`_examine` reads, from builder's shipped rows alone (:func:`_guess`)."""

    def __init__(self, shipped: known.Known) -> None:
        self._known = shipped

    def wait(self, refs: Iterable[WheelRef]) -> dict[str, WheelFacts]:
        return {r.filename: f for r in refs if (f := index.shipped(r, self._known)) is not None}


def _examine(c: _Ctx, r: releases.Release, reader: _Reads) -> Row | _Pending:
    """Run the data rules on one candidate, once its METADATA (and its torch's) is read."""
    n = len(c.hosts)
    picks = {py: c.pick(r, py) for py in c.req.pythons}
    for py, w in picks.items():
        s = skips.no_wheel(found=w is not None, version=r.version, python=py, platform=c.platform)
        if s is not None:
            return _skip_row(r, n, s)
    first = next(iter(picks.values()))
    assert first is not None
    meta = reader.wait(index.ref(w, "vllm", r.version) for w in picks.values() if w is not None)
    facts = {py: meta.get(w.filename) for py, w in picks.items() if w is not None}
    if any(f is None for f in facts.values()):
        return _unjudged_row(r, n, f"vLLM {r.version}'s METADATA is not in builder's cache", vllm_wheel=first.filename)
    torch_req = {py: c.torch_pin(f, py) for py, f in facts.items() if f is not None}
    req0 = next(iter(torch_req.values()))
    trel = _torch_release(c, req0) if req0 is not None else None
    s = skips.torch_pin(str(req0) if req0 is not None else None, available=trel is not None, version=r.version)
    if s is not None or trel is None:
        return _skip_row(r, n, s or skips.Skip(rule="torch-pin", fact="no torch"), wheel=first.filename)
    spec = releases.spec_set(c.req.torch, "--torch")
    s = skips.torch_constraint(trel.version, spec, version=r.version)
    if s is not None:
        return _skip_row(r, n, s, torch=trel.version, wheel=first.filename)
    tpicks = {py: c.pick(trel, py) for py in c.req.pythons}
    for py, w in tpicks.items():
        if w is None:
            return _skip_row(r, n, skips.Skip(rule="no-wheel", fact=f"torch {trel.version} (pinned by vLLM "
                                              f"{r.version}) has no wheel for CPython {py} on {c.platform}"),
                             torch=trel.version, wheel=first.filename)
    tmeta = reader.wait(index.ref(w, "torch", trel.version) for w in tpicks.values() if w is not None)
    lines: list[CudaLine | None] = []
    unread: dict[str, WheelRef] = {}
    for py, w in tpicks.items():
        assert w is not None
        tf = tmeta.get(w.filename)
        if tf is None:
            return _unjudged_row(r, n, f"torch {trel.version}'s METADATA is not in builder's cache",
                                 torch=trel.version, vllm_wheel=first.filename)
        if tf.origin == index.SHIPPED:
            unread[py] = index.ref(w, "torch", trel.version)
        lines.append(c.torch_line(tf, py))
    line = lines[0]
    per_host: list[skips.Skip | None] = []
    for h in c.hosts:
        found = None
        for ln in lines:
            found = (skips.cuda_driver(ln, h.driver)
                     or (skips.native_floor(ln, h.driver) if c.req.policy in ("native", "strict") else None)
                     or skips.cuda_arch(ln, h.ccs, c.k))
            if found:
                break
        per_host.append(found)
    wheels = {f"vllm/{w.filename}": w.sha256 for w in picks.values() if w is not None}
    wheels |= {f"torch/{w.filename}": w.sha256 for w in tpicks.values() if w is not None}
    if all(s is not None for s in per_host):
        return Row(vllm=r.version, torch=trel.version, line=line, vllm_wheel=first.filename,
                   outcomes=tuple(Outcome(status=SKIPPED, rule=s.rule, reason=s.fact) for s in per_host if s))
    refs = {w.filename: index.ref(w, "vllm", r.version) for w in picks.values() if w is not None}
    return _Pending(release=r, torch=trel.version, line=line, wheel=first.filename, wheels=wheels,
                    host_skips=per_host, vllm_refs=list(refs.values()),
                    vllm_facts={py: f for py, f in facts.items() if f is not None}, torch_unread=unread)


def _reading_ahead(c: _Ctx, p: _Pending) -> contextlib.AbstractContextManager[None]:
    """While uv resolves ``p``, read what the checker will ask of it (:mod:`builder.suggest.ahead`);
    entered once uv runs (so its threads take no CPU from uv's start), and only then: when every
    resolution is kept, no uv runs and the verdicts are likely kept too."""
    if c.req.offline or not p.vllm_refs:
        return contextlib.nullcontext()
    from builder.suggest import ahead

    return ahead.reading(p.vllm_refs, p.vllm_facts, torch=p.torch_unread, pick=c.pick,
                         envs={py: c.env(py) for py in c.req.pythons},
                         index_urls=[c.req.index_url, *c.req.extra_index_urls], until=releases.cutoff(c.date),
                         cache=c.cache, stats=c.fetch, k=c.k, tk=c.tk)


def _matrix(c: _Ctx, p: _Pending) -> Matrix:
    """The matrix a pending candidate is resolved as (the spec ``--write`` would write)."""
    return stack.candidate_matrix(vllm=p.release.version, torch=p.torch,
                                  torch_cuda=p.line.release if p.line else "12.0", pythons=c.req.pythons,
                                  platform=c.platform, exclude_newer=c.date, index_url=c.req.index_url,
                                  extra_index_urls=c.req.extra_index_urls, mid=c.req.write or stack.CANDIDATE_ID)


def _guess(c: _Ctx, shipped: known.Known) -> _Pending | None:
    """The candidate the search will most likely resolve first, from builder's shipped rows alone
    (:mod:`builder.suggest.known`): the vLLM and torch wheels they name, taken as if the index
    listed just those files, through the search's own data rules (:func:`_examine`).  None where
    the rows stop telling (a release whose METADATA they lack).  A guess only: the index may list
    a newer release, a yanked one, another file; the search checks it against the pages."""
    g = replace(c, torch_releases=known.releases(shipped, "torch"), picks={}, pinned={},
                torch_ready=threading.Event(), fetch=FetchStats(), say=lambda _t, _m: None)  # c.lines: by sha256
    cands, _ = releases.select(known.releases(shipped, "vllm"), until=releases.cutoff(c.date), pre=c.req.pre,
                               yanked=c.req.include_yanked, spec=releases.spec_set(c.req.vllm, "--vllm"))
    facts = _ShippedFacts(shipped)
    for r in cands:
        got = _examine(g, r, facts)
        if isinstance(got, _Pending):
            return got
        if any(o.status != SKIPPED for o in got.outcomes):
            return None
    return None


def _start_ahead(c: _Ctx, shipped: known.Known) -> Any:
    """uv started for :func:`_guess`'s candidate, for the Pythons whose resolution of it is not
    kept, while the index pages are read (a :class:`builder.suggest.resolve.Ahead`, or None).

    Started only where a wrong guess is unlikely: online, at the default date (the rows carry no
    upload times, so at an older ``--exclude-newer`` they would name releases the index did not
    have then), with rows made for today's GPU list.  The search's own first candidate takes
    the runs when it is the same matrix (so the same uv command); otherwise they are killed."""
    if c.req.offline or c.req.exclude_newer is not None or not known.usable(shipped, c.k.gpu):
        return None
    try:
        p = _guess(c, shipped)
    except Exception:  # noqa: BLE001 - a guess that fails costs only its head start; the search meets any real error
        return None
    if p is None:
        return None
    from builder.suggest import resolve

    m = _matrix(c, p)
    need = resolve.needs_uv(m, c.req.pythons, uv_version=c.uv_version, wheels=p.wheels, cache=c.cache)
    return resolve.Ahead(m, need, uv=c.uv, uv_cache=c.uv_cache or c.cache) if need else None


def _judge(c: _Ctx, p: _Pending, ahead: Any = None) -> Row:
    """Resolve a pending candidate and judge it on each host the data rules left (``ahead``: uv
    runs started for a guess, :func:`_start_ahead`; taken where they resolve this candidate)."""
    from builder.suggest import judge, resolve

    m = _matrix(c, p)
    if ahead is not None and ahead.matrix != m:
        ahead.drop()  # a wrong guess: its uv ends before the search's own starts

    def row(outcomes: tuple[Outcome, ...], hashes: tuple[str, ...] = ()) -> Row:
        return Row(vllm=p.release.version, torch=p.torch, line=p.line, vllm_wheel=p.wheel, outcomes=outcomes,
                   lock_hashes=hashes)

    def each(make: Callable[[int, HostFacts], Outcome]) -> tuple[Outcome, ...]:
        return tuple(Outcome(status=SKIPPED, rule=s.rule, reason=s.fact) if s is not None else make(i, h)
                     for i, (h, s) in enumerate(zip(c.hosts, p.host_skips, strict=True)))

    counter = resolve.Counter()
    early = judge.Early(vllm=p.release.version, matrix=m, hosts=[h if s is None else None for h, s in
                                                                 zip(c.hosts, p.host_skips, strict=True)],
                        cache=c.cache, deep=c.req.deep, stats=c.fetch)
    try:
        with contextlib.ExitStack() as beside:  # the read-ahead, from when uv runs until it is done
            res = resolve.resolve(m, c.req.pythons, uv=c.uv, uv_version=c.uv_version, wheels=p.wheels,
                                  cache=c.cache, uv_cache=c.uv_cache or c.cache, offline=c.req.offline,
                                  counter=counter, then=early.resolved, ahead=ahead,
                                  started=lambda: beside.enter_context(_reading_ahead(c, p)))
    except (ToolFailed, SdistOnly) as exc:
        c.uv_runs += counter.uv_runs
        said = exc.message
        return row(each(lambda _i, _h: Outcome(status=UNRESOLVABLE, rule="uv", reason=said)))
    c.uv_runs += counter.uv_runs
    c.kept_res += counter.kept
    missing = [py for py, x in res.items() if x is None]
    if missing:
        why = f"no resolution for Python {', '.join(missing)} in builder's cache"
        return row(each(lambda _i, _h: Outcome(status=NOT_JUDGED, rule="cache", reason=why)))
    locks = {py: early.lock(py) or judge.lock_model(x.body, judge.label(p.release.version, py), c.cache)
             for py, x in res.items() if x is not None}
    hashes = tuple(lk.content_hash for lk in locks.values())

    def one(i: int, h: HostFacts) -> Outcome:
        try:
            js, kept = judge.judge(locks, matrix=m, host=h, arch=c.arch, policy=c.req.policy, cache=c.cache,
                                   offline=c.req.offline, deep=c.req.deep, stats=c.fetch,
                                   gathered=early.facts(i, c.req.pythons))
        except Unavailable as exc:
            if not c.req.offline:
                raise
            return Outcome(status=NOT_JUDGED, rule="cache", reason=exc.message)
        c.kept_verdicts += kept
        ok, rule, why = pol.accept(c.req.policy, js, h.driver)
        return Outcome(status=JUDGED, accepted=ok, rule=rule, reason=why, judgements=js)

    return row(each(one), hashes)


def _say(c: _Ctx, row: Row) -> None:
    label = f"vllm {row.vllm}" + (f" + torch {row.torch}" if row.torch else "")
    parts = []
    for i, o in enumerate(row.outcomes):
        who = f"host {i + 1}: " if len(row.outcomes) > 1 else ""
        if o.status == JUDGED:
            parts.append(f"{who}{o.verdict.upper() if o.verdict else '?'}, "
                         + ("accepted" if o.accepted else f"not accepted ({o.rule}: {o.reason})"))
        else:
            parts.append(f"{who}{o.status} ({o.rule}: {o.reason})")
    line = "; ".join(parts)
    c.say(label, line if len(line) <= 240 else line[:237] + "...")


def run_suggest(project: Any, req: SuggestRequest, progress: Progress | None = None) -> SuggestResult:
    """Search for the newest stack every host runs under ``req.policy`` (``project``: a
    builder.project.Project, for envs/host.toml, the write gate and caches; or None)."""
    from builder import memo, paths, tools
    from builder.lock.refresh import parse_date

    t0 = time.monotonic()
    _validate(req)
    if req.write is not None:
        if project is None:
            raise UsageError("--write needs a builder project", "run inside the project or pass --project DIR")
        target = project.envs / f"matrix-{req.write}.toml"
        if target.exists() and not req.replace:
            raise UsageError(f"{target.relative_to(project.root)} exists", "choose another id, or pass --force "
                             "to replace it")
    hs = hosts.load(project, snapshots=req.snapshots, probe=req.probe, driver=req.driver, ccs=req.ccs,
                    glibc=req.glibc, arch=req.arch)
    try:
        platform = fleet.platform([hosts.arch_of(h) for h in hs], [h.glibc for h in hs])
    except ValueError as exc:
        raise UsageError(str(exc), "pass --glibc, or run suggest once per architecture") from None
    date = parse_date(req.exclude_newer).isoformat()
    until = releases.cutoff(date)
    cache = paths.check_cache(req.cache_dir, project=project)
    memo.use_for_data(cache)
    urls = [req.index_url, *req.extra_index_urls]
    cancel = _cancel_token(offline=req.offline)
    pages = ThreadPoolExecutor(max_workers=2 * len(urls) + 1)  # every page at once (and uv --version), while
    # the rest is set up
    futs = {(u, proj): pages.submit(index.read_page, u, proj, cache=cache, until=until, offline=req.offline,
                                    cancel=cancel)
            for proj in ("vllm", "torch") for u in urls}
    rows: list[Row] = []
    resolved = 0
    stopped = "exhausted"
    not_tried = 0
    reader: index.MetadataReader | None = None
    c: _Ctx | None = None
    guessed: Any = None  # uv started for the guess from shipped data (resolve.Ahead)
    ahead_started = ahead_taken = 0
    try:
        uv = tools.uv_bin()
        uv_version = pages.submit(tools.uv_version, uv)  # a process of its own: no CPU taken from here
        k, tk = cuda.load(), toolkit.load()
        c = _Ctx(req=req, hosts=hs, arch=hosts.arch_of(hs[0]), platform=platform, date=date, cache=cache,
                 uv_cache=None if req.offline else paths.uv_cache(project=project), uv=uv,
                 uv_version=uv_version.result(), k=k, tk=tk, torch_releases=[], say=progress or (lambda _t, _m: None))
        if not req.offline:
            paths.temp_base(project=project)  # uv inherits $TMPDIR
        shipped = known.load()  # while the pages are read
        guessed = _start_ahead(c, shipped)
        if guessed is not None:
            guessed.wait_started()
        pages.submit(kernels.rows)  # the checker's kernel data, needed as uv ends: loaded while pages are read
        vpages = [futs[u, "vllm"].result() for u in urls]
        cands, left = releases.select(releases.group([f for p in vpages for f in p.files], "vllm"), until=until,
                                      pre=req.pre, yanked=req.include_yanked,
                                      spec=releases.spec_set(req.vllm, "--vllm"))
        reader = index.MetadataReader(_pinned_torch(c), cache_dir=cache, offline=req.offline, stats=c.fetch,
                                      eager=not all(p.kept for p in vpages),  # kept pages: a search repeated
                                      known=shipped if known.usable(shipped, c.k.gpu) else None)
        asked = 0
        if not req.offline:  # vLLM's METADATA while torch's page is read (offline, the reader answers at once)
            asked = min(len(cands), AHEAD)
            reader.ask(_vllm_refs(c, cands[:asked]))
        tpages = [futs[u, "torch"].result() for u in urls]
        c.torch_releases = [r for r in (replace(r, files=tuple(f for f in r.files if releases.visible(f, until)))
                                         for r in releases.group([f for p in tpages for f in p.files], "torch"))
                            if r.files]
        c.torch_ready.set()
        for i, r in enumerate(cands):
            ahead = min(len(cands), i + AHEAD)
            if asked < ahead:  # keep AHEAD candidates' reads going, in search order
                reader.ask(_vllm_refs(c, cands[asked:ahead]))
                asked = ahead
            got = _examine(c, r, reader)
            if isinstance(got, _Pending):
                if resolved >= req.max_candidates:
                    stopped, not_tried = "bound", len(cands) - i
                    break
                c.say(f"vllm {r.version} + torch {got.torch}",
                      f"resolving for Python {', '.join(req.pythons)} ({'cache only' if req.offline else 'uv'})")
                reader.hold()  # uv and the checker take the machine; reads for the next candidates wait
                got = _judge(c, got, guessed)
                reader.resume()
                if guessed is not None:  # only the first candidate resolved can take uv started ahead
                    guessed.drop()
                    ahead_started, ahead_taken = guessed.started, guessed.taken
                    guessed.close()
                    guessed = None
                resolved += 1
            rows.append(got)
            _say(c, got)
            if fleet.common(rows) is not None:
                stopped, not_tried = "found", len(cands) - i - 1
                break
    except BaseException:
        if cancel is not None:
            cancel.cancel()  # a page still in flight ends now
        raise
    finally:
        if guessed is not None:  # the search ended before its first resolution: the guess is not needed
            ahead_started = guessed.started
            guessed.close()
        if c is not None:
            c.torch_ready.set()  # a follow-up waiting for torch's page goes on (to nothing)
        if reader is not None:
            reader.close()
        pages.shutdown(wait=True, cancel_futures=True)
    common = fleet.common(rows)
    unjudged = fleet.unjudged_before(rows, common)
    stats = Stats(candidates=len(rows), skipped=sum(all(o.status == SKIPPED for o in r.outcomes) for r in rows),
                  resolved=resolved, uv_runs=c.uv_runs, kept_resolutions=c.kept_res, kept_verdicts=c.kept_verdicts,
                  not_tried=not_tried, uv_ahead=ahead_started, uv_ahead_taken=ahead_taken,
                  seconds=time.monotonic() - t0)
    result = SuggestResult(
        policy=req.policy, pythons=req.pythons, platform=platform, exclude_newer=date, index_url=req.index_url,
        extra_index_urls=req.extra_index_urls, hosts=tuple(hosts.view(h) for h in hs), rows=tuple(rows),
        answers=tuple(fleet.answer(rows, i) for i in range(len(hs))), common=common, decided=not unjudged,
        unjudged=tuple(unjudged), left_out=tuple(left), stopped=stopped, max_candidates=req.max_candidates,
        stats=stats, page_dates=tuple(f"{p.url} read {p.read_at}" for p in (*vpages, *tpages)))
    if req.write is not None and result.common is not None and result.decided:
        from builder.suggest import write

        path = write.write(project, result, req.write, command=req.command or "builder suggest", replace=req.replace)
        result = replace(result, written=path)
    return result

