"""Whether a reboot fixes a kernel-module / userspace version mismatch (pure).

After a driver package change without a reboot, the loaded module and the
installed userspace (NVML, ``libnvidia-ml.so``) differ.  A reboot loads the
module that is *on disk for the running kernel*, which ``modinfo -F version
nvidia`` reads.  So the answer comes from comparing that version with the
userspace one, and from nothing else: never from which loaded version is
newer (a rollback installed without a reboot leaves an older userspace and a
newer loaded module, and a reboot fixes it just the same).

* on disk == userspace: the reboot loads the matching module.
* on disk != userspace: a reboot will not help (the next boot loads a module
  that still does not match); the module for this kernel must be rebuilt or
  reinstalled for the userspace version, or the userspace aligned to it, first.
* no module on disk for the kernel: a reboot leaves no driver at all.
* not read (older snapshot, modinfo missing): unknown, said so.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.driver.facts import HostFacts
from builder.versions import DriverVersion


@dataclass(frozen=True)
class Outlook:
    fixes: bool | None  # True: a reboot fixes it; False: it does not; None: cannot tell
    message: str
    next: str


def userspace_version(f: HostFacts) -> tuple[str | None, str]:
    """The installed userspace driver version and where it was read.

    The NVML version nvidia-smi printed comes first: it is the library that
    actually ran; then a single ``libnvidia-ml.so.<version>`` on disk.
    """
    if f.nvsmi_error is not None and f.nvsmi_error.nvml_version:
        return f.nvsmi_error.nvml_version, "the NVML library version nvidia-smi printed"
    if f.nvml_libs and len(f.nvml_libs) == 1:
        return f.nvml_libs[0], f"libnvidia-ml.so.{f.nvml_libs[0]}"
    if f.gpus and f.driver and f.declared_driver is None:
        return f.driver, "nvidia-smi"
    return None, ""


def same_driver(a: str, b: str) -> bool:
    """Equal as far as both are given: NVML prints ``570.124`` for ``570.124.06``."""
    pa, pb = DriverVersion.parse(a).parts, DriverVersion.parse(b).parts
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def outlook(f: HostFacts) -> Outlook:
    """What a reboot would do about a module/userspace mismatch on this host.

    modinfo reads the module for the *running* kernel: when a kernel update is
    pending (/var/run/reboot-required.pkgs names linux-image-*), the next boot
    starts another kernel and the answer is unknown, said so.
    """
    o = _outlook(f)
    new = [p for p in f.reboot_pkgs if p.startswith("linux-image")]
    if new and o.fixes is not None:
        k = new[0].removeprefix("linux-image-")
        return Outlook(None, o.message + f"; but a kernel update is pending ({new[0]}): the next boot starts that "
                       "kernel, whose nvidia module was not read",
                       f"check `modinfo -k {k} -F version nvidia` before rebooting; " + o.next)
    return o


def _outlook(f: HostFacts) -> Outlook:
    kernel = f.kernel or "the running kernel"
    user, where = userspace_version(f)
    disk = f.module_on_disk
    if disk is None:
        why = f.problems.get("modinfo", "modinfo -F version nvidia: not read")
        if "Module nvidia not found" in why:
            return Outlook(False, f"a reboot will not help: there is no nvidia module on disk for {kernel}, so "
                           "the next boot loads no driver at all",
                           f"reinstall the driver's kernel module for {kernel} (the nvidia-dkms-NNN package of "
                           f"the userspace {user or 'version'}, or `sudo dkms install nvidia/<version> -k {kernel}`) "
                           "and check `modinfo -F version nvidia` before any reboot")
        return Outlook(None, f"whether a reboot fixes it is unknown ({why})",
                       "run `modinfo -F version nvidia`: a reboot fixes the mismatch only if it prints the "
                       f"userspace version{f' {user}' if user else ''}")
    if user is None:
        return Outlook(None, f"the module on disk for {kernel} is {disk}, but the userspace version was not read",
                       "compare `modinfo -F version nvidia` with `cat /sys/module/nvidia/version` and the NVML "
                       "library version")
    if same_driver(disk, user):
        return Outlook(True, f"the module on disk for {kernel} is {disk}, matching the userspace {user} ({where}): "
                       "driver packages were changed without a reboot, and a reboot loads the matching module",
                       "reboot in the maintenance window; until then new GPU processes fail to start")
    full = user if len(DriverVersion.parse(user).parts) == 3 else "<version>"
    return Outlook(False, f"a reboot will not help: the module on disk for {kernel} is {disk} while the userspace "
                   f"is {user} ({where}), so the next boot loads a module that still does not match",
                   f"make them one version before rebooting: rebuild or reinstall the kernel module for {kernel} at "
                   f"{user} (`sudo dkms install nvidia/{full} -k {kernel}`, or reinstall the nvidia-dkms package of "
                   f"{user}), or install the userspace packages of {disk}; then check `modinfo -F version nvidia`")
