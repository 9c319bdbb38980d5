"""Host facts: the one picture of a host that every decision reads (pure).

They come from a snapshot's raw probe records (parsed once, :func:`from_snapshot`),
from the declared host (``envs/host.toml``, :meth:`HostFacts.declared`), or from
both with operator options on top (``check --driver/--gpu-cc/--glibc``).
Each fact is either a value or, when its probe is missing, timed out, failed
or printed something unparsable, None with the reason (and the raw text) in
:attr:`HostFacts.problems`.  The decide layer (preflight, verify-driver)
turns a missing fact into ``unknown``, never into ``pass``.

:class:`HostFacts` is frozen and keyword-only: :func:`from_snapshot` collects every fact
first (a :class:`_Collect` gathers the problems and raw texts as the parsers run) and
builds it once; the sequences are tuples and nothing changes it afterwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from builder.driver.gpu import GpuInfo
from builder.spec import Host
from builder.versions import DriverVersion, compute_capability

if TYPE_CHECKING:
    from builder.driver import parse as hp
    from builder.driver.snapshot import ProbeRecord, Snapshot

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    origin: str = "snapshot"  # where the facts come from, for reports
    declared_driver: str | None = None  # a driver stated (host.toml, --driver), not probed
    nvsmi_error: hp.NvsmiError | None = None
    gpus: tuple[GpuInfo, ...] | None = None
    apps: tuple[hp.GpuProcess, ...] | None = None
    module_version: str | None = None
    module_on_disk: str | None = None  # modinfo -F version nvidia: the module the next boot loads
    proc: hp.ProcVersion | None = None
    nvml_libs: tuple[str, ...] | None = None
    kernel: str | None = None
    machine: str | None = None  # uname -m
    os_release: Mapping[str, str] | None = None
    glibc: str | None = None
    headers: bool | None = None
    dkms: tuple[hp.DkmsEntry, ...] | None = None
    efi: bool | None = None
    secure_boot: hp.SecureBoot | None = None
    ubuntu_drivers: tuple[hp.UbuntuDevice, ...] | None = None
    reboot_required: bool | None = None
    reboot_pkgs: tuple[str, ...] = ()
    disk: tuple[hp.DfEntry, ...] | None = None
    holds: tuple[str, ...] | None = None
    packages: tuple[hp.DpkgPackage, ...] | None = None
    torch: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)  # fact key -> why it is unknown
    raw: Mapping[str, str] = field(default_factory=dict)  # fact key -> the probe's text, for reports
    snapshot_version: int | None = None  # the snapshot format the facts came from

    @property
    def driver(self) -> str | None:
        """The driver: a declared one, else nvidia-smi's, else the kernel module's.

        Only NVIDIA-shaped versions count (``DriverVersion``); GPUs that disagree
        give no driver at all (see :attr:`gpu_drivers`): one answer or none.
        """
        if self.declared_driver is not None:
            return self.declared_driver
        drivers = self.gpu_drivers
        if len(drivers) == 1:
            return drivers[0]
        if drivers:
            return None
        for v in (self.module_version, self.proc.driver if self.proc else None):
            if v and DriverVersion.maybe(v) is not None:
                return v
        return None

    @property
    def drivers_disagree(self) -> bool:
        """GPUs report different driver versions: no single driver is trusted."""
        return self.declared_driver is None and len(self.gpu_drivers) > 1

    @property
    def arch(self) -> str | None:
        """The machine architecture: ``uname -m``, else the kernel module's banner."""
        return self.machine or (self.proc.arch if self.proc else None)

    def tegra_evidence(self) -> list[str]:
        """Why this looks like a Jetson/Tegra (L4T) host, one reason per fact; empty when nothing says so.

        L4T kernels are named ``...-tegra`` (JetPack 5) or ``...-l4t-r36...``
        (OE4T/meta-tegra#1566); their module banner carries the L4T release
        (``35.3.1``, nix-community/nixGL#139), not a desktop driver version;
        nvidia-smi names the integrated GPU ``Orin (nvgpu)`` (anduril/jetpack-nixos#371).
        """
        out = []
        if self.kernel and re.search(r"tegra|-l4t-", self.kernel):
            out.append(f"kernel {self.kernel}")
        if self.proc and self.proc.driver is None and self.proc.arch == "aarch64":
            out.append(f"kernel module {self.proc.version} for aarch64 (an L4T release, not a desktop driver)")
        names = [g.name for g in self.gpus or [] if g.name and re.search(r"nvgpu|\bOrin\b|Xavier|Tegra", g.name)]
        if names:
            out.append(f"GPU {names[0]}")
        return out

    @property
    def gpu_drivers(self) -> list[str]:
        """The distinct valid driver versions nvidia-smi reported, sorted."""
        return sorted({g.driver for g in self.gpus or [] if g.driver and DriverVersion.maybe(g.driver)})

    @property
    def ccs(self) -> tuple[str, ...]:
        """The compute capabilities of the GPUs whose capability could be read."""
        out = []
        for g in self.gpus or []:
            try:
                compute_capability(g.compute_capability or "")
            except ValueError:
                continue
            out.append(str(g.compute_capability))
        return tuple(sorted(set(out)))

    @property
    def unreadable_gpus(self) -> list[GpuInfo]:
        """GPUs whose compute capability could not be read (``[N/A]``, empty ...)."""
        bad = []
        for g in self.gpus or []:
            try:
                compute_capability(g.compute_capability or "")
            except ValueError:
                bad.append(g)
        return bad

    @classmethod
    def declared(cls, host: Host | None, origin: str = "envs/host.toml") -> HostFacts:
        """The host as ``envs/host.toml`` declares it (None: nothing known)."""
        if host is None:
            return cls(origin=origin)
        gpus = tuple(GpuInfo(index=None, name=g.name, driver=None, compute_capability=g.compute_capability,
                             memory_mib=g.memory_mib, bus_id=None, uuid=None)
                     for g in host.gpus for _ in range(g.count))
        return cls(origin=origin, declared_driver=host.driver, gpus=gpus, glibc=host.glibc)

    def overridden(self, *, driver: str | None = None, ccs: tuple[str, ...] = (), glibc: str | None = None,
                   origin: str | None = None) -> HostFacts:
        """New facts: these with operator options on top (``--driver``, ``--gpu-cc``, ``--glibc``)
        and, when given, another ``origin``."""
        gpus = tuple(GpuInfo(index=i, name=None, driver=None, compute_capability=cc, memory_mib=None,
                             bus_id=None, uuid=None) for i, cc in enumerate(ccs)) if ccs else self.gpus
        return replace(self, origin=origin or self.origin,
                       declared_driver=driver if driver is not None else self.declared_driver,
                       gpus=gpus, glibc=glibc if glibc is not None else self.glibc)

    def installed_driver_package(self) -> hp.DpkgPackage | None:
        """The installed ``nvidia-driver-NNN`` metapackage, if dpkg knows one."""
        for p in self.packages or []:
            if p.installed and re.fullmatch(r"nvidia-driver-\d+(-open|-server|-server-open)?", p.name):
                return p
        return None


def _why(rec: ProbeRecord | None, what: str) -> str | None:
    """Why a record carries no usable output, or None when it does."""
    if rec is None:
        return f"{what}: not captured in this snapshot"
    if rec.capped:
        return (f"{what}: printed more than the probe's output cap; builder stopped reading, killed it and "
                "did not parse the output")
    if rec.missing:
        return f"{what}: {'not installed' if rec.kind == 'command' else 'not present'}"
    if rec.timed_out:
        return f"{what}: did not finish within its bound and was killed"
    if rec.exit != 0:
        tail = rec.text().splitlines()[-3:]
        return f"{what}: exit {rec.exit}" + (f": {' / '.join(tail)}" if tail else "")
    return None


@dataclass
class _Collect:
    """What :func:`from_snapshot` gathers while the parsers run: the problems and raw texts of
    the facts (the facts themselves are local values until the one :class:`HostFacts` is built)."""

    snapshot_version: int | None
    problems: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)

    def parse(self, key: str, rec: ProbeRecord | None, what: str, *, fn: Callable[[str], T]) -> T | None:
        """``fn`` of the record's output, or None with the reason in :attr:`problems`."""
        from builder.driver import parse as hp
        if rec is not None:
            self.raw[key] = rec.text()
        why = _why(rec, what)
        if why is not None:
            self.problems[key] = why
            return None
        assert rec is not None
        try:
            return fn(rec.stdout)
        except hp.ParseError as exc:
            self.problems[key] = f"{what}: unparsable output ({exc})"
            return None


def _tuple(items: list[T] | None) -> tuple[T, ...] | None:
    return None if items is None else tuple(items)


def _nvidia_smi(c: _Collect, snap: Snapshot) -> tuple[hp.NvsmiError | None, tuple[GpuInfo, ...] | None,
                                                        tuple[hp.GpuProcess, ...] | None]:
    """(nvidia-smi's error, the GPUs, the GPU processes)."""
    from builder.driver import parse as hp
    from builder.driver import snapshot  # its field lists; the declared host never needs the module

    rec = snap.get("nvidia-smi-gpus")
    if rec is not None and not rec.capped:
        err = hp.nvsmi_error(rec.text())
        if err is not None:
            c.raw["gpus"] = rec.text()
            c.problems["gpus"] = f"nvidia-smi: {err.text.splitlines()[0]}"
            return err, None, None
    # The first line must be the header builder asked for: anything else is an
    # error nvidia-smi printed (possibly with exit 0), never "no GPUs".
    gpus = c.parse("gpus", rec, "nvidia-smi --query-gpu",
                   fn=lambda t: hp.gpus_from_rows(hp.parse_query_csv(t, expect=snapshot.GPU_FIELDS)))
    app = snap.get("nvidia-smi-apps")
    if app is not None and not app.capped and hp.nvsmi_error(app.text()):
        c.problems["apps"] = f"nvidia-smi --query-compute-apps: {app.text().splitlines()[0]}"
        return None, _tuple(gpus), None
    # With no GPU process the answer is the header line alone: an empty list.
    apps = c.parse("apps", app, "nvidia-smi --query-compute-apps",
                   fn=lambda t: hp.processes_from_rows(hp.parse_query_csv(t, expect=snapshot.APP_FIELDS))
                   if t.strip() else [])
    return None, _tuple(gpus), _tuple(apps)


def _lib_versions(text: str) -> list[str]:
    """Driver versions of the ``libnvidia-ml.so.<version>`` files found (NVIDIA-shaped only)."""
    from builder.driver import parse as hp
    found = {m.group(1) for m in re.finditer(r"libnvidia-ml\.so\.(\S+)$", text, re.M)}
    return sorted(v for v in found if hp.valid_driver(v))


def _modinfo(c: _Collect, snap: Snapshot, kernel: str | None) -> str | None:
    """``modinfo -F version nvidia``: the module on disk for the running kernel."""
    from builder.driver import parse as hp
    rec = snap.get("modinfo")
    if rec is not None and not rec.missing and not rec.timed_out and not rec.capped and rec.exit != 0 \
            and re.search(r"Module nvidia not found", rec.text()):
        c.raw["modinfo"] = rec.text()
        c.problems["modinfo"] = (f"no nvidia module on disk for the running kernel {kernel or ''} "
                                 "(modinfo: Module nvidia not found)").replace("  ", " ")
        return None
    why = None
    if rec is None and c.snapshot_version is not None and c.snapshot_version < 2:
        why = (f"modinfo -F version nvidia: not captured in this snapshot (snapshot format "
               f"{c.snapshot_version} predates that probe; take a new snapshot)")
    on_disk = c.parse("modinfo", rec, "modinfo -F version nvidia", fn=hp.parse_modinfo_version)
    if why is not None:
        c.problems["modinfo"] = why
    return on_disk


def _torch(rec: ProbeRecord) -> dict[str, Any]:
    why = _why(rec, rec.id)
    if why is not None:
        return {"error": why, "raw": rec.text()}
    try:
        line = rec.stdout.strip().splitlines()[-1]
        data = json.loads(line)
    except (IndexError, json.JSONDecodeError):
        return {"error": f"{rec.id}: unparsable output", "raw": rec.text()}
    return data if isinstance(data, dict) else {"error": f"{rec.id}: unexpected output", "raw": rec.text()}


def _module(c: _Collect, snap: Snapshot) -> str | None:
    from builder.driver import parse as hp
    mod = snap.get("module-version")
    if mod is not None and mod.missing:
        c.problems["module"] = "the nvidia kernel module is not loaded (/sys/module/nvidia/version absent)"
        c.raw["module"] = mod.text()
        return None
    return c.parse("module", mod, "/sys/module/nvidia/version", fn=hp.parse_sys_version)


def _secure_boot(c: _Collect, snap: Snapshot) -> hp.SecureBoot | None:
    from builder.driver import parse as hp
    sb = snap.get("secure-boot")
    if sb is None or sb.missing or sb.timed_out or sb.capped:
        c.problems["secure-boot"] = _why(sb, "mokutil --sb-state") or "mokutil --sb-state: no answer"
        return None
    # mokutil exits 1 with "EFI variables are not supported" on BIOS hosts:
    # that is an answer, not a failure.
    state = None
    try:
        state = hp.parse_sb_state(sb.text())
    except hp.ParseError as exc:
        c.problems["secure-boot"] = f"mokutil --sb-state: {exc}"
    c.raw["secure-boot"] = sb.text()
    return state


def _packages(c: _Collect, snap: Snapshot) -> tuple[hp.DpkgPackage, ...] | None:
    from builder.driver import parse as hp
    dp = snap.get("driver-packages")
    if dp is not None and dp.exit == 1 and "no packages found" in dp.text():
        return ()  # dpkg-query exits 1 when no name matches: nothing installed
    return _tuple(c.parse("packages", dp, "dpkg-query -W", fn=hp.parse_dpkg_query))


def from_snapshot(snap: Snapshot) -> HostFacts:
    """Parse every probe record of ``snap`` into facts, built once (pure)."""
    from builder.driver import parse as hp
    c = _Collect(snapshot_version=snap.version)
    nvsmi_error, gpus, apps = _nvidia_smi(c, snap)
    module_version = _module(c, snap)
    proc = c.parse("proc", snap.get("proc-version"), "/proc/driver/nvidia/version", fn=hp.parse_proc_version)
    libs = snap.get("nvml-library")
    kernel = c.parse("kernel", snap.get("kernel"), "uname -r", fn=hp.parse_kernel_release)
    machine = c.parse("machine", snap.get("machine"), "uname -m", fn=hp.parse_machine)
    module_on_disk = _modinfo(c, snap, kernel)
    os_release = c.parse("os", snap.get("os-release"), "/etc/os-release", fn=hp.parse_os_release)
    glibc = c.parse("glibc", snap.get("glibc"), "getconf GNU_LIBC_VERSION", fn=hp.parse_glibc)
    hdr, efi = snap.get("kernel-headers"), snap.get("efi")
    dkms = c.parse("dkms", snap.get("dkms"), "dkms status", fn=hp.parse_dkms_status)
    secure_boot = _secure_boot(c, snap)
    ubuntu_drivers = c.parse("ubuntu-drivers", snap.get("ubuntu-drivers"), "ubuntu-drivers devices",
                             fn=hp.parse_ubuntu_drivers)
    rr, pk = snap.get("reboot-required"), snap.get("reboot-required-pkgs")
    disk = c.parse("disk", snap.get("disk"), "df -Pk / /boot", fn=hp.parse_df)
    holds = c.parse("holds", snap.get("apt-holds"), "apt-mark showhold", fn=hp.parse_apt_holds)
    packages = _packages(c, snap)
    torch = {key.removeprefix("torch:"): _torch(rec) for key, rec in snap.records.items() if key.startswith("torch:")}
    return HostFacts(
        snapshot_version=snap.version, nvsmi_error=nvsmi_error, gpus=gpus, apps=apps,
        module_version=module_version, module_on_disk=module_on_disk, proc=proc,
        nvml_libs=tuple(_lib_versions(libs.stdout)) if libs is not None and libs.ok else None,
        kernel=kernel, machine=machine, os_release=os_release, glibc=glibc,
        headers=None if hdr is None else hdr.ok, dkms=_tuple(dkms), efi=None if efi is None else efi.ok,
        secure_boot=secure_boot, ubuntu_drivers=_tuple(ubuntu_drivers),
        reboot_required=None if rr is None or rr.timed_out else rr.ok,
        reboot_pkgs=tuple(pk.stdout.split()) if pk is not None and pk.ok else (),
        disk=_tuple(disk), holds=_tuple(holds), packages=packages, torch=torch, problems=c.problems, raw=c.raw)
