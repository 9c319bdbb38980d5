"""``builder lock``, ``builder list`` and ``builder spec``."""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli import main
from builder.cli.common import echo_json, progress, project, table
from builder.errors import EXIT_FAILED, UsageError


def _selectors(matrix: tuple[str, ...], all_: bool) -> list[str]:
    if all_ and matrix:
        raise UsageError("--all and --matrix are exclusive", "pass one or the other")
    return list(matrix)


@main.command("lock")
@click.option("-m", "--matrix", multiple=True, help="Matrix to lock: A, a or matrix-a (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Lock every matrix (the default without --matrix).")
@click.option("-p", "--python", help="Only this Python, e.g. 3.12.")
@click.option("--check", "check", is_flag=True, help="Verify freshness offline; write nothing.")
@click.option("--offline", is_flag=True, help="Resolve from uv's cache only.")
@click.option("-j", "--jobs", type=click.IntRange(1, 32), help="Locks resolved at once.")
@click.option("--channel-override", "channel_override", multiple=True, metavar="NAME=URL",
              help="Solve a conda base's channel NAME from URL or a local directory (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.pass_context
def lock_cmd(ctx: click.Context, matrix: tuple[str, ...], all_: bool, python: str | None,
             check: bool, offline: bool, jobs: int | None, channel_override: tuple[str, ...],
             as_json: bool) -> None:
    """Resolve matrices into PEP 751 locks under locks/ (or --check them)."""
    from builder.lock import resolve as lock

    proj = project(ctx)
    sel = _selectors(matrix, all_)
    if check:
        states = lock.check_locks(proj, sel, python)
        bad = [s for s in states if not s.ok]
        if as_json:
            echo_json([{"matrix": s.matrix, "python": s.python, "path": str(s.path.relative_to(proj.root)),
                        "state": s.state, "reason": s.reason, "command": s.command} for s in states])
        elif not bad:
            click.echo(f"all {len(states)} locks are fresh")
        for s in bad:
            if not as_json:
                click.echo(f"{s.path.relative_to(proj.root)}: {s.state}: {s.reason}; "
                           f"refresh with `{s.command}`", err=True)
        if bad:
            ctx.exit(EXIT_FAILED)
        return
    from builder.conda.backend import parse_overrides

    overrides = parse_overrides(channel_override)
    outcomes = lock.run_lock(proj, lock.LockRequest(selectors=tuple(sel), python=python, offline=offline, jobs=jobs,
                                                        channel_overrides=overrides), progress(ctx))
    failed = [o for o in outcomes if o.error is not None]
    if as_json:
        echo_json([{"matrix": o.target.matrix.id, "python": o.target.python,
                    "path": str(o.path.relative_to(proj.root)), "changed": o.changed,
                    "seconds": round(o.seconds, 2),
                    "conda_lock": str(o.conda_path.relative_to(proj.root)) if o.conda_path else None,
                    "conda_solver": o.conda_solver or None,
                    "error": o.error.line() if o.error else None} for o in outcomes])
    codes = []
    for o in failed:
        if o.error is not None:
            click.echo(f"builder: error: {o.error.line()}", err=True)
            codes.append(o.error.exit_code)
    if failed:
        # Several locks can fail for different reasons: report the first one's code.
        ctx.exit(codes[0] if codes else EXIT_FAILED)
    if not as_json:
        n = sum(o.changed for o in outcomes)
        click.echo(f"{len(outcomes)} locks: {n} written, {len(outcomes) - n} unchanged")


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show the matrices, their Pythons and the state of each lock."""
    from builder.lock import state as lockstate

    proj = project(ctx)
    rows = []
    for m in proj.matrices():
        for py in m.pythons:
            st = lockstate.lock_state(proj.locks, m, py)
            rows.append({"matrix": m.id, "title": m.title, "python": py,
                         "driver_floor": m.driver_floor, "cuda_track": m.cuda_track,
                         "torch": f"{m.torch.version} ({m.torch.variant}, {m.torch.source})",
                         "vllm": f"{m.vllm.version} ({m.vllm.variant}, {m.vllm.source})",
                         "lock": str(st.path.relative_to(proj.root)), "state": st.state})
    if as_json:
        echo_json(rows)
        return
    click.echo(table([[f"matrix-{r['matrix']}", r["python"], r["driver_floor"], r["cuda_track"],
                       r["torch"], r["vllm"], r["state"]] for r in rows],
                     ["matrix", "python", "driver>=", "cuda", "torch", "vllm", "lock"]))


@main.group("spec")
def spec_grp() -> None:
    """Validate and edit matrix specs (comments and layout are kept)."""


@spec_grp.command("set")
@click.argument("matrix")
@click.argument("key")
@click.argument("value")
@click.pass_context
def spec_set(ctx: click.Context, matrix: str, key: str, value: str) -> None:
    """Set KEY (dotted, e.g. torch.version) of MATRIX to VALUE."""
    from builder import spec_edit

    proj = project(ctx)
    path = proj.matrix_path(matrix)
    old, new = spec_edit.set_value(path, key, value)
    click.echo(f"{path.relative_to(proj.root)}: {key}: {old!r} -> {new!r}")
    click.echo("locks of this matrix are now stale: run `builder lock --matrix "
               f"{path.stem.removeprefix('matrix-')}`", err=True)


@spec_grp.command("validate")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def spec_validate(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Validate matrix specs (default: all of envs/ and host.toml)."""
    from builder.errors import SpecError
    from builder.spec import load_host, load_matrix

    proj = project(ctx) if not files else None
    paths = list(files) or [*proj.matrix_paths(), proj.envs / "host.toml"]  # type: ignore[union-attr]
    problems: list[str] = []
    for p in paths:
        try:
            (load_host if p.name == "host.toml" else load_matrix)(p)
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems, "fix the spec and run the command again")
    click.echo(f"{len(paths)} specs valid")


