"""Pure parsers for what the host probes print (the "parse" layer).

Every function takes text and returns plain data; nothing here runs a tool or
reads a file.  A parser raises :class:`ParseError` (a ``ValueError``) when the
text is not what the tool prints, so the decision layer can report ``unknown``
with the raw text instead of guessing.  The formats are pinned by real outputs
under ``tests/data/host/<tool>/``, each with its source.
"""

from __future__ import annotations

import csv
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from builder.driver.gpu import GpuInfo  # re-exported: the parsed form of nvidia-smi's rows
from builder.versions import DriverVersion


class ParseError(ValueError):
    """The text is not in the format the parser expects."""


#: Values nvidia-smi prints for a field it cannot report.  Drivers before 2020
#: print "[Not Supported]", later ones "[N/A]" (enkore/i3pystatus#776).
_NA = {"[n/a]", "n/a", "[not supported]", "not supported", "[unknown error]", "[insufficient permissions]"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """mokutil >= 0.6 colours its output (lcp/mokutil, mokutil.c)."""
    return _ANSI.sub("", text)


def driver_version(text: str) -> DriverVersion:
    """``550.107.02`` as a comparable version; ParseError when it is not NVIDIA's shape."""
    try:
        return DriverVersion.parse(text)
    except ValueError as exc:
        raise ParseError(str(exc)) from None


def valid_driver(text: str | None) -> str | None:
    """``text`` when it is an NVIDIA driver version (``575.57.08``), else None.

    Every version read from host text goes through this or :func:`driver_version`:
    ``999999999999999999999.1.1`` or a Jetson L4T release (``35.3.1``) is not a
    desktop driver version and never becomes one by being compared.
    """
    dv = DriverVersion.maybe(text)
    return dv.text if dv is not None else None


# --------------------------------------------------------------------------- nvidia-smi
#: Header names nvidia-smi prints for a requested field when they differ from
#: it: asked for ``used_memory`` it prints ``used_gpu_memory [MiB]`` (captured
#: on a driver-580 host, tests/data/host/snapshots); older drivers print the
#: ``gpu_`` aliases of --help-query-gpu.
HEADER_ALIASES = {"name": ("gpu_name",), "pci.bus_id": ("gpu_bus_id",), "uuid": ("gpu_uuid",),
                  "gpu_uuid": ("uuid",), "process_name": ("name",), "used_memory": ("used_gpu_memory",)}


def header_matches(got: list[str], want: tuple[str, ...]) -> bool:
    """True when nvidia-smi's header names the requested fields, aliases allowed."""
    if len(got) != len(want):
        return False
    return all(g == w or g in HEADER_ALIASES.get(w, ()) for g, w in zip(got, want, strict=True))


@dataclass(frozen=True)
class NvsmiError:
    """A failure nvidia-smi reports instead of data.

    ``kind``: ``mismatch`` (the loaded module and the userspace library differ),
    ``no-devices``, ``no-driver`` (cannot talk to the kernel module),
    ``gpu-lost`` (a GPU fell off the bus: "GPU is lost", Xid 79),
    ``device-handle`` (a GPU's handle cannot be read, e.g. "Unknown Error";
    nvidia-smi may print it with exit 0 instead of the requested CSV),
    ``invalid-field`` (a driver too old for a query field), ``nvml`` (another
    NVML initialisation failure).
    """

    kind: str
    text: str
    nvml_version: str | None = None
    bus_id: str | None = None


_NVSMI_ERRORS = (
    # nvidia-smi (NVML) wording, e.g. "Unable to determine the device handle for
    # GPU 0000:02:00.0: GPU is lost.  Reboot the system to recover this GPU"
    # (JosephKJ/OWOD#81) and "...for GPU0000:0B:00.0: Unknown Error"
    # (NVIDIA/open-gpu-kernel-modules#387).
    ("gpu-lost", re.compile(r"GPU is lost|fallen off the bus", re.I)),
    ("device-handle", re.compile(r"Unable to (?:determine|detect) the device handle", re.I)),
    ("mismatch", re.compile(r"Driver/library version mismatch", re.I)),
    ("no-devices", re.compile(r"^No devices were found", re.M)),
    ("no-driver", re.compile(r"couldn.t communicate with the NVIDIA driver", re.I)),
    ("invalid-field", re.compile(r"is not a valid field to query", re.I)),
    ("nvml", re.compile(r"^Failed to initialize NVML", re.M)),
)
_NVML_LIB = re.compile(r"NVML library version:\s*([0-9.]+)")
_HANDLE_BUS = re.compile(r"device handle for GPU\s*([0-9A-Fa-f]{1,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])")


def nvsmi_error(text: str) -> NvsmiError | None:
    """Recognise nvidia-smi's error texts (stdout or stderr); None when absent.

    The NVML library version in a mismatch message counts only when it has a
    driver version's shape (``570.124`` or ``570.124.06``).
    """
    for kind, rx in _NVSMI_ERRORS:
        if rx.search(text):
            m = _NVML_LIB.search(text)
            lib = m.group(1) if m and re.fullmatch(r"\d{3}\.\d{1,3}(\.\d{1,3})?", m.group(1)) else None
            b = _HANDLE_BUS.search(text)
            return NvsmiError(kind, text.strip(), lib, b.group(1) if b else None)
    return None


def _field_name(header: str) -> str:
    # "memory.total [MiB]" (csv,nounits) -> "memory.total"
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", header.strip())


def _value(raw: str) -> str | None:
    v = raw.strip()
    return None if v.lower() in _NA or v == "" else v


def parse_query_csv(text: str, fields: list[str] | None = None,
                    expect: tuple[str, ...] | None = None) -> list[dict[str, str | None]]:
    """Rows of ``nvidia-smi --query-*=... --format=csv[,noheader][,nounits]``.

    With ``fields`` None the first line is the header; otherwise ``fields``
    names the columns of a ``noheader`` output.  With ``expect`` (the fields
    builder asked for) the first line must be exactly that header: anything
    else is an error state nvidia-smi printed instead of data, never "no
    GPUs".  ``[N/A]`` and ``[Not Supported]`` become None.
    """
    if nvsmi_error(text):
        raise ParseError(f"nvidia-smi reported an error: {text.strip()}")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    rows = list(csv.reader(lines, skipinitialspace=True))
    if fields is None:
        if not rows:
            raise ParseError("no header line")
        fields = [_field_name(h) for h in rows[0]]
        if expect is not None and not header_matches(fields, expect):
            raise ParseError(f"the first line is not the requested header: {lines[0][:200]!r}")
        rows = rows[1:]
    out = []
    for n, row in enumerate(rows, 1):
        if len(row) != len(fields):
            raise ParseError(f"row {n} has {len(row)} values for {len(fields)} fields: {row!r}")
        out.append({f: _value(v) for f, v in zip(fields, row, strict=True)})
    return out


def mib(value: str | None) -> int | None:
    """``49140`` or ``49140 MiB`` as an int; None for N/A."""
    if value is None:
        return None
    m = re.fullmatch(r"(\d+)(?:\s*MiB)?", value.strip())
    if not m:
        raise ParseError(f"not a MiB amount: {value!r}")
    return int(m.group(1))


def gpus_from_rows(rows: list[dict[str, str | None]]) -> list[GpuInfo]:
    """GpuInfo per row; accepts nvidia-smi's aliases (gpu_name, gpu_uuid ...)."""

    def get(row: dict[str, str | None], *names: str) -> str | None:
        for n in names:
            if n in row:
                return row[n]
        return None

    out = []
    for row in rows:
        idx = get(row, "index")
        drv = get(row, "driver_version")
        if drv is not None and valid_driver(drv) is None:
            raise ParseError(f"not an NVIDIA driver version: {drv[:60]!r}")
        out.append(GpuInfo(
            index=int(idx) if idx is not None and idx.isdigit() else None,
            name=get(row, "name", "gpu_name"),
            driver=drv,
            compute_capability=get(row, "compute_cap"),
            memory_mib=mib(get(row, "memory.total")),
            bus_id=get(row, "pci.bus_id", "gpu_bus_id"),
            uuid=get(row, "uuid", "gpu_uuid"),
        ))
    return out


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    gpu_uuid: str | None
    used_mib: int | None


def processes_from_rows(rows: list[dict[str, str | None]]) -> list[GpuProcess]:
    """Rows of ``--query-compute-apps=gpu_uuid,pid,process_name,used_memory``."""
    out = []
    for row in rows:
        pid = row.get("pid")
        if pid is None or not pid.isdigit():
            raise ParseError(f"no pid in {row!r}")
        out.append(GpuProcess(int(pid), row.get("process_name") or row.get("name") or "?",
                              row.get("gpu_uuid"), mib(row.get("used_memory") or row.get("used_gpu_memory"))))
    return out


# --------------------------------------------------------------------------- kernel module
@dataclass(frozen=True)
class ProcVersion:
    version: str  # as printed: a desktop driver (550.107.02) or a Jetson L4T release (35.3.1)
    open_module: bool
    arch: str | None

    @property
    def driver(self) -> str | None:
        """The version when it is an NVIDIA desktop driver version, else None."""
        return valid_driver(self.version)


_PROC_RE = re.compile(
    r"^NVRM version: NVIDIA UNIX (?:(?P<arch1>\S+) Kernel Module|Open Kernel Module for (?P<arch2>\S+))"
    r"\s+(?P<ver>[0-9][0-9.]*)\s", re.M)


def parse_proc_version(text: str) -> ProcVersion:
    """``/proc/driver/nvidia/version``: proprietary and open module formats
    (the open one inserts "for <arch>", nix-community/nixGL#186)."""
    m = _PROC_RE.search(text)
    if not m:
        raise ParseError("no 'NVRM version: NVIDIA UNIX ... Kernel Module <version>' line")
    return ProcVersion(m.group("ver"), m.group("arch2") is not None, m.group("arch1") or m.group("arch2"))


def parse_sys_version(text: str) -> str:
    """``/sys/module/nvidia/version``: one driver version line."""
    driver_version(text)
    return text.strip()


def parse_modinfo_version(text: str) -> str:
    """``modinfo -F version nvidia``: the version of the nvidia module on disk for
    the running kernel (``580.119.02``).  ParseError for anything else (modinfo
    prints "modinfo: ERROR: Module nvidia not found." with exit 1 when none)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise ParseError(f"expected one version line, got {len(lines)}")
    return driver_version(lines[0]).text


def parse_machine(text: str) -> str:
    """``uname -m``: the machine architecture (x86_64, aarch64 ...)."""
    s = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_]{2,20}", s):
        raise ParseError(f"not a machine name: {s[:40]!r}")
    return s


def parse_kernel_release(text: str) -> str:
    """``uname -r``; only the characters a kernel release uses (it ends up in runbook commands)."""
    s = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,100}", s):
        raise ParseError(f"not a kernel release: {s[:60]!r}")
    return s


# --------------------------------------------------------------------------- OS
def parse_os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` (shell-style KEY=value; see os-release(5))."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        out[key.strip()] = parts[0] if parts else ""
    if "ID" not in out and "NAME" not in out:
        raise ParseError("no ID or NAME in os-release")
    return out


def os_label(osr: Mapping[str, str]) -> str:
    """``Ubuntu 22.04`` from an os-release mapping."""
    return f"{osr.get('NAME', osr.get('ID', '?'))} {osr.get('VERSION_ID', '')}".strip()


def parse_glibc(text: str) -> str:
    """glibc version from ``getconf GNU_LIBC_VERSION`` ("glibc 2.35") or the
    first line of ``ldd --version`` ("ldd (Ubuntu GLIBC 2.35-0ubuntu3.1) 2.35").
    musl's ldd prints "musl libc": ParseError, it is not glibc."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = re.fullmatch(r"glibc (\d+\.\d+)", first.strip())
    if m:
        return m.group(1)
    m = re.match(r"ldd \(.*\) (\d+\.\d+)\s*$", first)
    if m:
        return m.group(1)
    raise ParseError(f"not a glibc version banner: {first!r}")


# --------------------------------------------------------------------------- dkms
#: What dkms appends when the module under /lib/modules is not the one it built
#: (dkms.in, "Diff between built and installed module"): the module that loads
#: is something else (another build, a distro module, a manual install).
DKMS_DIFF = "Diff between built and installed module"


@dataclass(frozen=True)
class DkmsEntry:
    module: str
    version: str
    kernel: str | None
    arch: str | None
    state: str
    note: str = ""

    @property
    def diff_warning(self) -> bool:
        return DKMS_DIFF in self.note


_DKMS_RE = re.compile(
    r"^(?P<mod>[^,/\s]+)(?:/|,\s*)(?P<ver>[^,:\s]+)"
    r"(?:,\s*(?P<kernel>[^,:\s]+),\s*(?P<arch>[^,:\s]+))?"
    r":\s*(?P<state>[a-z]+)(?:\s*\((?P<note>.*)\))?\s*$")


def parse_dkms_status(text: str) -> list[DkmsEntry]:
    """``dkms status`` in dkms 2 (``nvidia, 460.91.03, 5.11.0-36-generic,
    x86_64: installed``) and dkms 3 (``nvidia/535.86.05, 6.5.0-..., x86_64:
    installed``) formats.  Warning lines dkms prints around entries are skipped."""
    out = []
    for line in text.splitlines():
        m = _DKMS_RE.match(line.strip())
        if m:
            out.append(DkmsEntry(m.group("mod"), m.group("ver"), m.group("kernel"), m.group("arch"),
                                 m.group("state"), m.group("note") or ""))
        elif line.strip() and not line.lower().startswith(("warning", "error", "deprecated")):
            raise ParseError(f"unrecognised dkms status line: {line!r}")
    return out


# --------------------------------------------------------------------------- Secure Boot
@dataclass(frozen=True)
class SecureBoot:
    """What ``mokutil --sb-state`` answered, one state per answer.

    ``state``: ``enabled``, ``disabled``, ``unsupported`` (EFI variables are
    readable but there is no readable SecureBoot variable: "This system doesn't
    support Secure Boot"), ``no-efivars`` ("EFI variables are not supported on
    this system": a legacy BIOS boot, or efivarfs not visible, e.g. in a
    container), ``read-error`` ("Failed to read "SecureBoot" variable: ..."),
    ``undetermined`` ("Cannot determine secure boot state.").
    """

    state: str
    setup_mode: bool = False
    validation_disabled: bool = False
    detail: str = ""  # the line mokutil printed for an error answer


def parse_sb_state(text: str) -> SecureBoot:
    """``mokutil --sb-state`` (stdout and stderr together).

    Strings from lcp/mokutil src/mokutil.c (sb_state_internal and main):
    "SecureBoot enabled", "SecureBoot disabled", "Platform is in Setup Mode",
    "SecureBoot validation is disabled in shim", "Cannot determine secure
    boot state.", "Failed to read "SecureBoot" variable: %m", "Failed to read
    "SetupMode" variable: %m", "This system doesn't support Secure Boot"
    (any failure to read the SecureBoot variable), "EFI variables are not
    supported on this system".
    """
    t = strip_ansi(text)
    setup = "Platform is in Setup Mode" in t
    novalid = "validation is disabled in shim" in t

    def line(rx: str) -> str:
        m = re.search(rx, t, re.M)
        return m.group(0).strip() if m else ""

    if re.search(r"^SecureBoot enabled", t, re.M):
        return SecureBoot("enabled", setup, novalid)
    if re.search(r"^SecureBoot disabled", t, re.M):
        return SecureBoot("disabled", setup, novalid)
    if "Failed to read" in t:
        return SecureBoot("read-error", detail=line(r"^.*Failed to read.*$"))
    if "EFI variables are not supported" in t:
        return SecureBoot("no-efivars", detail=line(r"^.*EFI variables are not supported.*$"))
    if "doesn't support Secure Boot" in t:
        return SecureBoot("unsupported", detail=line(r"^.*doesn't support Secure Boot.*$"))
    if "Cannot determine secure boot state" in t:
        return SecureBoot("undetermined", detail=line(r"^.*Cannot determine secure boot state.*$"))
    raise ParseError(f"unrecognised mokutil output: {t.strip()[:200]!r}")


# --------------------------------------------------------------------------- ubuntu-drivers
@dataclass(frozen=True)
class DriverOption:
    package: str
    origin: str          # "distro" or "third-party"
    free: bool
    recommended: bool
    builtin: bool


@dataclass(frozen=True)
class UbuntuDevice:
    path: str
    vendor: str = ""
    model: str = ""
    drivers: tuple[DriverOption, ...] = field(default_factory=tuple)


_UD_DRIVER = re.compile(r"^driver\s*:\s*(?P<pkg>\S+)\s+-\s+(?P<rest>.*)$")


def parse_ubuntu_drivers(text: str) -> list[UbuntuDevice]:
    """``ubuntu-drivers devices``: ``== /sys/devices/... ==`` blocks of
    ``key : value`` lines.  Noise (``ERROR:root:aplay command not found``,
    udevadm warnings, tracebacks) between blocks is skipped."""
    devices: list[UbuntuDevice] = []
    cur: dict[str, object] | None = None

    def close() -> None:
        if cur is not None:
            devices.append(UbuntuDevice(str(cur["path"]), str(cur.get("vendor", "")),
                                        str(cur.get("model", "")), tuple(cur["drivers"])))  # type: ignore[arg-type]

    for line in text.splitlines():
        s = line.strip()
        m = re.fullmatch(r"==\s*(\S+)\s*==", s)
        if m:
            close()
            cur = {"path": m.group(1), "drivers": []}
            continue
        if cur is None:
            continue
        d = _UD_DRIVER.match(s)
        if d:
            words = d.group("rest").split()
            cur["drivers"].append(DriverOption(  # type: ignore[attr-defined]
                d.group("pkg"), words[0] if words else "?", "free" in words,
                "recommended" in words, "builtin" in words))
        elif re.match(r"^(vendor|model|modalias|manual_install)\s*:", s):
            key, _, val = s.partition(":")
            cur[key.strip()] = val.strip()
    close()
    return devices


def nvidia_packages(devices: Sequence[UbuntuDevice]) -> list[DriverOption]:
    """All ``nvidia-driver-*`` options ubuntu-drivers offers."""
    return [d for dev in devices for d in dev.drivers if d.package.startswith("nvidia-driver-")]


# --------------------------------------------------------------------------- apt / dpkg
def parse_apt_holds(text: str) -> list[str]:
    """``apt-mark showhold``: one package name per line (nothing when none)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.:-]*", s):
            raise ParseError(f"not a package name: {s!r}")
        out.append(s)
    return out


@dataclass(frozen=True)
class DpkgPackage:
    name: str
    version: str
    installed: bool


def parse_dpkg_query(text: str) -> list[DpkgPackage]:
    """``dpkg-query -W --showformat='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'``.

    A package dpkg knows but never installed prints an empty version and
    status ``un``.
    """
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ParseError(f"unrecognised dpkg-query line: {line!r}")
        name, version, status = (p.strip() for p in parts)
        # Debian policy 5.6.1 / 5.6.12: names and versions use these characters
        # only (the version ends up in a runbook command: nothing else passes).
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", name) or (
                version and not re.fullmatch(r"(\d+:)?[0-9][A-Za-z0-9.+~-]*", version)):
            raise ParseError(f"not a Debian package name and version: {line[:120]!r}")
        out.append(DpkgPackage(name, version, status[:2] in ("ii", "hi")))
    return out


# --------------------------------------------------------------------------- df
@dataclass(frozen=True)
class DfEntry:
    filesystem: str
    size_kib: int
    avail_kib: int
    mount: str


def parse_df(text: str) -> list[DfEntry]:
    """``df -Pk PATH...`` (POSIX format: one line per path, 1024-byte blocks)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("Filesystem"):
        raise ParseError("no df header line")
    out = []
    for ln in lines[1:]:
        parts = ln.split()
        if len(parts) < 6 or not parts[1].isdigit() or not parts[3].isdigit():
            raise ParseError(f"unrecognised df line: {ln!r}")
        out.append(DfEntry(parts[0], int(parts[1]), int(parts[3]), " ".join(parts[5:])))
    return out
