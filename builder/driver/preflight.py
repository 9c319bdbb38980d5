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

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

from builder.driver import parse as hp
from builder.driver.branches import Branch, DriverTarget, LockFloor, driver_target, load_branches
from builder.driver.facts import HostFacts
from builder.report import Level, worst
from builder.spec import Host, Matrix
from builder.versions import DriverVersion

__all__ = ["Branch", "Check", "DriverTarget", "LockFloor", "Report", "driver_target", "evaluate",
           "load_branches", "verdict"]

NVIDIA_HOLD_PREFIXES = ("nvidia-", "libnvidia-", "cuda-drivers", "xserver-xorg-video-nvidia")
#: Free space below which preflight fails / warns (GiB on /, MiB on /boot).
#: builder's own margins: a driver series is ~1 GiB installed plus DKMS
#: builds; each kernel's initramfs on /boot is ~100 MiB when regenerated.
ROOT_FAIL_GIB, ROOT_WARN_GIB = 2, 5
BOOT_FAIL_MIB, BOOT_WARN_MIB = 100, 250


@dataclass(frozen=True)
class Check:
    id: str
    level: Level  # pass, warn, fail or unknown (builder.report's order)
    message: str
    next: str = ""
    raw: str = ""

    def to_json(self) -> dict[str, str]:
        d = {"id": self.id, "level": self.level, "message": self.message}
        if self.next:
            d["next"] = self.next
        if self.raw and self.level in (Level.FAIL, Level.UNKNOWN):
            d["raw"] = self.raw
        return d


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
        return {Level.FAIL: 1, Level.UNKNOWN: 3}.get(self.verdict_level, 0)

    @property
    def verdict_level(self) -> Level:
        """``fail``, else ``unknown``, else ``pass`` (a warning does not stop the step-up)."""
        w = worst(c.level for c in self.checks)
        return w if w in (Level.FAIL, Level.UNKNOWN) else Level.PASS

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command, "matrix": self.matrix, "verdict": self.verdict,
                               "checks": [c.to_json() for c in self.checks], "host": self.host}
        if self.target is not None:
            t = self.target
            out["target"] = {"floor": t.floor, "package": t.package, "series": t.branch.series,
                             "status": t.status, "eol": t.branch.eol or t.branch.eol_by or None,
                             "alternatives": [asdict(a) | {"status": a.status(t.today)} for a in t.alternatives],
                             "lock_floor": asdict(t.lock_floor) if t.lock_floor else None,
                             "today": t.today.isoformat(), "note": t.note()}
        out.update(self.extra)
        return out


def verdict(checks: list[Check], ok: str = "ready", bad: str = "not-ready") -> str:
    """``bad`` when anything failed, ``unknown`` when anything could not be read."""
    w = worst(c.level for c in checks)
    return bad if w is Level.FAIL else "unknown" if w is Level.UNKNOWN else ok


def host_summary(f: HostFacts) -> dict[str, Any]:
    """The ``host`` object of ``--json``: what builder read, not what host.toml says."""
    return {
        "driver": f.driver,
        "module_version": f.module_version,
        "module_on_disk": f.module_on_disk,
        "kernel": f.kernel,
        "machine": f.arch,
        "os": hp.os_label(f.os_release) if f.os_release else None,
        "glibc": f.glibc,
        "secure_boot": f.secure_boot.state if f.secure_boot else None,
        "gpus": [{"index": g.index, "name": g.name, "compute_capability": g.compute_capability,
                  "memory_mib": g.memory_mib, "bus_id": g.bus_id, "uuid": g.uuid} for g in f.gpus or []],
    }


def _unknown(cid: str, f: HostFacts, key: str, *, next_: str = "") -> Check:
    return Check(cid, Level.UNKNOWN, f.problems.get(key, f"{key}: not read"), next_, f.raw.get(key, ""))


# --------------------------------------------------------------------------- checks
def _loaded(f: HostFacts) -> str:
    return f.module_version or (f.proc.driver if f.proc and f.proc.driver else "?")


def check_platform(f: HostFacts) -> Check:
    """The runbook covers x86_64 hosts with NVIDIA's desktop/data-center driver packages only."""
    tegra = f.tegra_evidence()
    if tegra:
        return Check("platform", Level.FAIL, "a Jetson/Tegra (L4T) host (" + "; ".join(tegra)
                     + "): unsupported by this runbook; its GPU driver ships with JetPack (L4T BSP), not as "
                     "nvidia-driver-NNN packages",
                     "upgrade the driver through JetPack / NVIDIA SDK Manager; do not install desktop driver "
                     "packages with apt")
    arch = f.arch
    if arch is None:
        return Check("platform", Level.UNKNOWN, "machine architecture not read: "
                     + f.problems.get("machine", "uname -m not captured"), "take a new snapshot")
    if arch != "x86_64":
        return Check("platform", Level.FAIL, f"a {arch} host: unsupported by this runbook (it covers x86_64 "
                     "Ubuntu hosts with nvidia-driver-NNN packages)",
                     "follow the driver instructions for this platform")
    return Check("platform", Level.PASS, "x86_64" + (" (uname -m)" if f.machine else " (kernel module banner)"))


def check_nvml(f: HostFacts) -> Check:
    """nvidia-smi answers, or which of its failure states the host is in."""
    e = f.nvsmi_error
    if e is not None:
        if e.kind == "gpu-lost":
            return Check("nvml", Level.FAIL, f"a GPU fell off the bus{f' ({e.bus_id})' if e.bus_id else ''}: "
                         f"{e.text.splitlines()[0]}", "in the window: check `dmesg | grep -i xid` (Xid 79), "
                         "seating, power and cooling; a power cycle may bring it back; if it falls off again the "
                         "card or slot is faulty", e.text)
        if e.kind == "device-handle":
            return Check("nvml", Level.FAIL, f"nvidia-smi cannot read GPU {e.bus_id or '?'}: {e.text.splitlines()[0]} "
                         "(an error state, whatever nvidia-smi's exit code)", "check `dmesg | grep -i -e xid -e "
                         "NVRM` on the host; a reboot in the window may recover the GPU", e.text)
        if e.kind == "mismatch":
            lib = f" (NVML library {e.nvml_version})" if e.nvml_version else ""
            return Check("nvml", Level.FAIL,
                         f"Driver/library version mismatch{lib}: the loaded kernel module ({_loaded(f)}) and the "
                         "installed userspace differ (see the module check for whether a reboot fixes it)",
                         "do not reboot outside the window; running GPU processes keep working but new "
                         "ones fail to start", e.text)
        if e.kind == "no-devices":
            return Check("nvml", Level.FAIL, "nvidia-smi: No devices were found (module loaded but no GPU "
                         "initialised)", "check `dmesg | grep NVRM` on the host", e.text)
        if e.kind == "no-driver":
            return Check("nvml", Level.FAIL, "nvidia-smi cannot communicate with the NVIDIA driver (module "
                         "not loaded or failed to load)", "check `lsmod | grep nvidia` and `dkms status`",
                         e.text)
        return Check("nvml", Level.UNKNOWN, f"nvidia-smi failed: {e.text.splitlines()[0]}", "", e.text)
    if f.gpus is None:
        return _unknown("nvml", f, "gpus", next_="install the NVIDIA driver utilities or run on the GPU host")
    if not f.gpus:
        return Check("nvml", Level.UNKNOWN, "nvidia-smi printed the header but no GPU row", "run `nvidia-smi` on the "
                     "host", f.raw.get("gpus", ""))
    if f.drivers_disagree:
        return Check("nvml", Level.UNKNOWN, f"GPUs report different driver versions ({', '.join(f.gpu_drivers)}): "
                     "builder trusts none of them", "run `nvidia-smi` on the host; a mixed state needs a reboot "
                     "or a reinstall", f.raw.get("gpus", ""))
    return Check("nvml", Level.PASS, f"nvidia-smi answers: {len(f.gpus)} GPU(s), driver {f.driver}")


def _mismatch(f: HostFacts, what: str) -> Check:
    from builder.driver.reboot import outlook

    o = outlook(f)
    level = Level.FAIL
    return Check("module", level, f"{what}; {o.message}", o.next, f.raw.get("modinfo", ""))


def check_module(f: HostFacts) -> Check:
    """The loaded kernel module and the userspace (NVML) agree; if not, whether a reboot fixes it."""
    if f.nvsmi_error and f.nvsmi_error.kind == "mismatch":
        return _mismatch(f, "kernel module and userspace differ: "
                         f"loaded module {_loaded(f)}, NVML library {f.nvsmi_error.nvml_version or '?'}")
    if f.module_version is None:
        if "not loaded" in f.problems.get("module", ""):
            disk = f" (the module on disk for the kernel is {f.module_on_disk}: a reboot or `modprobe nvidia` " \
                   "would load it)" if f.module_on_disk else ""
            return Check("module", Level.FAIL, f.problems["module"] + disk, "check `dmesg | grep NVRM`; reinstall the "
                         "driver's kernel module for the running kernel")
        return _unknown("module", f, "module")
    if f.drivers_disagree:
        return Check("module", Level.UNKNOWN, f"GPUs report different driver versions ({', '.join(f.gpu_drivers)})",
                     "run `nvidia-smi` on the host", f.raw.get("gpus", ""))
    seen = {"module": f.module_version}
    if f.proc and f.proc.driver:
        seen["/proc"] = f.proc.driver
    if f.gpus and f.driver:
        seen["nvidia-smi"] = f.driver
    for lib in f.nvml_libs or []:
        seen[f"libnvidia-ml.so.{lib}"] = lib
    versions = set(seen.values())
    if len(versions) > 1:
        where = ", ".join(f"{k} {v}" for k, v in seen.items())
        return _mismatch(f, f"driver versions disagree ({where}): userspace and kernel module differ")
    flavour = " (open kernel module)" if f.proc and f.proc.open_module else ""
    return Check("module", Level.PASS, f"kernel module {f.module_version}{flavour} matches userspace "
                 f"({', '.join(seen)})")


def _native_note(f: HostFacts, matrix: Matrix, target: DriverTarget, *, drv: str) -> str:
    lf = target.lock_floor
    if lf is None or not target.native_above_floor or DriverVersion.parse(drv) >= DriverVersion.parse(lf.driver):
        return ""
    return (f"; {matrix.name}'s lock has {lf.phrase()}: driver {drv} runs it only under minor-version "
            "compatibility")


def check_floor(f: HostFacts, matrix: Matrix, target: DriverTarget) -> Check:
    """Current driver vs the matrix floor (and the lock's native floor), and which series meets it."""
    drv = f.driver
    note = target.note()
    if drv is None:
        why = (f"GPUs report different driver versions ({', '.join(f.gpu_drivers)}), so there is no one current "
               "driver" if f.drivers_disagree else "current driver unknown")
        return Check("driver-floor", Level.UNKNOWN, f"{why}; {matrix.name} needs >= {matrix.driver_floor}"
                     + (f". {note}" if note else ""), "run on the GPU host with the driver loaded",
                     f.raw.get("gpus", ""))
    if DriverVersion.parse(drv) >= DriverVersion.parse(matrix.driver_floor):
        native = _native_note(f, matrix, target, drv=drv)
        if native:
            return Check("driver-floor", Level.WARN, f"driver {drv} meets {matrix.name}'s declared floor "
                         f"{matrix.driver_floor}{native}" + (f". {note}" if note else ""),
                         "plan the move to a branch that meets every floor (see the note)")
        return Check("driver-floor", Level.PASS,
                     f"driver {drv} meets {matrix.name}'s floor {matrix.driver_floor}: no upgrade needed")
    return Check("driver-floor", Level.WARN,
                 f"upgrade needed: current {drv} -> target {target.label} ({matrix.name} needs >= "
                 f"{matrix.driver_floor}); install {target.package}" + (f". {note}" if note else ""),
                 f"prepare the window with `builder runbook --matrix {matrix.id}`")


def check_package(f: HostFacts, matrix: Matrix, target: DriverTarget) -> Check:
    """Whether Ubuntu offers the target series (ubuntu-drivers devices)."""
    if f.driver and DriverVersion.parse(f.driver) >= DriverVersion.parse(matrix.driver_floor):
        return Check("driver-package", Level.PASS, "no driver package change needed")
    if f.ubuntu_drivers is None:
        return Check("driver-package", Level.WARN,
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
        return Check("driver-package", Level.PASS, f"ubuntu-drivers offers {', '.join(mine)}{rec_s}")
    alts = [f"nvidia-driver-{a.series}" for a in target.alternatives
            if any(n.startswith(f"nvidia-driver-{a.series}") for n in names)]
    return Check("driver-package", Level.WARN,
                 f"ubuntu-drivers does not offer {target.package}{rec_s}"
                 + (f"; it offers {', '.join(alts)}, which also meets the floor" if alts else ""),
                 f"check `apt-cache policy {target.package}` after `apt-get update`, or choose "
                 f"{alts[0] if alts else 'a later series'}", f.raw.get("ubuntu-drivers", ""))


def check_gpus(f: HostFacts, host: Host) -> Check:
    """GPUs visible and matching envs/host.toml (count, name, compute capability)."""
    if f.gpus is None:
        return _unknown("gpus", f, "gpus")
    want = sorted((g.name, g.compute_capability) for g in host.gpus for _ in range(g.count))
    bad = f.unreadable_gpus
    if bad:
        which = ", ".join(f"GPU {g.index if g.index is not None else '?'} ({g.name or 'unnamed'}: "
                          f"{g.compute_capability or '[N/A]'})" for g in bad)
        return Check("gpus", Level.UNKNOWN, f"compute capability could not be read for {which}: that GPU is not "
                     "judged, so the GPU set is not confirmed", "check `nvidia-smi -q` on the host",
                     f.raw.get("gpus", ""))
    got = sorted((g.name or "?", g.compute_capability or "?") for g in f.gpus)
    desc = ", ".join(f"{n} (cc {c})" for n, c in got) or "none"
    if got != want:
        exp = ", ".join(f"{n} (cc {c})" for n, c in want)
        return Check("gpus", Level.FAIL, f"nvidia-smi shows {len(got)} GPU(s): {desc}; envs/host.toml expects "
                     f"{len(want)}: {exp}", "fix envs/host.toml or find the missing GPU before the window",
                     f.raw.get("gpus", ""))
    return Check("gpus", Level.PASS, f"{len(got)} GPU(s) as in envs/host.toml: {desc}")


def check_secure_boot(f: HostFacts) -> Check:
    """``mokutil --sb-state``, each of its answers on its own.

    The absence of ``/sys/firmware/efi`` never turns a missing or failed
    mokutil into ``pass``: a container hides /sys/firmware on an EFI host.
    """
    sb = f.secure_boot
    raw = f.raw.get("secure-boot", "")
    if sb is None:
        efi = {True: "; /sys/firmware/efi exists", False: "; /sys/firmware/efi is absent (legacy BIOS boot, or a "
               "container that hides it)"}.get(f.efi, "") if f.efi is not None else ""
        return Check("secure-boot", Level.UNKNOWN, f.problems.get("secure-boot", "mokutil --sb-state: not read") + efi,
                     "install mokutil (package mokutil) and run `mokutil --sb-state` on the host", raw)
    if sb.state == "enabled" and not sb.validation_disabled:
        return Check("secure-boot", Level.WARN, "Secure Boot is enabled: the new DKMS-built module must be "
                     "signed with a Machine Owner Key enrolled in firmware (MOK), or it will not load",
                     "plan MOK enrollment at the console during the window (the runbook's Secure Boot step)")
    if sb.state == "enabled":
        return Check("secure-boot", Level.PASS, "Secure Boot enabled but shim validation is disabled: unsigned "
                     "modules load")
    if sb.state == "disabled":
        return Check("secure-boot", Level.PASS, "Secure Boot disabled: no MOK enrollment needed"
                     + (" (the platform is in Setup Mode)" if sb.setup_mode else ""))
    if sb.state == "unsupported":
        return Check("secure-boot", Level.PASS, "mokutil: \"This system doesn't support Secure Boot\" (the firmware "
                     "exposes no SecureBoot variable): no MOK enrollment needed")
    if sb.state == "no-efivars":
        if f.efi is False:
            return Check("secure-boot", Level.WARN, "mokutil: \"EFI variables are not supported on this system\" and "
                         "/sys/firmware/efi is absent: a legacy BIOS boot, where Secure Boot does not apply, unless "
                         "this ran in a container that hides the firmware", "confirm with `mokutil --sb-state` on "
                         "the host itself (not in a container)", raw)
        return Check("secure-boot", Level.UNKNOWN, "mokutil: \"EFI variables are not supported on this system\" "
                     + ("although /sys/firmware/efi exists (efivarfs not mounted?)" if f.efi else
                        "(whether the host booted through EFI was not read)"),
                     "mount efivarfs or check Secure Boot in the firmware setup", raw)
    if sb.state == "read-error":
        return Check("secure-boot", Level.UNKNOWN, f"mokutil could not read the firmware variables: {sb.detail}",
                     "run `sudo mokutil --sb-state` on the host", raw)
    return Check("secure-boot", Level.UNKNOWN,
                 f"mokutil cannot determine the Secure Boot state ({sb.detail or sb.state})",
                 "check Secure Boot in the firmware setup", raw)


def check_headers(f: HostFacts) -> Check:
    k = f.kernel or "$(uname -r)"
    if f.headers is None:
        return Check("kernel-headers", Level.UNKNOWN, "kernel headers not probed")
    if f.headers:
        return Check("kernel-headers", Level.PASS, f"headers for the running kernel {k} are installed")
    return Check("kernel-headers", Level.WARN, f"no headers for the running kernel {k}: DKMS cannot build the "
                 "new module", f"install linux-headers-{k} (runbook prerequisites step)")


def check_dkms(f: HostFacts) -> Check:
    if f.dkms is None:
        why = f.problems.get("dkms", "")
        if "not installed" in why:
            return Check("dkms", Level.WARN, "dkms is not installed", "install dkms (runbook prerequisites step)")
        return _unknown("dkms", f, "dkms")
    nv = [e for e in f.dkms if e.module.startswith("nvidia")]
    if not nv:
        return Check("dkms", Level.WARN, "dkms has no nvidia module (driver installed another way, e.g. "
                     "Ubuntu's prebuilt linux-modules-nvidia or the .run installer)",
                     "make sure the new series is installed the same way as the current one")
    here = [e for e in nv if e.kernel == f.kernel and e.state == "installed"]
    listing = "; ".join(f"{e.module}/{e.version} {e.kernel or ''} {e.state}".replace("  ", " ")
                        + (" (WARNING! Diff between built and installed module!)" if e.diff_warning else "")
                        for e in nv)
    diff = [e for e in here if e.diff_warning]
    if diff:
        e = diff[0]
        return Check("dkms", Level.WARN, f"dkms built nvidia/{e.version} for {f.kernel}, but the module installed "
                     "under /lib/modules is not the one it built (\"WARNING! Diff between built and installed "
                     f"module!\"): the module that loads is not DKMS's: {listing}",
                     "compare `modinfo -n nvidia` and `modinfo -F version nvidia` with `dkms status`; in the window "
                     "reinstall the driver's DKMS package so the installed module is the one DKMS builds",
                     f.raw.get("dkms", ""))
    if here:
        return Check("dkms", Level.PASS, f"dkms: {listing}")
    return Check("dkms", Level.WARN, f"dkms has no installed nvidia module for the running kernel "
                 f"{f.kernel}: {listing}", "check `dkms status` before the window")


def check_processes(f: HostFacts) -> Check:
    if f.apps is None:
        return _unknown("gpu-processes", f, "apps")
    if not f.apps:
        return Check("gpu-processes", Level.PASS, "no GPU compute processes running")
    listing = "; ".join(f"pid {p.pid} {p.name}" + (f" ({p.used_mib} MiB)" if p.used_mib is not None else "")
                        for p in f.apps)
    return Check("gpu-processes", Level.WARN, f"{len(f.apps)} GPU process(es) running: {listing}",
                 "in the window, stop only your own GPU workloads (do not run `ray stop`)")


def check_reboot(f: HostFacts) -> Check:
    if f.reboot_required is None:
        return Check("pending-reboot", Level.UNKNOWN, "/var/run/reboot-required not probed")
    if not f.reboot_required:
        return Check("pending-reboot", Level.PASS, "no reboot pending (/var/run/reboot-required absent)")
    pk = ", ".join(f.reboot_pkgs) or "unknown packages"
    kernel = any(p.startswith("linux-image") or p.startswith("linux-base") for p in f.reboot_pkgs)
    return Check("pending-reboot", Level.WARN, f"a reboot is already pending for: {pk}"
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
        return Check("disk", Level.UNKNOWN, "df did not report /", "", f.raw.get("disk", ""))
    msgs, level = [f"/ {root.avail_kib / 1024**2:.1f} GiB free"], Level.PASS
    if root.avail_kib < ROOT_FAIL_GIB * 1024**2:
        level = Level.FAIL
    elif root.avail_kib < ROOT_WARN_GIB * 1024**2:
        level = Level.WARN
    boot = by_mount.get("/boot")
    if boot is not None:
        msgs.append(f"/boot {boot.avail_kib / 1024:.0f} MiB free")
        if boot.avail_kib < BOOT_FAIL_MIB * 1024:
            level = Level.FAIL
        elif boot.avail_kib < BOOT_WARN_MIB * 1024 and level == Level.PASS:
            level = Level.WARN
    nxt = "" if level == Level.PASS else (f"free space: at least {ROOT_WARN_GIB} GiB on / and {BOOT_WARN_MIB} "
                                      "MiB on /boot (`apt-get autoremove` removes old kernels)")
    return Check("disk", level, "; ".join(msgs), nxt)


def check_holds(f: HostFacts, target: DriverTarget) -> Check:
    if f.holds is None:
        return _unknown("held-packages", f, "holds")
    nv = [h for h in f.holds if h.startswith(NVIDIA_HOLD_PREFIXES)]
    if not nv:
        return Check("held-packages", Level.PASS, "no NVIDIA packages are held" +
                     (f" ({len(f.holds)} other held)" if f.holds else ""))
    return Check("held-packages", Level.WARN, f"held NVIDIA packages block the change: {', '.join(nv)}",
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
        out.append(Check("os", Level.PASS if same else Level.WARN, f"{label}" + ("" if same else
                         f"; envs/host.toml says {host.os}"), "" if same else "update envs/host.toml"))
    if f.glibc is None:
        out.append(_unknown("glibc", f, "glibc"))
    else:
        same = f.glibc == host.glibc
        out.append(Check("glibc", Level.PASS if same else Level.WARN, f"glibc {f.glibc}" + (
            "" if same else f"; envs/host.toml says {host.glibc}"), "" if same else "update envs/host.toml"))
    return out


def evaluate(f: HostFacts, matrix: Matrix, host: Host, *, lock_floor: LockFloor | None = None,
             today: _dt.date | None = None) -> Report:
    """Every preflight check for ``matrix`` on the host described by ``f``.

    ``lock_floor`` is the native driver floor of the matrix's lock (computed by
    the checker, see builder.ops.lockfloor); ``today`` judges branch end of
    life (default: the current date).
    """
    target = driver_target(matrix.driver_floor, today=today, lock_floor=lock_floor, matrix=matrix.name)
    platform = check_platform(f)
    if platform.level == Level.FAIL:
        # No desktop driver package advice for a host this runbook does not cover.
        drv = f.driver
        meets = drv is not None and DriverVersion.parse(drv) >= DriverVersion.parse(matrix.driver_floor)
        driver_checks = [
            Check("driver-floor", Level.PASS if meets else Level.FAIL,
                  f"driver {drv or 'unknown'} " + ("meets" if meets else "does not meet") + f" {matrix.name}'s floor "
                  f"{matrix.driver_floor}; on this platform the driver is not an nvidia-driver-NNN package",
                  "" if meets else "see the platform check"),
            Check("driver-package", Level.FAIL, "no nvidia-driver-NNN package applies to this platform",
                  "see the platform check"),
        ]
    else:
        driver_checks = [check_floor(f, matrix, target), check_package(f, matrix, target)]
    checks = [
        platform, check_nvml(f), check_module(f), *driver_checks,
        check_gpus(f, host), check_secure_boot(f), check_headers(f), check_dkms(f), check_processes(f),
        check_reboot(f), check_disk(f), check_holds(f, target), *check_os(f, host),
    ]
    if platform.level == Level.FAIL:
        checks = [Check(c.id, c.level, c.message, "see the platform check", c.raw) if c.id == "held-packages"
                  and c.level == Level.WARN else c for c in checks]
        return Report("preflight", matrix.name, verdict(checks), checks, host_summary(f), None)
    return Report("preflight", matrix.name, verdict(checks), checks, host_summary(f), target)
