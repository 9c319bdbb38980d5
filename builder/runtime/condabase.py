"""The ``conda`` base of a runtime: a conda prefix created from the conda lock.

``builder build --base conda`` gets its interpreter here: the packages of
``locks/matrix-<id>/conda-lock.py<XY>.yml`` are installed into the staging
directory with py-rattler's installer (in process, no conda executable), then
the PyPI lock is synced into that prefix by the runtime build with uv.

Hashes: rattler checks a downloaded package's sha256 against the record
(checked: an altered sha256 is refused for an http(s) URL), but it does not
check a ``file://`` package (checked with py-rattler 0.28: it installs it), so
builder hashes local packages itself (sha256 and md5) before installing.  A lock
that is missing, stale or edited since builder wrote it is refused outright.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from builder import _proc, paths
from builder.conda import backend as conda_backend
from builder.errors import BuildError, LockFileError, StaleLock, ToolNotFound
from builder.protect import Protected
from builder.runtime.base import BaseRequest, BaseResult
from builder.spec import Matrix

PROBE = "import json, sys; print(json.dumps([sys.version.split()[0], sys.prefix, sys.executable]))"
INSTALL_TIMEOUT = 1800.0


@dataclass(frozen=True)
class CondaPrefix:
    """A created conda prefix and its interpreter."""

    prefix: Path
    python: Path
    version: str
    packages: int
    solver: str


def _locks_dir(matrix: Matrix) -> Path:
    # envs/matrix-b.toml -> <project>/locks (the spec file's project).
    return Path(matrix.path).resolve().parent.parent / "locks"


def _file_digest(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()  # md5: the lock format's second hash, not security
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def verify_local(url: str, sha256: str, md5: str) -> None:
    """Hash a ``file://`` package against the lock; raise BuildError on any difference."""
    path = Path(unquote(urlsplit(url).path))
    try:
        got_sha, got_md5 = _file_digest(path)
    except OSError as exc:
        raise BuildError(f"conda package {url} could not be read: {exc.strerror}",
                         "check the channel the lock points at") from None
    if got_sha != sha256 or got_md5 != md5:
        raise BuildError(f"hash mismatch for {path.name}: the lock says sha256 {sha256}, "
                         f"the package has {got_sha}; refusing to install",
                         "the channel or the lock was altered: re-lock from a trusted channel")


def _records(lf: Any) -> list[Any]:
    import rattler

    out = []
    for p in lf.package:
        if p.manager != "conda" or p.platform != conda_backend.SUBDIR:
            continue
        if not (p.hash.sha256 and p.hash.md5):
            raise LockFileError(f"conda lock package {p.name} has no sha256/md5",
                                "regenerate the lock with `builder lock`")
        parts = urlsplit(p.url)
        file_name = parts.path.rsplit("/", 1)[-1]
        subdir = parts.path.rsplit("/", 2)[-2]
        stem = file_name.removesuffix(".conda").removesuffix(".tar.bz2")
        build = p.build or stem.rsplit("-", 1)[-1]
        if not stem.startswith(f"{p.name}-{p.version}-{build}"):
            raise LockFileError(f"conda lock package {p.name}: {p.url} is not {p.name} {p.version}",
                                "regenerate the lock with `builder lock`")
        record = rattler.PackageRecord(
            name=p.name, version=p.version, build=rattler.BuildString(build), build_number=0, subdir=subdir,
            depends=[f"{k} {v}".strip() for k, v in p.dependencies.items()],
            sha256=bytes.fromhex(p.hash.sha256), md5=bytes.fromhex(p.hash.md5),
        )
        channel = p.url[: p.url.rindex("/" + subdir + "/") + 1]
        out.append(rattler.RepoDataRecord(record, file_name, p.url, channel))
    if not out:
        raise LockFileError("the conda lock lists no linux-64 packages", "regenerate it with `builder lock`")
    return out


def install(lock_path: Path, prefix: Path, *, protected: Protected | None = None,
            cache_dir: Path | None = None, final: Path | None = None,
            timeout: float = INSTALL_TIMEOUT) -> int:
    """Install every package of the conda lock into ``prefix``; return how many.

    ``prefix`` must not exist yet or be empty.  It (and ``final``) are checked
    against the protected set before anything is written.  ``final`` is where
    ``prefix`` will be renamed to: conda packages embed their prefix in files,
    so that path is what the installer writes into them.
    """
    paths.gate(prefix, what="create a conda runtime in", kind="dir", protected=protected)
    if final is not None:
        paths.gate(final, what="create a conda runtime in", kind="dir", protected=protected)
    if cache_dir is not None:
        paths.gate(cache_dir, what="use the conda package cache at", kind="dir", protected=protected)
    else:
        paths.rattler_cache(protected=protected)  # where rattler caches packages by default
    from builder.conda import lockfile as conda_lockfile

    lf = conda_lockfile.read(lock_path)
    records = _records(lf)
    for p in lf.package:
        if p.manager == "conda" and p.url.startswith("file:"):
            verify_local(p.url, p.hash.sha256, p.hash.md5)
    try:
        import rattler
        from rattler.exceptions import InstallerError
    except ImportError:
        raise ToolNotFound("py-rattler is not installed", "pip install 'builder[conda]'") from None

    async def go() -> None:
        await asyncio.wait_for(rattler.install(
            records, target_prefix=prefix, cache_dir=cache_dir, show_progress=False,
            platform=rattler.Subdir(conda_backend.SUBDIR), execute_link_scripts=False,
            alternative_target_prefix=final,
        ), timeout)

    try:
        asyncio.run(go())
    except InstallerError as exc:
        first = "; ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
        hint = ("the package differs from the lock: re-lock from a trusted channel"
                if "hash mismatch" in first else "check that the channel in the lock is reachable")
        raise BuildError(f"conda install into {prefix} failed: {first}", hint) from None
    except TimeoutError:
        raise BuildError(f"conda install into {prefix} did not finish within {timeout:g}s") from None
    return len(records)


def probe(python: Path, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(version, resolved sys.prefix) of the prefix interpreter; BuildError if it does not run."""
    res = _proc.run([str(python), "-c", PROBE], timeout=30, env=env if env is not None else _proc.clean_env(),
                    what=f"{python} (probe)")
    if not res.ok:
        raise BuildError(f"the conda prefix interpreter {python} does not run: "
                         f"{'timed out' if res.timed_out else res.brief(2)}",
                         "the conda lock must include a working python package")
    try:
        version, sys_prefix, _exe = json.loads(res.stdout)
    except ValueError:
        raise BuildError(f"{python} printed {res.stdout.strip()[:80]!r}") from None
    return str(version), os.path.realpath(sys_prefix)


def create_prefix(matrix: Matrix, python: str, prefix: Path, *, locks_dir: Path | None = None,
                  protected: Protected | None = None, cache_dir: Path | None = None,
                  final: Path | None = None, env: Mapping[str, str] | None = None) -> CondaPrefix:
    """Check the conda lock is fresh, install it into ``prefix`` and verify its Python."""
    locks = locks_dir if locks_dir is not None else _locks_dir(matrix)
    state = conda_backend.conda_lock_state(locks, matrix, python)
    if not state.ok:
        err = LockFileError if state.state in ("invalid", "modified") else StaleLock
        raise err(f"{state.path}: {state.state}: {state.reason}", f"refresh it with `{state.command}`")
    n = install(state.path, prefix, protected=protected, cache_dir=cache_dir, final=final)
    py = prefix / "bin" / "python"
    if not os.path.exists(py):
        raise BuildError(f"the conda lock installed no bin/python into {prefix}",
                         "the conda base must include python")
    version, sys_prefix = probe(py, env)
    if not (version == python or version.startswith(python + ".")):
        raise BuildError(f"the conda prefix has Python {version}, the matrix asks for {python}")
    if sys_prefix != os.path.realpath(prefix):
        raise BuildError(f"{py} reports sys.prefix {sys_prefix}, not {prefix}",
                         "its packages would be installed elsewhere; check the python package")
    from builder.conda import lockfile as conda_lockfile

    meta, _ = conda_lockfile.read_stamp(state.path.read_text(encoding="utf-8"), str(state.path))
    return CondaPrefix(prefix, py, version, n, meta.get("builder-solver", "?"))


def relocate_scripts(staging: Path, final: Path) -> list[Path]:
    """Point the interpreter line of every script in ``staging/bin`` at ``final``; return the files changed.

    uv writes absolute interpreter paths into a prefix that is not a relocatable
    venv (a conda prefix has no pyvenv.cfg), so scripts installed while building in
    staging would name the staging path after the rename into place.  Two forms:
    ``#!STAGING/bin/python`` and, when that line would pass the kernel's shebang
    length limit, the ``/bin/sh`` trampoline that uv (like distlib) writes instead,
    whose second line is ``'''exec' 'STAGING/bin/python' "$0" "$@"``.
    """
    trampoline = "#!/bin/sh\n'''exec' '"
    forms = [(f"#!{staging}/".encode(), f"#!{final}/".encode()),
             (f"{trampoline}{staging}/".encode(), f"{trampoline}{final}/".encode())]
    changed = []
    bindir = staging / "bin"
    for p in sorted(bindir.iterdir()) if bindir.is_dir() else []:
        if p.is_symlink() or not p.is_file():
            continue
        with open(p, "rb") as f:
            head = f.read(max(len(old) for old, _new in forms))
        form = next(((old, new) for old, new in forms if head.startswith(old)), None)
        if form is None:
            continue
        old, new = form
        data = p.read_bytes()
        tmp = p.with_name(f".{p.name}.relocate.tmp")
        tmp.write_bytes(new + data[len(old):])
        os.chmod(tmp, p.stat().st_mode & 0o7777)
        os.replace(tmp, p)
        changed.append(p)
    return changed


class CondaRuntimeBase:
    """The ``conda`` Base of builder.runtime: staging becomes a conda prefix."""

    name = "conda"

    def __init__(self, *, locks_dir: Path | None = None, protected: Protected | None = None,
                 cache_dir: Path | None = None) -> None:
        self.locks_dir = locks_dir
        self.protected = protected
        self.cache_dir = cache_dir

    def _protected(self, matrix: Matrix) -> Protected:
        if self.protected is not None:
            return self.protected
        from builder import protect
        from builder.project import Project

        return protect.for_project(Project(Path(matrix.path).resolve().parent.parent))

    def identity(self, matrix: Matrix, python: str) -> str:
        """sha256 of the conda lock: a new conda lock gives a new runtime name."""
        path = conda_backend.conda_lock_path(self.locks_dir or _locks_dir(matrix), matrix, python)
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return "no-conda-lock"

    def finish(self, staging: Path, final: Path) -> None:
        """After the uv sync, before the rename: point staging shebangs at ``final``."""
        relocate_scripts(staging, final)

    def create(self, req: BaseRequest) -> BaseResult:
        """Create the conda prefix in ``req.staging`` from the matrix's conda lock."""
        if req.interpreter:
            from builder.errors import UsageError

            raise UsageError("--interpreter cannot be combined with --base conda",
                             "the conda lock provides the interpreter")
        locks = self.locks_dir if self.locks_dir is not None else _locks_dir(req.matrix)
        # ``final`` (where staging is renamed to) is what conda packages must
        # embed; builder.runtime passes it when its BaseRequest has the field.
        final = getattr(req, "final", None)
        protected = req.protected if req.protected is not None else self._protected(req.matrix)
        made = create_prefix(req.matrix, req.python, req.staging, locks_dir=locks, protected=protected,
                             cache_dir=self.cache_dir, final=final, env=req.env)
        lock = conda_backend.conda_lock_path(locks, req.matrix, req.python)
        return BaseResult(
            python=made.python, version=made.version, source="conda", origin=str(lock),
            reason=f"conda prefix from {lock.name} ({made.packages} packages, solver {made.solver})",
            details={"conda_lock": str(lock), "packages": made.packages, "solver": made.solver},
        )
