"""nox sessions: thin wrappers over the builder CLI (they never re-implement it).

    nox -s tests                 # the default test suite (offline)
    nox -s lint                  # ruff + mypy
    nox -s lock                  # re-lock every matrix (CI lock refresh)
    nox -s lock-matrix-a         # re-lock one matrix
    nox -s build-matrix-a        # build + smoke matrix A for both Pythons (-p 3.12 narrows)
    nox -s smoke-matrix-b -p 3.12
    nox -s serve-matrix-a -p 3.12  # serve start (slot green), probe, stop; posargs go to `serve start`
    nox -s main                  # the README's main job

No session activates, reads or writes the protected env (QL_1): builder refuses
to write inside it, and sessions run builder with a scrubbed environment.
`nox --no-venv -s ...` runs the sessions with the builder already on PATH (no
installs: for a host without package registries).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests"]

ROOT = Path(__file__).parent
PYTHONS = ["3.11", "3.12"]
MATRICES = ["a", "b"]
# Variables that must not reach builder from the operator's shell (QL_1 active, say).
SCRUB = ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYTHONPATH", "PYTHONHOME")


def _add_pyenv_pythons_to_path() -> None:
    """Let nox find pyenv-installed Pythons that are not selected (python3.12 ...).

    Operators' hosts often have them; nox itself only searches PATH.
    """
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    dirs = []
    for py in PYTHONS:
        found = sorted(glob.glob(os.path.join(root, "versions", f"{py}.*", "bin", f"python{py}")))
        if found:
            dirs.append(os.path.dirname(found[-1]))
    if dirs:
        os.environ["PATH"] = os.pathsep.join([*dirs, os.environ.get("PATH", "")])


_add_pyenv_pythons_to_path()


def _install(session: nox.Session, extras: str = "") -> None:
    """Install builder into the session venv; with ``nox --no-venv`` use the builder on PATH
    (an air-gapped host that has builder installed, and the tests)."""
    if session.venv_backend == "none":
        return
    session.install("-e", f".{extras}" if extras else ".")


def _python_args(session: nox.Session) -> list[str]:
    """``--python X.Y`` for a session parametrized by Python; none under ``--no-venv``
    (nox ignores the parametrization there), so builder takes every Python of the matrix."""
    return ["--python", str(session.python)] if session.python else []


def _env() -> dict[str, str | None]:
    return {k: None for k in SCRUB}


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite: offline, fast."""
    _install(session, "[dev,conda]")
    session.run("pytest", *(session.posargs or ["-q"]), env=_env())


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy (strict on builder/)."""
    _install(session, "[dev,conda]")
    session.run("ruff", "check", "builder", "tests", "noxfile.py")
    session.run("mypy")


@nox.session(tags=["ci-lock-refresh"])
def lock(session: nox.Session) -> None:
    """Re-lock every matrix (CI lock refresh), then prove the result is fresh."""
    _install(session)
    session.run("builder", "lock", "--all", *session.posargs, env=_env())
    session.run("builder", "lock", "--check", env=_env())


for _m in MATRICES:

    def _lock_one(session: nox.Session, m: str = _m) -> None:
        _install(session)
        session.run("builder", "lock", "--matrix", m, *session.posargs, env=_env())

    def _build(session: nox.Session, m: str = _m) -> None:
        """Build (then smoke) the runtime of this matrix for the session's Python."""
        _install(session)
        session.run("builder", "build", "--matrix", m, *_python_args(session), *session.posargs, env=_env())

    def _smoke(session: nox.Session, m: str = _m) -> None:
        _install(session)
        session.run("builder", "smoke", "--matrix", m, *_python_args(session), *session.posargs, env=_env())

    def _serve(session: nox.Session, m: str = _m) -> None:
        """Start the built runtime's vLLM in slot green, probe it, stop it (even when the probe fails)."""
        _install(session)
        # A failed start stops what it started; a slot already running makes it fail (exit 7)
        # and is left alone.
        session.run("builder", "serve", "start", "--matrix", m, *_python_args(session), "--slot", "green",
                    *session.posargs, env=_env())
        try:
            session.run("builder", "serve", "probe", "--slot", "green", env=_env())
        finally:
            session.run("builder", "serve", "stop", "--slot", "green", env=_env())

    _lock_one.__doc__ = f"Re-lock matrix {_m.upper()} (every Python)."
    _build.__doc__ = f"Build and smoke-test matrix {_m.upper()} runtimes (-p 3.12 narrows)."
    _smoke.__doc__ = f"Smoke-test the built matrix {_m.upper()} runtimes."
    _serve.__doc__ = f"Serve matrix {_m.upper()}'s runtime in slot green: start, probe, stop."
    nox.session(name=f"lock-matrix-{_m}", tags=["ci-lock-refresh"])(_lock_one)
    nox.session(name=f"build-matrix-{_m}", python=PYTHONS)(_build)
    nox.session(name=f"smoke-matrix-{_m}", python=PYTHONS)(_smoke)
    nox.session(name=f"serve-matrix-{_m}", python=PYTHONS)(_serve)


@nox.session
def main(session: nox.Session) -> None:
    """The main job on the shipped defaults: lock freshness, the matrix chooser,
    then build + smoke one runtime (matrix A, Python 3.12 unless posargs say otherwise)."""
    _install(session)
    args = list(session.posargs)
    matrix = args[0] if args else "a"
    python = args[1] if len(args) > 1 else "3.12"
    session.run("builder", "lock", "--check", env=_env())
    session.run("builder", "list", env=_env())
    # The chooser exits 1 when a matrix is blocked on this host (e.g. a driver
    # upgrade that needs a reboot): that is its finding, not a failure of the job.
    session.run("builder", "check", env=_env(), success_codes=[0, 1])
    session.run("builder", "build", "--matrix", matrix, "--python", python, env=_env())
