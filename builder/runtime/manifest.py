"""The runtime manifest (``runtime.json``): one frozen model, read and written here only.

Every finished runtime directory holds a manifest; without a readable one the directory
is not a runtime (a build in progress, a killed one, something else).  Two origins:

* ``lock``: built by ``builder build`` from a committed lock.  The manifest names the
  lock (path, file sha256, package-content hash, package count), the interpreter the
  base came from, uv's version and the timings.  Every installed file was checked
  against the lock's sha256 by uv.
* ``adopted``: an existing environment taken over by ``builder runtime adopt``.  No
  lock, no hash verification: the manifest records where the environment is and what
  builder read of it (:class:`Environment`), nothing more.

Both record the smoke test they passed (:class:`SmokeRecord`).

Formats: 3 (written now) adds ``origin`` and ``environment``; 2 (builder before
adoption) loads as origin ``lock``; 1 (runtimes addressed by the whole lock file) is
not recognised.  :func:`from_mapping` validates a mapping in one pass, every problem with
its dotted path (``smoke.steps[2].status: must be ...``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from builder.errors import ManifestError
from builder.schema import Field, Problems, validate

FILE = "runtime.json"
FORMAT = 3
READABLE = (2, 3)
LOCK, ADOPTED = "lock", "adopted"
ORIGINS = (LOCK, ADOPTED)
STATUSES = ("pass", "fail", "skipped")
NO_GPU = "no GPU"  # the reason prefix of a GPU step skipped on a host without one

_NONE = type(None)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, kw_only=True)
class LockRecord:
    """The lock a runtime was built from."""

    path: str  # relative to the project when inside it
    sha256: str  # of the file's bytes
    content: str  # the package-content hash (the runtime's address)
    packages: int


@dataclass(frozen=True, kw_only=True)
class Interpreter:
    """Where a built runtime's Python came from (``builder build`` prints the same)."""

    version: str
    source: str  # interpreter | path | pyenv | uv | conda
    origin: str  # the base interpreter, or the conda lock
    reason: str
    rejected: tuple[tuple[str, str], ...] = ()  # (candidate, why not)
    conda_lock: str | None = None
    packages: int | None = None  # conda base: packages of the conda lock
    solver: str | None = None


@dataclass(frozen=True, kw_only=True)
class Component:
    """What ``adopt`` read of torch or vLLM in an environment (as ``builder doctor`` reads it)."""

    version: str  # the distribution's version
    dunder_version: str | None = None  # ``__version__`` read from its version file, not imported
    cuda: str | None = None  # torch.version.cuda
    cudart_soname: str | None = None
    toolkit: str | None = None  # the nvcc release its extensions were built with


@dataclass(frozen=True, kw_only=True)
class Environment:
    """An adopted environment: where it is and what builder read of it, read-only."""

    python: str  # the interpreter as the operator named it
    executable: str  # that path resolved
    prefix: str  # sys.prefix
    base_prefix: str  # sys.base_prefix (another prefix for a venv)
    version: str  # "3.12.3"
    kind: str  # venv | conda | installation
    packages: int  # distributions found
    fingerprint: str  # sha256 of the sorted "name==version" lines: changes when the env does
    torch: Component | None = None
    vllm: Component | None = None


@dataclass(frozen=True, kw_only=True)
class SmokeStep:
    step: str
    status: str  # pass | fail | skipped
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class SmokeRecord:
    """The smoke test a runtime passed before it was switched in."""

    python: str
    gpu: bool
    ok: bool
    seconds: float
    expected_from: str
    steps: tuple[SmokeStep, ...]

    def problem(self) -> str | None:
        """Why the runtime must not be served (no smoke steps, or a failed one), or None.

        ``skipped`` steps (the GPU steps on a build host without a GPU) are not failures.
        """
        if not self.steps:
            return "its manifest records no smoke test"
        failed = [s for s in self.steps if s.status not in ("pass", "skipped")]
        if failed:
            return "its smoke test failed (" + ", ".join(f"{s.step}: {s.reason}" for s in failed[:3]) + ")"
        return None

    def skipped_gpu_steps(self) -> int:
        return sum(1 for s in self.steps if s.status == "skipped" and NO_GPU in s.reason)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A finished runtime's ``runtime.json``."""

    format: int
    name: str
    origin: str  # lock | adopted
    python: str  # "3.12"
    smoke: SmokeRecord
    created_at: str  # built_at (lock) or adopted_at (adopted), ISO 8601 UTC
    base: str | None = None  # venv | conda (lock); None when adopted
    matrix: str | None = None  # the matrix id (lock)
    lock: LockRecord | None = None
    interpreter: Interpreter | None = None
    uv: str | None = None
    environment: Environment | None = None
    timings: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def adopted(self) -> bool:
        return self.origin == ADOPTED

    def built_from(self, content_hash: str) -> bool:
        """True only for a runtime built from a lock with this package content."""
        return self.origin == LOCK and self.lock is not None and self.lock.content == content_hash

    @property
    def lock_sha256(self) -> str | None:
        return self.lock.sha256 if self.lock is not None else None

    def describe_origin(self) -> str:
        """One line: where the runtime came from."""
        if self.lock is not None:
            return f"built from {self.lock.path} (sha256 {self.lock.sha256[:12]})"
        env = self.environment
        return f"adopted from {env.prefix if env else '?'} (no lock, no hash verification)"

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the manifest (the file's content, key for key)."""
        d: dict[str, Any] = {"format": self.format, "name": self.name}
        if self.format >= 3:
            d["origin"] = self.origin
        if self.matrix is not None:
            d["matrix"] = self.matrix
        d["python"] = self.python
        if self.base is not None:
            d["base"] = self.base
        if self.lock is not None:
            d["lock"] = {"path": self.lock.path, "sha256": self.lock.sha256, "content": self.lock.content,
                         "packages": self.lock.packages}
        if self.interpreter is not None:
            i = self.interpreter
            d["interpreter"] = {"version": i.version, "source": i.source, "origin": i.origin, "reason": i.reason}
            if i.rejected or i.conda_lock is None:
                d["interpreter"]["rejected"] = [list(r) for r in i.rejected]
            for key, value in (("conda_lock", i.conda_lock), ("packages", i.packages), ("solver", i.solver)):
                if value is not None:
                    d["interpreter"][key] = value
        if self.environment is not None:
            d["environment"] = _environment_dict(self.environment)
        if self.uv is not None:
            d["uv"] = self.uv
        d["adopted_at" if self.adopted else "built_at"] = self.created_at
        d["timings"] = dict(self.timings)
        s = self.smoke
        d["smoke"] = {"python": s.python, "gpu": s.gpu, "ok": s.ok, "seconds": s.seconds,
                      "expected_from": s.expected_from,
                      "steps": [{"step": x.step, "status": x.status, "reason": x.reason} for x in s.steps]}
        return d


def _component_dict(c: Component) -> dict[str, Any]:
    return {"version": c.version, "__version__": c.dunder_version, "cuda": c.cuda,
            "cudart_soname": c.cudart_soname, "toolkit": c.toolkit}


def _environment_dict(e: Environment) -> dict[str, Any]:
    return {"python": e.python, "executable": e.executable, "prefix": e.prefix, "base_prefix": e.base_prefix,
            "version": e.version, "kind": e.kind, "packages": e.packages, "fingerprint": e.fingerprint,
            "torch": _component_dict(e.torch) if e.torch else None,
            "vllm": _component_dict(e.vllm) if e.vllm else None}


# --------------------------------------------------------------------------- validation


def _one_of(options: tuple[str, ...]) -> Any:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}, got {v!r}"
    return check


def _pair(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
    return None if ok else f"must be [candidate, reason], got {v!r}"


def _number(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) else f"must be a number, got {v!r}"


_STR_OR_NULL = (str, _NONE)
_LOCK = {"path": Field(str, required=True), "sha256": Field(str, required=True),
         "content": Field(str, required=True), "packages": Field(int, required=True)}
_INTERPRETER = {"version": Field(str, required=True), "source": Field(str, required=True),
                "origin": Field(str, required=True), "reason": Field(str, required=True),
                "rejected": Field(list, check=None, item=list), "conda_lock": Field(str),
                "packages": Field(int), "solver": Field(str)}
_COMPONENT = {"version": Field(str, required=True), "__version__": Field(_STR_OR_NULL),
              "cuda": Field(_STR_OR_NULL), "cudart_soname": Field(_STR_OR_NULL), "toolkit": Field(_STR_OR_NULL)}
_ENVIRONMENT = {"python": Field(str, required=True), "executable": Field(str, required=True),
                "prefix": Field(str, required=True), "base_prefix": Field(str, required=True),
                "version": Field(str, required=True),
                "kind": Field(str, required=True, check=_one_of(("venv", "conda", "installation"))),
                "packages": Field(int, required=True), "fingerprint": Field(str, required=True),
                "torch": Field((dict, _NONE), table=_COMPONENT), "vllm": Field((dict, _NONE), table=_COMPONENT)}
_STEP = {"step": Field(str, required=True), "status": Field(str, required=True, check=_one_of(STATUSES)),
         "reason": Field(str, required=True)}
_SMOKE = {"python": Field(str, required=True), "gpu": Field(bool, required=True), "ok": Field(bool, required=True),
          "seconds": Field((int, float), required=True), "expected_from": Field(str, required=True),
          "steps": Field(list, required=True, table=_STEP, array_of_tables=True)}
_COMMON = {"format": Field(int, required=True), "name": Field(str, required=True),
           "python": Field(str, required=True), "timings": Field(dict),
           "smoke": Field(dict, required=True, table=_SMOKE)}
_BUILT = {**_COMMON, "matrix": Field(str, required=True), "base": Field(str, required=True),
          "lock": Field(dict, required=True, table=_LOCK), "interpreter": Field(dict, table=_INTERPRETER),
          "uv": Field(str), "built_at": Field(str, required=True)}
_SCHEMAS: Mapping[tuple[int, str], Mapping[str, Field]] = {
    (2, LOCK): _BUILT,
    (3, LOCK): {**_BUILT, "origin": Field(str, required=True)},
    (3, ADOPTED): {**_COMMON, "origin": Field(str, required=True),
                   "environment": Field(dict, required=True, table=_ENVIRONMENT),
                   "adopted_at": Field(str, required=True)},
}


def _component(d: Mapping[str, Any] | None) -> Component | None:
    if d is None:
        return None
    return Component(version=d["version"], dunder_version=d.get("__version__"), cuda=d.get("cuda"),
                     cudart_soname=d.get("cudart_soname"), toolkit=d.get("toolkit"))


def from_mapping(d: Any, where: str) -> Manifest:
    """Validate a parsed ``runtime.json`` into a :class:`Manifest`.

    Raises :class:`builder.errors.ManifestError` listing every problem (``where: dotted.path:
    message``) in one pass.
    """
    problems = Problems(where)
    if not isinstance(d, dict):
        raise ManifestError(f"{where}: not a JSON object", ("the manifest must be a JSON object",))
    fmt, origin = d.get("format"), d.get("origin", LOCK if d.get("format") == 2 else None)
    if type(fmt) is not int or fmt not in READABLE:
        older = type(fmt) is int and fmt < min(READABLE)
        raise ManifestError(f"{where}: format {fmt!r} is not one this builder reads ({', '.join(map(str, READABLE))})"
                            + ("; runtimes of format 1 are addressed by the whole lock file: rebuild them"
                               if older else ""), ())
    schema = _SCHEMAS.get((fmt, origin)) if isinstance(origin, str) else None
    if schema is None or not isinstance(origin, str):
        raise ManifestError(f"{where}: origin: must be one of {', '.join(ORIGINS)} in format {fmt}, got {origin!r}",
                            ())
    validate(d, schema, problems)
    timings = d.get("timings", {})
    if isinstance(timings, dict):
        for k, v in timings.items():
            reason = _number(v)
            if reason:
                problems.add(f"timings.{k}", reason)
    interp = d.get("interpreter")
    if isinstance(interp, dict) and isinstance(interp.get("rejected"), list):
        for i, r in enumerate(interp["rejected"]):
            reason = _pair(r)
            if reason:
                problems.add(f"interpreter.rejected[{i}]", reason)
    if problems.items:
        raise ManifestError(f"{where}: {len(problems.items)} problem(s): {problems.items[0]}", tuple(problems.items))
    sm = d["smoke"]
    smoke = SmokeRecord(python=sm["python"], gpu=sm["gpu"], ok=sm["ok"], seconds=float(sm["seconds"]),
                        expected_from=sm["expected_from"],
                        steps=tuple(SmokeStep(step=s["step"], status=s["status"], reason=s["reason"])
                                    for s in sm["steps"]))
    lk = d.get("lock")
    env = d.get("environment")
    return Manifest(
        format=fmt, name=d["name"], origin=origin, python=d["python"], smoke=smoke,
        created_at=d["built_at"] if origin == LOCK else d["adopted_at"],
        base=d.get("base"), matrix=d.get("matrix"),
        lock=LockRecord(path=lk["path"], sha256=lk["sha256"], content=lk["content"], packages=lk["packages"])
        if lk is not None else None,
        interpreter=Interpreter(version=interp["version"], source=interp["source"], origin=interp["origin"],
                                reason=interp["reason"],
                                rejected=tuple((str(a), str(b)) for a, b in interp.get("rejected", [])),
                                conda_lock=interp.get("conda_lock"), packages=interp.get("packages"),
                                solver=interp.get("solver")) if isinstance(interp, dict) else None,
        uv=d.get("uv"),
        environment=Environment(python=env["python"], executable=env["executable"], prefix=env["prefix"],
                                base_prefix=env["base_prefix"], version=env["version"], kind=env["kind"],
                                packages=env["packages"], fingerprint=env["fingerprint"],
                                torch=_component(env.get("torch")), vllm=_component(env.get("vllm")))
        if env is not None else None,
        timings=MappingProxyType({str(k): float(v) for k, v in timings.items()}),
    )


# --------------------------------------------------------------------------- the file


def load(runtime: Path) -> Manifest:
    """The manifest of the runtime directory ``runtime``; ManifestError when it has none that reads."""
    where = str(runtime / FILE)
    try:
        text = (runtime / FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{where}: no manifest (not a finished runtime)", ()) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: cannot read: {getattr(exc, 'strerror', None) or exc}", ()) from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{where}: not JSON: {exc}", ()) from None
    return from_mapping(data, where)


def read(runtime: Path) -> Manifest | None:
    """The manifest of ``runtime``, or None if it has none that reads (not a finished runtime)."""
    try:
        return load(runtime)
    except ManifestError:
        return None


def render(manifest: Manifest) -> str:
    """The file's text (what :func:`write` writes)."""
    return json.dumps(manifest.as_dict(), indent=2) + "\n"


def write(directory: Path, manifest: Manifest) -> Path:
    """Write ``directory/runtime.json`` atomically; the only writer of manifests."""
    from builder.files import fsio

    path = directory / FILE
    fsio.atomic_write(path, render(manifest))
    return path
