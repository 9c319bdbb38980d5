"""``builder serve``: start, stop, status, probe and unit of the service's slots (orchestration).

One core function per command; each takes a request and a progress callback
and returns plain data for the CLI to render.  What a slot runs is recorded in
the state directory (:mod:`builder.serve.state`); which slot QueryLake uses is
the route (:mod:`builder.serve.cutover`).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder import _proc
from builder.errors import Busy, NotReady, Unavailable, UsageError
from builder.project import Project
from builder.report import Progress, Say
from builder.serve import endpoint, process, route, state
from builder.serve import probe as probe_mod
from builder.serve.spec import Service, Slot
from builder.serve.state import api_key

if TYPE_CHECKING:
    from builder.serve.runtimes import Runtime

#: vLLM's default --gpu-memory-utilization.
DEFAULT_UTILIZATION = 0.9
PROBE_TIMEOUT = probe_mod.DEFAULT_TIMEOUT
SMI_TIMEOUT = 20.0


def _quiet(_t: str, _m: str) -> None:
    return None


def _slot_vars(slot: Slot) -> dict[str, str]:
    """What a slot's server runs with, started here or by its unit: no usage reports, the
    spec's [env], and GPU indices as nvidia-smi numbers them (CUDA's default order is
    fastest-first; the spec may not set CUDA_DEVICE_ORDER)."""
    return {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **slot.env, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def server_env(svc: Service, slot: Slot, rt: Runtime, key: str | None) -> dict[str, str]:
    """The server's environment: scrubbed like ``build``'s, runtime bin first, the spec's [env]."""
    env = _proc.clean_env()
    env.pop("VLLM_API_KEY", None)  # an operator's shell must not decide the server's key
    env["PATH"] = os.pathsep.join([str(rt.path / "bin"), env.get("PATH", os.defpath)])
    env.update(_slot_vars(slot))
    if key:
        env["VLLM_API_KEY"] = key
    return env


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


def _servable(project: Project, ctx: state.Context, req: SlotRuntime, refusal: str) -> Runtime:
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


# --------------------------------------------------------------------------- GPU memory


@dataclass(frozen=True)
class GpuMemory:
    index: str
    uuid: str
    name: str
    total_mib: int | None  # None: nvidia-smi says [N/A] (e.g. unified-memory GB10)
    free_mib: int | None


def gpu_memory() -> list[GpuMemory] | None:
    """Free and total memory per GPU from nvidia-smi; None when there is no nvidia-smi."""
    from builder.driver import parse as hostparse
    from builder.driver import probe as host

    fields = ["index", "uuid", "name", "memory.total", "memory.free"]
    rec = host.run_argv("nvidia-smi-memory", ("nvidia-smi", f"--query-gpu={','.join(fields)}",
                                              "--format=csv,noheader,nounits"),
                        SMI_TIMEOUT, env=_proc.clean_env(extra={"LC_ALL": "C"}))
    if rec.exit == "missing":
        return None
    if rec.exit != 0 or rec.timed_out:
        lines = (rec.stderr or rec.stdout).strip().splitlines()
        why = f"timed out after {SMI_TIMEOUT:g}s" if rec.timed_out else (lines[-1] if lines else f"exit {rec.exit}")
        raise Unavailable(f"cannot read GPU memory with nvidia-smi: {why}",
                          "fix nvidia-smi, or pass --skip-gpu-check to start without the check")
    try:
        rows = hostparse.parse_query_csv(rec.stdout, fields)
        return [GpuMemory(str(r["index"]), str(r["uuid"]), str(r["name"]), hostparse.mib(r["memory.total"]),
                          hostparse.mib(r["memory.free"])) for r in rows]
    except hostparse.ParseError as exc:
        raise Unavailable(f"cannot read GPU memory: {exc}", "pass --skip-gpu-check to start anyway") from None


def check_gpu_memory(svc: Service, slot: Slot, gpus: list[GpuMemory]) -> str:
    """Raise NotReady with the numbers when a target GPU lacks ``utilization x total`` free memory."""
    tp = slot.vllm.tensor_parallel_size or 1
    targets = slot.target_devices() or [str(i) for i in range(tp)]
    util = slot.vllm.gpu_memory_utilization or DEFAULT_UTILIZATION
    found: list[GpuMemory] = []
    for t in targets:
        # CUDA_VISIBLE_DEVICES takes indices, full UUIDs or unique UUID prefixes ("GPU-8932f937").
        g = next((g for g in gpus if t == g.index or (t.startswith(("GPU-", "MIG-")) and g.uuid.startswith(t))),
                 None)
        if g is None:
            raise NotReady(f"slot {slot.name} wants GPU {t} but nvidia-smi shows "
                           f"{', '.join(g.index for g in gpus) or 'no GPU'}",
                           f"fix CUDA_VISIBLE_DEVICES in [slots.{slot.name}.env] of {svc.path}")
        found.append(g)
    blind = [g.index for g in found if not g.total_mib or g.free_mib is None]
    if blind:
        return f"GPU {', '.join(blind)}: nvidia-smi reports no memory figures ([N/A]); free memory not checked"
    mem = [(g, g.free_mib or 0, g.total_mib or 1) for g in found]
    short = [(g, free, total) for g, free, total in mem if free < util * total]
    summary = "; ".join(f"GPU {g.index}: {free} of {total} MiB free" for g, free, total in mem)
    if not short:
        return summary
    fits = math.floor(min(free / total for _g, free, total in mem) * 100) / 100
    detail = "; ".join(f"GPU {g.index} ({g.name}) has {free} MiB free of {total} MiB, "
                       f"needs {util:g} x {total} = {math.ceil(util * total)} MiB" for g, free, total in short)
    raise NotReady(
        f"slot {slot.name} would not fit: {detail}; vLLM would fail minutes into loading (\"Free memory on "
        "device ... is less than desired GPU memory utilization\")",
        f"options: another GPU (CUDA_VISIBLE_DEVICES in [slots.{slot.name}.env]); a lower "
        f"gpu-memory-utilization (at most {fits:.2f} fits now, if the model and its KV cache fit in it); "
        "or a planned stop of the old slot in the window (builder serve stop --slot OTHER; production's "
        "server is stopped by the operator)")


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


def start(project: Project, req: StartRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Start ``req.slot``'s server from a built runtime and wait until it is ready (see README)."""
    say = progress or _quiet
    ctx = state.context(project, req.spec)
    svc = ctx.service
    slot = svc.slot(req.slot)
    ctx.guard(route=False)
    rt = _servable(project, ctx, req, "not serving it")
    if not os.access(rt.vllm, os.X_OK):
        raise NotReady(f"runtime {rt.id} has no executable bin/vllm", "rebuild it with `builder build --force`")
    if rt.skipped_gpu_steps():
        say(slot.name, f"note: {rt.id}'s GPU smoke steps were skipped on its build host (no GPU); "
                       "`builder smoke --gpu` on this host runs them")
    key = api_key(svc, required=True)
    for d in (ctx.slots_dir, ctx.logs_dir):
        d.mkdir(parents=True, exist_ok=True)
    with ctx.locked():
        old = ctx.read_record(slot.name)
        if old is not None:
            if process.is_ours(old):
                raise Busy(f"slot {slot.name} already runs {old.get('runtime')} (pid {old.get('pid')}) on port "
                           f"{old.get('port')}", f"stop it first: builder serve stop --slot {slot.name}")
            left = process.members(old)
            if left:
                say(slot.name, f"stopping {len(left)} leftover process(es) of its previous server")
                process.stop(old, term_timeout=min(svc.stop_timeout, 10.0))
            ctx.drop_record(slot.name)
        if not process.port_free(svc.host, slot.port):
            who = process.listeners(slot.port)
            raise Busy(f"port {slot.port} on {svc.host} is already in use"
                       + (f" (pid {', '.join(map(str, who))})" if who else "") + f"; slot {slot.name} cannot start",
                       "stop what listens there, or give the slot another port in the service spec")
        if req.skip_gpu_check:
            say(slot.name, "GPU memory not checked (--skip-gpu-check)")
        else:
            gpus = gpu_memory()
            if gpus is None:
                say(slot.name, "no nvidia-smi on this host: GPU memory not checked")
            else:
                say(slot.name, check_gpu_memory(svc, slot, gpus))
        argv = svc.serve_argv(str(rt.vllm), slot)
        log = ctx.logs_dir / f"{slot.name}-{_stamp()}.log"
        record: dict[str, Any] = {
            "slot": slot.name, "service": svc.name, "runtime": rt.id, "runtime_path": str(rt.path),
            "lock": rt.lock_sha256, "origin": rt.origin, "host": svc.host, "port": slot.port, "url": svc.base_url(slot),
            "model": svc.served_model_name, "log": str(log), "started_at": route.now(), "argv": argv,
        }
        # The token is recorded before the spawn: a builder killed right after it still
        # leaves a record through which `serve stop` finds the server.
        token = process.new_token()
        ctx.write_record(slot.name, {**record, "token": token, "pid": None})
        started = process.start(argv, env=server_env(svc, slot, rt, key), cwd=ctx.state_dir, logfile=log,
                                token=token)
        record.update(started.record())
        ctx.write_record(slot.name, record)
    say(slot.name, f"started {rt.id} as pid {started.pid} on {svc.host}:{slot.port}; log {log}")
    try:
        waited = _wait_ready(ctx, slot, record, started, key, say)
    except BaseException:
        # Not ready, died, or Ctrl-C: never leave a half-started server behind.
        process.stop(record, term_timeout=svc.stop_timeout, handle=started.handle)
        ctx.drop_record(slot.name)
        raise
    record["ready_after"] = round(waited.seconds, 1)
    with ctx.locked():  # what runs now (a console script may have exec'd the runtime's python)
        if process.is_ours(record) and (ctx.read_record(slot.name) or {}).get("token") == record["token"]:
            record.update(process.identity(started.pid))
            ctx.write_record(slot.name, record)
    return {"slot": slot.name, "ready": True, "record": record, "probe": waited.as_dict()}


@dataclass
class _Waited:
    seconds: float
    report: probe_mod.Report

    def as_dict(self) -> dict[str, Any]:
        return self.report.as_dict()


def _wait_ready(ctx: state.Context, slot: Slot, record: Mapping[str, Any], started: process.Started,
                key: str | None, say: Progress) -> _Waited:
    svc = ctx.service
    t0 = time.monotonic()
    deadline = t0 + svc.startup_timeout
    url = svc.root_url(slot)
    log = Path(str(record["log"]))
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
            return _Waited(time.monotonic() - t0, rep)
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


def _drain(url: str, seconds: float, say: Say) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    seen: tuple[int, int] | None = None
    while True:
        got = probe_mod.in_flight(url, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        if got is None:
            say("cannot read /metrics; not draining")
            return {"drained": False, "reason": "no metrics"}
        if got == (0, 0):
            if seen is not None:
                say("drained: no requests running or waiting")
            return {"drained": True, "in_flight": [0, 0]}
        if got != seen:
            say(f"in flight: {got[0]} running, {got[1]} waiting")
            seen = got
        if time.monotonic() >= deadline:
            say(f"still in flight after {seconds:g}s: {got[0]} running, {got[1]} waiting; stopping anyway")
            return {"drained": False, "in_flight": list(got)}
        time.sleep(0.2)


def stop(project: Project, req: StopRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Stop a slot's server: refuse the routed slot (unless forced), drain, SIGTERM, SIGKILL."""
    say = progress or _quiet
    ctx = state.context(project, req.spec, req.route_file)
    svc = ctx.service
    slot = svc.slot(req.slot)
    ctx.guard(route=req.force)
    with ctx.locked():
        cur, routed = _routed_slot(ctx)
        if routed == slot.name and not req.force:
            raise Busy(f"slot {slot.name} is the route ({ctx.route_file} -> {cur.route.url if cur.route else ''}); "
                       "not stopping it", "switch the route first (builder route set OTHER or builder route "
                       "rollback), or pass --force (journaled)")
        rec = ctx.read_record(slot.name)
        if rec is None or not process.members(rec):
            if rec is not None:
                ctx.drop_record(slot.name)
            say(slot.name, "not running")
            return {"slot": slot.name, "was_running": False, "stopped": True}
        if routed == slot.name:
            route.append(ctx.journal, route.Entry(route.new_id(), route.now(), "stop-forced", None,
                                                  cur.route, cur.entry.id if cur.entry else None,
                                                  probe="not run", forced=True))
            say(slot.name, "stopping the routed slot (--force, journaled)")
        out: dict[str, Any] = {"slot": slot.name, "was_running": True, "pid": rec.get("pid")}
        if req.drain and process.is_ours(rec):
            out["drain"] = _drain(svc.root_url(slot), req.drain, lambda m: say(slot.name, m))
        res = process.stop(rec, term_timeout=svc.stop_timeout, say=lambda m: say(slot.name, m))
        out.update({"pids": res.pids, "terminated": res.terminated, "killed": res.killed, "left": res.left,
                    "seconds": round(res.seconds, 2)})
        if res.left:
            raise NotReady(f"slot {slot.name}: pid {', '.join(map(str, res.left))} survived SIGKILL "
                           "(uninterruptible sleep?)", f"inspect with `ps -o pid,stat,wchan,cmd -p "
                           f"{','.join(map(str, res.left))}`; the record is kept")
        ctx.drop_record(slot.name)
    say(slot.name, f"stopped ({'SIGTERM' if res.terminated else 'SIGKILL'}, {res.seconds:.1f}s)")
    out["stopped"] = True
    return out


# --------------------------------------------------------------------------- status, probe, unit


def _slot_status(ctx: state.Context, s: Slot, routed: str | None, key: str | None,
                 deadline: float) -> dict[str, Any]:
    svc = ctx.service
    rec = ctx.read_record(s.name)
    ours = bool(rec) and process.is_ours(rec or {})
    row: dict[str, Any] = {
        "slot": s.name, "port": s.port, "url": svc.base_url(s), "runtime": rec.get("runtime") if rec else None,
            "origin": rec.get("origin", "lock" if rec.get("lock") else None) if rec else None,
        "pid": rec.get("pid") if rec else None, "alive": ours, "ready": False, "verdict": None,
        "running": None, "waiting": None, "routed": routed == s.name,
        "started_at": rec.get("started_at") if rec else None, "log": rec.get("log") if rec else None,
        "record": ("ours" if ours else "stale") if rec else None,
    }
    rep = probe_mod.probe(svc.root_url(s), svc.served_model_name, timeout=max(0.0, deadline - time.monotonic()),
                          api_key=key)
    if rep.verdict == probe_mod.UNREACHABLE:
        row["verdict"] = "unreachable"
        return row
    row.update(ready=rep.ready, verdict=rep.brief())
    left = deadline - time.monotonic()
    got = probe_mod.in_flight(svc.root_url(s), timeout=min(left, 5.0)) if left > 0 else None
    if got is not None:
        row.update(running=got[0], waiting=got[1])
    return row


def status(project: Project, spec: str | None = None, route_file: str | None = None,
           timeout: float = 10.0) -> dict[str, Any]:
    """Per slot: runtime, pid, port, alive, ready, requests in flight; and where the route points.

    The slots are probed side by side, all within one deadline of ``timeout`` seconds.
    """
    from concurrent.futures import ThreadPoolExecutor

    deadline = time.monotonic() + timeout
    ctx = state.context(project, spec, route_file)
    svc = ctx.service
    cur, routed = _routed_slot(ctx)
    key = api_key(svc, required=False)
    slots = list(svc.slots.values())
    with ThreadPoolExecutor(max_workers=max(1, min(len(slots), 8))) as pool:
        rows = list(pool.map(lambda s: _slot_status(ctx, s, routed, key, deadline), slots))
    return {"service": svc.name, "route": {"file": str(ctx.route_file), "slot": routed,
                                           **(cur.route.as_dict() if cur.route else {})} if cur.exists else None,
            "slots": rows}


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
        url, model, key = svc.root_url(s), svc.served_model_name, api_key(svc, required=False)
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
    rt = _servable(project, ctx, req, "not rendering a unit for it")
    ctx.guard(route=False)
    ctx.state_dir.mkdir(parents=True, exist_ok=True)  # the unit's WorkingDirectory
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "PATH": f"{rt.path / 'bin'}:/usr/local/bin:/usr/bin:/bin",
           "PYTHONNOUSERSITE": "1", **_slot_vars(slot)}
    ureq = UnitRequest(service=svc.name, slot=slot.name, runtime=rt.id, argv=svc.serve_argv(str(rt.vllm), slot),
                       env=env, workdir=str(ctx.state_dir), api_key_env=svc.api_key_env,
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
        if rec and rec.get("runtime") and process.members(rec):
            pins.add(str(rec["runtime"]))
    return pins
