"""``builder lock``, ``builder list`` and ``builder spec``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from builder.cli import options
from builder.cli.app import main
from builder.cli.common import echo, echo_json, error_line, escape, exits, progress, project, table
from builder.errors import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_FS_REFUSED,
    EXIT_OK,
    EXIT_TOOL_FAILED,
    EXIT_TOOL_MISSING,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    UsageError,
)

if TYPE_CHECKING:
    from builder.project import Project


def _selectors(matrix: tuple[str, ...], all_: bool) -> list[str]:
    if all_ and matrix:
        raise UsageError("--all and --matrix are exclusive", "pass one or the other")
    return list(matrix)


@exits({EXIT_OK: None, EXIT_FAILED: "a lock is stale, modified or missing (--check), is not uv's output "
         "(--verify) or would build a package from source", EXIT_USAGE: None,
         EXIT_UNAVAILABLE: "the index is unreachable",
         EXIT_TOOL_MISSING: None, EXIT_TOOL_FAILED: "uv could not resolve the pins", EXIT_BUSY: None,
         EXIT_FS_REFUSED: None})
@main.group("lock", invoke_without_command=True)
@options.matrix(multiple=True, help="Matrix to lock: A, a or matrix-a (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Lock every matrix (the default without --matrix).")
@options.python("Only this Python, e.g. 3.12.")
@click.option("--check", "check", is_flag=True, help="Verify freshness offline; write nothing.")
@click.option("--verify", "verify", is_flag=True,
              help="Re-resolve each lock in a temp dir and require identical bytes; write nothing.")
@click.option("--refresh", "refresh", is_flag=True,
              help="Move each selected spec's exclude-newer to --exclude-newer and re-lock (one transaction).")
@click.option("--exclude-newer", "exclude_newer", metavar="DATE",
              help="With --refresh: the new date, YYYY-MM-DD (default: yesterday, UTC).")
@options.offline("Resolve from uv's cache only.")
@click.option("-j", "--jobs", type=click.IntRange(1, 32), help="Locks resolved at once.")
@click.option("--channel-override", "channel_override", multiple=True, metavar="NAME=URL",
              help="Solve a conda base's channel NAME from URL or a local directory (repeatable).")
@options.as_json("Print results as JSON.")
@click.pass_context
def lock_cmd(ctx: click.Context, matrix: tuple[str, ...], all_: bool, python: str | None,
             check: bool, verify: bool, refresh: bool, exclude_newer: str | None, offline: bool,
             jobs: int | None, channel_override: tuple[str, ...], as_json: bool) -> None:
    """Resolve matrices into PEP 751 locks under locks/ (or --check, --verify or --refresh them).

    \b
    builder lock [--matrix A]...            re-lock from the specs as they are
    builder lock --check                    offline freshness: stale, modified, missing
    builder lock --verify                   re-resolve; is each lock uv's output?
    builder lock --refresh [--exclude-newer DATE]   move the resolution date, re-lock
    builder lock diff [OLD NEW | --git REF] what changed, in packages and CUDA terms
    """
    if ctx.invoked_subcommand is not None:
        given = [n for n, v in (("--matrix", matrix), ("--all", all_), ("--python", python), ("--check", check),
                                ("--verify", verify), ("--refresh", refresh), ("--exclude-newer", exclude_newer),
                                ("--offline", offline), ("--jobs", jobs), ("--json", as_json),
                                ("--channel-override", channel_override)) if v]
        if given:
            raise UsageError(f"{', '.join(given)} before `{ctx.invoked_subcommand}` belongs to `builder lock`",
                             f"put options after the subcommand: builder lock {ctx.invoked_subcommand} ...")
        return
    modes = [n for n, v in (("--check", check), ("--verify", verify), ("--refresh", refresh)) if v]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} are exclusive", "run them one after the other")
    if exclude_newer is not None and not refresh:
        raise UsageError("--exclude-newer needs --refresh", "builder lock --refresh --exclude-newer DATE")
    from builder.lock import resolve as lock

    proj = project(ctx)
    sel = _selectors(matrix, all_)
    if check:
        _check(ctx, proj, sel, python, as_json)
        return
    if verify:
        _verify(ctx, proj, sel, python, offline, jobs, as_json)
        return
    from builder.conda.backend import parse_overrides

    overrides = parse_overrides(channel_override)
    if refresh:
        _refresh(ctx, proj, sel, python, offline, exclude_newer, jobs, overrides, as_json)
        return
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
            echo(error_line(o.error), err=True)
            codes.append(o.error.exit_code)
    if failed:
        # Several locks can fail for different reasons: report the first one's code.
        ctx.exit(codes[0] if codes else EXIT_FAILED)
    if not as_json:
        n = sum(o.changed for o in outcomes)
        echo(f"{len(outcomes)} locks: {n} written, {len(outcomes) - n} unchanged")


def _check(ctx: click.Context, proj: Project, sel: list[str], python: str | None, as_json: bool) -> None:
    from builder.lock import resolve as lock

    states = lock.check_locks(proj, sel, python)
    bad = [s for s in states if not s.ok]
    if as_json:
        echo_json([{"matrix": s.matrix, "python": s.python, "path": str(s.path.relative_to(proj.root)),
                    "state": s.state, "reason": s.reason, "command": s.command} for s in states])
    elif not bad:
        echo(f"all {len(states)} locks are fresh")
    for s in bad:
        if not as_json:
            echo(f"{s.path.relative_to(proj.root)}: {s.state}: {s.reason}; "
                       f"refresh with `{s.command}`", err=True)
    if bad:
        ctx.exit(EXIT_FAILED)


def _verify(ctx: click.Context, proj: Project, sel: list[str], python: str | None, offline: bool,
            jobs: int | None, as_json: bool) -> None:
    from builder.lock import verify

    outcomes = verify.verify_locks(proj, sel, python, offline=offline, jobs=jobs, progress=progress(ctx))
    if as_json:
        echo_json([{"matrix": o.target.matrix.id, "python": o.target.python,
                    "path": str(o.path.relative_to(proj.root)), "state": o.state, "how": o.how or None,
                    "summary": o.summary or None, "error": o.error.line() if o.error else None,
                    "exit_code": o.error.exit_code if o.error else None} for o in outcomes])
    else:
        for o in outcomes:
            rel = o.path.relative_to(proj.root)
            if o.state in ("differs", "missing"):
                echo(f"{rel}: {o.state}: {o.summary}; it is not what uv resolves from "
                           f"envs/{o.target.matrix.name}.toml: regenerate with "
                           f"`builder lock --matrix {o.target.matrix.id} --python {o.target.python}`", err=True)
            elif o.error is not None:
                echo(f"builder: error: {escape(str(rel))}: {o.error.line(escape)}", err=True)
        if all(o.ok for o in outcomes):
            echo(f"all {len(outcomes)} locks are identical to uv's resolution of their specs")
    ctx.exit(verify.exit_code(outcomes))


def _refresh(ctx: click.Context, proj: Project, sel: list[str], python: str | None, offline: bool,
             exclude_newer: str | None, jobs: int | None, overrides: dict[str, str], as_json: bool) -> None:
    from builder.lock import refresh as rf

    if python is not None:
        raise UsageError("--refresh moves a matrix's date for every Python: --python would leave the others stale",
                         "drop --python")
    if offline:
        raise UsageError("--refresh reads the index as of the new date: it cannot run --offline",
                         "drop --offline")
    res = rf.refresh(proj, rf.RefreshRequest(selectors=tuple(sel), exclude_newer=exclude_newer, jobs=jobs,
                                             channel_overrides=overrides), progress(ctx))
    if as_json:
        echo_json({"exclude_newer": res.date,
                   "specs": [{"path": str(c.path.relative_to(proj.root)), "old": c.old, "new": c.new,
                              "written": c.changed} for c in res.specs],
                   "locks": [{"matrix": o.target.matrix.id, "python": o.target.python,
                              "path": str(o.path.relative_to(proj.root)), "state": o.state,
                              "packages": o.packages, "written": o.written} for o in res.locks],
                   "conda_locks": [str(p.relative_to(proj.root)) for p in res.conda_locks]})
        return
    for c in res.specs:
        echo(f"{c.path.relative_to(proj.root)}: exclude-newer {c.old} -> {c.new}"
                   + ("" if c.changed else " (unchanged)"))
    for o in res.locks:
        echo(f"{o.path.relative_to(proj.root)}: {rf.describe(o)}")
    n = sum(o.state != "unchanged" for o in res.locks)
    echo(f"{len(res.locks)} locks: {n} with package changes, {len(res.locks) - n} unchanged"
               + (": see `builder lock diff --git HEAD`" if n else ""))


@exits({EXIT_OK: "no regression", EXIT_FAILED: "regression (a new `fail` finding or a higher native driver floor)",
        EXIT_USAGE: None, EXIT_UNAVAILABLE: "a needed wheel could not be read"})
@lock_cmd.command("diff")
@click.argument("locks", nargs=-1, type=click.Path(dir_okay=False, path_type=Path), metavar="[OLD NEW]")
@click.option("--git", "git_ref", metavar="REF", help="Compare every lock in the working tree with REF's.")
@options.matrix(multiple=True, help="Matrix (A, a or matrix-a): selects locks with --git; names the spec for OLD NEW.")
@options.python("Only this Python, e.g. 3.12 (for OLD NEW: the locks' Python).")
@options.output_format(["text", "md", "json"], default="text", help="md: a pull-request body; json: as --json.")
@options.driver("Judge both locks on this driver (default: the matrix's declared floor).")
@options.gpu_cc()
@options.offline()
@options.cache_dir()
@options.as_json("Print the diff as JSON (as --format json).")
@click.pass_context
def lock_diff(ctx: click.Context, locks: tuple[Path, ...], git_ref: str | None, matrix: tuple[str, ...],
              python: str | None, fmt: str, driver: str | None, gpu_cc: tuple[str, ...], offline: bool,
              cache_dir: Path | None, as_json: bool) -> None:
    """Compare two PEP 751 locks, or the working tree's locks with a git REF (default: --git HEAD).

    Shows packages added, removed, changed and rehashed (same version, other
    file hashes), and the CUDA view of `builder check` for both locks judged on
    the same host: per GPU package the runtime, cudart, cuBLAS and build
    toolkit, the driver floors and the verdict.
    """
    from builder.lock import diff as lockdiff
    from builder.lock import diff_render

    if as_json:
        if fmt != "json" and ctx.get_parameter_source("fmt") is not click.core.ParameterSource.DEFAULT:
            raise UsageError(f"--json and --format {fmt} are exclusive", "pass one of them")
        fmt = "json"
    if locks and len(locks) != 2:
        raise UsageError(f"lock diff takes two lock files (OLD NEW), got {len(locks)}",
                         "builder lock diff OLD NEW, or builder lock diff --git REF")
    if locks and git_ref is not None:
        raise UsageError("OLD NEW and --git are exclusive", "pass two files or one revision")
    if python is not None and not re.fullmatch(r"(py|python)?3\.\d{1,2}", python):
        raise UsageError(f"not a Python version: {python!r}", "e.g. --python 3.12")
    opts = lockdiff.DiffOptions(python=python.removeprefix("python").removeprefix("py") if python else None,
                                driver=driver, ccs=tuple(gpu_cc), offline=offline, cache_dir=cache_dir)
    if locks:
        if len(matrix) > 1:
            raise UsageError("OLD NEW takes at most one --matrix", "name the matrix whose spec the locks follow")
        try:
            proj: Project | None = project(ctx)
        except UsageError:
            proj = None  # foreign locks outside any project: host facts come from options
        diffs = [lockdiff.diff_files(proj, locks[0], locks[1], selector=matrix[0] if matrix else None, opts=opts)]
    else:
        diffs = lockdiff.diff_git(project(ctx), git_ref or "HEAD", selectors=list(matrix), python=python,
                                  opts=opts)
    if fmt == "json":
        if locks:
            echo_json(diffs[0].to_json())
        else:
            echo_json({"ref": git_ref or "HEAD", "regression": any(d.regression for d in diffs),
                       "locks_with_package_changes": sum(1 for d in diffs if d.packages.count),
                       "locks": [d.to_json() for d in diffs]})
    elif fmt == "md":
        echo(diff_render.render_md(diffs), nl=False)
    else:
        echo(diff_render.render_text(diffs))
    ctx.exit(EXIT_FAILED if any(d.regression for d in diffs) else EXIT_OK)


@main.command("list")
@options.as_json("Print as JSON.")
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
    echo(table([[f"matrix-{r['matrix']}", r["python"], r["driver_floor"], r["cuda_track"],
                       r["torch"], r["vllm"], r["state"]] for r in rows],
                     ["matrix", "python", "driver>=", "cuda", "torch", "vllm", "lock"]))
    from builder.cli.runtime_cmds import runtime_rows, runtime_table

    runtimes = runtime_rows(proj, None)
    if runtimes:  # built and adopted alike (`builder runtime list --json` has them as JSON)
        echo("")
        echo(runtime_table(runtimes))


@main.group("spec")
def spec_grp() -> None:
    """Validate and edit matrix specs (comments and layout are kept)."""


@spec_grp.command("set")
@click.argument("matrix")
@click.argument("key")
@click.argument("value")
@options.as_json("Print the change as JSON.")
@click.pass_context
def spec_set(ctx: click.Context, matrix: str, key: str, value: str, as_json: bool) -> None:
    """Set KEY (dotted, e.g. torch.version) of MATRIX to VALUE."""
    from builder import spec_edit

    proj = project(ctx)
    path = proj.matrix_path(matrix)
    old, new = spec_edit.set_value(path, key, value, project=proj)
    if as_json:
        echo_json({"path": str(path.relative_to(proj.root)), "key": key, "old": old, "new": new})
    else:
        echo(f"{path.relative_to(proj.root)}: {key}: {old!r} -> {new!r}")
    echo("locks of this matrix are now stale: run `builder lock --matrix "
               f"{path.stem.removeprefix('matrix-')}`", err=True)


@exits({EXIT_OK: "every spec is valid", EXIT_USAGE: "a spec is invalid (with --json too)"})
@spec_grp.command("validate")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@options.as_json("Print every spec and every problem as JSON.")
@click.pass_context
def spec_validate(ctx: click.Context, files: tuple[Path, ...], as_json: bool) -> None:
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
    if as_json:
        shown = [str(p.relative_to(proj.root)) if proj and p.is_relative_to(proj.root) else str(p) for p in paths]
        echo_json({"valid": not problems, "specs": shown, "problems": problems})
        ctx.exit(EXIT_USAGE if problems else EXIT_OK)
    if problems:
        raise SpecError(problems, "fix the spec and run the command again")
    echo(f"{len(paths)} specs valid")


