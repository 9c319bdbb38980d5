"""Helpers shared by the click command modules (click lives only in builder/cli)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

from builder.errors import exit_help

if TYPE_CHECKING:
    from builder.project import Project
    from builder.report import Progress

C = TypeVar("C", bound=click.Command)


class AppContext(NamedTuple):
    """What the root group's options say, for every command (``ctx.obj``).

    A NamedTuple, not a dataclass: ``builder --help`` must not import dataclasses.
    """

    project_dir: str | None = None
    quiet: bool = False
    verbose: bool = False


#: How a table marks each level of builder.report.Level (check's findings, preflight's checks).
MARK = {"pass": "ok", "info": "info", "warn": "WARN", "unknown": "??", "fail": "FAIL"}


def app(ctx: click.Context) -> AppContext:
    """The root group's options (defaults when a command runs without the root group)."""
    obj = ctx.find_object(AppContext)
    return obj if obj is not None else AppContext()


def project(ctx: click.Context) -> Project:
    # Imported here: builder.project pulls in packaging, which `builder --help` need not pay for.
    from builder import paths
    from builder.project import Project, find_root

    proj = Project(find_root(app(ctx).project_dir))
    paths.use_project(proj)  # its envs/host.toml names what the write gate protects
    paths.on_warning(warn)  # a protected env the gate cannot locate is said before the first write
    return proj


def warn(message: str) -> None:
    """One warning line on stderr (also under -q: a warning is not progress)."""
    click.echo(f"builder: warning: {message}", err=True)


def quiet(ctx: click.Context) -> bool:
    return app(ctx).quiet


def exits(meanings: Mapping[int, str | None] | None = None) -> Callable[[C], C]:
    """Append the exit-code text (:func:`builder.errors.exit_help`) to a command's help.

    Goes above the ``@....command`` decorator.  ``meanings``: the codes this command uses,
    each with its own words (None: the table's); without it, the whole table.
    """
    def add(cmd: C) -> C:
        import inspect  # click dedents a docstring only when it is the whole help

        cmd.help = inspect.cleandoc(cmd.help or "").rstrip() + "\n\n" + exit_help(meanings)
        return cmd

    return add


def echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def progress(ctx: click.Context) -> Progress:
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
