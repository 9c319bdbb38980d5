"""The options several commands share, each defined once (pip-tools' ``options.py``).

A command takes an option from here when another command has one of the same name and
meaning; its help text may say what the option means for that command.  Importing this
module must stay cheap: ``builder --help`` loads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: The longest bound a ``--timeout`` or ``--drain`` accepts: a day.
MAX_SECONDS = 86_400.0


class Seconds(click.types.FloatParamType):
    """A number of seconds: finite, above zero (or zero where ``zero_ok``), at most a day.

    ``float()`` alone accepts ``nan``, ``inf`` and ``1e308``; a bound made of those never
    fires or overflows a deadline, so they are usage errors (exit 2) here, at the edge.
    """

    name = "float"

    def __init__(self, *, zero_ok: bool = False) -> None:
        self.zero_ok = zero_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not self.zero_ok) \
                or seconds > MAX_SECONDS:
            low = "at least 0" if self.zero_ok else "above 0"
            self.fail(f"{value!r} is not a number of seconds {low} and at most {MAX_SECONDS:.0f} (a day)",
                      param, ctx)
        return seconds


SECONDS = Seconds()


def as_json(help: str = "Print the result as JSON.") -> Callable[[F], F]:
    """``--json``: structured output on stdout (progress stays on stderr)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def matrix(*, multiple: bool = False, required: bool = False,
           help: str = "Matrix: A, a or matrix-a.") -> Callable[[F], F]:
    """``-m/--matrix``: a matrix selector (``A``, ``a`` or ``matrix-a``)."""
    return click.option("-m", "--matrix", multiple=multiple, required=required, help=help)


def python(help: str = "Python of the matrix, e.g. 3.12.", *, multiple: bool = False) -> Callable[[F], F]:
    """``-p/--python``: one Python of a matrix (``multiple``: repeatable)."""
    return click.option("-p", "--python", multiple=multiple, help=help)


def root(help: str = "Runtimes root (default: $BUILDER_RUNTIMES, else <project>/runtimes).") -> Callable[[F], F]:
    """``--root``: where runtimes live."""
    return click.option("--root", type=click.Path(file_okay=False), help=help)


def offline(help: str = "Use only the wheel cache; no network.") -> Callable[[F], F]:
    """``--offline``: read no network."""
    return click.option("--offline", is_flag=True, help=help)


def force(help: str) -> Callable[[F], F]:
    """``--force``: do it although builder would refuse (what it overrides is the command's help)."""
    return click.option("--force", is_flag=True, help=help)


def cache_dir(help: str = "Wheel facts cache (default: $BUILDER_CACHE_DIR, else ~/.cache/builder).",
              ) -> Callable[[F], F]:
    """``--cache-dir``: the cache a command reads (wheel facts for check and lock diff, uv's for build)."""
    return click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=help)


def interpreter_python(*, required: bool = False,
                       help: str = "Interpreter of the env to inspect (default: the active env's, else python3 "
                                   "on PATH).") -> Callable[[F], F]:
    """``doctor --python PATH``, ``runtime adopt --python PATH``: an interpreter, not a matrix's
    Python (so no ``-p``)."""
    return click.option("--python", "python", required=required, type=click.Path(dir_okay=False), help=help)


def runtime_id(help: str = "Any runtime under the root by its id (directory name; `builder runtime list`).",
               ) -> Callable[[F], F]:
    """``--runtime ID``: a runtime under the root, built or adopted."""
    return click.option("--runtime", "runtime_id", help=help)


def driver(help: str = "Host NVIDIA driver, e.g. 575.57.08.") -> Callable[[F], F]:
    """``--driver``: judge on this NVIDIA driver."""
    return click.option("--driver", help=help)


def gpu_cc() -> Callable[[F], F]:
    """``--gpu-cc``: the host's GPU compute capabilities."""
    return click.option("--gpu-cc", "gpu_cc", multiple=True,
                        help="Host GPU compute capability, e.g. 8.9 (repeatable).")


def gpu() -> Callable[[F], F]:
    """``--gpu/--no-gpu``: run or skip a runtime's GPU steps."""
    return click.option("--gpu/--no-gpu", default=None,
                        help="Run (--gpu) or skip (--no-gpu) the GPU steps. Default: detect an NVIDIA GPU.")


def base(help: str) -> Callable[[F], F]:
    """``--base venv|conda``: a runtime's environment base."""
    return click.option("--base", type=click.Choice(["venv", "conda"]), help=help)


def output_format(choices: list[str], *, default: str, help: str | None = None) -> Callable[[F], F]:
    """``--format``: one of the command's renderings."""
    return click.option("--format", "fmt", type=click.Choice(choices), default=default, show_default=True,
                        help=help)


def output(help: str) -> Callable[[F], F]:
    """``-o/--output FILE``: write there instead of stdout."""
    return click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), help=help)


def from_snapshot(*, multiple: bool = False,
                  help: str = "Analyse this snapshot (from `builder host snapshot`) instead of probing the live host.",
                  ) -> Callable[[F], F]:
    """``--from-snapshot FILE``: judge a snapshot instead of the live host (``multiple``: several hosts)."""
    return click.option("--from-snapshot", "from_snapshot", multiple=multiple,
                        type=click.Path(dir_okay=False, path_type=Path), help=help)


def service_spec() -> Callable[[F], F]:
    """``--service FILE``: the vLLM service spec."""
    return click.option("--service", "spec", type=click.Path(dir_okay=False),
                        help="Service spec (default: envs/service.toml of the project).")


def route_file() -> Callable[[F], F]:
    """``--route-file FILE``: the route file QueryLake reads."""
    return click.option("--route-file", type=click.Path(dir_okay=False),
                        help="Route file to manage (default: the spec's route-file).")


def slot(*, required: bool = True, help: str = "Slot of the service spec, e.g. green.") -> Callable[[F], F]:
    """``--slot NAME``: a slot of the service spec."""
    return click.option("--slot", required=required, help=help)


def url(*, required: bool = False, help: str) -> Callable[[F], F]:
    """``--url URL``: a server's endpoint."""
    return click.option("--url", required=required, help=help)


def model(*, required: bool = False, help: str) -> Callable[[F], F]:
    """``--model NAME``: the model name a server serves."""
    return click.option("--model", required=required, help=help)


def timeout(*, default: float, help: str) -> Callable[[F], F]:
    """``--timeout S``: a bound in seconds (:class:`Seconds`: finite, above 0, at most a day)."""
    return click.option("--timeout", type=SECONDS, default=default, show_default=True, metavar="S", help=help)


def runtime_selection(f: F) -> F:
    """``--matrix``/``--python``/``--runtime``/``--root``: which built runtime a slot serves."""
    for opt in reversed([
        matrix(help="Serve the runtime of this matrix's current lock: A, a or matrix-a."),
        python(),
        runtime_id("Serve any runtime by its id (directory name; built or adopted: `builder runtime list`)."),
        root(),
    ]):
        f = opt(f)
    return f
