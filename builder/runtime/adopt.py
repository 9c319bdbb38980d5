"""``builder runtime adopt``: serve an environment builder did not build, saying so.

An operator may already have a working vLLM environment (a GPU host's torch with a vLLM
installed over it).  Adopting it reads it read-only, as ``builder doctor`` does (its Python,
its distributions, torch's and vLLM's identity from their files), refuses it when it is, or
runs from, a protected environment (QL_1), and smoke-tests it.  Only then does a runtime
appear under the runtimes root::

    adopted-py312-<hash12>/
        runtime.json    origin "adopted": where the environment is, what was read, the smoke test
        bin/python      exec <the environment's python> "$@"
        bin/vllm        exec <the environment's vllm> "$@"

Nothing is written into the environment, and nothing is copied from it: the runtime
*points at* it.  It carries none of a built runtime's guarantees: no lock, so nothing
says what it should contain; no hash verification of its files; it can change under
builder (``builder smoke --runtime ID`` compares it with what adoption read).  Like a
build, adoption happens in staging, under the name's lock, and is renamed into place
whole; the address hashes the resolved interpreter and the distributions, so adopting an
unchanged environment again finds it, and a changed one gets a new id.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from builder import _proc, paths
from builder.errors import BuildError, Busy, NotReady, ProtectedEnvError, UsageError
from builder.project import Project
from builder.protect import Protected
from builder.report import Progress
from builder.runtime import doctor, layout, swap
from builder.runtime import manifest as manifests

LOCK_WAIT = 600.0


@dataclass(frozen=True, kw_only=True)
class AdoptRequest:
    python: str  # the environment's interpreter, as the operator names it
    root: str | None = None
    gpu: bool | None = None  # None: detect
    force: bool = False  # adopt again (smoke again) though an adopted runtime of it exists
    wait: float = LOCK_WAIT


@dataclass(frozen=True, kw_only=True)
class AdoptResult:
    name: str
    path: Path
    status: str  # adopted | readopted | exists
    manifest: manifests.Manifest

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "status": self.status,
                "manifest": self.manifest.as_dict()}


def _refuse_protected(protected: Protected, python: str, what: str, *candidates: str) -> None:
    for cand in candidates:
        hit = protected.match(cand) if cand else None
        if hit is not None:
            raise ProtectedEnvError(
                f"refusing to adopt {python}: {what} {cand}, inside the protected {hit.why} at {hit.path}",
                "builder serves no protected environment, nor one that runs from it (an active environment "
                "counts as protected: deactivate it); adopt another one, or build one (builder build)")


def _component(probe: doctor.EnvProbe, top: str) -> manifests.Component | None:
    c = doctor.component(probe, top)
    if not c.get("installed") or c.get("version") is None:
        return None
    return manifests.Component(version=str(c["version"]), dunder_version=c.get("__version__"), cuda=c.get("cuda"),
                               cudart_soname=c.get("cudart_soname"), toolkit=c.get("toolkit_release"))


def fingerprint(probe: doctor.EnvProbe) -> str:
    """sha256 of the environment's ``name==version`` lines, sorted: changes when a distribution does."""
    lines = "".join(f"{n}=={v}\n" for n, v in sorted(probe.versions().items()))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def _environment(python: str, probe: doctor.EnvProbe) -> manifests.Environment:
    kind = "conda" if probe.conda else "venv" if probe.venv else "installation"
    return manifests.Environment(
        python=python, executable=os.path.realpath(probe.executable), prefix=probe.prefix,
        base_prefix=probe.base_prefix, version=probe.version, kind=kind, packages=len(probe.versions()),
        fingerprint=fingerprint(probe), torch=_component(probe, "torch"), vllm=_component(probe, "vllm"))


def _vllm_command(python: str, probe: doctor.EnvProbe) -> list[str]:
    """How to run the environment's ``vllm``: its console script beside the interpreter, else its
    entry point (an install without scripts, e.g. ``pip install --target``)."""
    beside = Path(python).parent / "vllm"
    if os.access(beside, os.X_OK) and beside.is_file():
        return [str(beside)]
    for d in probe.site_dirs:
        for ep in sorted(Path(d).glob("vllm-*.dist-info/entry_points.txt")):
            section = ""
            for line in ep.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line
                elif section == "[console_scripts]" and line.split("=", 1)[0].strip() == "vllm" and ":" in line:
                    module, func = line.split("=", 1)[1].strip().split(":", 1)
                    code = (f"import sys; from {module.strip()} import {func.strip()} as main; "
                            "sys.argv[0] = 'vllm'; sys.exit(main())")
                    return [python, "-c", code]
    raise NotReady(f"{python}: vLLM is installed but has no `vllm` command (no script beside the interpreter, "
                   "no console_scripts entry point)", "reinstall vLLM in that environment")


def _trampoline(path: Path, argv: list[str], note: str) -> None:
    """A two-line sh script that execs ``argv`` with its own arguments.  The arguments are quoted
    for sh; the comment loses any control character (a newline in a path must not end it)."""
    comment = "".join(c if c.isprintable() else "?" for c in note)
    path.write_text(f"#!/bin/sh\n# {comment}\nexec {' '.join(shlex.quote(a) for a in argv)} \"$@\"\n",
                    encoding="utf-8")
    path.chmod(0o755)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def adopt(project: Project, req: AdoptRequest, protected: Protected, *,
          progress: Progress | None = None) -> AdoptResult:
    """Adopt the environment of ``req.python`` (see the module docstring)."""
    say = progress or (lambda _t, _m: None)
    t0 = time.monotonic()
    named = os.path.expanduser(req.python)
    # A bare name (`python3`) is looked up on PATH, as a shell would; a path is taken as given.
    given = os.path.abspath(named if os.sep in named else (_proc.which(named) or named))
    if not os.path.exists(given):
        raise UsageError(f"{req.python}: no such interpreter", "pass --python PATH to the environment's python")
    # Refused before it runs: the interpreter as named and as resolved.
    _refuse_protected(protected, req.python, "the interpreter is", given, os.path.realpath(given))
    root = paths.gate(layout.runtimes_root(project, req.root), what="create runtimes under", kind="dir",
                      user_given=req.root is not None, protected=protected)
    say(req.python, "reading the environment (read-only, as builder doctor does)")
    probe = doctor.probe_env(given)
    # ... and what it runs from: its prefix, its base (a venv over QL_1's python imports QL_1).
    _refuse_protected(protected, req.python, "it runs from", probe.prefix, probe.base_prefix,
                      os.path.realpath(probe.executable))
    env = _environment(given, probe)
    if env.vllm is None:
        raise NotReady(f"{req.python}: vLLM is not installed in {probe.prefix}; nothing to serve",
                       "adopt an environment with vLLM (builder doctor --python PATH shows what it has)")
    if env.torch is None:
        raise NotReady(f"{req.python}: torch is not installed in {probe.prefix}", "adopt an environment with torch")
    vllm_cmd = _vllm_command(given, probe)
    py = ".".join(env.version.split(".")[:2])
    name = layout.adopted_name(py, env.executable, env.fingerprint)
    final = paths.gate(root / name, what="adopt a runtime at", kind="dir", protected=protected)
    paths.gate(swap.name_lock_dir(root, name), what="create the adoption lock in", kind="dir", protected=protected)
    paths.temp_base(protected=protected)  # the smoke children inherit $TMPDIR
    paths.mkdir(root, what="create runtimes under", protected=protected)
    say(name, f"Python {env.version} at {probe.prefix} ({env.kind}); torch {env.torch.version}, "
              f"vLLM {env.vllm.version}; {env.packages} distributions")
    with swap.name_lock(root, name, req.wait, on_wait=lambda: say(name, "waiting for another adoption of it")):
        removed = swap.clean_leftovers(root, name)
        if removed:
            say(name, f"removed leftovers of interrupted runs: {', '.join(removed)}")
        status = "adopted"
        if final.exists():
            found = layout.read_manifest(final)
            if found is not None and found.adopted and not req.force:
                return AdoptResult(name=name, path=final, status="exists", manifest=found)
            busy = swap.users_of(final)
            if busy:
                raise Busy(f"{final} is in use by pid {', '.join(map(str, busy[:5]))}; not replacing it",
                           "stop the processes using it, then adopt again")
            status = "readopted"
        staging = paths.gate(swap.staging_dir(root, name), what="adopt a runtime at", kind="dir",
                             protected=protected)
        try:
            staging.mkdir()
            (staging / "bin").mkdir()
            note = f"builder runtime adopt: {name} is the environment at {probe.prefix} (adopted: no lock)"
            _trampoline(staging / "bin" / "python", [given], note)
            _trampoline(staging / "bin" / "vllm", vllm_cmd, note)
            say(name, "running smoke tests")
            from builder.runtime import smoke  # loading the smoke machinery is part of the smoke phase

            t = time.monotonic()
            report = smoke.run_smoke(staging / "bin" / "python", smoke.expected_from_environment(env), gpu=req.gpu,
                                     progress=lambda m: say(name, f"smoke: {m}"))
            t_smoke = time.monotonic() - t
            if not report.ok:
                bad = "; ".join(f"{s.name}: {s.reason}" for s in report.failed())
                raise BuildError(f"{name}: smoke tests failed, nothing was adopted: {bad}",
                                 f"`builder smoke --env {req.python}` shows the same; fix the environment")
            manifest = manifests.Manifest(
                format=manifests.FORMAT, name=name, origin=manifests.ADOPTED, python=py, environment=env,
                created_at=_now(), smoke=report.record(),
                timings=MappingProxyType({"smoke": round(t_smoke, 3), "total": round(time.monotonic() - t0, 3)}))
            manifests.write(staging, manifest)
            swap.syncfs(staging)
            swap.install(staging, final, root)
        except BaseException:
            swap.rmtree(staging)
            raise
    return AdoptResult(name=name, path=final, status=status, manifest=manifest)
