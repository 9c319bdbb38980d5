"""Lock a matrix's conda base (the interpreter) into ``conda-lock.py<XY>.yml``.

The lock is a real conda-lock v1 file, read and written through conda-lock's
own models (``conda_lock.lockfile``), for ``linux-64`` only, with sha256 and
md5 for every package.  Two solvers can write it:

* ``conda-lock``: conda-lock itself, run as a child process with an explicit
  ``--conda`` executable, when a ``micromamba``, ``mamba`` or ``conda`` is on
  PATH (or ``$BUILDER_CONDA_EXE`` names one);
* ``rattler``: py-rattler's solver, in process, with no executable.

Both get the same channels, specs and explicit virtual packages (never
conda-lock's implicit ``__cuda = 11.4``).  builder's stamp lives in the lock's
``metadata.custom_metadata`` (``builder-*`` keys): solver, spec hash and a hash
of the rest of the file, so ``builder lock --check`` judges freshness and hand
edits exactly as for the PyPI locks.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from builder import _proc, paths
from builder.errors import ToolFailed, ToolNotFound, ToolTimeout, Unavailable, UsageError
from builder.files.fsio import atomic_write
from builder.freshness import LockState, judge_file
from builder.project import Project, py_tag, regenerate_command
from builder.spec import Matrix
from builder.tools import explicit_exe

if TYPE_CHECKING:
    from conda_lock.lockfile.v2prelim.models import Lockfile

SUBDIR = "linux-64"
#: Bumped when the meaning of a builder conda lock changes (part of freshness).
CONDA_FORMAT = "1"
DEFAULT_CHANNEL_ROOT = "https://conda.anaconda.org/"
#: conda-lock's own default for linux-64 (default-virtual-packages.yaml); the
#: value is always written explicitly to the lock's metadata.
DEFAULT_LINUX = "5.10"
SOLVE_TIMEOUT = 300.0
EXECUTABLES = ("micromamba", "mamba", "conda")
REPODATA_FILES = ("repodata.json", "repodata_shards.msgpack.zst")


def conda_lock_path(locks_dir: Path, matrix: Matrix, python: str) -> Path:
    """``locks/matrix-b/conda-lock.py312.yml``."""
    return locks_dir / matrix.name / f"conda-lock.{py_tag(python)}.yml"


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["conda-forge=/srv/mirror"]`` -> ``{"conda-forge": "/srv/mirror"}`` (CLI form)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise UsageError(f"--channel-override {item!r} is not NAME=URL",
                             "e.g. --channel-override conda-forge=https://mirror.example/conda-forge")
        out[name.strip()] = url.strip()
    return out


def _channel_url(name: str, target: str) -> str:
    """A channel URL for rattler and conda-lock from a name, URL or local directory."""
    if "://" in target:
        return target.rstrip("/")
    if os.sep in target or target.startswith("."):
        path = Path(target).expanduser().resolve()
        if not path.is_dir():
            raise UsageError(f"conda channel {name!r}: no such directory: {path}",
                             "point the channel override at an indexed conda channel directory")
        return path.as_uri()
    return DEFAULT_CHANNEL_ROOT + target


def channels(matrix: Matrix, overrides: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """``(name, url)`` of each channel, in priority order; CLI overrides win over the spec's."""
    if matrix.conda is None:
        raise UsageError(f"{matrix.name} declares no conda base", "add a [conda] table to its spec")
    merged = {**matrix.conda.channel_overrides, **(overrides or {})}
    out = []
    for name in matrix.conda.channels:
        if name in ("defaults", "main", "anaconda"):
            raise UsageError(f"{matrix.name}: channel {name!r} is Anaconda's `defaults`, never used here",
                             "use conda-forge (or a mirror of it via channel-overrides)")
        out.append((name, _channel_url(name, merged.get(name, name))))
    if not out:
        raise UsageError(f"{matrix.name}: [conda].channels is empty", "list at least one channel")
    return out


def python_spec(matrix: Matrix, python: str) -> str:
    """The conda spec for the matrix Python: ``python 3.12.*`` or the spec's pin."""
    pin = matrix.conda.python.get(python) if matrix.conda else None
    if pin:
        if not (pin == python or pin.startswith(python + ".")):
            raise UsageError(f"{matrix.name}: [conda].python pin {pin!r} is not a Python {python}",
                             f"pin a {python}.x release")
        return f"python {pin}"
    return f"python {python}.*"


def virtual_packages(matrix: Matrix) -> dict[str, str]:
    """The explicit virtual packages of the solve (``{"__cuda": "12.8", ...}``).

    ``[conda].virtual-packages`` wins; otherwise ``__glibc`` comes from the
    platform tag (``x86_64-manylinux_2_35`` -> 2.35) and ``__cuda`` from
    cuda-track.  An empty value removes a package (``__cuda = ""``: no GPU).
    """
    spec = dict(matrix.conda.virtual_packages) if matrix.conda else {}
    bad = [k for k in spec if not k.startswith("__")]
    if bad:
        raise UsageError(f"{matrix.name}: [conda].virtual-packages: {bad[0]!r} is not a virtual package",
                         "virtual package names start with '__', e.g. __cuda")
    if not matrix.platform.startswith("x86_64") and matrix.platform != "linux":
        raise UsageError(f"{matrix.name}: a conda base is locked for linux-64 only, not {matrix.platform}",
                         "use an x86_64 platform")
    vp = {"__unix": "0", "__linux": DEFAULT_LINUX, "__archspec": "1 x86_64", "__cuda": matrix.cuda_track}
    _, _, tag = matrix.platform.partition("-")
    if tag.startswith("manylinux_"):
        vp["__glibc"] = ".".join(tag.removeprefix("manylinux_").split("_"))
    vp.update(spec)
    if "__glibc" not in vp:
        raise UsageError(f"{matrix.name}: platform {matrix.platform!r} does not say the glibc version",
                         "set [conda].virtual-packages.__glibc, e.g. \"2.35\"")
    return {k: v for k, v in sorted(vp.items()) if v != ""}


def specs(matrix: Matrix, python: str) -> list[str]:
    return [python_spec(matrix, python), *(matrix.conda.packages if matrix.conda else ())]


def find_executable() -> str | None:
    """A conda, mamba or micromamba for conda-lock: ``$BUILDER_CONDA_EXE`` or PATH."""
    explicit = explicit_exe("BUILDER_CONDA_EXE", "unset it or point it at micromamba, mamba or conda")
    if explicit:
        return explicit
    for name in EXECUTABLES:
        found = _proc.which(name)
        if found:
            return found
    return None


@dataclass
class CondaLockOutcome:
    path: Path
    solver: str
    packages: int
    changed: bool
    seconds: float


def solve_text(matrix: Matrix, python: str, overrides: Mapping[str, str] | None = None,
               *, solver: str = "auto") -> str:
    """Solve the conda base of (matrix, python) and return the lock text (nothing written)."""
    return _solve(matrix, python, overrides, solver=solver)[0]


def _solve(matrix: Matrix, python: str, overrides: Mapping[str, str] | None, *, solver: str
           ) -> tuple[str, str, int, float]:
    """(lock text, solver used, package count, seconds)."""
    from builder.conda import lockfile as conda_lockfile

    conda_lockfile.require_extra()
    chans = channels(matrix, overrides)
    vps = virtual_packages(matrix)
    wanted = specs(matrix, python)
    exe = find_executable() if solver in ("auto", "conda-lock") else None
    if solver == "conda-lock" and exe is None:
        raise ToolNotFound("conda-lock needs a micromamba, mamba or conda executable and none was found",
                           "install micromamba, set BUILDER_CONDA_EXE, or use the rattler solver")
    start = time.monotonic()
    if exe is not None:
        lf, used = _solve_conda_lock(exe, chans, wanted, vps=vps)
    else:
        paths.rattler_cache()  # rattler writes repodata there
        records = _solve_rattler(matrix, python, chans, wanted=wanted, vps=vps)
        lf, used = conda_lockfile.from_records(records, chans), _rattler_label()
    seconds = time.monotonic() - start
    stamp = {
        "builder-matrix": matrix.id,
        "builder-python": python,
        "builder-spec-hash": matrix.spec_hash(python),
        "builder-conda-format": CONDA_FORMAT,
        "builder-solver": used,
        "builder-specs": json.dumps(wanted),
        "builder-channels": json.dumps([n for n, _ in chans]),
        "builder-virtual-packages": json.dumps(vps, sort_keys=True),
        "builder-command": regenerate_command(matrix, python),
    }
    text = conda_lockfile.render(lf, matrix, python, stamp=stamp,
                                 content_hash=conda_lockfile.content_hash(chans, wanted, vps))
    return text, used, len(lf.package), seconds


def lock(locks_dir: Path, matrix: Matrix, python: str, *, overrides: Mapping[str, str] | None = None,
         solver: str = "auto", project: Project | None = None) -> CondaLockOutcome:
    """Solve the conda base of (matrix, python) and write its lock atomically.

    ``solver``: ``auto`` (conda-lock when an executable exists, else rattler),
    ``rattler`` or ``conda-lock``.  The previous file is kept on any failure.
    The lock's path passes the write gate before the solve.
    """
    path = conda_lock_path(locks_dir, matrix, python)
    target = paths.gate(path, what="write the conda lock", project=project)
    text, used, n, seconds = _solve(matrix, python, overrides, solver=solver)
    try:
        old: str | None = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        old = None
    changed = old != text
    if changed:
        atomic_write(target, text)
    return CondaLockOutcome(path, used, n, changed, seconds)


def _rattler_label() -> str:
    from importlib.metadata import version

    return f"rattler {version('py-rattler')}"


def _solve_rattler(matrix: Matrix, python: str, chans: list[tuple[str, str]], *, wanted: list[str],
                   vps: Mapping[str, str]) -> list[Any]:
    try:
        import rattler
        from rattler.exceptions import GatewayError, SolverError
    except ImportError:
        raise ToolNotFound("py-rattler is not installed", "pip install 'builder[conda]'") from None

    def vp(name: str, value: str) -> Any:
        ver, _, build = value.partition(" ")
        return rattler.GenericVirtualPackage(rattler.PackageName(name), rattler.Version(ver),
                                             rattler.BuildString(build or "0"))

    async def go() -> list[Any]:
        coro = rattler.solve(
            sources=[rattler.Channel(url) for _, url in chans],
            specs=wanted,
            platforms=["linux-64", "noarch"],
            virtual_packages=[vp(k, v) for k, v in vps.items()],
            timeout=_dt.timedelta(seconds=SOLVE_TIMEOUT),
        )
        return await asyncio.wait_for(coro, SOLVE_TIMEOUT)

    label = f"{matrix.name}/py{python}"
    before = {url: probe_channel(url) for _, url in chans}
    for name, url in chans:
        if all(v == "missing" for v in before[url].values()):
            raise Unavailable(f"conda solve of {label}: channel {name!r} not found at {url} "
                              "(no linux-64 or noarch repodata)",
                              "check the channel name, or point it elsewhere with --channel-override NAME=URL")
    try:
        return asyncio.run(go())
    except GatewayError as exc:
        raise Unavailable(f"conda solve of {label}: a channel could not be read: {_first(exc)}",
                          "check the channel names, the network, or --channel-override NAME=URL") from None
    except SolverError as exc:
        # rattler reads a subdir that answers 404 as empty, so a channel that
        # vanishes mid-solve looks like "no candidates": compare with before.
        for name, url in chans:
            after = probe_channel(url)
            if after != before[url]:
                raise Unavailable(f"conda solve of {label}: channel {name!r} changed during the solve "
                                  f"({_diff(before[url], after)})",
                                  "make sure the channel or mirror is complete and stable, then re-run") from None
        raise ToolFailed(f"conda solve of {label} failed: {_first(exc)}",
                         "relax [conda].packages or the Python pin, or check the channels") from None
    except TimeoutError:
        raise ToolTimeout(f"conda solve of {label} did not finish within {SOLVE_TIMEOUT:g}s") from None


def probe_channel(url: str, timeout: float = 15.0) -> dict[str, str]:
    """``{"linux-64": "present"|"missing"|"error: ...", "noarch": ...}`` for a channel URL."""
    import urllib.error
    import urllib.request

    out = {}
    for sub in (SUBDIR, "noarch"):
        if url.startswith("file:"):
            d = Path(unquote(urlsplit(url).path)) / sub
            found = any((d / n).is_file() for n in REPODATA_FILES)
            out[sub] = "present" if found else "missing"
            continue
        state = "missing"
        for n in REPODATA_FILES:
            req = urllib.request.Request(f"{url}/{sub}/{n}", method="HEAD")
            try:
                with urllib.request.urlopen(req, timeout=timeout):
                    state = "present"
                    break
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    state = f"error: HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                state = f"error: {getattr(exc, 'reason', exc)}"
                break
        out[sub] = state
    return out


def _diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    return ", ".join(f"{k}: {before[k]} -> {after[k]}" for k in before if before[k] != after.get(k))


def _first(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines[:3]) or type(exc).__name__


def _solve_conda_lock(exe: str, chans: list[tuple[str, str]], wanted: list[str],
                      *, vps: Mapping[str, str]) -> tuple[Lockfile, str]:
    """Run conda-lock itself with ``--conda EXE`` and read its output back."""
    from builder.conda import lockfile as conda_lockfile

    with paths.temp_dir("builder-conda-lock-") as d:
        env_yml, vp_yml = conda_lockfile.write_inputs(d, chans, wanted, vps=vps)
        out = d / "conda-lock.yml"
        argv = [sys.executable, "-m", "conda_lock", "lock", "--conda", exe, "-f", str(env_yml),
                "-p", SUBDIR, "--virtual-package-spec", str(vp_yml), "--lockfile", str(out),
                "--log-level", "WARNING"]
        env = _proc.clean_env(extra={"CONDA_PKGS_DIRS": str(d / "pkgs")})
        res = _proc.run(argv, timeout=SOLVE_TIMEOUT, env=env, cwd=d, what="conda-lock")
        if res.timed_out:
            raise ToolTimeout(f"conda-lock did not finish within {SOLVE_TIMEOUT:g}s and was killed")
        if not res.ok:
            tail = res.stderr_tail(6)
            raise ToolFailed(f"conda-lock failed (exit {res.returncode}): {res.brief(6)}",
                             "see the solver's message; check channels and [conda].packages",
                             returncode=res.returncode, stderr_tail=tail)
        lf = conda_lockfile.read(out)
        exe_version = _proc.run([exe, "--version"], timeout=30, env=env)
        from importlib.metadata import version

        lines = exe_version.stdout.strip().splitlines() if exe_version.ok else []
        exe_label = lines[-1] if lines else "?"
        label = f"conda-lock {version('conda-lock')} ({os.path.basename(exe)} {exe_label})"
        return lf, label


def conda_lock_state(locks_dir: Path, matrix: Matrix, python: str) -> LockState:
    """Freshness of the conda lock of (matrix, python), offline and without conda-lock's import cost."""
    from builder.conda import lockfile as conda_lockfile


    def judge(text: str, where: str) -> tuple[str, str]:
        meta, intact = conda_lockfile.read_stamp(text, where)
        if not intact:
            return "modified", "edited by hand since builder wrote it"
        if meta.get("builder-conda-format") != CONDA_FORMAT:
            return "stale", "written by another version of builder's conda locking"
        if meta.get("builder-spec-hash") != matrix.spec_hash(python):
            return "stale", "spec changed since the conda lock was written"
        return "fresh", f"matches its spec (solver: {meta.get('builder-solver', '?')})"

    return judge_file(conda_lock_path(locks_dir, matrix, python), matrix=matrix.id, python=python,
                      command=regenerate_command(matrix, python), judge=judge, what="conda lock file")

