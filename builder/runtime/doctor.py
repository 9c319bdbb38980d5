"""``builder doctor``: inspect any Python environment, read-only.

The target interpreter runs one small stdlib-only script with ``-I -S -B``
(isolated, no ``site`` processing so no ``.pth`` code runs, no bytecode) and
``PYTHONDONTWRITEBYTECODE=1``; it reports its version, prefix, site-packages
directories, marker environment and installed distributions.  Everything else
(CUDA identity from ELF files, dependency consistency, lock matching) is
computed here in builder's own process by *reading* files.  Nothing is imported
from torch or vLLM and nothing is written: QL_1 may be inspected.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder import _proc, pylock
from builder.binaries import elf
from builder.errors import LockFileError, Unavailable, UsageError

PROBE_TIMEOUT = 60.0
#: ELF files larger than this are not read (vllm/_C.abi3.so is 439 MB); the
#: small extensions carry the same facts (_flashmla_extension_C, 1 MB, in the wheel
#: of https://pypi.org/project/vllm/0.13.0/#files).
ELF_READ_CAP = 64 * 1024 * 1024

# Runs inside the target interpreter (any CPython >= 3.8, stdlib only).  The
# marker environment is computed the way packaging.markers.default_environment
# does, because the target may not have packaging installed.
PROBE = r"""
import json, os, platform, site, sys
from importlib import metadata

def fmt(info):
    v = "%d.%d.%d" % (info.major, info.minor, info.micro)
    if info.releaselevel != "final":
        v += info.releaselevel[0] + str(info.serial)
    return v

prefix = sys.prefix
cfg = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "pyvenv.cfg")
venv = {}
if os.path.isfile(cfg):
    prefix = os.path.dirname(cfg)
    for line in open(cfg, encoding="utf-8"):
        if "=" in line:
            k, v = line.split("=", 1)
            venv[k.strip()] = v.strip()
prefixes = [prefix]
if venv.get("include-system-site-packages", "false").lower() == "true":
    prefixes.append(sys.base_prefix)
dirs = []
def add(d):
    if os.path.isdir(d) and os.path.realpath(d) not in [os.path.realpath(x) for x in dirs]:
        dirs.append(d)
        return True
    return False
def add_site(d):
    # A site dir, then the directories its .pth files add (as site.addsitedir
    # does, so `dirs` is in import order), without running their `import`
    # lines: -S keeps site from executing anything.
    if not add(d):
        return
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".pth"))
    except OSError:
        names = []
    for n in names:
        try:
            lines = open(os.path.join(d, n), encoding="utf-8").read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            line = line.strip()
            if line and not line.startswith(("#", "import ", "import\t")):
                add(os.path.normpath(os.path.join(d, line)))
# The env's own prefix first, then the base's (a --system-site-packages venv):
# Python imports from the first directory that has a package, so the venv's
# packages shadow the base's.  Debian/Ubuntu's patched site.py names only
# dist-packages: try the plain venv/CPython layout too.
for p in prefixes:
    for lib in sorted({sys.platlibdir, "lib"}):
        add_site(os.path.join(p, lib, "python%d.%d" % sys.version_info[:2], "site-packages"))
    for d in site.getsitepackages([p]):
        add_site(d)
dists = []
for d in metadata.distributions(path=dirs):
    name = d.metadata["Name"]
    if name:
        dists.append({"name": name, "version": d.version, "requires": d.requires or [],
                      "location": str(d.locate_file(""))})
env = {
    "implementation_name": sys.implementation.name,
    "implementation_version": fmt(sys.implementation.version),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
print(json.dumps({"executable": sys.executable, "version": platform.python_version(),
                  "prefix": prefix, "base_prefix": sys.base_prefix, "venv": bool(venv),
                  "conda": os.path.isdir(os.path.join(prefix, "conda-meta")),
                  "site_dirs": dirs, "markers": env, "dists": dists}))
"""


@dataclass(frozen=True)
class EnvProbe:
    """What the target interpreter said about itself."""

    python: str
    executable: str
    version: str
    prefix: str
    venv: bool
    conda: bool
    site_dirs: tuple[str, ...]
    markers: Mapping[str, str]
    dists: tuple[Mapping[str, Any], ...]
    base_prefix: str = ""  # sys.base_prefix: another prefix for a venv

    def versions(self) -> dict[str, str]:
        """name -> the version Python would import: the first in site-dir order.

        ``dists`` come in ``site_dirs`` order (the env's own before the base's in
        a ``--system-site-packages`` venv), so the first one of a name wins.
        """
        out: dict[str, str] = {}
        for d in self.dists:
            out.setdefault(canonicalize_name(d["name"]), str(d["version"]))
        return out

    def shadowed(self) -> list[str]:
        """Distributions hidden by an earlier one of the same name (``torch 2.8.0 in /base/...``)."""
        seen: set[str] = set()
        out = []
        for d in self.dists:
            name = canonicalize_name(d["name"])
            if name in seen:
                out.append(f"{d['name']} {d['version']} in {d.get('location', '?')}")
            seen.add(name)
        return out

    def package_dir(self, top: str) -> Path | None:
        for d in self.site_dirs:
            p = Path(d, top)
            if p.is_dir():
                return p
        return None


def probe_env(python: str, timeout: float = PROBE_TIMEOUT) -> EnvProbe:
    """Run the probe in ``python``; raise UsageError/Unavailable if it cannot."""
    env = _proc.clean_env(extra={"PYTHONDONTWRITEBYTECODE": "1"})
    res = _proc.run([python, "-I", "-S", "-B", "-c", PROBE], timeout=timeout, env=env,
                    what=f"{python} (doctor probe)")
    if res.missing:
        raise UsageError(f"{python}: no such interpreter", "pass --python PATH to an existing python")
    if not res.ok:
        raise Unavailable(f"{python} could not be inspected: "
                          + ("timed out" if res.timed_out else res.brief(3)),
                          "check that it is a working CPython >= 3.8")
    try:
        d = json.loads(res.stdout)
    except ValueError:
        raise Unavailable(f"{python}: unexpected probe output: {res.stdout[:200]!r}") from None
    return EnvProbe(python=python, executable=d["executable"], version=d["version"],
                    prefix=d["prefix"], venv=d["venv"], conda=d["conda"],
                    site_dirs=tuple(d["site_dirs"]), markers=d["markers"], dists=tuple(d["dists"]),
                    base_prefix=str(d.get("base_prefix") or ""))


@dataclass(frozen=True)
class BinaryIdentity:
    """CUDA identity read from a package's shared objects."""

    cudart_soname: str | None
    toolkit: str | None  # "12.9.86"
    toolkit_release: str | None  # "12.9"
    files: tuple[str, ...] = ()  # files whose facts were used
    skipped: tuple[str, ...] = ()  # large files not read

    def as_dict(self) -> dict[str, Any]:
        return {"cudart_soname": self.cudart_soname, "toolkit": self.toolkit,
                "toolkit_release": self.toolkit_release, "files": list(self.files),
                "skipped_large": list(self.skipped)}


def _shared_objects(pkg: Path) -> list[Path]:
    found = [p for pat in ("*.so", "*.so.*", "lib/*.so", "lib/*.so.*", "*/*.so")
             for p in pkg.glob(pat) if p.is_file() and not p.is_symlink()]
    return sorted(set(found), key=lambda p: (p.stat().st_size, p.name))


def binary_identity(pkg: Path | None, cap: int = ELF_READ_CAP) -> BinaryIdentity:
    """cudart soname and nvcc toolkit from the smallest shared objects in ``pkg``.

    Files are read smallest first and reading stops once both facts are known,
    so a 400 MB extension is never read when a 1 MB one says the same.
    """
    if pkg is None:
        return BinaryIdentity(None, None, None)
    soname = toolkit = release = None
    used: list[str] = []
    skipped: list[str] = []
    for so in _shared_objects(pkg):
        if soname and toolkit:
            break
        size = so.stat().st_size
        if size > cap:
            skipped.append(f"{so.relative_to(pkg.parent)} ({size // (1024 * 1024)} MB)")
            continue
        try:
            data = so.read_bytes()
            facts = elf.facts(data)
        except (OSError, elf.ElfError):
            continue
        if facts.cudart_soname and not soname:
            soname = facts.cudart_soname
            used.append(str(so.relative_to(pkg.parent)))
        if facts.toolkit and not toolkit:
            toolkit, release = facts.toolkit, facts.toolkit_release
            if str(so.relative_to(pkg.parent)) not in used:
                used.append(str(so.relative_to(pkg.parent)))
    return BinaryIdentity(soname, toolkit, release, tuple(used), tuple(skipped))


_ASSIGN = r"^\s*{name}\s*(?::[^=]+)?=\s*(?:\w+\s*=\s*)?['\"]([^'\"]+)['\"]"


def read_assignment(path: Path, name: str) -> str | None:
    """``'12.8'`` from ``cuda: Optional[str] = '12.8'`` in a module, without importing it."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(_ASSIGN.format(name=re.escape(name)), text, re.M)
    return m.group(1) if m else None


def consistency(probe: EnvProbe) -> list[str]:
    """``pip check``-style problems: missing or mismatched requirements."""
    installed = probe.versions()
    problems: list[str] = []
    env = {**probe.markers, "extra": ""}
    for d in probe.dists:
        for raw in d["requires"]:
            try:
                req = Requirement(raw)
            except InvalidRequirement:
                problems.append(f"{d['name']} {d['version']} has an unparsable requirement {raw!r}")
                continue
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            have = installed.get(canonicalize_name(req.name))
            if have is None:
                problems.append(f"{d['name']} {d['version']} requires {req}, which is not installed")
            elif req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{d['name']} {d['version']} requires {req}, but {have} is installed")
    return sorted(set(problems))


@dataclass(frozen=True)
class LockMatch:
    lock: str  # path relative to the project
    exact: bool
    missing: tuple[str, ...] = ()
    different: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    python: str | None = None  # the Python the lock is for

    @property
    def distance(self) -> int:
        return len(self.missing) + len(self.different) + len(self.extra)


#: Installed by venv/virtualenv seeding, not by a lock; ignored when matching.
SEED = frozenset({"pip", "setuptools", "wheel"})


def match_lock(installed: Mapping[str, str], lock: pylock.Lock, markers: Mapping[str, str],
               *, label: str) -> LockMatch:
    """Compare the installed name==version set with one lock's applicable packages."""
    want = {p.name: p.version for p in lock.applicable(markers)}

    def same(a: str, b: str) -> bool:
        try:
            return Version(a) == Version(b)
        except InvalidVersion:
            return a == b

    missing = tuple(sorted(f"{n}=={v}" for n, v in want.items() if n not in installed))
    different = tuple(sorted(f"{n}: lock {v}, installed {installed[n]}" for n, v in want.items()
                             if n in installed and not same(installed[n], v)))
    extra = tuple(sorted(f"{n}=={v}" for n, v in installed.items() if n not in want and n not in SEED))
    return LockMatch(label, not (missing or different or extra), missing, different, extra, lock.python)


def best_match(probe: EnvProbe, locks: Iterable[tuple[str, Path]]) -> tuple[LockMatch | None, list[LockMatch]]:
    """(the exact or closest lock, every comparison).

    A lock for the env's own Python version comes first: a lock for another
    Python cannot describe this env (other wheels), however close its names and
    versions are.
    """
    installed = probe.versions()
    results = []
    for label, path in locks:
        try:
            results.append(match_lock(installed, pylock.read(path), probe.markers, label=label))
        except LockFileError:
            continue  # an unreadable lock matches nothing; `builder lock --check` reports it
    if not results:
        return None, []
    env_py = ".".join(probe.version.split(".")[:2])
    best = min(results, key=lambda r: (r.python != env_py, r.distance))
    return best, results


@dataclass
class DoctorReport:
    probe: EnvProbe
    torch: dict[str, Any] = field(default_factory=dict)
    vllm: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    match: LockMatch | None = None
    protected: str | None = None  # why the env is protected, if it is

    def as_dict(self) -> dict[str, Any]:
        p = self.probe
        m = self.match
        return {
            "python": {"path": p.python, "executable": p.executable, "version": p.version,
                       "prefix": p.prefix, "venv": p.venv, "conda": p.conda,
                       "packages": len(p.versions()), "protected": self.protected,
                       "shadowed": p.shadowed()},
            "torch": self.torch, "vllm": self.vllm,
            "consistency": {"ok": not self.problems, "problems": self.problems},
            "lock": None if m is None else {
                "lock": m.lock, "exact": m.exact, "missing": list(m.missing),
                "different": list(m.different), "extra": list(m.extra)},
        }


def _first(pkg: Path | None, modules: tuple[str, ...], name: str) -> str | None:
    for mod in modules if pkg is not None else ():
        assert pkg is not None
        found = read_assignment(pkg / mod, name)
        if found is not None:
            return found
    return None


#: Where torch and vLLM keep ``__version__`` (and torch its ``cuda``), first choice first.
VERSION_MODULES = {"torch": ("version.py", "__init__.py"), "vllm": ("_version.py", "__init__.py")}


def component(probe: EnvProbe, top: str) -> dict[str, Any]:
    """What the environment has of ``top`` (torch or vllm), read from its files: distribution
    version, ``__version__`` (and torch's ``cuda``) from its version module, CUDA identity from
    its shared objects; ``{"installed": False}`` when it has none."""
    modules = VERSION_MODULES[top]
    pkg = probe.package_dir(top)
    meta = probe.versions().get(top)
    if pkg is None and meta is None:
        return {"installed": False}
    return {
        "installed": True,
        "version": meta,
        "__version__": _first(pkg, modules, "__version__"),
        "cuda": _first(pkg, modules, "cuda") if top == "torch" else None,
        **binary_identity(pkg).as_dict(),
    }


def doctor(python: str, locks: Iterable[tuple[str, Path]], protected_why: str | None = None) -> DoctorReport:
    """Inspect the environment of ``python`` and compare it with ``locks``."""
    probe = probe_env(python)
    rep = DoctorReport(probe, protected=protected_why)
    rep.torch = component(probe, "torch")
    rep.vllm = component(probe, "vllm")
    rep.problems = consistency(probe)
    rep.match, _ = best_match(probe, locks)
    return rep


def default_python(environ: Mapping[str, str] | None = None) -> str:
    """The active env's python (CONDA_PREFIX, VIRTUAL_ENV), else python3 on PATH."""
    environ = os.environ if environ is None else environ
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if environ.get(var):
            cand = Path(environ[var], "bin", "python")
            if cand.exists():
                return str(cand)
    found = _proc.which("python3", path=environ.get("PATH"))
    if not found:
        raise UsageError("no python found to inspect", "pass --python PATH")
    return found
