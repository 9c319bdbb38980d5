"""nox sessions: thin wrappers over the builder CLI (they never re-implement it).

    nox -s tests                 # the default test suite (offline)
    nox -s lint                  # ruff + mypy + import-linter contracts + rule mutants
    nox -s lock                  # re-lock every matrix at its exclude-newer date
    nox -s lock-refresh          # move exclude-newer to yesterday (UTC), re-lock, verify, diff (CI lock refresh)
    nox -s lock-matrix-a         # re-lock one matrix
    nox -s build-matrix-a        # build + smoke matrix A for each of its Pythons (-p 3.12 narrows)
    nox -s smoke-matrix-b -p 3.12
    nox -s serve-matrix-a -p 3.12  # serve start (slot green), probe, stop; posargs go to `serve start`
    nox -s main                  # the README's main job

The per-matrix sessions come from the data: every ``envs/matrix-*.toml`` gets
``lock-matrix-<id>``, ``build-matrix-<id>`` and ``smoke-matrix-<id>`` (one per
Python in its ``pythons``), so a new matrix needs no edit here (``nox -l``).
The matrices are those of the project builder runs on: ``$BUILDER_PROJECT``,
else this checkout.

No session activates, reads or writes the protected env (QL_1): builder refuses
to write inside it, and sessions run builder with a scrubbed environment.
`nox --no-venv -s ...` runs the sessions with the builder already on PATH (no
installs: for a host without package registries); there nox drops the Python
parametrization, so the per-Python sessions take every Python of the matrix
(``serve-matrix-<id>`` serves them in turn) unless ``-- --python X.Y`` narrows.
"""

from __future__ import annotations

import glob
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import nox
from nox.command import CommandFailed

nox.options.default_venv_backend = "uv|virtualenv"
# uv installs without byte-compiling, and with PYTHONDONTWRITEBYTECODE set (CI images,
# this project's machines) every `builder` process would then recompile click and
# packaging from source: compile at install time instead.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
nox.options.sessions = ["tests"]

ROOT = Path(__file__).parent
PYTHONS = ["3.11", "3.12"]  # for a matrix file that does not say (builder reports that spec)
# Variables that must not reach builder from the operator's shell (QL_1 active, say).
SCRUB = ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYTHONPATH", "PYTHONHOME")
REFRESH_MD = "lock-refresh.md"      # the pull request body (lock-refresh session)
REFRESH_JSON = "lock-refresh.json"  # the same diff, for the decision "did any package change"
KERNEL_SCRIPT = ROOT / "scripts" / "kernel_data.py"  # builder's own kernel data (lock-refresh session)
KERNEL_SUMMARY = "kernel-data.json"  # what it added, for the pull request
REQUIRES_SCRIPT = ROOT / "scripts" / "requires_data.py"  # the search's shipped METADATA facts (lock-refresh)
REQUIRES_SUMMARY = "requires-data.json"


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


def _matrices(envs: Path) -> list[tuple[str, list[str]]]:
    """``(id, pythons)`` of every ``matrix-*.toml`` in ``envs``.

    Only the two keys sessions are named by are read (tomllib, no validation:
    that is builder's job). A file that cannot be read still gets its sessions,
    named after the file, so running one shows builder's error for that spec
    instead of the matrix silently vanishing from ``nox -l``.
    """
    found = []
    for path in sorted(envs.glob("matrix-*.toml")):
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        mid = data.get("id")
        if not isinstance(mid, str) or not mid:
            mid = path.stem.removeprefix("matrix-")
        pys = data.get("pythons")
        if not (isinstance(pys, list) and pys and all(isinstance(p, str) for p in pys)):
            pys = PYTHONS
        found.append((mid, list(pys)))
    return found


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
    # The editable checkout and the tests are not in site-packages: compile them too (the
    # suite starts builder in hundreds of child processes).
    session.run("python", "-m", "compileall", "-q", "-j", "0", "builder", "tests", silent=True)
    args = list(session.posargs or ["-q"])
    if not any(a in ("-n", "--numprocesses") or a.startswith(("-n", "--numprocesses=", "-p")) for a in args):
        # One worker per core (pytest-xdist), files kept together so their module fixtures
        # are built once; much of the suite waits on real children and servers.
        args = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadfile", *args]
    session.run("pytest", *args, env=_env())


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy (strict on builder/), the import-linter contracts (pyproject.toml) and the
    rule mutants (every mutated comparison of the pure check and suggest rules turns a test red)."""
    _install(session, "[dev,conda]")
    session.run("ruff", "check", "builder", "tests", "noxfile.py")
    session.run("mypy")
    session.run("lint-imports")
    # tests/rule_mutants.py runs tests/test_check_rules.py once per check mutant (85) and
    # tests/test_suggest_rules.py once per suggest mutant (44), about 1.3 s each: 3 minutes on an
    # idle 2-core machine, 4-5 when shared; its pytest twin tests/test_rule_mutants.py is `slow`.
    session.run("python", "tests/rule_mutants.py")


@nox.session
def lock(session: nox.Session) -> None:
    """Re-lock every matrix at its exclude-newer date, then prove the result is fresh."""
    _install(session)
    session.run("builder", "lock", "--all", *session.posargs, env=_env())
    session.run("builder", "lock", "--check", env=_env())


def _locks_with_changes(diff: Any) -> int:
    """How many locks of a ``builder lock diff --git REF --format json`` document add, remove,
    change or re-hash a package (its own ``locks_with_package_changes`` when it has one)."""
    if not isinstance(diff, dict):
        return 0
    if isinstance(diff.get("locks_with_package_changes"), int):
        return int(diff["locks_with_package_changes"])
    return sum(1 for d in diff.get("locks") or [] if isinstance(d, dict)
               and any(d.get(k) for k in ("added", "removed", "changed", "rehashed")))


def _new_warnings(diff: Any) -> list[str]:
    """The rule ids of the ``warn`` findings the new locks have and the old did not (no duplicates)."""
    ids: dict[str, None] = {}
    for d in (diff.get("locks") or []) if isinstance(diff, dict) else []:
        for w in (d.get("new_warnings") or []) if isinstance(d, dict) else []:
            rid = str(w).removeprefix("new warn: ").split(":", 1)[0].strip()
            if rid and all(c.isalnum() or c == "-" for c in rid):  # a stable rule id, nothing else
                ids[rid] = None
    return list(ids)


def refresh_title(diff: Any) -> str:
    """The pull request's title: ``Lock refresh``, naming any new warning (which does not block)."""
    ids = _new_warnings(diff)
    if not ids:
        return "Lock refresh"
    return f"Lock refresh: {len(ids)} new warning{'s' if len(ids) > 1 else ''} ({', '.join(ids)})"


def _diff(session: nox.Session, fmt: str, out: Path) -> bool:
    """``builder lock diff --git HEAD --format FMT > OUT``; False when it found a regression
    (exit 1). OUT is written either way, so a human can read why."""
    with out.open("w", encoding="utf-8") as f:
        try:
            session.run("builder", "lock", "diff", "--git", "HEAD", "--format", fmt, env=_env(),
                        stdout=f, stderr=None)
        except CommandFailed as exc:
            if getattr(exc, "return_code", None) == 1:
                return False
            raise
    return True


def _github_output(**values: str) -> None:
    """Step outputs for lock-refresh.yml when run inside GitHub Actions."""
    path = os.environ.get("GITHUB_OUTPUT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(f"{k}={v}\n" for k, v in values.items())


def _kernel_rows(session: nox.Session) -> list[dict[str, Any]]:
    """A row of builder/data/kernels.toml for every CUDA vLLM wheel on PyPI that has none
    (``scripts/kernel_data.py --all``; ``$BUILDER_KERNEL_INDEX`` names another PEP 691 index).
    Only in builder's own checkout: the data is builder's, whatever project the locks are."""
    if not KERNEL_SCRIPT.exists():
        return []
    index = os.environ.get("BUILDER_KERNEL_INDEX")
    summary = Path(KERNEL_SUMMARY).resolve()
    session.run("python", str(KERNEL_SCRIPT), "--all", "--summary", str(summary),
                *(["--index", index] if index else []), env=_env())
    added: list[dict[str, Any]] = json.loads(summary.read_text(encoding="utf-8"))["added"]
    return added


def _requires_rows(session: nox.Session) -> list[str]:
    """The search's METADATA facts (builder/data/requires.toml) for every CUDA vLLM wheel on PyPI
    and the torch wheels they pin that have none (``scripts/requires_data.py --all``; the same
    ``$BUILDER_KERNEL_INDEX``).  Only in builder's own checkout, as the kernel rows."""
    if not REQUIRES_SCRIPT.exists():
        return []
    index = os.environ.get("BUILDER_KERNEL_INDEX")
    summary = Path(REQUIRES_SUMMARY).resolve()
    session.run("python", str(REQUIRES_SCRIPT), "--all", "--summary", str(summary),
                *(["--index", index] if index else []), env=_env())
    added: list[str] = json.loads(summary.read_text(encoding="utf-8"))["added"]
    return added


def _kernel_md(rows: list[dict[str, Any]]) -> str:
    """The pull request's section on new kernel rows."""
    lines = ["", f"### Kernel data: {len(rows)} new row(s) in `builder/data/kernels.toml`", "",
             "| wheel | member | SASS | PTX ISA | nvcc |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| [{r['wheel']}]({r['source']}) | `{r['member']}` | {', '.join(r['sass'])} | "
                     f"{r.get('ptx_isa') or '-'} | {r.get('nvcc') or r.get('nvcc_release') or '-'} |")
    return "\n".join(lines) + "\n"


@nox.session(name="lock-refresh", tags=["ci-lock-refresh"])
def lock_refresh(session: nox.Session) -> None:
    """Refresh every matrix to yesterday (UTC), verify, write the diff to lock-refresh.md.

    Yesterday, not today: its cut-off (today 00:00 UTC) has passed, so the
    resolution repeats; with today's date a file uploaded later today would
    enter a re-run (docs/locks.md).

    First, in builder's own checkout, a kernel row for each new vLLM wheel on PyPI
    (``scripts/kernel_data.py --all``) and the search's METADATA facts of it and of the torch
    wheels it pins (``scripts/requires_data.py --all``); then ``builder lock --refresh`` (posargs go to it,
    e.g. ``-- --exclude-newer 2026-01-05``), ``builder lock --verify``, then ``builder lock
    diff --git HEAD`` as Markdown (the pull request body, plus a table of the new kernel rows)
    and as JSON (did any package change?).  New rows alone are worth a pull request too.
    A regression (diff exit 1) fails the session; the refreshed locks stay in
    the working tree for a human to look at, and must not be proposed.
    """
    _install(session)
    kernels = _kernel_rows(session)  # first: the diff below judges gpu-arch with the new rows
    facts = _requires_rows(session)
    session.run("builder", "lock", "--refresh", *session.posargs, env=_env())
    session.run("builder", "lock", "--verify", env=_env())
    clean = _diff(session, "md", Path(REFRESH_MD))
    clean = _diff(session, "json", Path(REFRESH_JSON)) and clean
    if not clean:
        _github_output(changed="false", regression="true")
        session.error(f"lock diff: regression (see {REFRESH_MD}); the refreshed locks are left in the "
                      "working tree for review and must not be proposed")
    diff = json.loads(Path(REFRESH_JSON).read_text(encoding="utf-8"))
    n = _locks_with_changes(diff)
    title = refresh_title(diff)
    if kernels:
        with Path(REFRESH_MD).open("a", encoding="utf-8") as f:
            f.write(_kernel_md(kernels))
        title += f" (+{len(kernels)} kernel row{'s' if len(kernels) > 1 else ''})"
    if facts:
        with Path(REFRESH_MD).open("a", encoding="utf-8") as f:
            f.write(f"\n### Search data: {len(facts)} wheel(s) added to `builder/data/requires.toml`\n\n"
                    + "".join(f"- `{w}`\n" for w in facts))
    _github_output(changed="true" if n or kernels or facts else "false", regression="false", title=title)
    if n or kernels or facts:
        rows = f", {len(kernels)} new kernel row(s)" if kernels else ""
        rows += f", {len(facts)} wheel(s) of new search data" if facts else ""
        session.log(f"lock-refresh: {n} lock{'s' if n != 1 else ''} with package changes{rows}: propose them as "
                    f"{title!r} with {REFRESH_MD} as the description")
    else:
        session.log("lock-refresh: no package changed (locks re-stamped only): nothing to propose")


for _m, _pys in _matrices(Path(os.environ.get("BUILDER_PROJECT") or ROOT) / "envs"):

    def _lock_one(session: nox.Session, m: str = _m) -> None:
        _install(session)
        session.run("builder", "lock", "--matrix", m, *session.posargs, env=_env())

    def _build(session: nox.Session, m: str = _m) -> None:
        _install(session)
        session.run("builder", "build", "--matrix", m, *_python_args(session), *session.posargs, env=_env())

    def _smoke(session: nox.Session, m: str = _m) -> None:
        _install(session)
        session.run("builder", "smoke", "--matrix", m, *_python_args(session), *session.posargs, env=_env())

    def _serve(session: nox.Session, m: str = _m, pys: list[str] = _pys) -> None:
        """Start the built runtime's vLLM in slot green, probe it, stop it (even when the probe fails).

        ``serve start`` takes one Python: with ``nox --no-venv`` (no parametrization) and no
        ``-- --python X.Y``, each of the matrix's Pythons is served in turn, as the other
        sessions take every Python there.
        """
        _install(session)
        if session.python or any(a in ("-p", "--python", "--runtime") or a.startswith(("--python=", "--runtime="))
                                 for a in session.posargs):
            rounds = [_python_args(session)]
        else:
            session.log(f"serve-matrix-{m}: no Python selected (nox --no-venv): serving each of "
                        f"{', '.join(pys)} in turn (`-- --python X.Y` narrows)")
            rounds = [["--python", py] for py in pys]
        for py_args in rounds:
            if not session.python and py_args:
                session.log(f"serve-matrix-{m}: Python {py_args[1]}")
            # A failed start stops what it started; a slot already running makes it fail (exit 7)
            # and is left alone.
            session.run("builder", "serve", "start", "--matrix", m, *py_args, "--slot", "green",
                        *session.posargs, env=_env())
            try:
                session.run("builder", "serve", "probe", "--slot", "green", env=_env())
            finally:
                session.run("builder", "serve", "stop", "--slot", "green", env=_env())

    _lock_one.__doc__ = f"Re-lock matrix {_m.upper()} (every Python)."
    _build.__doc__ = f"Build and smoke-test matrix {_m.upper()} runtimes (-p {_pys[-1]} narrows)."
    _smoke.__doc__ = f"Smoke-test the built matrix {_m.upper()} runtimes."
    nox.session(name=f"lock-matrix-{_m}")(_lock_one)
    nox.session(name=f"build-matrix-{_m}", python=_pys)(_build)
    nox.session(name=f"smoke-matrix-{_m}", python=_pys)(_smoke)
    _serve.__doc__ = f"Serve matrix {_m.upper()}'s runtime in slot green: start, probe, stop."
    nox.session(name=f"serve-matrix-{_m}", python=_pys)(_serve)


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
