"""Driver-upgrade preflight: pure decisions over host facts (the "decide" layer).

``evaluate(facts, matrix, host)`` returns one :class:`Check` per question the
operator must answer before the maintenance window, each ``pass``, ``warn``,
``fail`` or ``unknown`` with a reason and the next step.  "Ready" means ready
to perform the driver step-up in the window: an upgrade being needed is the
point of the exercise (``warn``), a reboot already pending or GPUs that do not
match ``envs/host.toml`` are not (``fail``).  Anything builder could not read
is ``unknown``, never ``pass``.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from builder.driver import parse as hp
from builder.driver.facts import HostFacts
from builder.spec import Host, Matrix
from builder.versions import DriverVersion

LEVELS = ("pass", "warn", "fail", "unknown")
NVIDIA_HOLD_PREFIXES = ("nvidia-", "libnvidia-", "cuda-drivers", "xserver-xorg-video-nvidia")
#: Free space below which preflight fails / warns (GiB on /, MiB on /boot).
#: builder's own margins: a driver series is ~1 GiB installed plus DKMS
#: builds; each kernel's initramfs on /boot is ~100 MiB when regenerated.
ROOT_FAIL_GIB, ROOT_WARN_GIB = 2, 5
BOOT_FAIL_MIB, BOOT_WARN_MIB = 100, 250


@dataclass(frozen=True)
class Check:
    id: str
    level: str
    message: str
    next: str = ""
    raw: str = ""

    def to_json(self) -> dict[str, str]:
        d = {"id": self.id, "level": self.level, "message": self.message}
        if self.next:
            d["next"] = self.next
        if self.raw and self.level in ("fail", "unknown"):
            d["raw"] = self.raw
        return d


@dataclass(frozen=True)
class Branch:
    series: int
    status: str = "unknown"
    eol: str = ""
    cuda: str = ""


@dataclass(frozen=True)
class DriverTarget:
    """The ``nvidia-driver-NNN`` series that meets ``floor`` and the supported alternatives."""

    floor: str
    branch: Branch
    alternatives: tuple[Branch, ...] = ()

    @property
    def package(self) -> str:
        return f"nvidia-driver-{self.branch.series}"

    @property
    def label(self) -> str:
        return f"{self.branch.series}.x"

    def note(self) -> str:
        """One sentence on branch support (e.g. R575 is EOL, R580 is LTS)."""
        parts = []
        if self.branch.status == "eol":
            parts.append(f"R{self.branch.series} is end of life")
        for alt in self.alternatives:
            kind = {"lts": "long-term support", "production": "production"}.get(alt.status, alt.status)
            until = f" until {alt.eol}" if alt.eol else ""
            parts.append(f"R{alt.series} ({kind}{until}) also meets the floor {self.floor}")
        return "; ".join(parts)


def load_branches() -> list[Branch]:
    """The branch table in ``builder/data/driver_branches.toml``."""
    text = resources.files("builder").joinpath("data/driver_branches.toml").read_text(encoding="utf-8")
    return [Branch(int(b["series"]), str(b.get("status", "unknown")), str(b.get("eol", "")),
                   str(b.get("cuda", ""))) for b in tomllib.loads(text)["branch"]]


def driver_target(floor: str, branches: list[Branch] | None = None) -> DriverTarget:
    """Which series to install for a driver floor: the floor's own branch,
    plus every supported (not end-of-life) later branch as an alternative."""
    table = branches if branches is not None else load_branches()
    major = DriverVersion.parse(floor).branch
    own = next((b for b in table if b.series == major), Branch(major))
    alts = tuple(b for b in sorted(table, key=lambda b: b.series) if b.series > major and b.status != "eol")
    return DriverTarget(floor, own, alts)


@dataclass(frozen=True)
class Report:
    command: str
    matrix: str
    verdict: str
    checks: list[Check]
    host: dict[str, Any]
    target: DriverTarget | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {"fail": 1, "unknown": 3}.get(self.verdict_level, 0)

    @property
    def verdict_level(self) -> str:
        levels = {c.level for c in self.checks}
        return "fail" if "fail" in levels else "unknown" if "unknown" in levels else "pass"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command, "matrix": self.matrix, "verdict": self.verdict,
                               "checks": [c.to_json() for c in self.checks], "host": self.host}
        if self.target is not None:
            out["target"] = {"floor": self.target.floor, "package": self.target.package,
                             "series": self.target.branch.series, "status": self.target.branch.status,
                             "alternatives": [asdict(a) for a in self.target.alternatives],
                             "note": self.target.note()}
        out.update(self.extra)
        return out


def verdict(checks: list[Check], ok: str = "ready", bad: str = "not-ready") -> str:
    """``bad`` when anything failed, ``unknown`` when anything could not be read."""
    levels = {c.level for c in checks}
    return bad if "fail" in levels else "unknown" if "unknown" in levels else ok


def host_summary(f: HostFacts) -> dict[str, Any]:
    """The ``host`` object of ``--json``: what builder read, not what host.toml says."""
    return {
        "driver": f.driver,
        "module_version": f.module_version,
        "kernel": f.kernel,
        "os": hp.os_label(f.os_release) if f.os_release else None,
        "glibc": f.glibc,
        "secure_boot": f.secure_boot.state if f.secure_boot else None,
        "gpus": [{"index": g.index, "name": g.name, "compute_capability": g.compute_capability,
                  "memory_mib": g.memory_mib, "bus_id": g.bus_id, "uuid": g.uuid} for g in f.gpus or []],
    }


def _unknown(cid: str, f: HostFacts, key: str, next_: str = "") -> Check:
    return Check(cid, "unknown", f.problems.get(key, f"{key}: not read"), next_, f.raw.get(key, ""))


# --------------------------------------------------------------------------- checks
def _loaded(f: HostFacts) -> str:
    return f.module_version or (f.proc.version if f.proc else "?")


def check_nvml(f: HostFacts) -> Check:
    """nvidia-smi answers, or which of its failure states the host is in."""
    e = f.nvsmi_error
    if e is not None:
        if e.kind == "mismatch":
            lib = f" (NVML library {e.nvml_version})" if e.nvml_version else ""
            return Check("nvml", "fail",
                         f"Driver/library version mismatch{lib}: driver packages were changed without a "
                         f"reboot; the loaded module ({_loaded(f)}) is older than the installed "
                         "userspace, so a reboot is already pending",
                         "do not reboot outside the window; running GPU processes keep working but new "
                         "ones fail to start until the reboot", e.text)
        if e.kind == "no-devices":
            return Check("nvml", "fail", "nvidia-smi: No devices were found (module loaded but no GPU "
                         "initialised)", "check `dmesg | grep NVRM` on the host", e.text)
        if e.kind == "no-driver":
            return Check("nvml", "fail", "nvidia-smi cannot communicate with the NVIDIA driver (module "
                         "not loaded or failed to load)", "check `lsmod | grep nvidia` and `dkms status`",
                         e.text)
        return Check("nvml", "unknown", f"nvidia-smi failed: {e.text.splitlines()[0]}", "", e.text)
    if f.gpus is None:
        return _unknown("nvml", f, "gpus", "install the NVIDIA driver utilities or run on the GPU host")
    return Check("nvml", "pass", f"nvidia-smi answers: {len(f.gpus)} GPU(s), driver {f.driver}")


def check_module(f: HostFacts) -> Check:
    """The loaded kernel module and the userspace (NVML) agree."""
    if f.nvsmi_error and f.nvsmi_error.kind == "mismatch":
        return Check("module", "fail", "kernel module and userspace differ: "
                     f"module {f.module_version or (f.proc.version if f.proc else '?')}, "
                     f"NVML library {f.nvsmi_error.nvml_version or '?'}", "reboot in the maintenance window")
    if f.module_version is None:
        if "not loaded" in f.problems.get("module", ""):
            return Check("module", "fail", f.problems["module"], "check `dmesg | grep NVRM`; reinstall the "
                         "driver's kernel module for the running kernel")
        return _unknown("module", f, "module")
    seen = {"module": f.module_version}
    if f.proc:
        seen["/proc"] = f.proc.version
    if f.gpus and f.driver:
        seen["nvidia-smi"] = f.driver
    for lib in f.nvml_libs or []:
        seen[f"libnvidia-ml.so.{lib}"] = lib
    versions = set(seen.values())
    if len(versions) > 1:
        where = ", ".join(f"{k} {v}" for k, v in seen.items())
        return Check("module", "fail", f"driver versions disagree ({where}): userspace and kernel module "
                     "differ, a reboot is pending", "reboot in the maintenance window")
    flavour = " (open kernel module)" if f.proc and f.proc.open_module else ""
    return Check("module", "pass", f"kernel module {f.module_version}{flavour} matches userspace "
                 f"({', '.join(seen)})")


def check_floor(f: HostFacts, matrix: Matrix, target: DriverTarget) -> Check:
    """Current driver vs the matrix floor, and which series meets it."""
    drv = f.driver
    if drv is None:
        return Check("driver-floor", "unknown", f"current driver unknown; {matrix.name} needs >= "
                     f"{matrix.driver_floor}", "run on the GPU host with the driver loaded",
                     f.raw.get("gpus", ""))
    if DriverVersion.parse(drv) >= DriverVersion.parse(matrix.driver_floor):
        return Check("driver-floor", "pass",
                     f"driver {drv} meets {matrix.name}'s floor {matrix.driver_floor}: no upgrade needed")
    note = target.note()
    return Check("driver-floor", "warn",
                 f"upgrade needed: current {drv} -> target {target.label} ({matrix.name} needs >= "
                 f"{matrix.driver_floor}); install {target.package}" + (f". {note}" if note else ""),
                 f"prepare the window with `builder runbook --matrix {matrix.id}`")


def check_package(f: HostFacts, matrix: Matrix, target: DriverTarget) -> Check:
    """Whether Ubuntu offers the target series (ubuntu-drivers devices)."""
    if f.driver and DriverVersion.parse(f.driver) >= DriverVersion.parse(matrix.driver_floor):
        return Check("driver-package", "pass", "no driver package change needed")
    if f.ubuntu_drivers is None:
        return Check("driver-package", "warn",
                     f"cannot tell whether Ubuntu offers {target.package}: "
                     f"{f.problems.get('ubuntu-drivers', 'ubuntu-drivers not read')}",
                     f"run `apt-cache policy {target.package}` (ubuntu-drivers-common is in the "
                     "prerequisites)")
    offered = [d for d in hp.nvidia_packages(f.ubuntu_drivers)]
    names = [d.package for d in offered]
    mine = [n for n in names if n == target.package or n.startswith(target.package + "-")]
    rec = next((d.package for d in offered if d.recommended), None)
    rec_s = f"; ubuntu-drivers recommends {rec}" if rec else ""
    if mine:
        return Check("driver-package", "pass", f"ubuntu-drivers offers {', '.join(mine)}{rec_s}")
    alts = [f"nvidia-driver-{a.series}" for a in target.alternatives
            if any(n.startswith(f"nvidia-driver-{a.series}") for n in names)]
    return Check("driver-package", "warn",
                 f"ubuntu-drivers does not offer {target.package}{rec_s}"
                 + (f"; it offers {', '.join(alts)}, which also meets the floor" if alts else ""),
                 f"check `apt-cache policy {target.package}` after `apt-get update`, or choose "
                 f"{alts[0] if alts else 'a later series'}", f.raw.get("ubuntu-drivers", ""))


def check_gpus(f: HostFacts, host: Host) -> Check:
    """GPUs visible and matching envs/host.toml (count, name, compute capability)."""
    if f.gpus is None:
        return _unknown("gpus", f, "gpus")
    want = sorted((g.name, g.compute_capability) for g in host.gpus for _ in range(g.count))
    if any(g.compute_capability is None for g in f.gpus):
        return Check("gpus", "unknown", "nvidia-smi reported no compute capability ([N/A] or an old "
                     "driver)", "", f.raw.get("gpus", ""))
    got = sorted((g.name or "?", g.compute_capability or "?") for g in f.gpus)
    desc = ", ".join(f"{n} (cc {c})" for n, c in got) or "none"
    if got != want:
        exp = ", ".join(f"{n} (cc {c})" for n, c in want)
        return Check("gpus", "fail", f"nvidia-smi shows {len(got)} GPU(s): {desc}; envs/host.toml expects "
                     f"{len(want)}: {exp}", "fix envs/host.toml or find the missing GPU before the window",
                     f.raw.get("gpus", ""))
    return Check("gpus", "pass", f"{len(got)} GPU(s) as in envs/host.toml: {desc}")


def check_secure_boot(f: HostFacts) -> Check:
    sb = f.secure_boot
    if sb is None:
        if f.efi is False:
            return Check("secure-boot", "pass", "legacy BIOS boot (no /sys/firmware/efi): Secure Boot does "
                         "not apply")
        return _unknown("secure-boot", f, "secure-boot", "run `mokutil --sb-state` on the host")
    if sb.state == "enabled" and not sb.validation_disabled:
        return Check("secure-boot", "warn", "Secure Boot is enabled: the new DKMS-built module must be "
                     "signed with a Machine Owner Key enrolled in firmware (MOK), or it will not load",
                     "plan MOK enrollment at the console during the window (the runbook's Secure Boot step)")
    if sb.state == "enabled":
        return Check("secure-boot", "pass", "Secure Boot enabled but shim validation is disabled: unsigned "
                     "modules load")
    if sb.state in ("disabled", "unsupported"):
        return Check("secure-boot", "pass", f"Secure Boot {sb.state}: no MOK enrollment needed")
    return Check("secure-boot", "unknown", "mokutil cannot determine the Secure Boot state", "",
                 f.raw.get("secure-boot", ""))


def check_headers(f: HostFacts) -> Check:
    k = f.kernel or "$(uname -r)"
    if f.headers is None:
        return Check("kernel-headers", "unknown", "kernel headers not probed")
    if f.headers:
        return Check("kernel-headers", "pass", f"headers for the running kernel {k} are installed")
    return Check("kernel-headers", "warn", f"no headers for the running kernel {k}: DKMS cannot build the "
                 "new module", f"install linux-headers-{k} (runbook prerequisites step)")


def check_dkms(f: HostFacts) -> Check:
    if f.dkms is None:
        why = f.problems.get("dkms", "")
        if "not installed" in why:
            return Check("dkms", "warn", "dkms is not installed", "install dkms (runbook prerequisites step)")
        return _unknown("dkms", f, "dkms")
    nv = [e for e in f.dkms if e.module.startswith("nvidia")]
    if not nv:
        return Check("dkms", "warn", "dkms has no nvidia module (driver installed another way, e.g. "
                     "Ubuntu's prebuilt linux-modules-nvidia or the .run installer)",
                     "make sure the new series is installed the same way as the current one")
    here = [e for e in nv if e.kernel == f.kernel and e.state == "installed"]
    listing = "; ".join(f"{e.module}/{e.version} {e.kernel or ''} {e.state}".replace("  ", " ") for e in nv)
    if here:
        return Check("dkms", "pass", f"dkms: {listing}")
    return Check("dkms", "warn", f"dkms has no installed nvidia module for the running kernel "
                 f"{f.kernel}: {listing}", "check `dkms status` before the window")


def check_processes(f: HostFacts) -> Check:
    if f.apps is None:
        return _unknown("gpu-processes", f, "apps")
    if not f.apps:
        return Check("gpu-processes", "pass", "no GPU compute processes running")
    listing = "; ".join(f"pid {p.pid} {p.name}" + (f" ({p.used_mib} MiB)" if p.used_mib is not None else "")
                        for p in f.apps)
    return Check("gpu-processes", "warn", f"{len(f.apps)} GPU process(es) running: {listing}",
                 "in the window, stop only your own GPU workloads (do not run `ray stop`)")


def check_reboot(f: HostFacts) -> Check:
    if f.reboot_required is None:
        return Check("pending-reboot", "unknown", "/var/run/reboot-required not probed")
    if not f.reboot_required:
        return Check("pending-reboot", "pass", "no reboot pending (/var/run/reboot-required absent)")
    pk = ", ".join(f.reboot_pkgs) or "unknown packages"
    kernel = any(p.startswith("linux-image") or p.startswith("linux-base") for p in f.reboot_pkgs)
    return Check("pending-reboot", "warn", f"a reboot is already pending for: {pk}"
                 + ("; the kernel changes at that reboot, so DKMS must build the new driver for the new "
                    "kernel too" if kernel else ""),
                 "install headers for the new kernel as well (`apt-get install linux-headers-generic`)"
                 if kernel else "the window's reboot applies these too")


def check_disk(f: HostFacts) -> Check:
    if f.disk is None:
        return _unknown("disk", f, "disk")
    by_mount = {e.mount: e for e in f.disk}
    root = by_mount.get("/")
    if root is None:
        return Check("disk", "unknown", "df did not report /", "", f.raw.get("disk", ""))
    msgs, level = [f"/ {root.avail_kib / 1024**2:.1f} GiB free"], "pass"
    if root.avail_kib < ROOT_FAIL_GIB * 1024**2:
        level = "fail"
    elif root.avail_kib < ROOT_WARN_GIB * 1024**2:
        level = "warn"
    boot = by_mount.get("/boot")
    if boot is not None:
        msgs.append(f"/boot {boot.avail_kib / 1024:.0f} MiB free")
        if boot.avail_kib < BOOT_FAIL_MIB * 1024:
            level = "fail"
        elif boot.avail_kib < BOOT_WARN_MIB * 1024 and level == "pass":
            level = "warn"
    nxt = "" if level == "pass" else (f"free space: at least {ROOT_WARN_GIB} GiB on / and {BOOT_WARN_MIB} "
                                      "MiB on /boot (`apt-get autoremove` removes old kernels)")
    return Check("disk", level, "; ".join(msgs), nxt)


def check_holds(f: HostFacts, target: DriverTarget) -> Check:
    if f.holds is None:
        return _unknown("held-packages", f, "holds")
    nv = [h for h in f.holds if h.startswith(NVIDIA_HOLD_PREFIXES)]
    if not nv:
        return Check("held-packages", "pass", "no NVIDIA packages are held" +
                     (f" ({len(f.holds)} other held)" if f.holds else ""))
    return Check("held-packages", "warn", f"held NVIDIA packages block the change: {', '.join(nv)}",
                 f"in the window, `apt-mark unhold` them before installing {target.package}, then hold "
                 "the new series again (holds keep unattended upgrades from causing a version mismatch)")


def check_os(f: HostFacts, host: Host) -> list[Check]:
    out = []
    if f.os_release is None:
        out.append(_unknown("os", f, "os"))
    else:
        label = hp.os_label(f.os_release)
        same = label.startswith(host.os) or f.os_release.get("VERSION_ID", "") in host.os and \
            f.os_release.get("ID", "").lower() in host.os.lower()
        out.append(Check("os", "pass" if same else "warn", f"{label}" + ("" if same else
                         f"; envs/host.toml says {host.os}"), "" if same else "update envs/host.toml"))
    if f.glibc is None:
        out.append(_unknown("glibc", f, "glibc"))
    else:
        same = f.glibc == host.glibc
        out.append(Check("glibc", "pass" if same else "warn", f"glibc {f.glibc}" + (
            "" if same else f"; envs/host.toml says {host.glibc}"), "" if same else "update envs/host.toml"))
    return out


def evaluate(f: HostFacts, matrix: Matrix, host: Host) -> Report:
    """Every preflight check for ``matrix`` on the host described by ``f``."""
    target = driver_target(matrix.driver_floor)
    checks = [
        check_nvml(f), check_module(f), check_floor(f, matrix, target), check_package(f, matrix, target),
        check_gpus(f, host), check_secure_boot(f), check_headers(f), check_dkms(f), check_processes(f),
        check_reboot(f), check_disk(f), check_holds(f, target), *check_os(f, host),
    ]
    return Report("preflight", matrix.name, verdict(checks), checks, host_summary(f), target)
