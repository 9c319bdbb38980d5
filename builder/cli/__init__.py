"""The click layer: the only package that imports click.

Commands build a request, call one core function and render the result.  Every
:class:`~builder.errors.BuilderError` becomes one line on stderr and its exit
code here, in :meth:`BuilderGroup.invoke`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from builder import __version__
from builder.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, BuilderError


class BuilderGroup(click.Group):
    """Maps builder errors to one clear line and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BuilderError as exc:
            click.echo(f"builder: error: {exc.line()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("builder: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug: one line, the traceback only with -v
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"builder: internal error: {type(exc).__name__}: {exc} "
                       "(run with -v for the traceback and report it)", err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=BuilderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", "project_dir", type=click.Path(file_okay=False),
              help="Project directory (with envs/ and locks/). Default: found from the "
                   "current directory, else the shipped checkout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("-v", "--verbose", is_flag=True, help="Log every subprocess builder runs.")
# The version comes from the package, not its installed metadata: a bare source checkout
# (PYTHONPATH=checkout python -m builder) has no dist-info to read.
@click.version_option(__version__, prog_name="builder")
@click.pass_context
def main(ctx: click.Context, project_dir: str | None, quiet: bool, verbose: bool) -> None:
    """builder: lock, check, build and smoke-test isolated torch + vLLM runtimes.

    Exit codes: 0 ok, 1 check failed, 2 usage or spec error, 3 data unavailable
    (network, probe), 4 tool missing, 5 tool failed, 6 protected env refused,
    7 busy, 70 internal error, 130 interrupted.
    """
    if verbose:
        import logging  # only here: `builder --help` and `lock --check` need not load it

        logging.basicConfig(level=logging.DEBUG, format="builder: %(message)s", stream=sys.stderr)
    ctx.obj = {"project_dir": project_dir, "quiet": quiet, "verbose": verbose}


# Each module adds its commands to ``main``; one module per command family keeps
# this file free of per-command code.  Imported last: they import ``main``.
from builder.cli import check_cmds, host_cmds, lock_cmds, runtime_cmds  # noqa: E402, F401, I001
