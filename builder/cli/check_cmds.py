"""``builder check``: compatibility of locks with each other and with the host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from builder.cli import options
from builder.cli.app import main
from builder.cli.common import MARK, echo, echo_json, exits, progress, project, table
from builder.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, UsageError


def _packages_rows(rep: Any) -> list[list[str]]:
    rows = []
    for name, p in sorted(rep.packages.items()):
        i = p.identity
        if i is None or (i.kind in ("name", "version") and not i.runtime and not i.cublas):
            continue
        major = "/".join(str(m) for m in sorted(i.major)) or "?"
        rows.append([name, p.version, major, i.runtime or i.release or "-", i.cudart_soname or "-",
                     i.build_toolkit or (f"{i.build_release} (PTX ISA)" if i.build_release else "-"),
                     i.cublas or "-", i.kind if not i.jit_only else "pure-python"])
    return rows


def render_report(rep: Any, root: Path | None) -> str:
    """Human view of one lock's report."""
    where = rep.lock
    if root is not None:
        try:
            where = str(Path(rep.lock).resolve().relative_to(root))
        except ValueError:
            pass
    d = rep.driver
    title = f"matrix-{rep.matrix} py{rep.python}" if rep.matrix else f"py{rep.python}"
    lines = [f"{title}: {where}", f"  verdict: {rep.verdict.upper()}",
             f"  driver: native >= {d['native_min'] or '-'}"
             + (" (a lower bound)" if d.get("native_is_lower_bound") else "")
             + (f" ({d['native_from']})" if d["native_from"] else "")
             + f"; minor-version compat >= {d['compat_min'] or '-'}; declared >= {d['declared'] or '-'}; "
             f"host {d['host'] or 'unknown'} ({d['host_origin']})", ""]
    rows = _packages_rows(rep)
    if rows:
        tbl = table(rows, ["package", "version", "major", "runtime", "cudart", "built with", "cuBLAS",
                           "evidence"])
        lines += ["  " + ln for ln in tbl.splitlines()] + [""]
    for f in rep.findings:
        lines.append(f"  [{MARK[f.level]:>4}] {f.id}: {f.message}")
    return "\n".join(lines)


def render_chooser(rows: list[dict[str, Any]]) -> str:
    """The matrix chooser: one row per matrix and Python."""
    return table([[f"matrix-{r['matrix']}", r["python"], r["native_floor"] or "-", r["declared_floor"] or "-",
                   r["host_driver"] or "unknown", r["verdict"].upper(), r["blocker"]] for r in rows],
                 ["matrix", "python", "native floor", "declared floor", "host driver", "verdict", "blocked by"])


@exits({EXIT_OK: "pass or warn", EXIT_FAILED: "fail (or warn with --strict)", EXIT_USAGE: None,
        EXIT_UNAVAILABLE: "a needed wheel could not be read and the cache has no answer"})
@main.command("check")
@options.matrix(multiple=True, help="Matrix to check: A, a or matrix-a (repeatable).")
@options.python("Only this Python, e.g. 3.12.")
@click.option("--lock", "lock_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Check this PEP 751 lock instead of a matrix's.")
@options.driver("Host NVIDIA driver, e.g. 575.57.08 (default: envs/host.toml).")
@options.gpu_cc()
@click.option("--glibc", help="Host glibc, e.g. 2.35.")
@click.option("--probe", is_flag=True, help="Read driver and GPUs from this machine's nvidia-smi.")
@options.as_json("Print one JSON object.")
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@options.offline()
@click.option("--deep", is_flag=True,
              help="Read vLLM's main extension itself (hundreds of MB by range requests, cached by wheel "
                   "sha256) instead of builder's shipped kernel data.")
@options.cache_dir()
@click.pass_context
def check_cmd(ctx: click.Context, matrix: tuple[str, ...], python: str | None, lock_file: Path | None,
              driver: str | None, gpu_cc: tuple[str, ...], glibc: str | None, probe: bool, as_json: bool,
              strict: bool, offline: bool, deep: bool, cache_dir: Path | None) -> None:
    """Check locks for CUDA/torch/vLLM compatibility with each other and the host.

    Without --matrix or --lock every matrix is checked and the matrix chooser is
    printed.
    """
    from builder.check.pipeline import CheckRequest, run_check

    if lock_file is not None and matrix:
        raise UsageError("--lock and --matrix are exclusive", "pass one or the other")
    try:
        proj = project(ctx)
    except UsageError:
        if lock_file is None:
            raise
        proj = None  # a foreign lock outside any project: host facts come from options
    req = CheckRequest(selectors=tuple(matrix), python=python, lock=lock_file, driver=driver, ccs=tuple(gpu_cc),
                       glibc=glibc, probe=probe, offline=offline, deep=deep, cache_dir=cache_dir)
    res = run_check(proj, req, progress(ctx))
    root = proj.root if proj is not None else None
    if as_json:
        if len(res.reports) == 1 and not res.chooser:
            echo_json(res.reports[0].to_json())
        else:
            echo_json({"verdict": res.verdict, "chooser": res.chooser, "fetched": res.fetched,
                       "reports": [r.to_json() for r in res.reports]})
    elif res.chooser:
        echo("matrix chooser (host driver from " + res.reports[0].driver["host_origin"] + "):")
        echo(render_chooser(res.chooser))
        for r in res.reports:
            bad = [f for f in r.findings if f.level in ("warn", "fail")]
            if bad:
                echo(f"\nmatrix-{r.matrix} py{r.python}:")
                echo("\n".join(f"  [{MARK[f.level]:>4}] {f.id}: {f.message}" for f in bad))
        echo("\ndetails: builder check --matrix ID --python X.Y")
    else:
        echo("\n\n".join(render_report(r, root) for r in res.reports))
    failed = res.verdict == "fail" or (strict and res.verdict == "warn")
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)
