"""The root command group ``builder`` and the one error mapping: every
:class:`~builder.errors.BuilderError` becomes one line on stderr and its exit code here,
in :meth:`BuilderGroup.invoke`, its control characters escaped (:func:`~builder.cli.common.escape`);
a bug is exit 70 (with its traceback under ``-v``); a closed standard output ends the command
quietly with 141.  The command modules add their commands to :func:`main`.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Any

import click

from builder import __version__, cancel
from builder.cli.common import AppContext, app, echo, error_line, escape, exits
from builder.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    BuilderError,
    FilesystemRefused,
    Interrupted,
)

_SIGNAL_WORDS: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


def _stopped(exc: Interrupted) -> int:
    echo(f"builder: {_SIGNAL_WORDS.get(exc.signum, 'stopped')} (signal {exc.signum}): children stopped, "
               "nothing half-written", err=True)
    return exc.exit_code


def _output_gone() -> bool:
    """Whether the reader of standard output (or error) went away: poll says POLLERR on the
    write end of a pipe whose reader closed it.  Another broken pipe (a child's, a socket's)
    is not the terminal's and stays an error."""
    import select

    for fd in (1, 2):
        try:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            if any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in poller.poll(0)):
                return True
        except (OSError, ValueError):
            continue
    return False


def _quiet_output() -> None:
    """Point standard output and error at /dev/null, so that nothing left in their buffers
    fails again when the interpreter flushes them at exit (Python's advice for SIGPIPE)."""
    null = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(null, stream.fileno())
        except (OSError, ValueError, AttributeError):
            continue
    os.close(null)


def _pipe_closed(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE and _output_gone()


class BuilderGroup(click.Group):
    """Maps builder errors to one clear line and a documented exit code."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        """The root context; ``builder --help`` into a closed pipe exits 141 like a command."""
        try:
            return super().make_context(*args, **kwargs)
        except OSError as exc:
            if not _pipe_closed(exc):
                raise
            _quiet_output()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the CLI with SIGINT/SIGTERM/SIGHUP mapped to a clean stop (130/143/129).

        Whatever way the command ends, temp dirs a signal left behind are removed.
        """
        with cancel.handlers():
            try:
                return super().main(*args, **kwargs)
            except Exception as exc:  # a signal outside a command (parsing, --help)
                if not (isinstance(exc, Interrupted) or cancel.requested()):
                    raise
                code = _stopped(exc if isinstance(exc, Interrupted) else Interrupted(cancel.signum()))
                if kwargs.get("standalone_mode", True):
                    sys.exit(code)
                raise
            except Interrupted as exc:
                code = _stopped(exc)
                if kwargs.get("standalone_mode", True):
                    sys.exit(code)
                raise
            finally:
                paths = sys.modules.get("builder.paths")  # no temp dir exists unless it was imported
                if paths is not None:
                    paths.cleanup()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BaseException as exc:
            if cancel.requested() and not isinstance(exc, (SystemExit, GeneratorExit)):
                # Whatever surfaced, a stop signal caused it: a signal during class
                # creation arrives as "RuntimeError: Error calling __set_name__",
                # one during a child's start as that child's failure.  Report the stop.
                ctx.exit(_stopped(Interrupted(cancel.signum())))
            return self._map(ctx, exc)

    def _map(self, ctx: click.Context, exc: BaseException) -> Any:
        """One line and the documented exit code for ``exc``."""
        if _pipe_closed(exc):
            _quiet_output()  # as command-line tools do: stop writing, say nothing
            ctx.exit(EXIT_BROKEN_PIPE)
        if isinstance(exc, BuilderError):
            echo(error_line(exc), err=True)
            ctx.exit(exc.exit_code)
        if isinstance(exc, Interrupted):
            ctx.exit(_stopped(exc))
        if isinstance(exc, KeyboardInterrupt):  # raised by code that bypassed cancel.handlers()
            echo("builder: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        if isinstance(exc, OSError):
            # The last line of defence: a write site that did not map its own
            # error.  A refusing filesystem is the environment, not a bug.
            refused = FilesystemRefused.from_oserror(exc)
            if refused is not None:
                echo(error_line(refused), err=True)
                ctx.exit(refused.exit_code)
        if isinstance(exc, Exception):
            return self._bug(ctx, exc)
        raise exc  # SystemExit and the like

    @staticmethod
    def _bug(ctx: click.Context, exc: Exception) -> Any:
        """A bug: one line (after the traceback under -v); exit 70 either way."""
        if app(ctx).verbose:
            import traceback

            echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
            echo(f"builder: internal error: {escape(f'{type(exc).__name__}: {exc}')} (report it with the "
                 "traceback above)", err=True)
        else:
            echo(f"builder: internal error: {escape(f'{type(exc).__name__}: {exc}')} "
                 "(run with -v for the traceback and report it)", err=True)
        ctx.exit(EXIT_INTERNAL)


@exits()
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
    """builder: lock, check, build and smoke-test isolated torch + vLLM runtimes."""
    if verbose:
        import logging  # only here: `builder --help` and `lock --check` need not load it

        logging.basicConfig(level=logging.DEBUG, format="builder: %(message)s", stream=sys.stderr)
        from builder import _proc

        _proc.enable_debug()
    ctx.obj = AppContext(project_dir=project_dir, quiet=quiet, verbose=verbose)


def run() -> None:
    """The process's entry (the ``builder`` script, ``python -m builder``): the CLI, then
    :func:`end` with its exit code.  Tests call :func:`main` (click's runner), which exits normally."""
    try:
        main()
    except SystemExit as exc:
        end(exc.code)
    end(0)


def end(code: object) -> None:
    """End the process with ``code`` as ``sys.exit(code)`` would, without Python's finalization.

    Finalization frees every object one by one, and after a search that is the index pages, the
    parsed data and the locks: about 40 ms of a cold ``suggest`` (issue 19's benchmark), spent on
    a process that is ending.  So output is flushed and the exit handlers run (``atexit``, and
    the weakref finalizers that remove temp dirs), then ``os._exit``.  The ordinary exit is taken
    instead while a thread other than this one still runs (the interpreter would wait for it) or
    when output cannot be flushed (the interpreter reports that)."""
    import atexit
    import threading

    status = 0 if code is None else code if isinstance(code, int) else 1
    if not isinstance(code, int | None):
        print(code, file=sys.stderr)  # as sys.exit("message") prints it
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if others or threading.current_thread() is not threading.main_thread():
        sys.exit(status)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(status)
    # atexit has no public "run the handlers now"; _run_exitfuncs is what the interpreter calls
    # at exit (CPython, every 3.x), and each handler runs once: they are cleared after.
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # a handler's output to a closed stream: nothing to report it to
    os._exit(status & 0xFF)
