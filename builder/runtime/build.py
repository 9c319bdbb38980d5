"""``builder build``: a content-addressed, smoke-tested runtime from a lock.

A build happens in staging (:mod:`builder.runtime.swap`): the base creates the
interpreter, :mod:`builder.runtime.sync` installs the validated lock with every
hash verified, the smoke tests run, the manifest is written; only then is
staging renamed into place and the pointer switched.  Names and discovery are
:mod:`builder.runtime.layout`'s.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from builder import _proc, memo, paths, pylock, tools
from builder.errors import BuildError, Busy, LockFileError, NotReady, StaleLock
from builder.files import inputs
from builder.lock import state as lockstate
from builder.project import Project, lock_path, regenerate_command, select_pythons
from builder.protect import Protected
from builder.report import Progress
from builder.runtime import layout, swap
from builder.runtime import manifest as manifests
from builder.runtime.base import BaseRequest, BaseResult, default_base, get_base, identity
from builder.runtime.sync import picked_wheels, sync
from builder.spec import Matrix

LOCK_WAIT = 600.0



# --------------------------------------------------------------------------- the lock


def require_verifiable(lock: pylock.Lock) -> None:
    """Refuse a lock unless every package is a wheel with a non-empty hash."""
    bad: list[str] = []
    for p in lock.packages:
        label = f"{p.name} {p.version}".strip()
        if not p.wheels:
            bad.append(f"{label}: no wheel (would be built on this host)")
            continue
        for w in p.wheels:
            if not w.verified():
                bad.append(f"{label}: wheel {w.filename} has no hash")
    if bad:
        raise LockFileError(f"{lock.where}: refusing to install a lock without verifiable wheels: "
                            + "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""),
                            "every file must carry a sha256; re-lock from an index that serves hashes")


def checked_lock(project: Project, matrix: Matrix, python: str, *, cache: Path | None = None) -> pylock.Lock:
    """The committed lock of (matrix, python), read once, if it is fresh and verifiable.

    ``cache``: builder's cache directory, where validated lock models are kept (builder.memo).
    """
    path = lock_path(project.locks, matrix, python)
    cmd = regenerate_command(matrix, python)
    try:
        raw = inputs.read_bytes(path)
    except FileNotFoundError:
        raise StaleLock(f"{path}: no lock file", f"create it with `{cmd}`") from None
    except OSError as exc:
        raise LockFileError(f"{path}: cannot read: {exc.strerror or exc}", f"regenerate it with `{cmd}`") from None
    lock = memo.lock(raw, str(path), cache)
    state, reason = lockstate.judge_text(lock.text, matrix, python)
    if state in ("invalid", "modified"):
        raise LockFileError(f"{path}: {state}: {reason}; refusing to build from it", f"regenerate it with `{cmd}`")
    if state != "fresh":
        raise StaleLock(f"{path}: {state}: {reason}", f"refresh it with `{cmd}`")
    require_verifiable(lock)
    return lock


# --------------------------------------------------------------------------- build


@dataclass(frozen=True, kw_only=True)
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
    pinned: frozenset[str] = frozenset()  # runtimes a route, a running slot or a rollback target uses


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    name: str
    path: Path
    status: str  # "built" | "rebuilt" | "exists"
    manifest: manifests.Manifest
    removed_leftovers: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "status": self.status,
                "removed_leftovers": list(self.removed_leftovers), "manifest": self.manifest.as_dict()}


T = TypeVar("T")


def _in_background(fn: Callable[[], T]) -> Callable[[], T]:
    """Start ``fn`` on a thread; the returned function waits for its result.

    Whatever the thread raises (a tool error, or builder's stop on a signal) is kept
    and raised in the caller: a thread never prints a traceback of its own.
    """
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # re-raised by result() in the caller's thread
            err.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def result() -> T:
        t.join()
        if err:
            raise err[0]
        return out[0]

    return result


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _lock_record(project: Project, lock: pylock.Lock) -> manifests.LockRecord:
    path = Path(lock.where)
    shown = str(path.relative_to(project.root)) if path.is_relative_to(project.root) else str(path)
    return manifests.LockRecord(path=shown, sha256=lock.sha256, content=lock.content_hash,
                                packages=len(lock.packages))


def _interpreter(made: BaseResult) -> manifests.Interpreter:
    d = made.details
    rejected = d.get("rejected") or []
    packages = d.get("packages")
    return manifests.Interpreter(
        version=made.version, source=made.source, origin=made.origin, reason=made.reason,
        rejected=tuple((str(a), str(b)) for a, b in rejected),
        conda_lock=str(d["conda_lock"]) if d.get("conda_lock") is not None else None,
        packages=packages if isinstance(packages, int) else None,
        solver=str(d["solver"]) if d.get("solver") is not None else None)


def build(project: Project, req: BuildRequest, protected: Protected,
          *, progress: Progress | None = None) -> BuildResult:
    """Build (or find) the runtime of ``req``'s lock; see the module docstring."""
    say = progress or (lambda _t, _m: None)
    t0 = time.monotonic()
    matrix = project.matrix(req.matrix)
    python = select_pythons(matrix, req.python)[0]
    # Every path a build writes passes the write gate before anything is
    # written: the root, the runtime, its name lock, staging, uv's cache and
    # the temp dirs (builder.paths).
    root = paths.gate(layout.runtimes_root(project, req.root), what="create runtimes under", kind="dir",
                      user_given=req.root is not None, protected=protected)
    # The smoke phase's prediction fills the check cache; validated locks and data files are kept there too.
    check_cache = paths.check_cache(protected=protected)
    memo.use_for_data(check_cache)
    lock = checked_lock(project, matrix, python, cache=check_cache)
    base = get_base(req.base or default_base(matrix))
    name = layout.runtime_name(matrix, python, lock.content_hash, base=base.name,
                               base_identity=identity(base, matrix, python))
    final = paths.gate(root / name, what="build a runtime at", kind="dir", protected=protected)
    paths.gate(swap.name_lock_dir(root, name), what="create the build lock in", kind="dir", protected=protected)
    cache_dir = str(paths.uv_cache(req.cache_dir, protected=protected))
    paths.temp_base(protected=protected)  # uv and the smoke children inherit $TMPDIR
    paths.mkdir(root, what="create runtimes under", protected=protected)
    with swap.name_lock(root, name, req.wait, on_wait=lambda: say(name, "waiting for another build of it")):
        removed = swap.clean_leftovers(root, name)
        if removed:
            say(name, f"removed leftovers of interrupted builds: {', '.join(removed)}")
        status = "built"
        if final.exists():
            found = layout.read_manifest(final)
            if found is not None and found.built_from(lock.content_hash) and not req.force:
                swap.point(root, layout.pointer_name(matrix, python, base.name), name)
                return BuildResult(name=name, path=final, status="exists", manifest=found,
                                   removed_leftovers=tuple(removed))
            if name in req.pinned:
                raise Busy(f"{name} is pinned by the serve route, its rollback target or a running slot; "
                           "not replacing it", "route away from it and stop its slot first (builder route, "
                           "builder serve stop)")
            busy = swap.users_of(final)
            if busy:
                raise Busy(f"{final} is in use by pid {', '.join(map(str, busy[:5]))}; not replacing it",
                           "stop the processes using it, then run the build again")
            status = "rebuilt"
        uv = tools.uv_bin()
        uv_version = _in_background(lambda: tools.uv_version(uv))  # for the manifest, beside the base step
        # Every uv child (venv, pip sync) uses the gated cache, not a default of its own.
        env = _proc.clean_env(extra={"NO_COLOR": "1", "UV_CACHE_DIR": cache_dir})
        staging = paths.gate(swap.staging_dir(root, name), what="build a runtime at", kind="dir",
                             protected=protected)
        try:
            staging.mkdir()  # inside the try: a signal right after it still removes it
            say(name, f"creating the {base.name} base")
            # The host's wheel of each package (packaging's tags: ~10 ms of CPU) is picked on
            # a thread while this one waits for the base (`uv venv`).
            picked = _in_background(lambda: picked_wheels(lock, python))
            t = time.monotonic()
            made = base.create(BaseRequest(staging=staging, python=python, matrix=matrix, uv=uv, env=env,
                                           interpreter=req.interpreter, protected=protected, final=final,
                                           cache=check_cache))
            t_base = time.monotonic() - t
            say(name, f"Python {made.version} from {made.source} ({made.origin}); base ready in {t_base:.1f}s")
            t = time.monotonic()
            sync(uv, made.python, made.version, lock=lock, cache_dir=cache_dir, env=env,
                 progress=lambda m: say(name, m),
                 picked=picked())
            t_sync = time.monotonic() - t
            # Flush what uv wrote while the smoke tests run: the syncfs before the rename then
            # only has the smoke phase's and the manifest's writes left to flush.
            early_flush = _in_background(lambda: swap.syncfs(staging))
            say(name, "running smoke tests")
            t = time.monotonic()
            from builder.runtime import smoke  # loading the smoke machinery is part of the smoke phase

            expected = smoke.expected_for(matrix, lock)  # so is predicting what it should see
            report = smoke.run_smoke(made.python, expected, gpu=req.gpu,
                                     progress=lambda m: say(name, f"smoke: {m}"))
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
            manifest = manifests.Manifest(
                format=manifests.FORMAT, name=name, origin=manifests.LOCK, matrix=matrix.id, python=python,
                base=base.name, lock=_lock_record(project, lock), interpreter=_interpreter(made),
                uv=uv_version(), created_at=_now(),
                timings=MappingProxyType({"base": round(t_base, 3), "sync": round(t_sync, 3),
                                          "smoke": round(t_smoke, 3), "total": round(time.monotonic() - t0, 3)}),
                smoke=report.record())
            manifests.write(staging, manifest)
            early_flush()
            swap.syncfs(staging)
            swap.install(staging, final, root)
            swap.point(root, layout.pointer_name(matrix, python, base.name), name)
        except BaseException:
            swap.rmtree(staging)
            raise
    return BuildResult(name=name, path=final, status=status, manifest=manifest, removed_leftovers=tuple(removed))


def locate(project: Project, matrix_sel: str, python: str, *, root: str | None = None,
           base: str | None = None) -> tuple[Matrix, pylock.Lock, Path]:
    """The finished runtime of the current lock, or NotReady if none."""
    matrix = project.matrix(matrix_sel)
    b = get_base(base or default_base(matrix))
    py = select_pythons(matrix, python)[0]
    lock = checked_lock(project, matrix, py)
    path = layout.runtimes_root(project, root) / layout.runtime_name(matrix, py, lock.content_hash, base=b.name,
                                                                    base_identity=identity(b, matrix, py))
    if layout.read_manifest(path) is None:
        raise NotReady(f"no runtime built from the current lock of {matrix.name} py{py} ({path.name})",
                       f"build it with `builder build --matrix {matrix.id} --python {py}`")
    return matrix, lock, path


def smoke_runtime(project: Project, matrix_sel: str, python: str, *, root: str | None = None,
                  base: str | None = None, gpu: bool | None = None,
                  progress: Progress | None = None) -> tuple[Path, Any]:
    """Run the smoke tests in the built runtime of the current lock (read-only)."""
    from builder.runtime import smoke

    matrix, lock, path = locate(project, matrix_sel, python, root=root, base=base)
    say = (lambda m: progress(path.name, m)) if progress is not None else None
    return path, smoke.run_smoke(path / "bin" / "python", smoke.expected_for(matrix, lock), gpu=gpu,
                                 progress=say)


def smoke_named(project: Project, runtime_id: str, *, root: str | None = None, gpu: bool | None = None,
                progress: Progress | None = None) -> tuple[Path, Any]:
    """``builder smoke --runtime ID``: the smoke tests of any finished runtime under the root (read-only).

    Compared with what its manifest says it is: a built runtime with the prediction for its
    lock, while that lock is still the one committed at its path; an adopted runtime with what
    adoption read of its environment (a changed environment fails the comparison).
    """
    from builder.runtime import smoke

    rt = layout.named(layout.runtimes_root(project, root), runtime_id)
    m = rt.manifest
    if m.environment is not None:
        expected = smoke.expected_from_environment(m.environment, since_adoption=True)
    else:
        expected = smoke.Expected(None, None, None, None, None, None,
                                  source=f"nothing: the lock {runtime_id} was built from is not committed any more")
        if m.lock is not None and m.matrix is not None:
            path = Path(m.lock.path) if Path(m.lock.path).is_absolute() else project.root / m.lock.path
            try:
                lock = pylock.parse(inputs.read_bytes(path), str(path))
            except (OSError, LockFileError):
                lock = None
            if lock is not None and lock.content_hash == m.lock.content:
                expected = smoke.expected_for(project.matrix(m.matrix), lock)
    say = (lambda msg: progress(runtime_id, msg)) if progress is not None else None
    return rt.path, smoke.run_smoke(rt.python, expected, gpu=gpu, progress=say)
