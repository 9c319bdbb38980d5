"""``builder host snapshot``, ``builder preflight``, ``builder runbook`` and
``builder verify-driver``: the driver-upgrade commands (read-only on the host)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from builder.cli import options
from builder.cli.app import main
from builder.cli.common import MARK, echo, echo_json, exits, project, quiet, table
from builder.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

if TYPE_CHECKING:
    from builder.driver.preflight import Report




def _render(ctx: click.Context, report: Report, as_json: bool) -> None:
    if as_json:
        echo_json(report.to_json())
    else:
        echo(f"{report.command} {report.matrix} ({report.extra.get('source', '')})")
        echo(table([[MARK[c.level], c.id, c.message] for c in report.checks],
                         ["", "check", "result"]))
        steps = [c for c in report.checks if c.next and c.level != "pass"]
        if steps and not quiet(ctx):
            echo("\nnext steps:")
            for c in steps:
                echo(f"  {c.id}: {c.next}")
        echo(f"\nverdict: {report.verdict}")
    ctx.exit(report.exit_code)


@main.group("host")
def host_grp() -> None:
    """Read the GPU host's driver state (read-only)."""


@host_grp.command("snapshot")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@options.root()
@click.pass_context
def snapshot_cmd(ctx: click.Context, file: str, root: str | None) -> None:
    """Capture every host probe's raw output into FILE (JSON, no secrets); `-` prints it.

    Run it on the GPU host, copy FILE anywhere, and analyse it with
    `--from-snapshot FILE`.  Missing tools are recorded, not errors.
    """
    from builder.ops import driver as hostops

    snap, text = hostops.take_snapshot(project(ctx), file, root)
    if file == hostops.STDOUT:
        echo(text, nl=False)
    if not quiet(ctx):
        for r in snap.records.values():
            state = ("ok" if r.ok else "missing" if r.missing else "timed out" if r.timed_out
                     else f"exit {r.exit}")
            echo(f"  {r.id}: {state} ({r.duration:.2f}s)", err=True)
    recs = list(snap.records.values())
    ok = sum(r.ok for r in recs)
    missing = sum(r.missing for r in recs)
    echo(f"wrote {'standard output' if file == hostops.STDOUT else file}: {len(recs)} probes: {ok} answered, "
               f"{missing} tool or file absent, {len(recs) - ok - missing} failed or timed out",
               err=file == hostops.STDOUT)


@exits({EXIT_OK: "ready (warnings allowed)", EXIT_FAILED: "not ready", EXIT_USAGE: None,
        EXIT_UNAVAILABLE: "cannot probe (something needed could not be read; the report says what)"})
@main.command("preflight")
@options.matrix(required=True)
@options.from_snapshot()
@options.as_json("Print the report as JSON.")
@click.pass_context
def preflight_cmd(ctx: click.Context, matrix: str, from_snapshot: Path | None, as_json: bool) -> None:
    """Check the host is ready for MATRIX's driver step-up."""
    from builder.ops import driver as hostops

    _render(ctx, hostops.run_preflight(project(ctx), matrix, from_snapshot), as_json)


@main.command("runbook")
@options.matrix(required=True)
@options.output_format(["md", "sh"], default="md",
                       help="Markdown, or a commented shell script with one function per step.")
@options.from_snapshot()
@options.output("Write to this file (atomically) instead of stdout; `-` is stdout.")
@click.pass_context
def runbook_cmd(ctx: click.Context, matrix: str, fmt: str, from_snapshot: Path | None,
                output: str | None) -> None:
    """Render the operator's driver-upgrade runbook for MATRIX (builder runs none of it)."""
    from builder.ops import driver as hostops

    proj = project(ctx)
    if output is not None and output != hostops.STDOUT:
        hostops.gate_output(proj, output, "write the runbook to")  # refuse before any probe runs
    text = hostops.render_runbook(proj, matrix, fmt, from_snapshot=from_snapshot)
    if output is None or output == hostops.STDOUT:
        echo(text, nl=False)
        return
    written = hostops.write_output(proj, output, text, what="write the runbook to")
    if fmt == "sh":
        written.chmod(written.stat().st_mode | 0o100)
    if not quiet(ctx):
        echo(f"wrote {output}", err=True)


@exits({EXIT_OK: "verified", EXIT_FAILED: "a check failed", EXIT_USAGE: None,
        EXIT_UNAVAILABLE: "something could not be checked"})
@main.command("verify-driver")
@options.matrix(required=True)
@options.from_snapshot()
@options.as_json("Print the report as JSON.")
@click.option("--skip-torch", is_flag=True, help="Do not check that each runtime's torch sees every GPU.")
@options.root()
@options.runtime_id("Check this runtime's torch (any runtime under the root, built or adopted) instead of the "
                    "matrix's runtimes.")
@click.pass_context
def verify_driver_cmd(ctx: click.Context, matrix: str, from_snapshot: Path | None, as_json: bool,
                      skip_torch: bool, root: str | None, runtime_id: str | None) -> None:
    """After the reboot: verify the driver for MATRIX.

    Verified only when module and userspace agree, the floor is met, every GPU
    is visible with its compute capability and each runtime's torch sees
    them all.
    """
    from builder.ops import driver as hostops

    _render(ctx, hostops.run_verify(project(ctx), matrix, from_snapshot, skip_torch=skip_torch, root=root,
                                    runtime_id=runtime_id),
            as_json)
