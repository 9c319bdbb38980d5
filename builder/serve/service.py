"""``builder serve``: start, stop, status, probe and unit of the service's slots (orchestration).

One core function per command; each takes a request and a progress callback
and returns a frozen result (:mod:`builder.serve.results`) for the CLI to render.  What a slot runs is recorded in
the state directory (:mod:`builder.serve.state`); which slot QueryLake uses is
the route (:mod:`builder.serve.cutover`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import Busy, NotReady, UsageError
from builder.project import Project
from builder.report import Progress, Say
from builder.serve import endpoint, environment, gpu, process, results, route, state
from builder.serve import probe as probe_mod
from builder.serve.record import SlotRecord
from builder.serve.spec import Slot
from builder.serve.state import api_key

if TYPE_CHECKING:
    from builder.serve.runtimes import Runtime

PROBE_TIMEOUT = probe_mod.DEFAULT_TIMEOUT


def _quiet(_t: str, _m: str) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class SlotRuntime:
    """A slot of the service spec and the built runtime it is to run: by id, or the
    runtime of a matrix's current lock (``matrix`` + ``python``) under ``root``."""

    slot: str
    runtime_id: str | None = None
    matrix: str | None = None
    python: str | None = None
    root: str | None = None
    spec: str | None = None


def _runs(rt: Runtime) -> process.Served:
    return process.Served(runtime=rt.id, lock=rt.lock_sha256, origin=rt.origin)


def _servable(project: Project, ctx: state.Context, req: SlotRuntime, *, refusal: str) -> Runtime:
    """The runtime ``req`` names, if it may run from here and passed its smoke test."""
    from builder.serve import runtimes  # the runtime layout: only start and unit need it

    rt = runtimes.resolve(project, runtime_id=req.runtime_id, matrix=req.matrix, python=req.python,
                          root_dir=req.root)
    ctx.guard_exec(rt.path)
    problem = rt.smoke_problem()
    if problem:
        raise NotReady(f"runtime {rt.id}: {problem}; {refusal}",
                       "rebuild it (builder build --force) and check `builder smoke`")
    return rt


# --------------------------------------------------------------------------- start


@dataclass(frozen=True, kw_only=True)
class StartRequest(SlotRuntime):
    skip_gpu_check: bool = False


def _stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(x.strip() for x in text.strip().splitlines()[-lines:] if x.strip())


def start(project: Project, req: StartRequest, progress: Progress | None = None) -> results.Started:
    """Start ``req.slot``'s server from a built runtime and wait until it is ready (see README)."""
    say = progress or _quiet
    ctx = state.context(project, req.spec)
    svc = ctx.service
    slot = svc.slot(req.slot)
    ctx.guard(route=False)
    environment.check_account(svc, doing="run serve start")
    rt = _servable(project, ctx, req, refusal="not serving it")
    if not os.access(rt.vllm, os.X_OK):
        raise NotReady(f"runtime {rt.id} has no executable bin/vllm", "rebuild it with `builder build --force`")
    if rt.skipped_gpu_steps():
        say(slot.name, f"note: {rt.id}'s GPU smoke steps were skipped on its build host (no GPU); "
                       "`builder smoke --gpu` on this host runs them")
    key = api_key(svc, required=True)
    for d in (ctx.slots_dir, ctx.logs_dir):
        d.mkdir(parents=True, exist_ok=True)
    home = ctx.home
    with ctx.locked():
        old = ctx.read_record(slot.name)
        if old is not None:
            if process.is_ours(old, home):
                raise Busy(f"slot {slot.name} already runs {old.runtime} (pid {old.pid}) on port {old.port}",
                           f"stop it first: builder serve stop --slot {slot.name}")
            left = process.members(old, home)
            if left:
                say(slot.name, f"stopping {len(left)} leftover process(es) of its previous server")
                process.stop(old, home, term_timeout=min(svc.stop_timeout, 10.0))
            ctx.drop_record(slot.name)
        if not process.port_free(svc.host, slot.port):
            who = process.listeners(slot.port)
            raise Busy(f"port {slot.port} on {svc.host} is already in use"
                       + (f" (pid {', '.join(map(str, who))})" if who else "") + f"; slot {slot.name} cannot start",
                       "stop what listens there, or give the slot another port in the service spec")
        if req.skip_gpu_check:
            say(slot.name, "GPU memory not checked (--skip-gpu-check)")
        else:
            gpus = gpu.gpu_memory()
            if gpus is None:
                say(slot.name, "no nvidia-smi on this host: GPU memory not checked")
            else:
                say(slot.name, gpu.check_gpu_memory(svc, slot, gpus))
        argv = svc.serve_argv(str(rt.vllm), slot)
        log = ctx.logs_dir / f"{slot.name}-{_stamp()}.log"
        # The token is recorded before the spawn: a builder killed right after it still
        # leaves a record through which `serve stop` finds the server.
        rec = SlotRecord(slot=slot.name, service=svc.name, runtime=rt.id, runtime_path=str(rt.path),
                         lock=rt.lock_sha256, origin=rt.origin, host=svc.host, port=slot.port, url=svc.base_url(slot),
                         model=svc.served_model_name, log=str(log), started_at=route.now(), argv=tuple(argv),
                         token=process.new_token(), state=home.identity)
        ctx.write_record(rec)
        env = environment.server_env(slot, _runs(rt), str(rt.path / "bin"), home=home, key=key)
        started = process.start(argv, env=env, cwd=ctx.state_dir, logfile=log, token=rec.token, home=home)
        rec = dataclasses.replace(rec, pid=started.pid, pgid=started.pgid, start_ticks=started.start_ticks,
                                  boot_id=started.boot_id, exe=started.exe, cmdline=started.cmdline)
        ctx.write_record(rec)
    say(slot.name, f"started {rt.id} as pid {started.pid} on {svc.host}:{slot.port}; log {log}")
    try:
        seconds, report = _wait_ready(ctx, slot, log, started=started, key=key, say=say)
    except BaseException:
        # Not ready, died, or Ctrl-C: never leave a half-started server behind.
        process.stop(rec, home, term_timeout=svc.stop_timeout, handle=started.handle)
        ctx.drop_record(slot.name)
        raise
    rec = dataclasses.replace(rec, ready_after=round(seconds, 1))
    with ctx.locked():  # what runs now (a console script may have exec'd the runtime's python)
        now = ctx.read_record(slot.name)
        if process.is_ours(rec, home) and now is not None and now.token == rec.token:
            rec = dataclasses.replace(rec, exe=process.exe_of(started.pid) or "",
                                      cmdline=tuple(process.cmdline_of(started.pid) or ()))
            ctx.write_record(rec)
    return results.Started(slot=slot.name, record=rec, probe=report)


def _wait_ready(ctx: state.Context, slot: Slot, log: Path, *, started: process.Started,
                key: str | None, say: Progress) -> tuple[float, probe_mod.Report]:
    """(seconds, the probe that said ready); NotReady when the server exits or startup-timeout passes."""
    svc = ctx.service
    t0 = time.monotonic()
    deadline = t0 + svc.startup_timeout
    url = svc.root_url(slot)
    last = ""
    last_said = t0
    pause = 0.1
    rep: probe_mod.Report | None = None
    while True:
        code = started.handle.poll() if started.handle is not None else None
        if code is not None or not process.alive(started.pid):
            tail = _log_tail(log)
            raise NotReady(f"slot {slot.name}: vllm exited (code {code}) after {time.monotonic() - t0:.1f}s "
                           f"before it was ready" + (f": {tail}" if tail else ""), f"see {log}")
        left = deadline - time.monotonic()
        if left <= 0:
            break
        rep = probe_mod.probe(url, svc.served_model_name, timeout=min(PROBE_TIMEOUT, left), api_key=key)
        if rep.ready:
            say(slot.name, f"ready after {time.monotonic() - t0:.1f}s")
            return time.monotonic() - t0, rep
        now = time.monotonic()
        if rep.brief() != last or now - last_said >= 10:
            say(slot.name, f"waiting: {rep.brief()} ({now - t0:.0f}s of {svc.startup_timeout:g}s)")
            last, last_said = rep.brief(), now
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        pause = min(pause * 1.5, 2.0)
    raise NotReady(f"slot {slot.name} was not ready within its startup-timeout of {svc.startup_timeout:g}s "
                   f"(last probe: {rep.brief() if rep else 'none'}); it was stopped",
                   f"see {log}; raise startup-timeout in {svc.path} if loading the model takes longer")


# --------------------------------------------------------------------------- stop


@dataclass(frozen=True, kw_only=True)
class StopRequest:
    slot: str
    drain: float | None = None
    force: bool = False
    spec: str | None = None
    route_file: str | None = None


def _routed_slot(ctx: state.Context) -> tuple[route.Current, str | None]:
    cur = route.current(ctx.route_file, route.read_journal(ctx.journal))
    if cur.route is None:
        return cur, None
    for s in ctx.service.slots.values():
        if _same_url(cur.route.url, ctx.service.base_url(s)):
            return cur, s.name
    return cur, None


def _same_url(a: str, b: str) -> bool:
    try:
        return endpoint.split_url(a) == endpoint.split_url(b)
    except ValueError:
        return False


def _drain(url: str, seconds: float, say: Say) -> results.Drain:
    deadline = time.monotonic() + seconds
    seen: tuple[int, int] | None = None
    while True:
        got = probe_mod.in_flight(url, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        if got is None:
            say("cannot read /metrics; not draining")
            return results.Drain(drained=False, reason="no metrics")
        if got == (0, 0):
            if seen is not None:
                say("drained: no requests running or waiting")
            return results.Drain(drained=True, in_flight=(0, 0))
        if got != seen:
            say(f"in flight: {got[0]} running, {got[1]} waiting")
            seen = got
        if time.monotonic() >= deadline:
            say(f"still in flight after {seconds:g}s: {got[0]} running, {got[1]} waiting; stopping anyway")
            return results.Drain(drained=False, in_flight=got)
        time.sleep(0.2)


def _record_kind(rec: SlotRecord | None, home: process.Home, *, ours: bool) -> str | None:
    """ours | foreign (written by another state directory: a copied project) | stale | None."""
    if rec is None:
        return None
    if ours:
        return "ours"
    return "foreign" if rec.state is not None and rec.state != home.identity else "stale"


def stop(project: Project, req: StopRequest, progress: Progress | None = None) -> results.Stopped:
    """Stop a slot's server, or what is left of it: refuse the routed slot (unless forced), drain,
    SIGTERM, SIGKILL."""
    say = progress or _quiet
    ctx = state.context(project, req.spec, req.route_file)
    svc = ctx.service
    slot = svc.slot(req.slot)
    ctx.guard(route=req.force)
    home = ctx.home
    with ctx.locked():
        cur, routed = _routed_slot(ctx)
        is_routed = routed == slot.name
        where = f"{ctx.route_file} -> {cur.route.url if cur.route else ''}"
        rec = ctx.read_record(slot.name)
        live = rec is not None and process.is_ours(rec, home)
        pids = process.members(rec, home) if rec is not None else []
        if rec is None or not pids:
            if rec is not None:
                if _record_kind(rec, home, ours=live) == "foreign":
                    say(slot.name, f"its record {ctx.record_path(slot.name)} was written by another state "
                                   "directory (a copied project?): nothing of it runs from here; record dropped")
                ctx.drop_record(slot.name)
            if is_routed:
                say(slot.name, f"its server is dead, and the route still points at it ({where}): route "
                               "elsewhere with `builder route set OTHER` or `builder route rollback`")
            return results.Stopped(slot=slot.name, was_running=False, routed=is_routed)
        orphaned = not live
        if is_routed and not req.force:
            what = (f"its server is dead but {len(pids)} process(es) of it remain (pid {', '.join(map(str, pids))})"
                    if orphaned else "not stopping it")
            raise Busy(f"slot {slot.name} is the route ({where}); {what}",
                       "switch the route first (builder route set OTHER or builder route rollback), or pass "
                       "--force (journaled)")
        if is_routed:
            route.append(ctx.journal, route.Entry(route.new_id(), route.now(), "stop-forced", None,
                                                  cur.route, cur.entry.id if cur.entry else None,
                                                  probe="not run", forced=True))
            say(slot.name, "stopping the routed slot (--force, journaled)")
        if orphaned:
            say(slot.name, f"its server is gone; ending {len(pids)} orphaned process(es) of it "
                           f"(pid {', '.join(map(str, pids))})")
        drain = _drain(svc.root_url(slot), req.drain, lambda m: say(slot.name, m)) if req.drain and live else None
        res = process.stop(rec, home, term_timeout=svc.stop_timeout, say=lambda m: say(slot.name, m))
        if res.left:
            raise NotReady(f"slot {slot.name}: pid {', '.join(map(str, res.left))} survived SIGKILL "
                           "(uninterruptible sleep?)", f"inspect with `ps -o pid,stat,wchan,cmd -p "
                           f"{','.join(map(str, res.left))}`; the record is kept")
        ctx.drop_record(slot.name)
    say(slot.name, f"stopped pid {', '.join(map(str, res.signalled))} "
                   f"({'SIGTERM' if res.terminated else 'SIGKILL'}, {res.seconds:.1f}s)")
    return results.Stopped(slot=slot.name, was_running=True, routed=is_routed, pid=rec.pid, orphans=orphaned,
                           drain=drain, outcome=res)


# --------------------------------------------------------------------------- status


def _slot_status(ctx: state.Context, s: Slot, rec: SlotRecord | None, *, routed: str | None, key: str | None,
                 deadline: float) -> results.SlotStatus:
    svc = ctx.service
    home = ctx.home
    ours = rec is not None and process.is_ours(rec, home)
    left = process.orphans(rec, home) if rec is not None and not ours else []
    verdict: str | None
    ready, running, waiting = False, None, None
    rep = probe_mod.probe(svc.root_url(s), svc.served_model_name, timeout=max(0.0, deadline - time.monotonic()),
                          api_key=key)
    if rep.verdict == probe_mod.UNREACHABLE:
        verdict = "unreachable"
    else:
        ready, verdict = rep.ready, rep.brief()
        t = deadline - time.monotonic()
        got = probe_mod.in_flight(svc.root_url(s), timeout=min(t, 5.0)) if t > 0 else None
        if got is not None:
            running, waiting = got
    return results.SlotStatus(
        slot=s.name, port=s.port, url=svc.base_url(s), runtime=rec.runtime if rec else None,
        origin=rec.origin if rec else None, pid=rec.pid if rec else None, alive=ours, ready=ready,
        verdict=verdict, running=running, waiting=waiting,
        routed=routed == s.name, started_at=rec.started_at if rec else None, log=rec.log if rec else None,
        record=_record_kind(rec, home, ours=ours),
        orphans=results.Orphans(pids=tuple(left), gpu_mib=None) if left else None)


def status(project: Project, spec: str | None = None, route_file: str | None = None,
           *, timeout: float = 10.0) -> results.Status:
    """Per slot: runtime, pid, port, alive, ready, requests in flight, orphaned processes (and the
    GPU memory they hold); and where the route points.

    The slots are probed side by side, nvidia-smi asked beside them (only when a slot has
    orphaned processes), all within one deadline of ``timeout`` seconds.
    """
    from concurrent.futures import ThreadPoolExecutor

    deadline = time.monotonic() + timeout
    ctx = state.context(project, spec, route_file)
    svc = ctx.service
    cur, routed = _routed_slot(ctx)
    key = api_key(svc, required=False)
    slots = list(svc.slots.values())
    home = ctx.home
    recs = {s.name: ctx.read_record(s.name) for s in slots}
    any_orphans = any(r is not None and process.orphans(r, home) for r in recs.values())
    with ThreadPoolExecutor(max_workers=min(len(slots), 8) + 1) as pool:
        usage = (pool.submit(gpu.used_by_pid, timeout=max(0.1, deadline - time.monotonic())) if any_orphans
                 else None)
        rows = list(pool.map(lambda s: _slot_status(ctx, s, recs[s.name], routed=routed, key=key,
                                                    deadline=deadline), slots))
        per_pid = usage.result() if usage is not None else None
    rows = [dataclasses.replace(r, orphans=dataclasses.replace(r.orphans, gpu_mib=gpu.held(r.orphans.pids, per_pid)))
            if r.orphans is not None else r for r in rows]
    rstatus = results.RouteStatus(file=str(ctx.route_file), slot=routed, route=cur.route) if cur.exists else None
    return results.Status(service=svc.name, route=rstatus, slots=tuple(rows))


@dataclass(frozen=True, kw_only=True)
class ProbeRequest:
    url: str | None = None
    model: str | None = None
    slot: str | None = None
    spec: str | None = None
    api_key_env: str | None = None
    timeout: float = PROBE_TIMEOUT
    requests: int = 0
    concurrency: int = 1


def probe(project: Project | None, req: ProbeRequest) -> probe_mod.Report:
    """``serve probe``: a slot of the service, or any URL + model."""
    if req.requests < 0 or req.concurrency < 1 or req.timeout <= 0:
        raise UsageError("--requests must be >= 0, --concurrency >= 1 and --timeout > 0")
    if req.slot:
        if req.url or req.model:
            raise UsageError("pass either --slot SLOT or --url URL --model NAME, not both")
        if project is None:
            raise UsageError("--slot needs a builder project with envs/service.toml")
        svc = state.context(project, req.spec).service
        s = svc.slot(req.slot)
        # A slot whose service names an API key is probed with it: without it /v1/* says 401, which
        # reads as "not ready" when the operator's shell only lacks the variable.
        url, model, key = svc.root_url(s), svc.served_model_name, api_key(svc, required=True)
    else:
        if not (req.url and req.model):
            raise UsageError("pass --slot SLOT, or --url URL and --model NAME")
        url, model = req.url, req.model
        key = os.environ.get(req.api_key_env) if req.api_key_env else None
        try:
            endpoint.split_url(url)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return probe_mod.probe(url, model, timeout=req.timeout, api_key=key, requests=req.requests,
                           concurrency=req.concurrency)


@dataclass(frozen=True, kw_only=True)
class UnitCmd(SlotRuntime):
    fmt: str = "systemd"
    command: str = "builder serve unit"


def unit(project: Project, req: UnitCmd) -> tuple[str, str]:
    """(file name, text) of the unit for ``req.slot`` running ``req``'s runtime."""
    from builder.serve.unit import UnitRequest, render, unit_name

    ctx = state.context(project, req.spec)
    svc = ctx.service
    slot = svc.slot(req.slot)
    rt = _servable(project, ctx, req, refusal="not rendering a unit for it")
    ctx.guard(route=False)
    user = environment.unit_user(svc) if req.fmt == "systemd" else None
    if user is None:
        environment.check_account(svc, doing="render the unit")
    ctx.state_dir.mkdir(parents=True, exist_ok=True)  # the unit's WorkingDirectory
    env = environment.unit_env(slot, _runs(rt), str(rt.path / "bin"), home=ctx.home)
    ureq = UnitRequest(service=svc.name, slot=slot.name, runtime=rt.id, argv=svc.serve_argv(str(rt.vllm), slot),
                       env=env, workdir=str(ctx.state_dir), user=user, api_key_env=svc.api_key_env,
                       api_key_file=svc.api_key_file, startup_timeout=svc.startup_timeout,
                       stop_timeout=svc.stop_timeout, command=req.command)
    name = unit_name(svc.name, slot.name) if req.fmt == "systemd" else f"{svc.name}-{slot.name}.sh"
    return name, render(ureq, req.fmt)


# --------------------------------------------------------------------------- pins


def pinned_runtimes(project: Project) -> set[str]:
    """Runtime ids that must not be replaced or cleaned up: the route's, the journal's
    rollback target's, and every running slot's.  Empty when the project has no service spec."""
    if not state.spec_path(project).exists():
        return set()
    ctx = state.context(project)
    pins: set[str] = set()
    for rf in dict.fromkeys([ctx.route_file, *ctx.route_files()]):
        journal = route.read_journal(rf.with_name(rf.name + ".journal"))
        cur = route.current(rf, journal)
        if cur.route is not None and cur.route.runtime:
            pins.add(cur.route.runtime)
        if cur.entry is not None:
            t = route.rollback_target(journal, cur.entry)
            if t is not None and t.to is not None and t.to.runtime:
                pins.add(t.to.runtime)
    for s in ctx.service.slots:
        rec = ctx.read_record(s)
        if rec is not None and rec.runtime and process.members(rec, ctx.home):
            pins.add(rec.runtime)
    return pins
