"""Helpers shared by the click command modules (click lives only in builder/cli)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from builder.project import Project


def project(ctx: click.Context) -> Project:
    # Imported here: builder.project pulls in packaging, which `builder --help` need not pay for.
    from builder import paths
    from builder.project import Project, find_root

    proj = Project(find_root(ctx.obj.get("project_dir") if ctx.obj else None))
    paths.use_project(proj)  # its envs/host.toml names what the write gate protects
    return proj


def quiet(ctx: click.Context) -> bool:
    return bool(ctx.obj and ctx.obj.get("quiet"))


def echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def progress(ctx: click.Context) -> Any:
    """A progress callback writing to stderr, or a no-op under ``-q``."""
    if quiet(ctx):
        return lambda _t, _m: None

    def say(target: str, message: str) -> None:
        click.echo(f"  {target}: {message}", err=True)

    return say


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain fixed-width text table."""
    cols = [headers, *rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
