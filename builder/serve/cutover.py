"""``builder route``: show, init, set and roll back the route QueryLake follows (orchestration).

A switch probes its target first and changes nothing unless the target is
ready (``--force`` skips the probe and is journaled).  Every change is written
to the journal, then the route file is replaced atomically
(:mod:`builder.serve.route`).  All of it happens under the serve lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.errors import NotReady, UsageError
from builder.project import Project
from builder.report import Say
from builder.serve import endpoint, process, results, route, state
from builder.serve import probe as probe_mod
from builder.serve.state import api_key

PROBE_TIMEOUT = probe_mod.DEFAULT_TIMEOUT



def _quiet(_m: str) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class RouteRequest:
    spec: str | None = None
    route_file: str | None = None
    force: bool = False
    timeout: float = PROBE_TIMEOUT
    command: str = "builder route"


def show(project: Project, req: RouteRequest) -> results.RouteShown:
    """What the route file says, who wrote it and since when."""
    ctx = state.context(project, req.spec, req.route_file)
    journal = route.read_journal(ctx.journal)
    cur = route.current(ctx.route_file, journal)
    if not cur.exists:
        raise NotReady(f"no route file at {ctx.route_file}",
                       "create it with `builder route init --url URL --model NAME` (today's endpoint)")
    target = route.rollback_target(journal, cur.entry) if cur.entry else None
    return results.RouteShown(file=str(ctx.route_file), route=cur.route, entry=cur.entry, foreign=cur.foreign,
                              rollback_to=target.to if target else None)


def _adoptable(ctx: state.Context, cur: route.Current) -> None:
    if cur.exists and cur.foreign:
        raise NotReady(f"{ctx.route_file}: {cur.foreign}; not switching it",
                       "record the endpoint QueryLake uses now with `builder route init --url URL --model NAME`")


def _commit(ctx: state.Context, entry: route.Entry, command: str) -> None:
    """Journal first, then the file: a writer killed in between leaves the old file in effect."""
    assert entry.to is not None
    route.append(ctx.journal, entry)
    route.write(ctx.route_file, entry.to, entry, command=command)
    ctx.remember_route_file(ctx.route_file)


def init(project: Project, req: RouteRequest, *, url: str, model: str) -> results.RouteChange:
    """Adopt today's endpoint (e.g. production's server) as the journal's starting point."""
    ctx = state.context(project, req.spec, req.route_file)
    try:
        api = endpoint.api_url(url)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}", "give the http(s) URL QueryLake uses today") from None
    why = endpoint.check_model(model)
    if why:
        raise UsageError(f"--model {why}", "give the model name QueryLake asks that endpoint for")
    ctx.guard()
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    with ctx.locked():
        journal = route.read_journal(ctx.journal)
        cur = route.current(ctx.route_file, journal)
        if cur.exists and cur.entry is None and not req.force:
            said = cur.vars.get(route.URL_VAR)
            others = sorted(set(cur.vars) - {route.URL_VAR, route.MODEL_VAR})
            if said and not _same(said, api):
                raise NotReady(f"{ctx.route_file} points at {said}, not {api}; not adopting it",
                               "check which endpoint QueryLake uses now; --force adopts --url anyway")
            if others:
                raise NotReady(f"{ctx.route_file} also defines {', '.join(others)}, which the route file "
                               "cannot keep", "move them to QueryLake's other settings, or pass --force")
        to = route.Route(api, model)
        entry = route.Entry(route.new_id(), route.now(), "adopt", to, cur.route, None, probe="not run",
                            forced=req.force)
        _commit(ctx, entry, req.command)
    return results.RouteChange(file=str(ctx.route_file), entry=entry, to=to)


def _same(a: str, b: str) -> bool:
    try:
        return endpoint.split_url(a) == endpoint.split_url(b)
    except ValueError:
        return False


def _probe(ctx: state.Context, target: route.Route, req: RouteRequest, *, say: Say) -> str:
    if req.force:
        say(f"not probing {target.url} (--force)")
        return "skipped (--force)"
    rep = probe_mod.probe(target.url, target.model, timeout=req.timeout,
                          api_key=api_key(ctx.service, required=False))
    for s in rep.steps:
        say(f"probe {s.step}: {s.status} ({s.detail}, {s.seconds:.2f}s)")
    if not rep.ready:
        raise NotReady(f"route unchanged: {target.label()} is {rep.brief()}",
                       "start or fix it first (builder serve status); --force switches without the probe")
    return rep.verdict


def _runs(ctx: state.Context, slot: str) -> process.Served | None:
    """What serves in ``slot`` now: the server ``serve start`` recorded, else a server this state
    directory's unit runs (its environment names the runtime), else None (unknown)."""
    rec = ctx.read_record(slot)
    if rec is not None and process.is_ours(rec, ctx.home):
        return process.Served(runtime=rec.runtime, lock=rec.lock, origin=rec.origin)
    return process.unit_server(ctx.service.slot(slot).port, ctx.home)


def set_route(project: Project, req: RouteRequest, *, slot: str, say: Say | None = None) -> results.RouteChange:
    """Point the route at ``slot`` once a probe says it is ready."""
    say = say or _quiet
    ctx = state.context(project, req.spec, req.route_file)
    svc = ctx.service
    s = svc.slot(slot)
    ctx.guard()
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    with ctx.locked():
        journal = route.read_journal(ctx.journal)
        cur = route.current(ctx.route_file, journal)
        _adoptable(ctx, cur)
        now = _runs(ctx, s.name)
        target = route.Route(svc.base_url(s), svc.served_model_name, s.name, now.runtime if now else None,
                             now.lock if now else None, now.origin if now else None)
        if cur.route is not None and cur.entry is not None and cur.route.slot == s.name \
                and _same(cur.route.url, target.url) and cur.route.runtime == target.runtime:
            say(f"the route already points at slot {s.name}")
            return results.RouteChange(file=str(ctx.route_file), entry=None, to=cur.route)
        verdict = _probe(ctx, target, req, say=say)
        entry = route.Entry(route.new_id(), route.now(), "set", target, cur.route,
                            cur.entry.id if cur.entry else None, probe=verdict, forced=req.force)
        _commit(ctx, entry, req.command)
    return results.RouteChange(file=str(ctx.route_file), entry=entry, to=target)


def rollback(project: Project, req: RouteRequest, *, say: Say | None = None) -> results.RouteChange:
    """Return to the journaled route that was in effect before the current one (probed first).

    A slot that now runs another runtime than the journal recorded for it is
    not rolled back onto without ``--force`` (then the runtime it runs is recorded).
    """
    say = say or _quiet
    ctx = state.context(project, req.spec, req.route_file)
    ctx.guard()
    with ctx.locked():
        journal = route.read_journal(ctx.journal)
        cur = route.current(ctx.route_file, journal)
        if not cur.exists:
            raise NotReady(f"no route file at {ctx.route_file}: nothing to roll back",
                           "start with `builder route init --url URL --model NAME`")
        _adoptable(ctx, cur)
        assert cur.entry is not None
        target_entry = route.rollback_target(journal, cur.entry)
        if target_entry is None or target_entry.to is None:
            raise NotReady(f"nothing to roll back to: the journal of {ctx.route_file} starts at the current "
                           f"route (entry {cur.entry.id}, {cur.entry.action})",
                           "route to a slot with `builder route set SLOT`")
        target = target_entry.to
        bad = target.problems()
        if bad:
            raise UsageError(f"{ctx.journal}: entry {endpoint.shown(target_entry.id)}: {'; '.join(bad)}; not "
                             "writing it into the route file", "the journal was changed by hand: restore it, or "
                             "route explicitly with `builder route set SLOT` or `builder route init --url URL "
                             "--model NAME`")
        if target.slot and target.slot in ctx.service.slots:
            now = _runs(ctx, target.slot)
            if now is not None and now.runtime is not None and now.runtime != target.runtime:
                if target.runtime is not None and not req.force:
                    raise NotReady(f"route unchanged: slot {target.slot} now runs {now.runtime}, not "
                                   f"{target.runtime} that the route had there; rolling back would serve another "
                                   f"runtime", f"start {target.runtime} in it (builder serve start --runtime "
                                   f"{target.runtime} --slot {target.slot}), or pass --force to roll back onto "
                                   f"{now.runtime} (journaled)")
                say(f"slot {target.slot} now runs {now.runtime} (was {target.runtime or 'not recorded'})")
                target = route.Route(target.url, target.model, target.slot, now.runtime, now.lock, now.origin)
        verdict = _probe(ctx, target, req, say=say)
        entry = route.Entry(route.new_id(), route.now(), "rollback", target, cur.route, cur.entry.id,
                            restores=target_entry.id, probe=verdict, forced=req.force)
        _commit(ctx, entry, req.command)
    return results.RouteChange(file=str(ctx.route_file), entry=entry, to=target)
