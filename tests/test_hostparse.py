"""The pure host-output parsers against real captured outputs (tests/data/host)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.driver import parse as hp

DATA = Path(__file__).parent / "data" / "host"


@dataclass(frozen=True)
class Fixture:
    text: str
    meta: dict[str, str]

    @property
    def fields(self) -> list[str] | None:
        f = self.meta.get("fields")
        return f.split(",") if f else None


def fixture(tool: str, case: str) -> Fixture:
    """A captured output with its ``#! key: value`` header lines stripped."""
    meta: dict[str, str] = {}
    body = []
    lines = (DATA / tool / f"{case}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    for n, line in enumerate(lines):
        if line.startswith("#! "):
            key, _, val = line[3:].partition(":")
            meta[key.strip()] = val.strip()
        else:
            body = lines[n:]
            break
    return Fixture("".join(body), meta)


ALL = sorted(p for p in DATA.glob("*/*.txt"))


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_fixture_names_its_source(path: Path) -> None:
    f = fixture(path.parent.name, path.stem)
    assert f.meta.get("source"), f"{path} has no '#! source:' line"


def test_there_are_fixtures_for_every_tool() -> None:
    tools = {p.parent.name for p in ALL}
    assert {"nvidia-smi", "proc-driver-version", "sys-module-version", "mokutil", "dkms",
            "ubuntu-drivers", "glibc", "os-release", "apt-mark", "dpkg-query", "df", "modinfo", "uname"} <= tools


def test_modinfo_and_uname() -> None:
    assert hp.parse_modinfo_version(fixture("modinfo", "version-580-119-02").text) == "580.119.02"
    with pytest.raises(hp.ParseError):
        hp.parse_modinfo_version(fixture("modinfo", "module-not-found").text)
    assert hp.parse_machine(fixture("uname", "h200-firecracker-machine").text) == "x86_64"
    fields = fixture("uname", "jetson-igx-orin-l4t-r36").text.split()
    assert hp.parse_kernel_release(fields[2]) == "5.15.136-l4t-r36.3-1009.9+g46cdb595bebc"
    assert hp.parse_machine(fields[-2]) == "aarch64"
    with pytest.raises(hp.ParseError):
        hp.parse_kernel_release("5.15.0; rm -rf /")


def test_dpkg_versions_that_are_not_debian_versions_are_refused() -> None:
    with pytest.raises(hp.ParseError, match="not a Debian package name and version"):
        hp.parse_dpkg_query("nvidia-driver-550\t550.1; reboot\tii \n")


def test_ubuntu_drivers_l4_offers_580_and_595_but_not_570_or_575() -> None:
    devs = hp.parse_ubuntu_drivers(fixture("ubuntu-drivers", "l4-ada-580-595-no-570-575").text)
    names = [d.package for d in hp.nvidia_packages(devs)]
    assert "nvidia-driver-580" in names and not any(n.startswith(("nvidia-driver-570", "nvidia-driver-575"))
                                                    for n in names)


# --------------------------------------------------------------------------- nvidia-smi
def test_query_with_header_two_driver_generations_of_gpus() -> None:
    rows = hp.parse_query_csv(fixture("nvidia-smi", "query-gpu-570-titan-v-and-ada-with-header").text)
    gpus = hp.gpus_from_rows(rows)
    assert [(g.index, g.name, g.compute_capability, g.driver) for g in gpus] == [
        (0, "NVIDIA TITAN V", "7.0", "570.86.15"),
        (1, "NVIDIA RTX 5880 Ada Generation", "8.9", "570.86.15"),
    ]
    assert rows[0]["compute_mode"] == "Default"


def test_query_five_gpus_uuid_and_old_names() -> None:
    gpus = hp.gpus_from_rows(hp.parse_query_csv(fixture("nvidia-smi", "query-gpu-five-gpus-pci-bus-uuid").text))
    assert len(gpus) == 5
    assert gpus[1].name == "GeForce GTX 1080 Ti"
    assert gpus[4].uuid == "GPU-ff3318a7-f0dd-dc57-1fb8-cc95ba35c56e"
    assert gpus[0].compute_capability is None  # not queried: unknown, not guessed


@pytest.mark.parametrize("case", ["query-gpu-na-field-new-driver", "query-gpu-not-supported-field-old-driver"])
def test_na_and_not_supported_become_none(case: str) -> None:
    f = fixture("nvidia-smi", case)
    (row,) = hp.parse_query_csv(f.text, f.fields)
    assert row["fan.speed"] is None
    assert row["memory.total"] == "2004"
    assert hp.mib(row["memory.total"]) == 2004


def test_gb10_memory_total_na_is_unknown_memory() -> None:
    f = fixture("nvidia-smi", "query-gpu-gb10-memory-na")
    (g,) = hp.gpus_from_rows(hp.parse_query_csv(f.text, f.fields))
    assert g.memory_mib is None


def test_mig_mode_values() -> None:
    assert hp.parse_query_csv(fixture("nvidia-smi", "query-gpu-mig-mode-rtx-na").text) == [
        {"mig.mode.current": None}]
    assert [r["mig.mode.current"] for r in
            hp.parse_query_csv(fixture("nvidia-smi", "query-gpu-mig-mode-a100").text)] == ["Disabled", "Disabled"]


def test_compute_cap_on_ada() -> None:
    (g,) = hp.gpus_from_rows(hp.parse_query_csv(fixture("nvidia-smi", "query-gpu-compute-cap-570-ada").text))
    assert g.compute_capability == "8.9"


def test_units_in_values_and_headers() -> None:
    rows = hp.parse_query_csv("index, memory.total [MiB]\n0, 49140\n")
    assert rows == [{"index": "0", "memory.total": "49140"}]
    assert hp.mib("49140 MiB") == 49140
    with pytest.raises(hp.ParseError):
        hp.mib("48 GB")


def test_compute_apps() -> None:
    f = fixture("nvidia-smi", "compute-apps-gb10-noheader")
    (p,) = hp.processes_from_rows(hp.parse_query_csv(f.text, f.fields))
    assert (p.pid, p.name, p.used_mib) == (114687, "/usr/local/bin/python", 19135)
    rows = hp.parse_query_csv(fixture("nvidia-smi", "compute-apps-vgpu-uuid-name").text)
    assert [r["process_name"] for r in rows] == ["vgpu"] * 3
    with pytest.raises(hp.ParseError, match="no pid"):
        hp.processes_from_rows(rows)
    assert hp.processes_from_rows(hp.parse_query_csv("gpu_uuid, pid, process_name, used_memory [MiB]\n")) == []


@pytest.mark.parametrize("case,kind,lib", [
    ("mismatch-one-line", "mismatch", None),
    ("mismatch-two-line-570", "mismatch", "570.124"),
    ("mismatch-two-line-550", "mismatch", "550.144"),
    ("mismatch-two-line-535-ubuntu-forums", "mismatch", "535.154"),
    ("no-devices-were-found", "no-devices", None),
    ("couldnt-communicate", "no-driver", None),
    ("couldnt-communicate-two-line-typographic-quote", "no-driver", None),
    ("invalid-field-compute-cap", "invalid-field", None),
    ("invalid-field-bogus-580", "invalid-field", None),
    ("no-devices-index-7-580", "no-devices", None),
])
def test_nvidia_smi_error_texts(case: str, kind: str, lib: str | None) -> None:
    err = hp.nvsmi_error(fixture("nvidia-smi", case).text)
    assert err is not None and (err.kind, err.nvml_version) == (kind, lib)
    with pytest.raises(hp.ParseError, match="nvidia-smi reported an error"):
        hp.parse_query_csv(fixture("nvidia-smi", case).text)


def test_data_is_not_an_error() -> None:
    assert hp.nvsmi_error(fixture("nvidia-smi", "query-gpu-570-titan-v-and-ada-with-header").text) is None


def test_ragged_csv_is_a_parse_error() -> None:
    with pytest.raises(hp.ParseError, match="row 1 has 2 values for 3 fields"):
        hp.parse_query_csv("a, b, c\n1, 2\n")


# --------------------------------------------------------------------------- kernel module
@pytest.mark.parametrize("case,version,open_,arch", [
    ("proprietary-384", "384.98", False, "x86_64"),
    ("open-565-ubuntu-24.04", "565.57.01", True, "x86_64"),
    ("open-525-arch", "525.60.11", True, "x86_64"),
    ("open-jetson-aarch64", "35.3.1", True, "aarch64"),
    ("proprietary-580-during-mismatch", "580.173.02", False, "x86_64"),
    ("proprietary-550-78-during-mismatch", "550.78", False, "x86_64"),
    ("proprietary-535-146-during-mismatch", "535.146.02", False, "x86_64"),
])
def test_proc_driver_version(case: str, version: str, open_: bool, arch: str) -> None:
    v = hp.parse_proc_version(fixture("proc-driver-version", case).text)
    assert (v.version, v.open_module, v.arch) == (version, open_, arch)


def test_proc_driver_version_rejects_other_text() -> None:
    with pytest.raises(hp.ParseError):
        hp.parse_proc_version("cat: /proc/driver/nvidia/version: No such file or directory\n")


@pytest.mark.parametrize("case,version", [("535-146", "535.146.02"), ("550-78", "550.78")])
def test_sys_module_version(case: str, version: str) -> None:
    assert hp.parse_sys_version(fixture("sys-module-version", case).text) == version
    with pytest.raises(hp.ParseError):
        hp.parse_sys_version("")


def test_driver_versions_compare_in_full() -> None:
    # NVIDIA Table 3 (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#id5):
    # compare full driver versions, not the major.minor nvidia-smi shows.
    assert hp.driver_version("575.57.08") > hp.driver_version("575.51.03")
    assert hp.driver_version("550.107.02") < hp.driver_version("575.57.08")
    assert hp.driver_version("570.26") < hp.driver_version("570.124.06")


# --------------------------------------------------------------------------- secure boot
@pytest.mark.parametrize("case,state,setup,novalid", [
    ("enabled", "enabled", False, False),
    ("disabled", "disabled", False, False),
    ("disabled-setup-mode", "disabled", True, False),
    ("enabled-validation-disabled-in-shim", "enabled", False, True),
    ("not-supported-cloud-vm", "unsupported", False, False),
    ("efi-variables-not-supported", "no-efivars", False, False),
    ("enabled-ansi-colour", "enabled", False, False),
])
def test_mokutil_variants(case: str, state: str, setup: bool, novalid: bool) -> None:
    sb = hp.parse_sb_state(fixture("mokutil", case).text)
    assert (sb.state, sb.setup_mode, sb.validation_disabled) == (state, setup, novalid)


def test_mokutil_unknown_text() -> None:
    assert hp.parse_sb_state("Cannot determine secure boot state.\n").state == "undetermined"
    with pytest.raises(hp.ParseError):
        hp.parse_sb_state("mokutil: command not found\n")


# --------------------------------------------------------------------------- dkms
def test_dkms_v3() -> None:
    es = hp.parse_dkms_status(fixture("dkms", "v3-nvidia-535-and-other").text)
    assert [(e.module, e.version, e.kernel, e.arch, e.state) for e in es] == [
        ("nvidia", "535.86.05", "6.5.0-060500rc5-generic", "x86_64", "installed"),
        ("rtl8852bu", "1.19.3", "6.5.0-060500rc5-generic", "x86_64", "installed"),
    ]


def test_dkms_v2() -> None:
    (e,) = hp.parse_dkms_status(fixture("dkms", "v2-nvidia-460").text)
    assert (e.module, e.version, e.kernel, e.state) == ("nvidia", "460.91.03", "5.11.0-36-generic", "installed")


def test_dkms_warnings_are_kept_as_notes() -> None:
    es = hp.parse_dkms_status(fixture("dkms", "v3-diff-warning-two-kernels").text)
    assert [e.kernel for e in es] == ["6.11.11-1-pve", "6.11.11-2-pve"]
    assert es[1].note.startswith("WARNING! Diff between built and installed module!")
    (nv,) = hp.parse_dkms_status(fixture("dkms", "v3-nvidia-repeated-diff-warnings").text)
    assert (nv.version, nv.kernel, nv.state) == ("535.154.05", "6.8.0-31-generic", "installed")


def test_dkms_added_only_and_garbage() -> None:
    (e,) = hp.parse_dkms_status("nvidia/575.57.08: added\n")
    assert (e.version, e.kernel, e.state) == ("575.57.08", None, "added")
    assert hp.parse_dkms_status("") == []
    with pytest.raises(hp.ParseError):
        hp.parse_dkms_status("Usage: dkms [action] [options]\n")


# --------------------------------------------------------------------------- ubuntu-drivers
def test_ubuntu_drivers_server_recommended() -> None:
    (dev,) = hp.parse_ubuntu_drivers(fixture("ubuntu-drivers", "server-recommended-gtx650").text)
    assert dev.model == "GK106 [GeForce GTX 650 Ti]"
    rec = [d for d in dev.drivers if d.recommended]
    assert [(d.package, d.origin) for d in rec] == [("nvidia-driver-450-server", "distro")]
    assert [d.package for d in dev.drivers if d.builtin] == ["xserver-xorg-video-nouveau"]
    assert len(hp.nvidia_packages([dev])) == 6  # nvidia-340 is not an nvidia-driver-* package


def test_ubuntu_drivers_third_party() -> None:
    (dev,) = hp.parse_ubuntu_drivers(fixture("ubuntu-drivers", "third-party-recommended-470-during-mismatch").text)
    (rec,) = [d for d in dev.drivers if d.recommended]
    assert (rec.package, rec.origin, rec.free) == ("nvidia-driver-470", "third-party", False)


def test_ubuntu_drivers_noise_only() -> None:
    assert hp.parse_ubuntu_drivers(fixture("ubuntu-drivers", "aplay-traceback-no-drivers").text) == []


# --------------------------------------------------------------------------- OS, glibc
@pytest.mark.parametrize("case,version", [
    ("ldd-ubuntu-2.23", "2.23"), ("ldd-gnu-libc-2.25", "2.25"), ("getconf-gentoo-2.43", "2.43"),
    ("ldd-kylin-localised", "2.31"),
])
def test_glibc(case: str, version: str) -> None:
    assert hp.parse_glibc(fixture("glibc", case).text) == version


def test_musl_is_not_glibc() -> None:
    with pytest.raises(hp.ParseError):
        hp.parse_glibc(fixture("glibc", "ldd-musl-not-glibc").text)


def test_os_release() -> None:
    pop = hp.parse_os_release(fixture("os-release", "pop-os-22.04-leading-space").text)
    assert (pop["ID"], pop["VERSION_ID"], pop["UBUNTU_CODENAME"]) == ("pop", "22.04", "jammy")
    assert hp.os_label(pop) == "Pop!_OS 22.04"
    deb = hp.parse_os_release(fixture("os-release", "debian-12-builder-dev-machine").text)
    assert hp.os_label(deb) == "Debian GNU/Linux 12"
    with pytest.raises(hp.ParseError):
        hp.parse_os_release("garbage\n")


# --------------------------------------------------------------------------- apt, dpkg, df
def test_apt_holds() -> None:
    assert hp.parse_apt_holds(fixture("apt-mark", "showhold-three").text) == [
        "linux-dtb-dev-sun8i", "linux-image-dev-sun8i", "linux-u-boot-nanopineo-dev"]
    assert hp.parse_apt_holds(fixture("apt-mark", "showhold-none").text) == []
    with pytest.raises(hp.ParseError):
        hp.parse_apt_holds("E: Could not open lock file\n")


def test_dpkg_query() -> None:
    pk = hp.parse_dpkg_query(fixture("dpkg-query", "debian-12-builder-dev-machine").text)
    assert [(p.name, p.version, p.installed) for p in pk] == [
        ("libc6", "2.36-9+deb12u14", True), ("libc6-amd64", "", False), ("libc6-dbg", "2.36-9+deb12u14", True)]


def test_df() -> None:
    es = hp.parse_df(fixture("df", "single-root-builder-dev-machine").text)
    assert [e.mount for e in es] == ["/", "/"]  # no separate /boot: df names the fs holding it
    assert es[0].avail_kib > 0
    with pytest.raises(hp.ParseError):
        hp.parse_df("df: /boot: No such file or directory\n")
