"""``builder serve`` (start, stop, status, probe, unit) and ``builder route`` (show, init, set, rollback)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from builder.cli import options
from builder.cli.app import main
from builder.cli.common import echo, echo_json, exits, progress, project, quiet, table
from builder.errors import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_PROTECTED, EXIT_UNAVAILABLE, EXIT_USAGE

if TYPE_CHECKING:
    from builder.report import Say
    from builder.serve.cutover import RouteRequest
    from builder.serve.results import SlotStatus

_SPEC = options.service_spec()
_ROUTE_FILE = options.route_file()
_SLOT = options.slot()
_JSON_ENTRY = options.as_json("Print the journal entry as JSON.")
_PROBE_TIMEOUT = options.timeout(default=30.0,
                                 help="Seconds for the whole probe of the target, connect and headers included.")


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def _say(ctx: click.Context) -> Say:
    p = progress(ctx)
    return lambda msg: p("route", msg)


@exits({EXIT_OK: "ok (probe: ready)", EXIT_FAILED: "not ready / refused (smoke failed, GPU memory, startup timeout; "
                                                  "status: the routed slot is not ready)",
        EXIT_USAGE: None, EXIT_UNAVAILABLE: "probe: unreachable", EXIT_PROTECTED: "a path inside a protected env",
        EXIT_BUSY: "busy (port in use, slot running, the routed slot, lock held)"})
@main.group("serve")
def serve() -> None:
    """Serve a built runtime's vLLM as an OpenAI-compatible HTTP service, in slots."""


@serve.command("start")
@options.runtime_selection
@_SLOT
@_SPEC
@click.option("--skip-gpu-check", is_flag=True, help="Do not compare free GPU memory with gpu-memory-utilization.")
@options.as_json("Print the slot record and the probe as JSON.")
@click.pass_context
def start_cmd(ctx: click.Context, matrix: str | None, python: str | None, runtime_id: str | None,
              root: str | None, slot: str, spec: str | None, skip_gpu_check: bool, as_json: bool) -> None:
    """Start the runtime's own `vllm serve` in SLOT, detached; wait until it is ready."""
    from builder.serve import service

    req = service.StartRequest(slot=slot, runtime_id=runtime_id, matrix=matrix, python=python, root=root,
                               spec=_abs(spec), skip_gpu_check=skip_gpu_check)
    res = service.start(project(ctx), req, progress(ctx))
    if as_json:
        echo_json(res.as_dict())
        return
    rec = res.record
    adopted = " (adopted: no lock)" if rec.origin == "adopted" else ""
    echo(f"slot {slot}: ready at {rec.url} (model {rec.model}, runtime {rec.runtime}{adopted}, "
               f"pid {rec.pid}, {rec.ready_after}s)")
    echo(f"  log: {rec.log}")


@serve.command("stop")
@_SLOT
@click.option("--drain", type=options.Seconds(zero_ok=True), metavar="S",
              help="First wait at most S seconds until /metrics shows no request running or waiting.")
@options.force("Stop even the slot the route points at (journaled).")
@_SPEC
@_ROUTE_FILE
@options.as_json("Print what was stopped as JSON.")
@click.pass_context
def stop_cmd(ctx: click.Context, slot: str, drain: float | None, force: bool, spec: str | None,
             route_file: str | None, as_json: bool) -> None:
    """Stop SLOT's server: SIGTERM to its process group, bounded wait, then SIGKILL."""
    from builder.serve import service

    req = service.StopRequest(slot=slot, drain=drain, force=force, spec=_abs(spec), route_file=_abs(route_file))
    res = service.stop(project(ctx), req, progress(ctx))
    if as_json:
        echo_json(res.as_dict())
    elif res.outcome is None:
        echo(f"slot {slot}: not running" + (" (its server is dead; the route still points at it)"
                                                   if res.routed else ""))
    else:
        o = res.outcome
        how = "SIGTERM" if o.terminated else f"SIGKILL after {o.seconds:.2f}s"
        what = "orphaned process(es) of a dead server" if res.orphans else "process(es)"
        echo(f"slot {slot}: stopped (pid {res.pid}, {len(o.pids)} {what}, {how}; signalled pid "
                   f"{', '.join(map(str, o.signalled))}); nothing of it left running")


@exits({EXIT_OK: "ok (the routed slot is ready, or the route is on no slot)",
        EXIT_FAILED: "the route points at a slot that is not ready (one stderr line names it)", EXIT_USAGE: None})
@serve.command("status")
@_SPEC
@_ROUTE_FILE
@options.timeout(default=10.0, help="Seconds for the whole status: the slots are probed side by side within it.")
@options.as_json("Print the status as JSON.")
@click.pass_context
def status_cmd(ctx: click.Context, spec: str | None, route_file: str | None, timeout: float,
               as_json: bool) -> None:
    """Per slot: runtime, pid, port, alive, ready, requests in flight, orphans; and where the route points."""
    from builder.serve import service

    res = service.status(project(ctx), _abs(spec), _abs(route_file), timeout=timeout)
    if as_json:
        echo_json(res.as_dict())
    else:
        def alive(r: SlotStatus) -> str:
            if r.alive:
                return "yes"
            if r.orphans is not None:
                return f"dead, {len(r.orphans.pids)} orphan(s)"
            return r.record if r.record in ("stale", "foreign") else "no"

        rows = [[r.slot + (" *" if r.routed else ""), str(r.port),
                 (r.runtime or "-") + (" (adopted)" if r.origin == "adopted" else ""), str(r.pid or "-"), alive(r),
                 r.verdict or "-", "-" if r.running is None else f"{r.running}/{r.waiting}"] for r in res.slots]
        echo(table(rows, ["slot", "port", "runtime", "pid", "alive", "probe", "running/waiting"]))
        rt = res.route
        if rt is None:
            echo("route: no route file")
        else:
            where = f"slot {rt.slot}" if rt.slot else "no builder slot"
            r = rt.route
            echo(f"route: {where} ({r.url if r else None}, model {r.model if r else None}) in {rt.file}  "
                       "(* = routed)")
        for row in res.slots:
            if row.orphans is not None:
                echo(f"slot {row.slot}: its server is gone but {row.orphans.describe()}; end them with "
                           f"`builder serve stop --slot {row.slot}" + (" --force`" if row.routed else "`"))
    problem = res.routed_problem()
    if problem:
        echo(f"builder: {problem}", err=True)
        ctx.exit(EXIT_FAILED)


@exits({EXIT_OK: "ready", EXIT_FAILED: "not ready", EXIT_USAGE: None, EXIT_UNAVAILABLE: "unreachable"})
@serve.command("probe")
@options.url(help="Server URL, e.g. http://127.0.0.1:8002 (a trailing /v1 is fine).")
@options.model(help="The served model name to ask for.")
@options.slot(required=False, help="Probe a slot of the service spec instead of --url/--model.")
@click.option("--api-key-env", metavar="NAME", help="With --url: send the key held by $NAME.")
@options.timeout(default=30.0, help="Seconds for the whole probe, connect and headers included (each network call "
                                   "gets what is left); the load step gets as much again per request.")
@click.option("--requests", type=int, default=0, help="Add a load step of N completions.")
@click.option("--concurrency", type=int, default=1, help="Load step: requests in flight at once.")
@_SPEC
@options.as_json("Print the verdict as JSON.")
@click.pass_context
def probe_cmd(ctx: click.Context, url: str | None, model: str | None, slot: str | None,
              api_key_env: str | None, timeout: float, requests: int, concurrency: int, spec: str | None,
              as_json: bool) -> None:
    """Is the server ready? health, models, one real completion."""
    from builder.serve import probe as probe_mod
    from builder.serve import service

    proj = project(ctx) if slot else None
    rep = service.probe(proj, service.ProbeRequest(url=url, model=model, slot=slot, spec=_abs(spec),
                                                   api_key_env=api_key_env, timeout=timeout, requests=requests,
                                                   concurrency=concurrency))
    if as_json:
        echo_json(rep.as_dict())
    else:
        echo(f"{rep.url} ({rep.model}): {rep.verdict} in {rep.seconds:.2f}s")
        if not quiet(ctx) or not rep.ready:
            echo(table([[s.step, s.status, f"{s.seconds:.2f}s", s.detail] for s in rep.steps],
                             ["step", "status", "time", "detail"]))
    if rep.verdict == probe_mod.UNREACHABLE:
        ctx.exit(EXIT_UNAVAILABLE)
    if not rep.ready:
        ctx.exit(EXIT_FAILED)


@serve.command("unit")
@options.runtime_selection
@_SLOT
@_SPEC
@options.output_format(["systemd", "sh"], default="systemd")
@options.output("Write to FILE instead of stdout; `-` is stdout.")
@click.pass_context
def unit_cmd(ctx: click.Context, matrix: str | None, python: str | None, runtime_id: str | None,
             root: str | None, slot: str, spec: str | None, fmt: str, output: str | None) -> None:
    """Render a systemd unit (or sh script) that runs SLOT from a content-addressed runtime."""
    from builder.serve import service

    sel = f"--runtime {runtime_id}" if runtime_id else f"--matrix {matrix}" + (f" --python {python}" if python else "")
    proj = project(ctx)
    name, text = service.unit(proj, service.UnitCmd(slot=slot, runtime_id=runtime_id, matrix=matrix, python=python,
                                                    root=root, spec=_abs(spec), fmt=fmt,
                                                    command=f"builder serve unit {sel} --slot {slot} --format {fmt}"))
    if output and output != "-":
        from builder.serve import state

        state.write_file(proj, os.path.abspath(output), text, what="write the unit to")
        echo(f"wrote {output} (install it as {name})", err=True)
    else:
        echo(text, nl=False)


# --------------------------------------------------------------------------- route


@exits({EXIT_OK: None, EXIT_FAILED: "refused (target not ready, a route file builder did not write, nothing to "
        "roll back to, a rollback onto a slot that now runs another runtime)", EXIT_USAGE: None,
        EXIT_PROTECTED: "route file inside a protected env",
        EXIT_BUSY: "busy (lock held)"})
@main.group("route")
def route_group() -> None:
    """The route file QueryLake reads: show, init, set SLOT, rollback (journaled, atomic)."""


def _route_req(spec: str | None, route_file: str | None, force: bool = False, timeout: float = 30.0,
               command: str = "builder route") -> RouteRequest:
    from builder.serve import cutover

    return cutover.RouteRequest(spec=_abs(spec), route_file=_abs(route_file), force=force, timeout=timeout,
                                command=command)


@route_group.command("show")
@_SPEC
@_ROUTE_FILE
@options.as_json("Print the route as JSON.")
@click.pass_context
def route_show(ctx: click.Context, spec: str | None, route_file: str | None, as_json: bool) -> None:
    """Where QueryLake points now, since when, and where a rollback would go."""
    from builder.serve import cutover

    res = cutover.show(project(ctx), _route_req(spec, route_file))
    if as_json:
        echo_json(res.as_dict())
        return
    r = res.route
    where = f"slot {r.slot}" if r and r.slot else "an endpoint outside builder"
    echo(f"{res.file}: {where}: {r.url if r else None} (model {r.model if r else None})")
    if res.foreign is None:
        lock = ("none (adopted: no hash verification)" if r and r.origin == "adopted"
                else (r.lock if r else None) or "-")
        echo(f"  runtime {(r.runtime if r else None) or '-'}, lock {lock}, "
                   f"since {res.entry.time if res.entry else None}")
        back = res.rollback_to
        echo("  rollback: " + (f"{back.url} (slot {back.slot or '-'})" if back else "nothing to roll back to"))
    else:
        echo(f"  not builder's: {res.foreign} (adopt it with `builder route init`)")


@route_group.command()  # named after the function: `builder route init`
@options.url(required=True, help="The endpoint QueryLake uses today, e.g. http://127.0.0.1:8000/v1.")
@options.model(required=True, help="The model name QueryLake asks that endpoint for.")
@options.force("Adopt even if the existing file says otherwise.")
@_SPEC
@_ROUTE_FILE
@_JSON_ENTRY
@click.pass_context
def init(ctx: click.Context, url: str, model: str, force: bool, spec: str | None, route_file: str | None,
               as_json: bool) -> None:
    """Record today's endpoint as the journal's starting point (so the first rollback has a target)."""
    from builder.serve import cutover

    res = cutover.init(project(ctx), _route_req(spec, route_file, force, command="builder route init"),
                       url=url, model=model)
    if as_json:
        echo_json(res.as_dict())
    else:
        echo(f"{res.file}: route initialised to {res.to.url} (model {res.to.model})")


@route_group.command("set")
@click.argument("slot")
@options.force("Switch without probing the slot (journaled).")
@_PROBE_TIMEOUT
@_SPEC
@_ROUTE_FILE
@_JSON_ENTRY
@click.pass_context
def route_set(ctx: click.Context, slot: str, force: bool, timeout: float, spec: str | None,
              route_file: str | None, as_json: bool) -> None:
    """Point QueryLake at SLOT, only if a probe says it is ready (the file stays unchanged otherwise)."""
    from builder.serve import cutover

    res = cutover.set_route(project(ctx), _route_req(spec, route_file, force, timeout,
                                                     f"builder route set {slot}"), slot=slot, say=_say(ctx))
    if as_json:
        echo_json(res.as_dict())
    elif not res.changed:
        echo(f"{res.file}: already routed to slot {slot}; unchanged")
    else:
        echo(f"{res.file}: routed to slot {slot} ({res.to.url}, runtime {res.to.runtime or '-'})")


@route_group.command("rollback")
@options.force("Roll back without probing the target (journaled).")
@_PROBE_TIMEOUT
@_SPEC
@_ROUTE_FILE
@_JSON_ENTRY
@click.pass_context
def route_rollback(ctx: click.Context, force: bool, timeout: float, spec: str | None, route_file: str | None,
                   as_json: bool) -> None:
    """Return to the journaled previous route, probing it first."""
    from builder.serve import cutover

    res = cutover.rollback(project(ctx), _route_req(spec, route_file, force, timeout, "builder route rollback"),
                           say=_say(ctx))
    if as_json:
        echo_json(res.as_dict())
    else:
        to = res.to
        where = f"slot {to.slot}" if to.slot else "the endpoint outside builder"
        echo(f"{res.file}: rolled back to {where} ({to.url}, model {to.model})")
