"""Host probes: what builder reads on the GPU host, and how (the "run" layer).

Every probe is read-only and runs through :func:`builder._proc.run` with a hard
timeout, so a ``nvidia-smi`` stuck in uninterruptible sleep costs at most its
bound (``subprocess.run(timeout=...)`` alone can block forever: after the kill
it waits without a bound, https://docs.python.org/3/library/subprocess.html#subprocess.run).  A
probe never raises: a missing tool, a non-zero exit or a timeout is recorded
as a raw :class:`ProbeRecord` for the parse and decide layers to judge.

builder never changes the host: :func:`run_argv` refuses any program outside
:data:`ALLOWED` (and any sub-command outside its read-only verbs), so apt,
dkms install, mokutil --import, modprobe and reboot cannot be reached from
here.  The runbook prints those commands for the operator; it runs nothing.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder import _proc
from builder.driver.snapshot import APP_FIELDS, GPU_FIELDS, ProbeRecord

__all__ = ["ALLOWED", "APP_FIELDS", "FILES", "GPU_FIELDS", "MAX_OUTPUT", "Probe", "Refused", "allowed", "capture",
           "probes", "run_argv", "run_probe", "torch_probe"]

#: The only files builder reads on the host (through ``cat``, bounded).
FILES = frozenset({"/sys/module/nvidia/version", "/proc/driver/nvidia/version", "/etc/os-release",
                   "/var/run/reboot-required", "/var/run/reboot-required.pkgs"})

#: Programs a probe may run, each with the argument lists it may pass.  A
#: program maps to a predicate over its arguments; nothing else runs.
ALLOWED: Mapping[str, Callable[[tuple[str, ...]], bool]] = {
    "nvidia-smi": lambda a: len(a) == 2 and a[0].startswith(("--query-gpu=", "--query-compute-apps="))
    and a[1].startswith("--format=csv"),
    "cat": lambda a: len(a) == 2 and a[0] == "--" and a[1] in FILES,
    "uname": lambda a: a in (("-r",), ("-m",)),
    "getconf": lambda a: a == ("GNU_LIBC_VERSION",),
    "ldd": lambda a: a == ("--version",),
    "dkms": lambda a: a == ("status",),
    # The module on disk for the running kernel (read-only: prints one field).
    "modinfo": lambda a: a == ("-F", "version", "nvidia"),
    "mokutil": lambda a: a == ("--sb-state",),
    "ubuntu-drivers": lambda a: a == ("devices",),
    "apt-mark": lambda a: a == ("showhold",),
    "dpkg-query": lambda a: len(a) >= 3 and a[0] == "-W" and a[1].startswith("--showformat="),
    "df": lambda a: len(a) >= 2 and a[0] == "-Pk",
}

#: What a probe may print (stdout + stderr) before it is killed and its record
#: says ``capped``: the real outputs are a few KiB (100 MB of nvidia-smi output
#: once took 48 s and 1.4 GB to read whole).
MAX_OUTPUT = 1024 * 1024

#: The torch check run inside a runtime's own interpreter (verify-driver).
TORCH_CODE = (
    "import json, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda,"
    " 'available': torch.cuda.is_available(), 'count': n,"
    " 'devices': [{'name': torch.cuda.get_device_name(i),"
    " 'capability': '%d.%d' % torch.cuda.get_device_capability(i)} for i in range(n)]}))\n"
)


class Refused(Exception):
    """An argv outside :data:`ALLOWED` reached the probe runner (a bug)."""


def allowed(argv: Sequence[str]) -> bool:
    """True when ``argv`` is one of the read-only commands builder may run."""
    if not argv:
        return False
    prog, args = os.path.basename(argv[0]), tuple(argv[1:])
    if prog == "python" and Path(argv[0]).parent.name == "bin" and os.path.isabs(argv[0]):
        # A runtime's own interpreter (the caller found it through the runtime
        # layout), running exactly the read-only torch check and nothing else.
        return args == ("-c", TORCH_CODE)
    check = ALLOWED.get(prog)
    return bool(check and check(args))


@dataclass(frozen=True)
class Probe:
    """One thing to read: a command, a file (via ``cat``) or a path's existence."""

    id: str
    kind: str                       # "command", "file" or "path"
    argv: tuple[str, ...] = ()
    path: str = ""
    timeout: float = 10.0
    env: Mapping[str, str] | None = None


def probes(kernel: str | None = None) -> list[Probe]:
    """Every host probe, in snapshot order.  ``kernel`` defaults to the running one."""
    release = kernel or os.uname().release
    smi_env = _proc.clean_env(extra={"LC_ALL": "C"})
    # CUDA_VISIBLE_DEVICES does not filter nvidia-smi, but it would filter torch.
    return [
        Probe("nvidia-smi-gpus", "command",
              ("nvidia-smi", f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,nounits"),
              timeout=20.0, env=smi_env),
        Probe("nvidia-smi-apps", "command",
              ("nvidia-smi", f"--query-compute-apps={','.join(APP_FIELDS)}", "--format=csv,nounits"),
              timeout=20.0, env=smi_env),
        Probe("module-version", "file", path="/sys/module/nvidia/version"),
        Probe("proc-version", "file", path="/proc/driver/nvidia/version"),
        Probe("nvml-library", "path", path="/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.*"),
        Probe("kernel", "command", ("uname", "-r")),
        Probe("machine", "command", ("uname", "-m")),
        Probe("os-release", "file", path="/etc/os-release"),
        Probe("glibc", "command", ("getconf", "GNU_LIBC_VERSION")),
        Probe("kernel-headers", "path", path=f"/lib/modules/{release}/build/Makefile"),
        Probe("dkms", "command", ("dkms", "status"), timeout=30.0),
        Probe("modinfo", "command", ("modinfo", "-F", "version", "nvidia"), timeout=20.0),
        Probe("efi", "path", path="/sys/firmware/efi"),
        Probe("secure-boot", "command", ("mokutil", "--sb-state")),
        Probe("ubuntu-drivers", "command", ("ubuntu-drivers", "devices"), timeout=90.0),
        Probe("reboot-required", "file", path="/var/run/reboot-required"),
        Probe("reboot-required-pkgs", "file", path="/var/run/reboot-required.pkgs"),
        Probe("disk", "command", ("df", "-Pk", "/", "/boot")),
        Probe("apt-holds", "command", ("apt-mark", "showhold"), timeout=30.0),
        Probe("driver-packages", "command",
              ("dpkg-query", "-W", "--showformat=${Package}\\t${Version}\\t${db:Status-Abbrev}\\n",
               "nvidia-driver-*", "nvidia-dkms-*", "nvidia-utils-*"), timeout=30.0),
    ]


def run_argv(probe_id: str, argv: Sequence[str], timeout: float,
             *, env: Mapping[str, str] | None = None, kind: str = "command",
             path: str | None = None) -> ProbeRecord:
    """Run one allowed read-only command; never raises for its outcome.

    Raises :class:`Refused` (before anything runs) for an argv outside
    :data:`ALLOWED`: that is a programming error, not a host state.
    """
    argv = tuple(argv)
    if not allowed(argv):
        raise Refused(f"builder does not run {argv!r}: only read-only probes are allowed")
    res = _proc.run(argv, timeout=timeout, env=env if env is not None else _proc.clean_env(), what=probe_id,
                    max_output=MAX_OUTPUT)
    exit_: int | str | None = "missing" if res.missing else res.returncode
    return ProbeRecord(probe_id, kind, argv, path, res.stdout, res.stderr, exit_,
                       round(res.duration, 3), res.timed_out, res.output_capped)


def run_probe(probe: Probe) -> ProbeRecord:
    """Run one probe with its bound; the record keeps the raw text."""
    if probe.kind == "command":
        return run_argv(probe.id, probe.argv, probe.timeout, env=probe.env)
    start = time.monotonic()
    if probe.kind == "path":
        hits = sorted(glob.glob(probe.path)) if any(c in probe.path for c in "*?[") else (
            [probe.path] if os.path.exists(probe.path) else [])
        return ProbeRecord(probe.id, "path", None, probe.path, "\n".join(hits), "",
                           0 if hits else "missing", round(time.monotonic() - start, 3))
    if not os.path.exists(probe.path):
        return ProbeRecord(probe.id, "file", None, probe.path, "", f"{probe.path}: not present",
                           "missing", 0.0)
    # procfs/sysfs reads go through a child too, so a wedged driver cannot
    # hang builder in a read() it cannot interrupt.
    return run_argv(probe.id, ("cat", "--", probe.path), probe.timeout, kind="file", path=probe.path)


def torch_probe(runtime: Path) -> ProbeRecord:
    """Ask a runtime's own torch which GPUs it sees (bounded, scrubbed env)."""
    env = _proc.clean_env()
    # The check is "torch sees every GPU": a leftover mask would hide some.
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return run_argv(f"torch:{runtime.name}", (str(runtime / "bin" / "python"), "-c", TORCH_CODE),
                    timeout=180.0, env=env)


#: Probes that talk to the NVIDIA driver: once one of them hangs, the others would too.
DRIVER_PROBES = frozenset({"nvidia-smi-gpus", "nvidia-smi-apps", "proc-version"})


def _not_run(probe_id: str, kind: str, argv: tuple[str, ...] | None, *, path: str | None) -> ProbeRecord:
    return ProbeRecord(probe_id, kind, argv, path, "",
                       "not run: the NVIDIA driver did not answer an earlier probe within its bound",
                       None, 0.0, True)


def capture(runtimes: Sequence[Path] = (), only: Sequence[Probe] | None = None) -> list[ProbeRecord]:
    """Run every probe, then the torch probe of each runtime directory in ``runtimes``.

    A wedged driver (a probe of it timed out) is not asked again: the remaining
    driver probes and the torch probes are recorded as timed out without running,
    so a hung nvidia-smi costs one bound, not one per probe.
    """
    records: list[ProbeRecord] = []
    wedged = False
    for p in only if only is not None else probes():
        if wedged and p.id in DRIVER_PROBES:
            records.append(_not_run(p.id, p.kind, p.argv or None, path=p.path or None))
            continue
        rec = run_probe(p)
        wedged = wedged or (p.id in DRIVER_PROBES and rec.timed_out)
        records.append(rec)
    for d in runtimes:
        name = f"torch:{d.name}"
        records.append(_not_run(name, "command", (str(d / "bin" / "python"),), path=None) if wedged
                       else torch_probe(d))
    return records
