"""Isolated runtimes: build a content-addressed environment from a lock.

Layout under the runtimes root (``runtimes/``, ``--root DIR`` or
``$BUILDER_RUNTIMES``)::

    matrix-a-py312-<hash12>/      a finished runtime (never moved, never edited)
        runtime.json              manifest: lock, interpreter, timings, smoke
        bin/python, lib/ ...      a relocatable venv (or a conda prefix)
    matrix-a-py312 -> matrix-a-py312-<hash12>   "current" pointer (symlink)
    .staging-<name>-<pid>-<tok>/  a build in progress (or a killed one)
    .trash-<name>-<tok>/          a replaced runtime being deleted
    .locks/<name>/.builder.lock   flock held by the one build of <name>

``<hash12>`` is the sha256 of the lock file (plus the base's identity for a
non-venv base).  A build happens in staging: base (interpreter), ``uv pip
sync`` of the lock with every hash verified, smoke tests, manifest; only then
is staging renamed into place (one ``rename``) and the pointer switched (a
symlink replaced by ``rename``).  A killed build leaves only a staging
directory, which the next build of any runtime removes once the build that
owned it is provably dead (its flock is free).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import hashlib
import importlib
import json
import os
import secrets
import shutil
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from builder import _proc, lockfile, tools
from builder.errors import (
    BuildError,
    Busy,
    LockFileError,
    StaleLock,
    ToolFailed,
    Unavailable,
    UsageError,
)
from builder.project import Project, select_pythons
from builder.protect import Protected
from builder.spec import Matrix

MANIFEST = "runtime.json"
MANIFEST_FORMAT = 1
VENV_TIMEOUT = 120.0
SYNC_TIMEOUT = 3600.0  # a cold matrix download is ~5 GB (FACTS.md)
LOCK_WAIT = 600.0

Progress = Callable[[str, str], None]


# --------------------------------------------------------------------------- bases


@dataclass(frozen=True, kw_only=True)
class BaseRequest:
    """What a base gets to create the interpreter of a runtime.

    ``staging`` exists and is empty; the base must create the environment *in*
    it (``staging`` itself is the environment prefix), never elsewhere.
    ``env`` is already scrubbed (``_proc.clean_env``): pass it to every child.
    """

    staging: Path
    python: str  # "3.12"
    matrix: Matrix
    uv: str  # the uv executable builder uses
    env: Mapping[str, str]
    interpreter: str | None = None  # --interpreter PATH, if the user gave one
    timeout: float = 600.0
    protected: Protected | None = None
    final: Path | None = None  # where staging will be renamed to (conda prefixes embed it)


@dataclass(frozen=True, kw_only=True)
class BaseResult:
    """The environment a base created.

    ``python`` is the interpreter *inside* ``staging`` (e.g. staging/bin/python)
    that ``uv pip sync --python`` installs into; ``source``/``reason`` say where
    its Python came from (shown by ``builder build`` and in the manifest).
    """

    python: Path
    version: str  # full version, e.g. "3.12.1"
    source: str  # "interpreter" | "path" | "pyenv" | "uv" | "conda" ...
    origin: str  # the base interpreter or conda lock used
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


class Base(Protocol):
    """Creates the bare environment (interpreter, no packages) of a runtime.

    A base may also define ``identity(matrix, python) -> str``: a string that
    changes whenever what it installs changes (e.g. its own lock's hash).  It is
    folded into the runtime's content hash.
    """

    name: str

    def create(self, req: BaseRequest) -> BaseResult:
        """Create the environment in ``req.staging``; raise a BuilderError on failure."""
        ...


#: Bases by name -> "module:attribute" of a zero-argument factory returning a Base.
BASES: dict[str, str] = {
    "venv": "builder.runtime:VenvBase",
    "conda": "builder.conda_runtime:CondaRuntimeBase",
}


def get_base(name: str) -> Base:
    """Instantiate the base registered as ``name``."""
    if name not in BASES:
        raise UsageError(f"unknown base {name!r}", f"choose one of {', '.join(BASES)}")
    mod, attr = BASES[name].split(":")
    try:
        factory = getattr(importlib.import_module(mod), attr)
    except (ModuleNotFoundError, AttributeError):
        raise UsageError(f"base {name!r} is not available in this installation ({mod})") from None
    base: Base = factory()
    return base


class VenvBase:
    """A relocatable ``uv venv`` on a discovered (or given) CPython X.Y."""

    name = "venv"

    def create(self, req: BaseRequest) -> BaseResult:
        from builder import interpreters

        found = interpreters.find(req.python, explicit=req.interpreter, protected=req.protected,
                                  uv=req.uv, env=req.env)
        # --relocatable: scripts and activators find the env relative to
        # themselves, so renaming staging into place keeps them working.
        argv = [req.uv, "venv", str(req.staging), "--python", found.path, "--relocatable",
                "--no-config", "--no-python-downloads", "--no-project", "--quiet",
                "--prompt", f"{req.matrix.name}-py{req.python}"]
        res = _proc.run(argv, timeout=min(req.timeout, VENV_TIMEOUT), env=req.env, what="uv venv")
        if not res.ok:
            raise BuildError(f"uv venv failed: {res.brief(4) or 'timed out'}",
                             f"check the interpreter {found.path}")
        return BaseResult(python=req.staging / "bin" / "python", version=found.version,
                          source=found.source, origin=found.path, reason=found.reason,
                          details={"rejected": [list(r) for r in found.rejected]})


# --------------------------------------------------------------------------- the lock


@dataclass(frozen=True)
class LockInfo:
    path: Path
    digest: str  # sha256 hex of the lock file's bytes
    packages: Mapping[str, str]  # canonical name -> version


def read_lock(path: Path) -> LockInfo:
    """Read a lock and refuse it unless every package is a wheel with a non-empty hash."""
    from packaging.pylock import Pylock, PylockValidationError
    from packaging.utils import canonicalize_name

    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
        lock = Pylock.from_dict(data)
    except FileNotFoundError:
        raise StaleLock(f"{path}: no lock file", "create it with `builder lock`") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, PylockValidationError) as exc:
        raise LockFileError(f"{path}: not a valid PEP 751 lock: {exc}",
                            "regenerate it with `builder lock`") from None
    bad: list[str] = []
    for p in lock.packages:
        label = f"{p.name} {p.version or ''}".strip()
        if not p.wheels:
            bad.append(f"{label}: no wheel (would be built on this host)")
            continue
        for w in p.wheels:
            if not w.hashes or not any(str(v).strip() for v in w.hashes.values()):
                bad.append(f"{label}: wheel {w.filename} has no hash")
    if bad:
        raise LockFileError(f"{path}: refusing to install a lock without verifiable wheels: "
                            + "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""),
                            "every file must carry a sha256; re-lock from an index that serves hashes")
    pkgs = {str(canonicalize_name(p.name)): str(p.version) for p in lock.packages if p.version}
    return LockInfo(path, hashlib.sha256(raw).hexdigest(), pkgs)


def checked_lock(project: Project, matrix: Matrix, python: str) -> LockInfo:
    """The committed lock of (matrix, python) if it is fresh, else a clear error."""
    st = lockfile.lock_state(project.locks, matrix, python)
    if st.state == "missing":
        raise StaleLock(f"{st.path}: no lock file", f"create it with `{st.command}`")
    if st.state in ("invalid", "modified"):
        raise LockFileError(f"{st.path}: {st.state}: {st.reason}; refusing to build from it",
                            f"regenerate it with `{st.command}`")
    if st.state != "fresh":
        raise StaleLock(f"{st.path}: {st.state}: {st.reason}", f"refresh it with `{st.command}`")
    return read_lock(st.path)


# --------------------------------------------------------------------------- layout


def runtimes_root(project: Project, root: str | os.PathLike[str] | None = None) -> Path:
    """``--root``, else ``$BUILDER_RUNTIMES``, else ``<project>/runtimes``."""
    chosen = root or os.environ.get("BUILDER_RUNTIMES") or project.runtimes
    # Resolved like the kernel resolves it (symlinks, then ".."): the path
    # checked by the protected-env guard is the path written to.
    return Path(os.path.realpath(os.path.expanduser(chosen)))


def runtime_name(matrix: Matrix, python: str, lock: LockInfo, base: str = "venv",
                 base_identity: str = "") -> str:
    """``matrix-a-py312-<hash12>`` (``matrix-a-py312-conda-<hash12>`` for a conda base)."""
    h = hashlib.sha256(lock.digest.encode())
    if base != "venv":
        h.update(f"\0{base}\0{base_identity}".encode())
    tag = lockfile.py_tag(python)
    mid = "" if base == "venv" else f"{base}-"
    return f"{matrix.name}-{tag}-{mid}{h.hexdigest()[:12]}"


def pointer_name(matrix: Matrix, python: str, base: str = "venv") -> str:
    return f"{matrix.name}-{lockfile.py_tag(python)}" + ("" if base == "venv" else f"-{base}")


def read_manifest(runtime: Path) -> dict[str, Any] | None:
    """The manifest of a finished runtime, or None if it has none (not complete)."""
    try:
        data = json.loads((runtime / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None


@contextlib.contextmanager
def _name_lock(root: Path, name: str, wait: float, progress: Progress) -> Iterator[None]:
    with lockfile.directory_lock(root / ".locks" / name, timeout=wait,
                                 on_wait=lambda: progress(name, "waiting for another build of it")):
        yield


def _is_free(root: Path, name: str) -> bool:
    try:
        with lockfile.directory_lock(root / ".locks" / name, timeout=0):
            return True
    except Busy:
        return False


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def clean_leftovers(root: Path, held: str) -> list[str]:
    """Remove staging dirs of dead builds and trash dirs; return what was removed.

    ``held`` is the runtime name whose lock this process holds: its staging
    dirs are leftovers by definition.  Others are removed only if their name
    lock is free, i.e. the build that made them is dead.
    """
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if p.name.startswith(".trash-"):
            _rmtree(p)
            removed.append(p.name)
        elif p.name.startswith(".staging-") and p.is_dir() and not p.is_symlink():
            parts = p.name.removeprefix(".staging-").rsplit("-", 2)
            if len(parts) != 3:
                continue
            if parts[0] == held or _is_free(root, parts[0]):
                _rmtree(p)
                removed.append(p.name)
    return removed


_libc: Any = None


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fn = _libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def users_of(path: Path) -> list[int]:
    """Pids whose executable, cwd or mapped files lie inside ``path`` (readable ones only)."""
    prefix = str(path.resolve()) + os.sep
    pids: list[int] = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            links = [os.readlink(d / "exe"), os.readlink(d / "cwd")]
            maps = (d / "maps").read_text(errors="replace")
        except OSError:
            continue
        if any((x + os.sep).startswith(prefix) for x in links) or prefix in maps:
            pids.append(int(d.name))
    return sorted(p for p in pids if p != os.getpid())


def _install(staging: Path, final: Path, root: Path) -> None:
    """Put ``staging`` at ``final``; an old ``final`` is swapped out and deleted."""
    if not final.exists():
        os.rename(staging, final)
        return
    trash = root / f".trash-{final.name}-{secrets.token_hex(4)}"
    if _renameat2_exchange(staging, final):
        os.rename(staging, trash)  # staging now holds the old runtime
    else:
        os.rename(final, trash)
        os.rename(staging, final)
    _rmtree(trash)


def _point(root: Path, pointer: str, target: str) -> None:
    """Switch ``root/pointer`` -> ``target`` by renaming a new symlink over it."""
    link = root / pointer
    if link.exists() and not link.is_symlink():
        return  # someone's real directory: never replace it
    tmp = root / f".{pointer}.{secrets.token_hex(4)}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` so a renamed runtime is on disk."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            _libc.syncfs(fd)
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildRequest:
    matrix: str  # selector: "A", "a", "matrix-a"
    python: str
    root: str | None = None
    interpreter: str | None = None
    force: bool = False
    base: str | None = None  # None: the spec's (conda when it declares [conda], else venv)
    cache_dir: str | None = None  # uv cache; default $UV_CACHE_DIR, else uv's own
    gpu: bool | None = None  # None: detect
    wait: float = LOCK_WAIT


@dataclass
class BuildResult:
    name: str
    path: Path
    status: str  # "built" | "rebuilt" | "exists"
    manifest: dict[str, Any]
    removed_leftovers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "status": self.status,
                "removed_leftovers": self.removed_leftovers, "manifest": self.manifest}


def supported_tags(version: str) -> list[Any]:
    """Wheel tags a CPython ``version`` ("3.12.1") accepts on this host, best first."""
    from packaging import tags

    major, minor = (int(x) for x in version.split(".")[:2])
    plats = list(tags.platform_tags())  # this host's glibc/arch: the runtime runs here
    return [*tags.cpython_tags((major, minor), platforms=plats),
            *tags.compatible_tags((major, minor), f"cp{major}{minor}", plats)]


def pinned_requirements(lock: Path, version: str) -> str:
    """The lock as a hashed requirements file: one direct wheel URL per package.

    uv 0.13.9 installing ``pylock.toml`` directly revalidates every wheel URL and
    stores a fresh copy in its cache on each install (measured: +9.86 GB of
    cache per matrix-B runtime), so runtimes could not share files.  Direct
    URL requirements with ``--hash`` are served from the cache and hardlinked.
    The wheel is the lock's best match for the target interpreter; markers are
    kept for uv to evaluate against it.
    """
    from packaging.pylock import Pylock
    from packaging.utils import parse_wheel_filename

    pylock = Pylock.from_dict(tomllib.loads(lock.read_text(encoding="utf-8")))
    rank = {t: i for i, t in reversed(list(enumerate(supported_tags(version))))}
    lines: list[str] = []
    for p in pylock.packages:
        best, best_rank = None, len(rank)
        for w in p.wheels or ():
            r = min((rank.get(t, len(rank)) for t in parse_wheel_filename(w.filename)[3]), default=len(rank))
            if r < best_rank:
                best, best_rank = w, r
        if best is None:
            if p.marker is None:
                raise BuildError(f"{lock.name}: {p.name} {p.version} has no wheel for Python {version} "
                                 "on this host", "re-lock for this platform")
            if not p.wheels:
                continue
            best = p.wheels[0]  # excluded by its marker here; uv skips it
        hashes = " ".join(f"--hash={algo}:{digest}" for algo, digest in sorted(best.hashes.items()))
        marker = f" ; {p.marker}" if p.marker is not None else ""
        lines.append(f"{p.name} @ {best.url}{marker} {hashes}")
    return "\n".join(lines) + "\n"


def sync_argv(uv: str, python: Path, requirements: Path, cache_dir: str | None) -> list[str]:
    """``uv pip sync`` of pinned, hashed wheel URLs: hardlinks, no config, no builds, no index."""
    argv = [uv, "pip", "sync", str(requirements), "--python", str(python),
            "--require-hashes", "--no-build", "--strict", "--no-index",
            # hardlink from uv's cache (uv falls back to copying across
            # filesystems); never symlink: the cache may be pruned.
            "--link-mode", "hardlink",
            "--no-config", "--no-python-downloads", "--no-progress"]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    return argv


def _sync(uv: str, python: Path, version: str, lock: Path, cache_dir: str | None,
          env: Mapping[str, str]) -> float:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="builder-sync-") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text(pinned_requirements(lock, version), encoding="utf-8")
        res = _proc.run(sync_argv(uv, python, reqs, cache_dir), timeout=SYNC_TIMEOUT, env=env,
                        what="uv pip sync")
    if res.ok:
        return res.duration
    from builder.uv_backend import NETWORK_ERROR, summarize

    tail = summarize(res.stderr)  # uv's multi-line report as one line
    if res.timed_out:
        raise ToolFailed(f"uv pip sync did not finish within {SYNC_TIMEOUT:g}s", "check the network")
    if "hash mismatch" in res.stderr.lower() or "size mismatch" in res.stderr.lower():
        raise BuildError(f"a downloaded file does not match the lock's hash: {tail}",
                         "the index or the lock was altered; re-lock from a trusted index")
    if "Failed to extract archive" in res.stderr:
        raise BuildError(f"a downloaded file is corrupt: {tail}",
                         "the index serves a damaged or altered file; re-lock from a trusted index")
    if NETWORK_ERROR.search(res.stderr):
        raise Unavailable(f"uv could not download the locked files: {tail}",
                          "check the network; a warm uv cache (--cache-dir) avoids downloads")
    if "No space left" in res.stderr:
        raise BuildError(f"disk full while installing: {tail}", "free space under the runtimes root")
    raise ToolFailed(f"uv pip sync failed (exit {res.returncode}): {tail}",
                     returncode=res.returncode, stderr_tail=tail)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def build(project: Project, req: BuildRequest, protected: Protected,
          progress: Progress | None = None) -> BuildResult:
    """Build (or find) the runtime of ``req``'s lock; see the module docstring."""
    from builder import smoke

    say = progress or (lambda _t, _m: None)
    t0 = time.monotonic()
    matrix = project.matrix(req.matrix)
    python = select_pythons(matrix, req.python)[0]
    root = runtimes_root(project, req.root)
    protected.guard_write(root, "create runtimes under")
    lock = checked_lock(project, matrix, python)
    base = get_base(req.base or default_base(matrix))
    ident_fn = getattr(base, "identity", None)
    ident = str(ident_fn(matrix, python)) if callable(ident_fn) else ""
    name = runtime_name(matrix, python, lock, base.name, ident)
    final = root / name
    protected.guard_write(final, "build a runtime at")
    cache_dir = req.cache_dir or os.environ.get("UV_CACHE_DIR") or None
    if cache_dir:
        protected.guard_write(cache_dir, "use the uv cache at")
    root.mkdir(parents=True, exist_ok=True)
    with _name_lock(root, name, req.wait, say):
        removed = clean_leftovers(root, name)
        if removed:
            say(name, f"removed leftovers of interrupted builds: {', '.join(removed)}")
        status = "built"
        if final.exists():
            manifest = read_manifest(final)
            if manifest is not None and manifest.get("lock", {}).get("sha256") == lock.digest and not req.force:
                _point(root, pointer_name(matrix, python, base.name), name)
                return BuildResult(name, final, "exists", manifest, removed)
            from builder.serve.service import pinned_runtimes  # serve imports this module

            if name in pinned_runtimes(project):
                raise Busy(f"{name} is pinned by the serve route, its rollback target or a running slot; "
                           "not replacing it", "route away from it and stop its slot first (builder route, "
                           "builder serve stop)")
            busy = users_of(final)
            if busy:
                raise Busy(f"{final} is in use by pid {', '.join(map(str, busy[:5]))}; not replacing it",
                           "stop the processes using it, then run the build again")
            status = "rebuilt"
        uv = tools.uv_bin()
        env = _proc.clean_env(extra={"NO_COLOR": "1"})
        staging = root / f".staging-{name}-{os.getpid()}-{secrets.token_hex(3)}"
        protected.guard_write(staging, "build a runtime at")
        staging.mkdir()
        try:
            say(name, f"creating the {base.name} base")
            t = time.monotonic()
            made = base.create(BaseRequest(staging=staging, python=python, matrix=matrix, uv=uv, env=env,
                                           interpreter=req.interpreter, protected=protected, final=final))
            t_base = time.monotonic() - t
            say(name, f"Python {made.version} from {made.source} ({made.origin}); installing "
                      f"{len(lock.packages)} packages")
            t = time.monotonic()
            _sync(uv, made.python, made.version, lock.path, cache_dir, env)
            t_sync = time.monotonic() - t
            say(name, "running smoke tests")
            t = time.monotonic()
            expected = smoke.expected_for(matrix, lock.path, lock.packages)  # part of the smoke phase
            report = smoke.run_smoke(made.python, expected, gpu=req.gpu)
            t_smoke = time.monotonic() - t
            if not report.ok:
                bad = "; ".join(f"{s.name}: {s.reason}" for s in report.failed())
                raise BuildError(f"{name}: smoke tests failed, nothing was switched in: {bad}",
                                 f"run `builder check --matrix {matrix.id}` and fix the spec or lock")
            # A base that is not a relocatable venv (conda) rewrites what uv wrote with
            # staging paths (console-script shebangs) so it holds after the rename;
            # after the smoke tests, which run the scripts in staging.
            finish = getattr(base, "finish", None)
            if callable(finish):
                finish(staging, final)
            manifest = {
                "format": MANIFEST_FORMAT, "name": name, "matrix": matrix.id, "python": python,
                "base": base.name,
                "lock": {"path": str(lock.path.relative_to(project.root)) if lock.path.is_relative_to(
                    project.root) else str(lock.path), "sha256": lock.digest,
                         "packages": len(lock.packages)},
                "interpreter": {"version": made.version, "source": made.source, "origin": made.origin,
                                "reason": made.reason, **dict(made.details)},
                "uv": tools.uv_version(uv), "built_at": _now(),
                "timings": {"base": round(t_base, 3), "sync": round(t_sync, 3),
                            "smoke": round(t_smoke, 3),
                            "total": round(time.monotonic() - t0, 3)},
                "smoke": report.as_dict(),
            }
            lockfile.atomic_write(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
            _syncfs(staging)
            _install(staging, final, root)
            _point(root, pointer_name(matrix, python, base.name), name)
        except BaseException:
            _rmtree(staging)
            raise
    return BuildResult(name, final, status, manifest, removed)


def default_base(matrix: Matrix) -> str:
    """The base a matrix asks for: ``conda`` when its spec declares ``[conda]``, else ``venv``."""
    return "conda" if matrix.conda is not None else "venv"


def locate(project: Project, matrix_sel: str, python: str, root: str | None = None,
           base: str | None = None) -> tuple[Matrix, LockInfo, Path]:
    """The finished runtime of the current lock, or NotReady-style error if none."""
    matrix = project.matrix(matrix_sel)
    base = base or default_base(matrix)
    py = select_pythons(matrix, python)[0]
    lock = checked_lock(project, matrix, py)
    b = get_base(base)
    ident_fn = getattr(b, "identity", None)
    ident = str(ident_fn(matrix, py)) if callable(ident_fn) else ""
    path = runtimes_root(project, root) / runtime_name(matrix, py, lock, b.name, ident)
    if read_manifest(path) is None:
        from builder.errors import NotReady

        raise NotReady(f"no runtime built from the current lock of {matrix.name} py{py} ({path.name})",
                       f"build it with `builder build --matrix {matrix.id} --python {py}`")
    return matrix, lock, path


def smoke_runtime(project: Project, matrix_sel: str, python: str, root: str | None = None,
                  base: str | None = None, gpu: bool | None = None) -> tuple[Path, Any]:
    """Run the smoke tests in the built runtime of the current lock (read-only)."""
    from builder import smoke

    matrix, lock, path = locate(project, matrix_sel, python, root, base)
    report = smoke.run_smoke(path / "bin" / "python", smoke.expected_for(matrix, lock.path, lock.packages),
                             gpu=gpu)
    return path, report

