"""The protected-environment guard: builder never writes inside QL_1.

``envs/host.toml`` names protected conda envs (``QL_1``) and paths.  Names are
resolved to prefixes with ``conda env list --json`` when a conda executable
exists, else by looking where conda keeps envs (``CONDA_ENVS_PATH``,
``~/.conda/environments.txt``, ``~/miniconda3/envs`` ...).  The active
environment (``CONDA_PREFIX``, ``VIRTUAL_ENV`` of the operator's shell) is
always protected too: builder installs into runtimes it creates, never into the
environment it was started from.

:func:`Protected.guard_write` is called with every path builder is about to
create or modify, before anything is written.  A target is refused when it lies
inside a protected root

* by its resolved path (catches symlinks and ``..``), or
* because it, or one of its existing ancestors, *is* a protected root's
  directory by ``(st_dev, st_ino)`` (catches bind mounts and other aliases
  that string comparison cannot see).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import ProtectedEnvError
from builder.project import Project

#: Where conda installations usually keep named envs, relative to $HOME
#: (https://docs.conda.io/projects/conda/en/latest/user-guide/configuration/settings.html#envs-dirs).
HOME_ENV_DIRS = (
    ".conda/envs",
    "miniconda3/envs",
    "anaconda3/envs",
    "miniforge3/envs",
    "mambaforge/envs",
    "micromamba/envs",
    ".local/share/mamba/envs",
)
SYSTEM_ENV_DIRS = ("/opt/conda/envs", "/opt/miniconda3/envs", "/opt/anaconda3/envs",
                   "/opt/miniforge3/envs", "/opt/mambaforge/envs")
CONDA_TIMEOUT = 30.0


@dataclass(frozen=True)
class Root:
    """One protected prefix and why it is protected."""

    path: Path  # resolved
    why: str  # "conda env QL_1 (conda env list)", "active env (CONDA_PREFIX)" ...
    dev_ino: tuple[int, int] | None  # None when the prefix does not exist (yet)
    name: str = ""  # the last component as found or given (a conda env's name is its directory's)


@dataclass(frozen=True)
class Protected:
    """The resolved set of protected roots, and the names that could not be found."""

    roots: tuple[Root, ...]
    unresolved: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # protected conda env names, matched as ``envs/<name>``
    #: Lazy sets (:func:`for_project`): resolves the names through conda when a target
    #: could be inside a conda env; None when this set is already whole.
    later: Callable[[], Protected] | None = field(default=None, compare=False, repr=False)
    environ: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    _whole: list[Protected] = field(default_factory=list, compare=False, repr=False)

    def whole(self) -> Protected:
        """This set with every name resolved (``conda env list`` run if a conda exists)."""
        if self.later is None:
            return self
        if not self._whole:
            self._whole.append(self.later())
        return self._whole[0]

    def unlocatable(self) -> tuple[str, ...]:
        """Protected env names builder cannot locate: listed by no conda, in no usual env
        directory, and no protected path ends in the name.  A write into such an env is refused
        only where its path shows ``envs/<name>`` (or by its active-env variable), so the
        operator must name its path in ``[protected] paths``.

        A lazy set looks in the usual env directories first (no conda call); only a name found
        there by none costs the ``conda env list`` of the whole set.
        """
        named = {r.name for r in self.roots} | {r.path.name for r in self.roots}
        names = [n for n in self.names if n not in named]
        if names and self.later is not None:
            scanned = {p.name for p in scanned_env_prefixes(self.environ)}
            names = [n for n in names if n not in scanned]
            if names:
                whole = self.whole()
                return tuple(n for n in names if n in whole.unresolved
                             and not any(n in (r.name, r.path.name) for r in whole.roots))
            return ()
        return tuple(n for n in names if n in self.unresolved)

    def match(self, target: str | os.PathLike[str]) -> Root | None:
        """The protected root ``target`` lies in (or aliases), else None.

        A lazy set answers from its paths, active envs and the ``envs/<name>`` rule;
        it resolves the names through conda (and answers as the whole set) only for a
        target that could be inside a conda env at all: one with an ancestor holding ``conda-meta/``, the
        directory every conda env (QL_1 included, wherever it lives, through whatever
        alias) has.  Elsewhere no conda env can be touched, and running ``conda env
        list`` (seconds on an operator's host) for every warm ``builder check`` that
        writes its cache under ``~/.cache`` would only say so again.
        """
        if self.later is not None and in_some_conda_env(target):
            return self.whole()._match(target)
        return self._match(target)

    def _match(self, target: str | os.PathLike[str]) -> Root | None:
        # realpath resolves symlinks component by component, so "link/../x"
        # means what the kernel means (abspath would drop "link/.." lexically).
        real = Path(os.path.realpath(target))
        for r in self.roots:
            if real == r.path or r.path in real.parents:
                return r
        # A name conda could not resolve (no conda, unusual envs dir) is still
        # protected wherever it shows up as a conda env directory.
        parts = real.parts
        for i in range(1, len(parts)):
            if parts[i - 1] == "envs" and parts[i] in self.names:
                return Root(Path(*parts[: i + 1]), f"conda env {parts[i]} (by name)", None)
        keys = {r.dev_ino: r for r in self.roots if r.dev_ino is not None}
        if not keys:
            return None
        # Walk the existing ancestors of both the given and the resolved path:
        # a bind mount has its own path but the protected directory's inode.
        for start in {Path(os.path.abspath(target)), real}:
            for p in (start, *start.parents):
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                hit = keys.get((st.st_dev, st.st_ino))
                if hit is not None:
                    return hit
        return None

    def guard_write(self, target: str | os.PathLike[str], what: str = "write") -> None:
        """Raise ProtectedEnvError if writing ``target`` would touch a protected env."""
        hit = self.match(target)
        if hit is not None:
            raise ProtectedEnvError(
                f"refusing to {what} {target}: it is inside the protected {hit.why} at {hit.path}",
                "builder never writes into protected environments; pick a path outside it "
                "(runtimes go under --root DIR)",
            )

    def as_dict(self) -> dict[str, object]:
        w = self.whole()
        return {
            "roots": [{"path": str(r.path), "why": r.why, "exists": r.dev_ino is not None}
                      for r in w.roots],
            "unresolved": list(w.unresolved),
            "notes": list(w.notes),
        }


def in_some_conda_env(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` (given or resolved) has an ancestor that is a conda env prefix
    (holds ``conda-meta/``); True when that cannot be told (an unreadable ancestor)."""
    for start in {Path(os.path.abspath(target)), Path(os.path.realpath(target))}:
        for d in (start, *start.parents):
            try:
                if stat.S_ISDIR(os.stat(d / "conda-meta").st_mode):
                    return True
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                return True
    return False


def _conda_exe(environ: Mapping[str, str]) -> str | None:
    from builder import _proc  # here: `lock --check` loads this module (the write gate's) but never runs conda

    for cand in (environ.get("CONDA_EXE"), environ.get("MAMBA_EXE"), "conda", "mamba", "micromamba"):
        if cand:
            found = _proc.which(cand, path=environ.get("PATH"))
            if found:
                return found
    return None


def conda_env_prefixes(environ: Mapping[str, str]) -> tuple[list[Path], str]:
    """Prefixes of every conda env this user can see, and how they were found."""
    exe = _conda_exe(environ)
    if exe:
        from builder import _proc

        res = _proc.run([exe, "env", "list", "--json"], timeout=CONDA_TIMEOUT,
                        env=_proc.clean_env(base=environ), what="conda env list")
        if res.ok:
            try:
                envs = json.loads(res.stdout).get("envs", [])
                return [Path(e) for e in envs if isinstance(e, str)], f"{os.path.basename(exe)} env list"
            except (ValueError, AttributeError, RecursionError):
                pass
    return scanned_env_prefixes(environ), "conda env directories"


def scanned_env_prefixes(environ: Mapping[str, str]) -> list[Path]:
    """Env directories found where conda installations keep them (no conda needed)."""
    found: list[Path] = []
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    dirs = [Path(d) for d in environ.get("CONDA_ENVS_PATH", "").split(os.pathsep) if d]
    dirs += [Path(d) for d in environ.get("CONDA_ENVS_DIRS", "").split(os.pathsep) if d]
    dirs += [home / d for d in HOME_ENV_DIRS] + [Path(d) for d in SYSTEM_ENV_DIRS]
    for root in (environ.get("CONDA_ROOT"), environ.get("MAMBA_ROOT_PREFIX")):
        if root:
            dirs.append(Path(root) / "envs")
    txt = home / ".conda" / "environments.txt"
    try:
        found += [Path(line.strip()) for line in txt.read_text().splitlines() if line.strip()]
    except OSError:
        pass
    for d in dirs:
        try:
            found += sorted(p for p in d.iterdir() if p.is_dir())
        except OSError:
            continue
    return found


def _root(path: Path, why: str) -> Root:
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
        key: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except OSError:
        key = None
    return Root(real, why, key, os.path.basename(os.path.normpath(path)))


def resolve(
    env_names: Iterable[str] = (),
    paths: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    lazy: bool = False,
) -> Protected:
    """Resolve protected env names and paths (plus the active env) to roots.

    ``environ`` is the operator's environment (default ``os.environ``), read
    before any scrubbing: that is where ``CONDA_PREFIX`` tells the active env.
    ``lazy``: resolve the names only when a target could be in a conda env
    (:meth:`Protected.match`).
    """
    environ = dict(os.environ if environ is None else environ)
    roots: list[Root] = []
    unresolved: list[str] = []
    notes: list[str] = []
    names = [n for n in env_names if n]
    by_path = [n for n in names if os.sep in n or n.startswith("~")]
    by_name = [n for n in names if n not in by_path]
    if by_name and lazy:
        env_names, paths = list(env_names), list(paths)
        later: Callable[[], Protected] | None = lambda: resolve(env_names, paths, environ)  # noqa: E731
    else:
        later = None
    if by_name and not lazy:
        prefixes, how = conda_env_prefixes(environ)
        for name in by_name:
            hits = [p for p in prefixes if p.name == name]
            found_by = how
            if not hits and how != "conda env directories":
                # A conda on PATH that does not list it (another installation,
                # a bind-mounted copy): the usual env directories may still
                # hold it, and then its device and inode are protected too.
                hits = [p for p in scanned_env_prefixes(environ) if p.name == name]
                found_by = f"conda env directories; {how} does not list it"
            if not hits:
                unresolved.append(name)
                notes.append(f"conda env {name} not found ({how}); any .../envs/{name} "
                             "directory is still refused")
            roots += [_root(p, f"conda env {name} ({found_by})") for p in hits]
    for p in [*by_path, *paths]:
        roots.append(_root(Path(os.path.expanduser(p)), f"protected path {p}"))
    for var in ("CONDA_PREFIX", "VIRTUAL_ENV"):
        if environ.get(var):
            roots.append(_root(Path(environ[var]), f"active env ({var})"))
    uniq: dict[Path, Root] = {}
    for r in roots:
        uniq.setdefault(r.path, r)
    return Protected(tuple(uniq.values()), tuple(unresolved), tuple(notes), tuple(by_name), later=later,
                     environ=environ)


def for_project(project: Project, environ: Mapping[str, str] | None = None) -> Protected:
    """The protected set of ``project``'s ``envs/host.toml`` (plus the active env).

    A project without host.toml still protects the active env.  Lazy: conda is asked
    only for targets that could be in a conda env (:meth:`Protected.match`).
    """
    if not (project.envs / "host.toml").exists():
        return resolve((), (), environ)
    host = project.host()
    return resolve(host.protected_conda_envs, host.protected_paths, environ, lazy=True)
