"""Helpers shared by the click command modules (click lives only in builder/cli)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

from builder.errors import BuilderError, exit_help

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
    click.echo(f"builder: warning: {escape(message)}", err=True)


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


# --------------------------------------------------------------------------- the terminal
# Bytes from servers, files and arguments never reach the terminal raw: every line builder
# prints goes through echo(), every table cell and error line through escape().  C0 and C1
# control characters, DEL and the bidirectional overrides are shown as escapes (\x1b, \r,
# \u202e): an OSC title sequence, a NUL or a carriage return from a hostile server stays text.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROLS = [chr(i) for i in range(0x20)] + ["\x7f"] + [chr(i) for i in range(0x80, 0xA0)] + list(_BIDI)
_ESCAPES = {ord(c): _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
            for c in _CONTROLS}
_ESCAPES_KEEP_LINES = {k: v for k, v in _ESCAPES.items() if chr(k) not in "\n\t"}


def escape(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape: one line (or, with
    ``keep_newlines``, the lines and tabs the caller put there, nothing else)."""
    return text.translate(_ESCAPES_KEEP_LINES if keep_newlines else _ESCAPES)


def echo(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print one message of a command: its own newlines kept, any other control character escaped."""
    click.echo(escape(message, keep_newlines=True), err=err, nl=nl)


def error_line(exc: BuilderError) -> str:
    """``builder: error: ...`` for ``exc``, each part escaped (a SpecError's problems one per line)."""
    return f"builder: error: {exc.line(escape)}"


def echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))  # JSON escapes control characters


def progress(ctx: click.Context) -> Progress:
    """A progress callback writing to stderr, or a no-op under ``-q``."""
    if quiet(ctx):
        return lambda _t, _m: None

    def say(target: str, message: str) -> None:
        click.echo(escape(f"  {target}: {message}"), err=True)

    return say


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain fixed-width text table; every cell on one line, its control characters escaped."""
    cols = [[escape(str(c)) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cols) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()

    return "\n".join([line(cols[0]), line(["-" * w for w in widths]), *map(line, cols[1:])])
