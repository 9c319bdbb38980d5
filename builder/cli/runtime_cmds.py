"""``builder build``, ``builder smoke`` and ``builder doctor``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from builder.cli import options
from builder.cli.app import main
from builder.cli.common import echo, echo_json, exits, progress, project, quiet, table, warn
from builder.errors import EXIT_FAILED, BuilderError


def _smoke_table(report: Any) -> str:
    return table([[s.name, s.status, s.reason] for s in report.steps], ["step", "status", "reason"])


def _tally(steps: Any) -> str:
    n = {k: sum(s.status == k for s in steps) for k in ("pass", "fail", "skipped")}
    return f"{n['pass']} pass, {n['fail']} fail, {n['skipped']} skipped"


def _smoke_summary(report: Any) -> str:
    return _tally(report.steps)


@main.command("build")
@options.matrix(required=True, help="Matrix to build: A, a or matrix-a.")
@options.python("Python of the matrix, e.g. 3.12 (default: each of its Pythons).")
@click.option("--interpreter", type=click.Path(dir_okay=False), help="Base the runtime on this python executable.")
@options.root()
@options.force("Rebuild even if a runtime of this lock exists.")
@options.base("Environment base (default: conda when the matrix declares [conda], else venv).")
@options.cache_dir("uv cache (default: $UV_CACHE_DIR, else uv's).")
@options.gpu()
@options.as_json("Print the results as JSON.")
@click.pass_context
def build_cmd(ctx: click.Context, matrix: str, python: str | None, interpreter: str | None, root: str | None,
              force: bool, base: str | None, cache_dir: Path | None, gpu: bool | None, as_json: bool) -> None:
    """Build an isolated runtime from the committed lock, smoke-test it, switch it in."""
    from builder import protect
    from builder.project import select_pythons
    from builder.runtime import build as runtime

    proj = project(ctx)
    guard = protect.for_project(proj)
    pythons = select_pythons(proj.matrix(matrix), python)
    pinned: frozenset[str] = frozenset()
    if force:  # only a forced rebuild replaces a runtime: keep what serving depends on
        from builder.serve.service import pinned_runtimes

        pinned = frozenset(pinned_runtimes(proj))
    results = []
    for py in pythons:
        req = runtime.BuildRequest(matrix=matrix, python=py, root=root, interpreter=interpreter, force=force,
                                   base=base, cache_dir=str(cache_dir) if cache_dir else None, gpu=gpu,
                                   pinned=pinned)
        res = runtime.build(proj, req, guard, progress=progress(ctx))
        results.append(res)
        if as_json:
            continue
        m = res.manifest
        if res.status == "exists":
            echo(f"{res.name}: already built from this lock ({m.created_at}); nothing to do "
                       f"(--force rebuilds)")
        else:
            t = m.timings
            echo(f"{res.name}: {res.status} in {t['total']:.1f}s (install {t['sync']:.1f}s, "
                       f"smoke {t['smoke']:.1f}s)")
        echo(f"  path:   {res.path}")
        if m.interpreter is not None:
            i = m.interpreter
            echo(f"  python: {i.version} from {i.source} ({i.origin}): {i.reason}")
        echo(f"  smoke:  {_tally(m.smoke.steps)}")
        if not quiet(ctx):
            echo(table([[s.step, s.status, s.reason] for s in m.smoke.steps], ["step", "status", "reason"]))
    if as_json:
        echo_json([r.as_dict() for r in results])


@main.command("smoke")
@options.matrix(help="Matrix whose built runtime to test: A, a or matrix-a.")
@options.python("Python of the matrix, e.g. 3.12 (default: each of its Pythons).")
@click.option("--env", "env_python", type=click.Path(dir_okay=False),
              help="Test the environment of this python instead (e.g. an existing env); "
                   "with --matrix, its identity is compared with that matrix's lock.")
@options.runtime_id("Test any runtime under the root by its id (built or adopted; `builder runtime list`).")
@options.root("Runtimes root (as for build).")
@options.base("Base the runtime was built with (default: as for build).")
@options.gpu()
@options.as_json("Print the results as JSON.")
@click.pass_context
def smoke_cmd(ctx: click.Context, matrix: str | None, python: str | None, env_python: str | None,
              runtime_id: str | None, root: str | None, base: str | None, gpu: bool | None, as_json: bool) -> None:
    """Smoke-test a built runtime (read-only): versions, CUDA identity, imports, vllm --help, GPU."""
    from builder.errors import UsageError
    from builder.project import select_pythons
    from builder.runtime import build as runtime
    from builder.runtime import smoke

    proj = project(ctx)
    reports: list[tuple[str, Any]] = []
    if runtime_id and (env_python or matrix):
        raise UsageError("pass one of --runtime ID, --matrix (a built runtime) or --env PYTHON")
    if runtime_id:
        path, rep = runtime.smoke_named(proj, runtime_id, root=root, gpu=gpu, progress=progress(ctx))
        reports.append((str(path), rep))
    elif env_python:
        expected = None
        if matrix:
            m = proj.matrix(matrix)
            py = select_pythons(m, python)[0] if python else None
            if py is None:
                raise UsageError("--env with --matrix needs --python X.Y to pick the lock")
            lock = runtime.checked_lock(proj, m, py)
            expected = smoke.expected_for(m, lock)
        say = progress(ctx)
        reports.append((env_python, smoke.run_smoke(env_python, expected, gpu=gpu,
                                                    progress=lambda m: say(env_python, m))))
    else:
        if not matrix:
            raise UsageError("pass --matrix (a built runtime), --runtime ID (any runtime) or --env PYTHON "
                             "(an existing env)")
        for py in select_pythons(proj.matrix(matrix), python):
            path, rep = runtime.smoke_runtime(proj, matrix, py, root=root, base=base, gpu=gpu, progress=progress(ctx))
            reports.append((str(path), rep))
    if as_json:
        echo_json([{"runtime": where, **rep.as_dict()} for where, rep in reports])
    else:
        for where, rep in reports:
            echo(f"{where}: {_smoke_summary(rep)} ({rep.seconds:.1f}s)")
            echo(_smoke_table(rep))
    if any(not rep.ok for _w, rep in reports):
        ctx.exit(EXIT_FAILED)


@main.command("doctor")
@options.interpreter_python()
@options.as_json("Print the report as JSON.")
@click.pass_context
def doctor_cmd(ctx: click.Context, python: str | None, as_json: bool) -> None:
    """Inspect any environment read-only (QL_1 included): versions, CUDA identity, consistency, lock."""
    from builder import paths, protect
    from builder.project import Project
    from builder.runtime import doctor

    proj: Project | None
    try:
        proj = project(ctx)
    except BuilderError:
        proj = None  # doctor works outside a project; it just has no locks to compare
    target = python or doctor.default_python()
    guard = protect.for_project(proj) if proj else protect.resolve()
    hit = guard.whole().match(target)  # the whole set: doctor names why (conda env QL_1, not just "active")
    unguarded = [paths.unguarded_message(n) for n in guard.unlocatable()]
    for line in unguarded:
        warn(line)
    locks = sorted(proj.locks.glob("matrix-*/pylock.*.toml")) if proj else []
    rep = doctor.doctor(target, [(str(p.relative_to(proj.root)) if proj else str(p), p) for p in locks],
                        protected_why=hit.why if hit else None)
    data = rep.as_dict()
    data["unguarded"] = unguarded
    if as_json:
        echo_json(data)
        return
    py = data["python"]
    kind = "conda env" if py["conda"] else "venv" if py["venv"] else "installation"
    echo(f"python: {py['version']} ({kind} at {py['prefix']}, {py['packages']} packages)"
               + (f"; protected: {py['protected']}" if py["protected"] else ""))
    for hidden in py.get("shadowed", []):
        echo(f"  shadowed (not imported): {hidden}")
    for comp in ("torch", "vllm"):
        c = data[comp]
        if not c.get("installed"):
            echo(f"{comp}: not installed")
            continue
        extra = f", torch.version.cuda {c['cuda']}" if comp == "torch" else ""
        echo(f"{comp}: {c['version']} (__version__ {c['__version__'] or 'unknown'}{extra}); "
                   f"cudart {c['cudart_soname'] or 'unknown'}, built with CUDA {c['toolkit'] or 'unknown'}")
    cons = data["consistency"]
    echo("dependencies: consistent" if cons["ok"] else f"dependencies: {len(cons['problems'])} problems")
    for p in cons["problems"]:
        echo(f"  {p}")
    lk = data["lock"]
    if lk is None:
        echo("lock: no committed locks to compare with")
    elif lk["exact"]:
        echo(f"lock: matches {lk['lock']}")
    else:
        echo(f"lock: matches none; closest {lk['lock']} ({len(lk['missing'])} missing, "
                   f"{len(lk['different'])} different, {len(lk['extra'])} extra)")


@main.group("runtime")
def runtime_grp() -> None:
    """Runtimes under the runtimes root: list them, adopt an existing environment."""


@exits({0: "adopted (or adopted already)", 1: "smoke failed or nothing to serve: nothing adopted", 2: None,
        6: "the environment is, or runs from, a protected one", 7: None, 8: None})
@runtime_grp.command("adopt")
@options.interpreter_python(required=True, help="Interpreter of the environment to adopt (e.g. /opt/vllm/bin/python).")
@options.root("Runtimes root (as for build).")
@options.force("Adopt again (and smoke again) though it is adopted already.")
@options.gpu()
@options.as_json("Print the result as JSON.")
@click.pass_context
def adopt_cmd(ctx: click.Context, python: str, root: str | None, force: bool, gpu: bool | None,
              as_json: bool) -> None:
    """Serve an environment builder did not build: read it (read-only), smoke-test it, record it.

    The runtime points at the environment (nothing is copied or written into it) and says
    where it came from: adopted, no lock, no hash verification.  A protected environment
    (QL_1), or one that runs from it, is refused; a failed smoke test adopts nothing.
    """
    from builder import protect
    from builder.runtime import adopt

    proj = project(ctx)
    res = adopt.adopt(proj, adopt.AdoptRequest(python=python, root=root, gpu=gpu, force=force),
                      protect.for_project(proj), progress=progress(ctx))
    if as_json:
        echo_json(res.as_dict())
        return
    m = res.manifest
    env = m.environment
    if res.status == "exists":
        echo(f"{res.name}: already adopted ({m.created_at}); nothing to do (--force adopts again)")
    else:
        echo(f"{res.name}: {res.status} in {m.timings.get('total', 0.0):.1f}s "
                   f"(smoke {m.timings.get('smoke', 0.0):.1f}s)")
    echo(f"  path:   {res.path}")
    if env is not None:
        echo(f"  env:    {env.prefix} ({env.kind}, Python {env.version}, {env.packages} distributions)")
        torch, vllm = (c.version if c else "-" for c in (env.torch, env.vllm))
        echo(f"  torch:  {torch}; vllm: {vllm}")
    echo(f"  origin: {m.describe_origin()}")
    echo(f"  smoke:  {_tally(m.smoke.steps)}")
    if not quiet(ctx):
        echo(table([[s.step, s.status, s.reason] for s in m.smoke.steps], ["step", "status", "reason"]))


def runtime_rows(proj: Any, root: str | None) -> list[dict[str, Any]]:
    """One row per runtime under the root (built or adopted), for `runtime list` and `list`."""
    from builder.runtime import layout

    rows = []
    for rt in layout.discover(layout.runtimes_root(proj, root)):
        m = rt.manifest
        env = m.environment
        rows.append({"id": rt.name.name, "origin": m.origin, "python": m.python, "matrix": m.matrix,
                     "base": m.base, "lock": m.lock.path if m.lock else None,
                     "lock_sha256": m.lock_sha256,
                     "environment": env.prefix if env else None,
                     "torch": env.torch.version if env and env.torch else None,
                     "vllm": env.vllm.version if env and env.vllm else None,
                     "created_at": m.created_at, "smoke": _tally(m.smoke.steps),
                     "servable": m.smoke.problem() is None, "path": str(rt.path)})
    return rows


def runtime_table(rows: list[dict[str, Any]]) -> str:
    return table([[r["id"], r["origin"], r["python"],
                   r["lock"] if r["origin"] == "lock" else f"{r['environment']} (torch {r['torch']}, vllm {r['vllm']})",
                   r["smoke"]] for r in rows], ["runtime", "origin", "python", "from", "smoke"])


@runtime_grp.command("list")
@options.root("Runtimes root (as for build).")
@options.as_json("Print as JSON.")
@click.pass_context
def runtime_list_cmd(ctx: click.Context, root: str | None, as_json: bool) -> None:
    """Every finished runtime under the root: built from a lock, or adopted."""
    rows = runtime_rows(project(ctx), root)
    if as_json:
        echo_json(rows)
    elif rows:
        echo(runtime_table(rows))
    else:
        echo("no runtimes (builder build, builder runtime adopt)")
