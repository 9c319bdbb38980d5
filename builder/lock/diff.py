"""``builder lock diff``: what changed between two PEP 751 locks, in packages and in CUDA terms.

Two layers.  The package diff is pure and reads only the lock model
(:mod:`builder.pylock`): added, removed, version-changed, and *rehashed*
packages (same version, other file hashes: a re-uploaded wheel is a finding,
since an index that lets a file change under its name can change anything).
The CUDA view runs ``builder check``'s pipeline on both locks against **the
same host** and compares what it found: per GPU package the runtime, cudart
soname, cuBLAS and build toolkit; the native and minor-version driver floors;
the verdict.  A *regression* is a ``fail`` finding (by rule id) that the new
lock has and the old did not, or a native driver floor that rose.

Renderers (text, Markdown) live in :mod:`builder.lock.diff_render`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from builder import pylock
from builder.versions import DriverVersion

if TYPE_CHECKING:
    from pathlib import Path

    from builder.check.model import CheckReport
    from builder.check.pipeline import CheckRequest
    from builder.driver.facts import HostFacts
    from builder.project import Project
    from builder.spec import Matrix

#: The CUDA facts the diff compares per GPU package (``Identity`` attributes).
CUDA_FIELDS = ("runtime", "cudart_soname", "cublas", "build_toolkit")


# --------------------------------------------------------------------------- packages (pure)


@dataclass(frozen=True, kw_only=True)
class PackageDiff:
    """Package-level differences between two locks (either may be absent)."""

    added: tuple[dict[str, str], ...] = ()  # {name, version}
    removed: tuple[dict[str, str], ...] = ()
    changed: tuple[dict[str, str], ...] = ()  # {name, old, new}
    rehashed: tuple[dict[str, Any], ...] = ()  # {name, version, files: [{filename, kind, old, new}]}

    @property
    def count(self) -> int:
        """Packages that differ in any way."""
        return len(self.added) + len(self.removed) + len(self.changed) + len(self.rehashed)


def _packages(lock: pylock.Lock | None) -> dict[str, tuple[str, dict[str, str | None]]]:
    """name -> (version(s), wheel file name -> sha256) over every entry of that name."""
    out: dict[str, tuple[list[str], dict[str, str | None]]] = {}
    for p in lock.packages if lock is not None else ():
        versions, files = out.setdefault(p.name, ([], {}))
        if p.version not in versions:
            versions.append(p.version)
        for w in p.wheels:
            files[w.filename] = w.sha256
    return {n: (", ".join(sorted(v)), f) for n, (v, f) in out.items()}


def _file_changes(old: dict[str, str | None], new: dict[str, str | None]) -> list[dict[str, str | None]]:
    rows: list[dict[str, str | None]] = []
    for fn in sorted(set(old) | set(new)):
        a, b = old.get(fn, "absent"), new.get(fn, "absent")
        if a == b:
            continue
        kind = "file-added" if a == "absent" else "file-removed" if b == "absent" else "rehashed"
        rows.append({"filename": fn, "kind": kind, "old": None if a == "absent" else a,
                     "new": None if b == "absent" else b})
    return rows


def diff_packages(old: pylock.Lock | None, new: pylock.Lock | None) -> PackageDiff:
    """Added, removed, version-changed and rehashed packages from ``old`` to ``new`` (pure)."""
    a, b = _packages(old), _packages(new)
    added = tuple({"name": n, "version": b[n][0]} for n in sorted(set(b) - set(a)))
    removed = tuple({"name": n, "version": a[n][0]} for n in sorted(set(a) - set(b)))
    changed, rehashed = [], []
    for n in sorted(set(a) & set(b)):
        (va, fa), (vb, fb) = a[n], b[n]
        if va != vb:
            changed.append({"name": n, "old": va, "new": vb})
        else:
            files = _file_changes(fa, fb)
            if files:
                rehashed.append({"name": n, "version": va, "files": files})
    return PackageDiff(added=added, removed=removed, changed=tuple(changed), rehashed=tuple(rehashed))


# --------------------------------------------------------------------------- CUDA view (pure)


def _cuda_row(rep: CheckReport | None, name: str) -> dict[str, str | None] | None:
    p = rep.packages.get(name) if rep is not None else None
    if p is None or p.identity is None:
        return None
    return {"version": p.version, **{f: getattr(p.identity, f) for f in CUDA_FIELDS}}


def _gpu_names(rep: CheckReport | None) -> set[str]:
    if rep is None:
        return set()
    return {n for n, p in rep.packages.items()
            if p.identity is not None and any(getattr(p.identity, f) for f in CUDA_FIELDS)}


def cuda_view(old: CheckReport | None, new: CheckReport | None) -> list[dict[str, Any]]:
    """Per GPU package: its CUDA facts before and after, and which of them changed."""
    rows = []
    for name in sorted(_gpu_names(old) | _gpu_names(new)):
        a, b = _cuda_row(old, name), _cuda_row(new, name)
        keys = ("version", *CUDA_FIELDS)
        changed = [k for k in keys if (a or {}).get(k) != (b or {}).get(k)]
        rows.append({"name": name, "old": a, "new": b, "changed": changed})
    return rows


def _floors(rep: CheckReport | None) -> dict[str, str | None] | None:
    if rep is None:
        return None
    return {"native_min": rep.driver.get("native_min"), "compat_min": rep.driver.get("compat_min")}


def _fails(rep: CheckReport | None) -> dict[str, str]:
    return {f.id: f.message for f in rep.findings if f.level == "fail"} if rep is not None else {}


def regressions(old: CheckReport | None, new: CheckReport | None) -> list[str]:
    """Why ``new`` is a regression from ``old`` on the same host (empty: it is not).

    A ``fail`` finding whose rule id the old lock did not fail, or a native
    driver floor that rose (a lock that gains a CUDA runtime raises it from
    none).  A lock with no old counterpart has no floor to compare: only its
    ``fail`` findings count.
    """
    if new is None:
        return []
    out = [f"new fail: {rid}: {msg}" for rid, msg in sorted(_fails(new).items()) if rid not in _fails(old)]
    a, b = (_floors(old) or {}).get("native_min"), (_floors(new) or {}).get("native_min")
    if old is not None and b and (not a or DriverVersion.parse(b) > DriverVersion.parse(a)):
        out.append(f"native driver floor rose: {a or 'none'} -> {b}"
                   + (f" (set by {new.driver['native_from']})" if new.driver.get("native_from") else ""))
    return out


def _warns(rep: CheckReport | None) -> dict[str, str]:
    return {f.id: f.message for f in rep.findings if f.level == "warn"} if rep is not None else {}


def new_warnings(old: CheckReport | None, new: CheckReport | None) -> list[str]:
    """``warn`` findings (by rule id) of ``new`` that ``old`` had at neither ``warn`` nor ``fail``.

    Not a regression (it does not block a refresh): the pull request's title says it.
    A fail that became a warning is an improvement, not a new warning.
    """
    if new is None:
        return []
    before = {**_warns(old), **_fails(old)}
    return [f"new warn: {rid}: {msg}" for rid, msg in sorted(_warns(new).items()) if rid not in before]


def finding_changes(old: CheckReport | None, new: CheckReport | None) -> list[dict[str, str | None]]:
    """Rules whose level differs between the two reports, with the message that explains it."""
    lo = {f.id: f for f in old.findings} if old is not None else {}
    ln = {f.id: f for f in new.findings} if new is not None else {}
    rows = []
    for rid in dict.fromkeys([*ln, *lo]):
        a, b = lo.get(rid), ln.get(rid)
        shown = b or a
        if shown is not None and (a.level if a else None) != (b.level if b else None):
            rows.append({"id": rid, "old": a.level if a else None, "new": b.level if b else None,
                         "message": shown.message})
    return rows


# --------------------------------------------------------------------------- one pair of locks


@dataclass(kw_only=True)
class LockDiff:
    """Everything ``lock diff`` says about one pair of locks."""

    label: str  # matrix-a/py3.12, or the new file's path
    old_where: str | None
    new_where: str | None
    matrix: str | None
    python: str | None
    identical: bool  # same package content (content hash)
    packages: PackageDiff
    same_bytes: bool = False  # byte-identical files (not even re-stamped)
    host: dict[str, Any] = field(default_factory=dict)
    old_report: CheckReport | None = None
    new_report: CheckReport | None = None

    @property
    def cuda(self) -> list[dict[str, Any]]:
        return cuda_view(self.old_report, self.new_report)

    @property
    def regressions(self) -> list[str]:
        return regressions(self.old_report, self.new_report)

    @property
    def regression(self) -> bool:
        return bool(self.regressions)

    @property
    def new_warnings(self) -> list[str]:
        return new_warnings(self.old_report, self.new_report)

    def to_json(self) -> dict[str, Any]:
        p = self.packages
        return {
            "lock": self.label, "old": self.old_where, "new": self.new_where, "matrix": self.matrix,
            "python": self.python, "identical": self.identical, "same_bytes": self.same_bytes,
            "added": list(p.added), "removed": list(p.removed), "changed": list(p.changed),
            "rehashed": list(p.rehashed),
            "cuda": self.cuda,
            "driver": {"old": _floors(self.old_report), "new": _floors(self.new_report)},
            "verdict": {"old": self.old_report.verdict if self.old_report else None,
                        "new": self.new_report.verdict if self.new_report else None},
            "findings": finding_changes(self.old_report, self.new_report),
            "host": self.host,
            "regression": self.regression, "regressions": self.regressions,
            "new_warnings": self.new_warnings,
        }


@dataclass(frozen=True, kw_only=True)
class DiffOptions:
    """How to judge the locks: host overrides (as in ``check``) and the wheel cache."""

    python: str | None = None
    driver: str | None = None
    ccs: tuple[str, ...] = ()
    offline: bool = False
    cache_dir: Path | None = None


def judging_host(project: Project | None, matrix: Matrix | None, opts: DiffOptions) -> HostFacts:
    """The one host both locks are judged on.

    For a matrix lock: the host as it will be after the maintenance window (the
    matrix's declared driver floor as the driver, ``envs/host.toml``'s GPUs and
    glibc); otherwise ``envs/host.toml`` as declared.  ``--driver``/``--gpu-cc``
    override either, validated as in ``check``.
    """
    from builder.check.pipeline import resolve_host
    from builder.driver.facts import HostFacts

    base = HostFacts.declared(project.host() if project is not None else None,
                              origin="envs/host.toml" if project is not None else "options")
    if matrix is not None and opts.driver is None:  # --driver replaces the floor: the origin says which
        base = base.overridden(driver=matrix.driver_floor,
                               origin=f"envs/host.toml after the window: driver = {matrix.name}'s floor")
    return resolve_host(base, _host_request(opts))


def _host_request(opts: DiffOptions) -> CheckRequest:
    from builder.check.pipeline import CheckRequest

    return CheckRequest(driver=opts.driver, ccs=opts.ccs)


def validate(opts: DiffOptions) -> None:
    """UsageError for a malformed ``--driver``/``--gpu-cc``, before git or any lock is read."""
    from builder.check.pipeline import validate_overrides

    validate_overrides(_host_request(opts))


def _host_json(h: HostFacts) -> dict[str, Any]:
    return {"driver": h.driver, "gpu_cc": list(h.ccs), "glibc": h.glibc, "origin": h.origin}


def compare(old: pylock.Lock | None, new: pylock.Lock | None, *, label: str, matrix: Matrix | None,
            host: HostFacts, opts: DiffOptions, python: str | None = None) -> LockDiff:
    """Diff two locks and, unless their package content is identical, judge both on ``host``.

    Identical content needs no judging: the verdicts are the same by construction.
    Raises Unavailable when a wheel needed for the CUDA view cannot be read.
    """
    from builder.check import fetchplan
    from builder.check.pipeline import CheckOptions, check_lock

    identical = old is not None and new is not None and old.content_hash == new.content_hash
    py = python or opts.python or (new.python if new else None) or (old.python if old else None)
    d = LockDiff(label=label, old_where=old.where if old else None, new_where=new.where if new else None,
                 matrix=matrix.id if matrix else None, python=py, identical=identical,
                 packages=diff_packages(old, new), host=_host_json(host),
                 same_bytes=old is not None and new is not None and old.sha256 == new.sha256)
    if identical:
        return d
    copts = CheckOptions(python=py, cache_dir=opts.cache_dir, offline=opts.offline)
    stats = fetchplan.FetchStats()
    d.old_report = check_lock(old, matrix=matrix, host=host, opts=copts, stats=stats) if old else None
    d.new_report = check_lock(new, matrix=matrix, host=host, opts=copts, stats=stats) if new else None
    return d


# --------------------------------------------------------------------------- inputs: files or a git ref


def _stamped_matrix(project: Project | None, locks: Iterable[pylock.Lock | None]) -> Matrix | None:
    if project is None:
        return None
    ids = project.matrix_ids()
    for lock in locks:
        st = lock.stamp.stamp if lock is not None else None
        if st is not None and st.matrix in ids:
            return project.matrix(st.matrix)
    return None


def diff_files(project: Project | None, old_path: Path, new_path: Path, *, selector: str | None,
               opts: DiffOptions) -> LockDiff:
    """``lock diff OLD NEW``: the matrix comes from the locks' stamps, else ``--matrix``."""
    validate(opts)
    old, new = pylock.read(old_path), pylock.read(new_path)
    matrix = _stamped_matrix(project, (new, old))
    if matrix is None and selector is not None and project is not None:
        matrix = project.matrix(selector)
    host = judging_host(project, matrix, opts)
    return compare(old, new, label=str(new_path), matrix=matrix, host=host, opts=opts)


def git_show(root: Path, ref: str, rel: str) -> bytes | None:
    """The bytes of ``rel`` (relative to ``root``) at ``ref``, or None when the ref has no such file."""
    import re

    from builder import _proc
    from builder.errors import ToolFailed

    res = _proc.run(["git", "show", f"{ref}:./{rel}"], timeout=60, cwd=root, env=_proc.clean_env(),
                    what="git show")
    if res.ok:
        return res.stdout.encode("utf-8")
    if re.search(r"path '[^']*' (does not exist|exists on disk, but not) in", res.stderr):
        return None
    raise ToolFailed(f"git show {ref}:{rel} failed: {res.brief() or 'timed out'}", "check the repository")


def check_ref(root: Path, ref: str) -> None:
    """UsageError unless ``root`` is in a git work tree where ``ref`` names a commit."""
    from builder import _proc
    from builder.errors import ToolNotFound, UsageError

    if ref.startswith("-"):
        raise UsageError(f"not a git revision: {ref!r}", "e.g. --git HEAD or --git origin/main")
    res = _proc.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], timeout=60, cwd=root,
                    env=_proc.clean_env(), what="git rev-parse")
    if res.missing:
        raise ToolNotFound("git not found: `lock diff --git` reads the locks of a revision with it",
                           "install git or pass OLD NEW lock files")
    if not res.ok:
        why = res.brief() or f"{ref!r} names no commit"
        raise UsageError(f"cannot read revision {ref!r} in {root}: {why}",
                         "pass a commit, branch or tag of this repository (e.g. HEAD)")


def diff_git(project: Project, ref: str, *, selectors: list[str], python: str | None,
             opts: DiffOptions) -> list[LockDiff]:
    """``lock diff --git REF``: every selected lock in the working tree against ``REF``."""
    from builder.lock.resolve import targets
    from builder.project import lock_path

    # Usage errors first: `--driver ''` or `--matrix nope` outside a git checkout are about the option.
    validate(opts)
    selected = targets(project, selectors, python)
    check_ref(project.root, ref)
    out = []
    for t in selected:
        path = lock_path(project.locks, t.matrix, t.python)
        rel = path.relative_to(project.root).as_posix()
        raw = git_show(project.root, ref, rel)
        old = pylock.parse(raw, f"{ref}:{rel}") if raw is not None else None
        new = pylock.read(path) if path.exists() else None
        if old is None and new is None:
            continue
        host = judging_host(project, t.matrix, opts)
        d = compare(old, new, label=t.label, matrix=t.matrix, host=host, opts=opts, python=t.python)
        d.new_where = rel if new is not None else None  # shown relative; parsed absolute (wheel paths)
        out.append(d)
    return out
