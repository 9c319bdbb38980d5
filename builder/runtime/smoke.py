"""Smoke tests that run *inside* a runtime (its own ``bin/python``).

Every step ends ``pass``, ``fail`` or ``skipped`` with a reason.  On a host
without a GPU the GPU steps are ``skipped (no GPU)``, and so is ``vllm --help``
when it fails with vLLM's "Failed to infer device type" (vLLM's troubleshooting
guide, https://docs.vllm.ai/en/latest/usage/troubleshooting.html#failed-to-infer-device-type), and
``import vllm main extension`` on a host without ``libcuda.so.1``; any other failure is
``fail``.

The main extension is whichever the install has: the first member of ``[[main-extension]]``
in builder/data/cuda.toml that exists (``vllm/_C.abi3.so`` alone up to 0.18.1, both in 0.19.0-0.23.0, only
``vllm/_C_stable_libtorch.abi3.so`` from 0.24.0).

Independent steps run side by side, at most one per core this process may use
(:func:`cores`): the import steps, ``vllm --help`` and the GPU steps each start an
interpreter that loads torch (and vLLM), which is most of a smoke test's time.  The
report is the same whatever the order they finish in.  On a GPU host ``torch.cuda.is_available()`` must be true:
torch only *warns* when the driver is too old
(https://github.com/modelscope/FunASR/issues/2973), so availability, the
architecture check and a real cuBLAS GEMM are what prove the stack works.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from builder import _proc, paths, pylock
from builder.binaries.archcompat import Arch, runs_on_name
from builder.errors import BuilderError, ProtectedEnvError
from builder.report import Say
from builder.runtime import doctor
from builder.runtime import manifest as manifests
from builder.spec import Matrix
from builder.versions import compute_capability

IMPORT_TIMEOUT = 600.0
CLI_TIMEOUT = 300.0
GPU_TIMEOUT = 600.0
PASS, FAIL, SKIP = "pass", "fail", "skipped"
NO_GPU = "no GPU"
DEVICE_ERROR = "Failed to infer device type"
T = TypeVar("T")

# One JSON line when a step starts and one when it ends (with its time), flushed:
# the parent reports each step as it happens, and a crash keeps earlier results.
IMPORTS = r"""
import json, sys, time
def step(name, fn):
    print(json.dumps({"start": name}), flush=True)
    t = time.perf_counter()
    try:
        r = {"step": name, "ok": True, "value": fn()}
        json.dumps(r)
    except BaseException as e:
        r = {"step": name, "ok": False, "value": "%s: %s" % (type(e).__name__, e)}
    r["seconds"] = round(time.perf_counter() - t, 3)
    print(json.dumps(r), flush=True)
def t():
    import torch
    return {"version": torch.__version__, "cuda": getattr(getattr(torch, "version", None), "cuda", None)}
def v():
    import vllm
    return {"version": vllm.__version__}
def a():
    from vllm.engine.async_llm_engine import AsyncLLMEngine
    return AsyncLLMEngine.__name__
def c():
    # A GPU step: with the GPU steps off, argv[1] says why, and it is not tried.
    if len(sys.argv) > 1 and sys.argv[1]:
        return {"skipped": sys.argv[1]}
    # The main extension (the compiled ops) needs the driver's libcuda.so.1 (read from the
    # 0.13.0 wheel of https://pypi.org/project/vllm/0.13.0/#files): without it the step is
    # skipped with that reason, never passed.
    import ctypes
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return {"skipped": "no libcuda.so.1 on this host (%s)" % e}
    # argv[2]: the candidate members ("vllm/_C.abi3.so", ...); the first that exists is imported.
    import importlib, importlib.util, os
    members = json.loads(sys.argv[2]) if len(sys.argv) > 2 else ["vllm/_C.abi3.so"]
    spec = importlib.util.find_spec("vllm")
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for member in members:
        top, _, rest = member.partition("/")
        for d in dirs:
            if os.path.isfile(os.path.join(d, rest)):
                module = top + "." + rest.split(".")[0].replace("/", ".")
                importlib.import_module(module)
                return {"skipped": None, "module": module, "member": member}
    raise ImportError("vllm has none of its main extensions (%s)" % ", ".join(members))
step("import torch", t)
step("import vllm", v)
step("import AsyncLLMEngine", a)
step("import vllm main extension", c)
"""

# The GEMM shape raised CUBLAS_STATUS_INVALID_VALUE on Ada with torch 2.9.1
# (https://github.com/pytorch/pytorch/issues/170676).  One JSON line per result, flushed, so a
# crash in a later kernel keeps the earlier results.
GPU = r"""
import json
def emit(**kw):
    print(json.dumps(kw), flush=True)
import torch
import torch.nn.functional as F
ok = torch.cuda.is_available()
emit(step="cuda", available=ok, count=torch.cuda.device_count() if ok else 0,
     arch_list=torch.cuda.get_arch_list() if ok else [])
if ok:
    for i in range(torch.cuda.device_count()):
        cap = torch.cuda.get_device_capability(i)
        emit(step="device", index=i, name=torch.cuda.get_device_name(i), cc="%d.%d" % cap)
        for dt in ("float16", "bfloat16"):
            try:
                dtype = getattr(torch, dt)
                x = torch.randn(14, 4096, device="cuda:%d" % i, dtype=dtype)
                w = torch.randn(4096, 4096, device="cuda:%d" % i, dtype=dtype)
                y = F.linear(x, w)
                torch.cuda.synchronize(i)
                emit(step="gemm", index=i, dtype=dt, ok=bool(torch.isfinite(y).all().item()),
                     error=None)
            except Exception as e:
                emit(step="gemm", index=i, dtype=dt, ok=False, error="%s: %s" % (type(e).__name__, e))
"""


@dataclass(frozen=True)
class Step:
    name: str
    status: str  # pass | fail | skipped
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"step": self.name, "status": self.status, "reason": self.reason}


@dataclass
class SmokeReport:
    python: str
    gpu: bool
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    expected_source: str = ""

    @property
    def ok(self) -> bool:
        return all(s.status != FAIL for s in self.steps)

    def failed(self) -> list[Step]:
        return [s for s in self.steps if s.status == FAIL]

    def as_dict(self) -> dict[str, Any]:
        return {"python": self.python, "gpu": self.gpu, "ok": self.ok, "seconds": round(self.seconds, 2),
                "expected_from": self.expected_source, "steps": [s.as_dict() for s in self.steps]}

    def record(self) -> manifests.SmokeRecord:
        """The smoke record a manifest keeps of this report."""
        return manifests.SmokeRecord(python=self.python, gpu=self.gpu, ok=self.ok, seconds=round(self.seconds, 2),
                                     expected_from=self.expected_source,
                                     steps=tuple(manifests.SmokeStep(step=s.name, status=s.status, reason=s.reason)
                                                 for s in self.steps))


@dataclass(frozen=True)
class Expected:
    """What the lock predicts the runtime reports (see :func:`expected_from_lock`)."""

    torch_version: str | None
    torch_cuda: str | None
    vllm_version: str | None
    torch_cudart: str | None  # "libcudart.so.12"
    vllm_cudart: str | None
    vllm_toolkit: str | None  # release, "12.9"
    source: str = "lock + spec"


def expected_from_lock(matrix: Matrix, locked: Mapping[str, str]) -> Expected:
    """Predict the runtime's identity from the lock (name -> version) and the spec.

    torch's cudart comes from the locked ``nvidia-cuda-runtime-cu12`` (CUDA 12)
    or ``nvidia-cuda-runtime`` (CUDA 13) wheel; vLLM's from the CUDA release the
    spec declares for its wheel.  The fallback of :func:`expected_for`.
    """
    if "nvidia-cuda-runtime-cu12" in locked:
        torch_cudart: str | None = "libcudart.so.12"
    elif "nvidia-cuda-runtime" in locked:
        torch_cudart = f"libcudart.so.{locked['nvidia-cuda-runtime'].split('.')[0]}"
    else:
        torch_cudart = f"libcudart.so.{matrix.torch.cuda.split('.')[0]}"
    return Expected(
        torch_version=locked.get("torch"),
        torch_cuda=matrix.torch.cuda,
        vllm_version=locked.get("vllm"),
        torch_cudart=torch_cudart,
        vllm_cudart=f"libcudart.so.{matrix.vllm.cuda.split('.')[0]}",
        vllm_toolkit=matrix.vllm.cuda,
    )


def expected_for(matrix: Matrix, lock: pylock.Lock) -> Expected:
    """What ``builder check`` predicts for the lock (``builder.check.pipeline.predict``).

    If the checker cannot read the wheels (offline with a cold cache), the
    prediction falls back to :func:`expected_from_lock` and says so.
    """
    base = expected_from_lock(matrix, lock.versions())
    try:
        from builder.check import pipeline

        p = pipeline.predict(lock, matrix=matrix)
    except ProtectedEnvError:
        raise  # the cache it would write is protected: refuse, do not degrade
    except (BuilderError, OSError, ValueError) as exc:
        why = exc.message if isinstance(exc, BuilderError) else str(exc)
        return replace(base, source=f"lock + spec (builder check could not predict: {why})")
    tk = p.get("build_toolkit")
    return Expected(
        torch_version=p.get("torch") or base.torch_version,
        torch_cuda=p.get("torch_cuda") or base.torch_cuda,
        vllm_version=p.get("vllm") or base.vllm_version,
        torch_cudart=base.torch_cudart,
        vllm_cudart=p.get("cudart_soname") or base.vllm_cudart,
        vllm_toolkit=".".join(tk.split(".")[:2]) if tk else base.vllm_toolkit,
        source="builder check",
    )


def expected_from_environment(env: manifests.Environment, *, since_adoption: bool = False) -> Expected:
    """What smoke should see in an adopted environment (no lock to predict from).

    At adoption: what its own files say (versions from its metadata, ``torch.version.cuda``
    from torch's version file), so the imports are compared with the metadata; the CUDA
    binaries have nothing to be compared with.  Later (``since_adoption``): everything
    adoption read, the binaries' cudart and toolkit included, so a changed environment shows.
    """
    t, v = env.torch, env.vllm
    later = since_adoption
    return Expected(torch_version=t.version if t else None, torch_cuda=t.cuda if t else None,
                    vllm_version=v.version if v else None,
                    torch_cudart=t.cudart_soname if t and later else None,
                    vllm_cudart=v.cudart_soname if v and later else None,
                    vllm_toolkit=v.toolkit if v and later else None,
                    source="what adoption read of the environment" if later
                    else "the environment's own files (adopted: no lock)")


def gpu_present() -> bool:
    """True when the NVIDIA kernel driver exposes at least one GPU."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def same_version(installed: str, locked: str) -> bool:
    """``2.9.0+cu128`` (what torch reports) agrees with ``2.9.0`` (what the lock pins)."""
    try:
        a, b = Version(installed), Version(locked)
    except InvalidVersion:
        return installed == locked
    return a == b if b.local else Version(a.public) == b


def _tail(res: _proc.Result, lines: int) -> str:
    """The end of stderr on one line (a step's reason is one line)."""
    return res.brief(lines)


def classify_vllm_help(res: _proc.Result, *, gpu: bool) -> Step:
    """``vllm --help``: pass on exit 0; the no-device error is skipped only without a GPU."""
    name = "vllm --help"
    if res.missing:
        return Step(name, FAIL, "no vllm console script in the runtime")
    if res.timed_out:
        return Step(name, FAIL, f"did not finish within {CLI_TIMEOUT:g}s")
    if res.returncode == 0:
        return Step(name, PASS, "exit 0")
    text = res.stdout + res.stderr
    if DEVICE_ERROR in text and not gpu:
        return Step(name, SKIP, f"{NO_GPU}: vLLM could not infer a device type")
    return Step(name, FAIL, f"exit {res.returncode}: {_tail(res, 3)}")


def arch_supported(cc: str, arch_list: list[str]) -> tuple[bool, str]:
    """Can code in ``arch_list`` (``torch.cuda.get_arch_list()``) run on a device of ``cc``?

    The rule is :func:`builder.binaries.archcompat.runs_on`; this only words the answer.
    """
    major, minor = compute_capability(cc)
    want = f"sm_{major}{minor}"
    if want in arch_list:
        return True, f"{want} in torch.cuda.get_arch_list()"
    runnable = [a for a in arch_list if runs_on_name(a, cc)]
    cubins = [a for a in runnable if a.startswith("sm_")]
    ptx = [a for a in runnable if a.startswith("compute_")]
    def newest(names: list[str]) -> str:  # by architecture number: "sm_86" < "sm_120", unlike the strings
        return max(names, key=lambda a: Arch.parse(a.split("_", 1)[1]).number)

    if cubins:
        return True, f"{want} not listed; runs {newest(cubins)} code (binary-compatible within {major}.x)"
    if ptx:
        return True, f"{want} not listed; only PTX {newest(ptx)} (JIT on first use)"
    return False, f"no code for {want} in {', '.join(arch_list) or 'an empty arch list'}"




def _quiet(_message: str) -> None:
    pass


def secs(t: float) -> str:
    """``0.04s``, ``2.3s``, ``74s``: enough digits to read, no more."""
    return f"{t:.2f}s" if t < 1 else f"{t:.1f}s" if t < 10 else f"{t:.0f}s"


def _timed(say: Say, label: str, fn: Callable[[], T]) -> T:
    """Run ``fn``, saying when ``label`` starts and how long it took."""
    say(f"{label} ...")
    t = time.monotonic()
    out = fn()
    say(f"{label}: done in {secs(time.monotonic() - t)}")
    return out


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


def _import_events(say: Say) -> _proc.LineCallback:
    """Progress from the import steps' JSON lines, as the child writes them."""
    def feed(stream: str, line: str) -> None:
        ev = _event(line) if stream == "stdout" else None
        if ev is None:
            return
        if "start" in ev:
            say(f"{ev['start']} ...")
        elif "step" in ev:
            took = f" in {secs(float(ev.get('seconds') or 0))}"
            value = ev.get("value")
            skipped = value.get("skipped") if isinstance(value, dict) else None
            if not ev.get("ok"):
                say(f"{ev['step']}: failed{took} ({value})")
            elif skipped:
                say(f"{ev['step']}: skipped{took} ({skipped})")
            else:
                say(f"{ev['step']}: ok{took}")

    return feed


def _gpu_events(say: Say) -> _proc.LineCallback:
    """Progress from the GPU script's JSON lines (each result as it comes, with the time so far)."""
    start = time.monotonic()

    def feed(stream: str, line: str) -> None:
        ev = _event(line) if stream == "stdout" else None
        if ev is None:
            return
        at = f" ({secs(time.monotonic() - start)})"
        if ev.get("step") == "cuda":
            say(f"torch.cuda.is_available(): {ev.get('available')}, {ev.get('count')} device(s){at}")
        elif ev.get("step") == "device":
            say(f"cuda:{ev.get('index')}: {ev.get('name')}, compute capability {ev.get('cc')}{at}")
        elif ev.get("step") == "gemm":
            say(f"GEMM {ev.get('dtype')} cuda:{ev.get('index')}: "
                + ("ok" if ev.get("ok") else f"failed ({ev.get('error')})") + at)

    return feed


def _jsonlines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _env() -> dict[str, str]:
    # No bytecode writes into the runtime, no telemetry, no hub downloads.
    return _proc.clean_env(extra={"PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1",
                                  "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                                  "HF_HUB_OFFLINE": "1"})


def _compare(name: str, got: str | None, want: str | None, *, ok: bool) -> Step:
    if want is None:
        return Step(name, SKIP, f"no prediction to compare with (got {got})")
    if got is None:
        return Step(name, FAIL, f"unknown; expected {want}")
    return Step(name, PASS if ok else FAIL, f"{got}" + ("" if ok else f", expected {want}"))


def _identity_steps(probe: doctor.EnvProbe, exp: Expected) -> list[Step]:
    steps = []
    for top, want_so, want_tk in (("torch", exp.torch_cudart, None),
                                  ("vllm", exp.vllm_cudart, exp.vllm_toolkit)):
        ident = doctor.binary_identity(probe.package_dir(top))
        steps.append(_compare(f"{top} cudart", ident.cudart_soname, want_so,
                              ok=ident.cudart_soname == want_so))
        if want_tk is not None:
            steps.append(_compare(f"{top} build toolkit", ident.toolkit_release, want_tk,
                                  ok=ident.toolkit_release == want_tk))
    return steps


def _gpu_steps(python: str, env: Mapping[str, str], cwd: str, *, say: Say = _quiet) -> list[Step]:
    say("GPU steps (CUDA, architecture, cuBLAS GEMM) ...")
    res = _proc.run([python, "-I", "-B", "-c", GPU], timeout=GPU_TIMEOUT, env=env, cwd=cwd,
                    what="GPU smoke", on_line=_gpu_events(say))
    say(f"GPU steps: done in {secs(res.duration)}")
    lines = _jsonlines(res.stdout)
    cuda = next((x for x in lines if x.get("step") == "cuda"), None)
    if cuda is None:
        why = "timed out" if res.timed_out else f"exit {res.returncode}: {_tail(res, 3)}"
        return [Step("torch.cuda.is_available()", FAIL, why)]
    if not cuda["available"]:
        return [Step("torch.cuda.is_available()", FAIL,
                     "False on a GPU host: driver too old for this torch? " + _tail(res, 2))]
    steps = [Step("torch.cuda.is_available()", PASS, f"{cuda['count']} device(s)")]
    for dev in (x for x in lines if x.get("step") == "device"):
        ok, why = arch_supported(dev["cc"], list(cuda["arch_list"]))
        steps.append(Step(f"arch cuda:{dev['index']}", PASS if ok else FAIL, f"{dev['name']} cc {dev['cc']}: {why}"))
        for dt in ("float16", "bfloat16"):
            g = next((x for x in lines if x.get("step") == "gemm" and x["index"] == dev["index"]
                      and x["dtype"] == dt), None)
            name = f"GEMM (14,4096)x(4096,4096) {dt} cuda:{dev['index']}"
            if g is None:
                steps.append(Step(name, FAIL, f"process died: exit {res.returncode}: {_tail(res, 2)}"))
            elif g["ok"]:
                steps.append(Step(name, PASS, "finite result"))
            else:
                steps.append(Step(name, FAIL, g["error"] or "non-finite result"))
    return steps


MAIN_EXTENSION = "import vllm main extension"


def main_extensions() -> tuple[str, ...]:
    """vLLM's main-extension members, first choice first (builder/data/cuda.toml ``[[main-extension]]``)."""
    from builder.check import knowledge

    return tuple(knowledge.load().main_extensions.get("vllm", ())) or ("vllm/_C.abi3.so",)


def _vllm_c_step(r: dict[str, Any] | None, res: _proc.Result, *, not_installed: bool) -> Step:
    """``import vllm main extension``: pass only when it imported; skipped only without libcuda.so.1."""
    name = MAIN_EXTENSION
    if not_installed:
        return Step(name, SKIP, "vllm is not installed in this environment")
    if r is None:
        return Step(name, FAIL, "timed out" if res.timed_out else f"exit {res.returncode}: {_tail(res, 3)}")
    if not r["ok"]:
        return Step(name, FAIL, str(r["value"]))
    value = r["value"] if isinstance(r["value"], dict) else {}
    if value.get("skipped"):
        return Step(name, SKIP, str(value["skipped"]))
    return Step(name, PASS, f"{value.get('module', 'vllm._C')} loaded ({value.get('member', '?')})")


def cores() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_GPU_STEP_NAMES = ("torch.cuda.is_available()", "arch in torch.cuda.get_arch_list()",
                   "GEMM (14,4096)x(4096,4096) float16", "GEMM (14,4096)x(4096,4096) bfloat16")


def run_smoke(python: str | Path, expected: Expected | None, *, gpu: bool | None = None,
              progress: Say | None = None, jobs: int | None = None) -> SmokeReport:
    """Run every smoke step in the environment of ``python``.

    ``expected`` None means "an environment builder did not build": identity
    steps are skipped and a missing vLLM is skipped rather than failed.
    ``progress`` hears each step that runs code in the environment as it starts
    and ends (with its time), then the tally.  ``jobs``: how many steps may run at
    once (default :func:`cores`; 1 runs them one after the other, in report order).
    The report does not depend on ``jobs``.
    """
    python = str(python)
    say = progress or _quiet
    start = time.monotonic()
    asked = gpu
    gpu = gpu_present() if gpu is None else gpu
    rep = SmokeReport(python, gpu, expected_source=expected.source if expected else "")
    env = _env()
    # Loading vLLM's compiled ops is a GPU step (it needs the driver): with the GPU
    # steps off it is not tried, and the live progress says skipped, as the report does.
    gpu_off = "" if gpu else ("GPU steps not run (--no-gpu)" if asked is False else NO_GPU)
    members = json.dumps(list(main_extensions()))
    workers = max(1, jobs if jobs is not None else cores())
    with paths.temp_dir("builder-smoke-") as cwd, ThreadPoolExecutor(max_workers=workers) as pool:
        # Submitted in report order: with one worker they run one after the other, as they read.
        imports = pool.submit(_proc.run, [python, "-I", "-B", "-c", IMPORTS, gpu_off, members],
                              timeout=IMPORT_TIMEOUT, env=env, cwd=cwd, what="smoke imports",
                              on_line=_import_events(say) if progress else None)
        probed = pool.submit(_timed, say, "reading the installed packages and their CUDA binaries",
                             lambda: doctor.probe_env(python))
        # What runs next depends on what is installed (an environment builder did not build
        # is judged on what it has), which the probe says in well under a second.
        probe = probed.result()
        installed = probe.versions()
        have_torch, have_vllm = "torch" in installed, "vllm" in installed
        cli_help = None if expected is None and not have_vllm else \
            pool.submit(_vllm_help, python, env, cwd, gpu=gpu, say=say)
        gpu_run = pool.submit(_gpu_steps, python, env, str(cwd), say=say) \
            if gpu and not (expected is None and not have_torch) else None
        res = imports.result()
        got = {x["step"]: x for x in _jsonlines(res.stdout) if "step" in x}
        for name in ("import torch", "import vllm", "import AsyncLLMEngine"):
            r = got.get(name)
            # An environment builder did not build (--env without --matrix) is
            # judged on what it has: a component that is not installed is
            # skipped; one that is installed but does not import fails.
            if expected is None and name == "import torch" and not have_torch:
                rep.steps.append(Step(name, SKIP, "torch is not installed in this environment"))
            elif expected is None and "torch" not in name and not have_vllm:
                rep.steps.append(Step(name, SKIP, "vllm is not installed in this environment"))
            elif r is None:
                why = "timed out" if res.timed_out else f"exit {res.returncode}: {_tail(res, 3)}"
                rep.steps.append(Step(name, FAIL, why))
            else:
                rep.steps.append(Step(name, PASS if r["ok"] else FAIL, "" if r["ok"] else str(r["value"])))
        rep.steps.append(_vllm_c_step(got.get(MAIN_EXTENSION), res, not_installed=expected is None and not have_vllm))
        t = got.get("import torch", {}).get("value") if got.get("import torch", {}).get("ok") else None
        v = got.get("import vllm", {}).get("value") if got.get("import vllm", {}).get("ok") else None
        if expected is not None:
            tv, tc = (t or {}).get("version"), (t or {}).get("cuda")
            vv = (v or {}).get("version")
            rep.steps.append(_compare("torch.__version__", tv, expected.torch_version,
                                      ok=bool(tv and expected.torch_version
                                              and same_version(tv, expected.torch_version))))
            rep.steps.append(_compare("torch.version.cuda", tc, expected.torch_cuda, ok=tc == expected.torch_cuda))
            rep.steps.append(_compare("vllm.__version__", vv, expected.vllm_version,
                                      ok=bool(vv and expected.vllm_version
                                              and same_version(vv, expected.vllm_version))))
            rep.steps.extend(_identity_steps(probe, expected))
        rep.steps.append(cli_help.result() if cli_help is not None
                         else Step("vllm --help", SKIP, "vllm is not installed in this environment"))
        if gpu_run is not None:
            rep.steps.extend(gpu_run.result())
        elif gpu:
            rep.steps += [Step(n, SKIP, "torch is not installed in this environment") for n in _GPU_STEP_NAMES]
        else:
            rep.steps += [Step(n, SKIP, NO_GPU) for n in _GPU_STEP_NAMES]
    rep.seconds = time.monotonic() - start
    n = {k: sum(st.status == k for st in rep.steps) for k in (PASS, FAIL, SKIP)}
    say(f"{n[PASS]} pass, {n[FAIL]} fail, {n[SKIP]} skipped in {secs(rep.seconds)}")
    return rep


def _vllm_help(python: str, env: Mapping[str, str], cwd: Path, *, gpu: bool, say: Say) -> Step:
    cli = Path(python).parent / "vllm"
    say("vllm --help ...")
    ran = _proc.run([str(cli), "--help"], timeout=CLI_TIMEOUT, env=env, cwd=cwd, what="vllm --help")
    step = classify_vllm_help(ran, gpu=gpu)
    say(f"vllm --help: {step.status} in {secs(ran.duration)}" + (f" ({step.reason})" if step.reason else ""))
    return step
