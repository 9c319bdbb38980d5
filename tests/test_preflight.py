"""Preflight decisions over host facts, and the `builder preflight` command.

The operator's host (2x RTX 6000 Ada, driver 550.107.02, Ubuntu 22.04) is not
public, so its probe records are built here from envs/host.toml and marked
synthetic; every failure text (version mismatch, No devices, couldn't
communicate, ...) is a real capture from tests/data/host.
"""

from __future__ import annotations

import datetime
import functools
import json
from pathlib import Path

import pytest

from builder.driver import facts as hostfacts
from builder.driver import preflight, snapshot
from builder.driver.snapshot import ProbeRecord
from builder.project import Project
from tests.helpers.cli import builder_cmd
from tests.test_hostparse import fixture

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "5.15.0-119-generic"
#: Branch end of life is judged against "today": tests fix it.
TODAY = datetime.date(2026, 11, 30)

# Synthetic, built from envs/host.toml (see module docstring).
OPERATOR = {
    "nvidia-smi-gpus": (
        "index, name, driver_version, compute_cap, memory.total [MiB], pci.bus_id, uuid\n"
        "0, NVIDIA RTX 6000 Ada Generation, 550.107.02, 8.9, 49140, 00000000:01:00.0, GPU-aaaa\n"
        "1, NVIDIA RTX 6000 Ada Generation, 550.107.02, 8.9, 49140, 00000000:41:00.0, GPU-bbbb\n"),
    "nvidia-smi-apps": ("gpu_uuid, pid, process_name, used_memory [MiB]\n"
                        "GPU-aaaa, 4242, /opt/conda/envs/QL_1/bin/python, 40000\n"),
    "module-version": "550.107.02\n",
    "proc-version": ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.107.02  Wed Jul 24 23:53:00 UTC 2024\n"
                     "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n"),
    "nvml-library": "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.107.02",
    "kernel": KERNEL + "\n",
    "machine": "x86_64\n",
    "os-release": 'NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=jammy\n',
    "glibc": "glibc 2.35\n",
    "kernel-headers": f"/lib/modules/{KERNEL}/build/Makefile",
    "dkms": f"nvidia/550.107.02, {KERNEL}, x86_64: installed\n",
    "modinfo": "550.107.02\n",
    "efi": "/sys/firmware/efi",
    "secure-boot": "SecureBoot disabled\n",
    "ubuntu-drivers": ("== /sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0 ==\n"
                       "vendor   : NVIDIA Corporation\nmodel    : AD102GL [RTX 6000 Ada Generation]\n"
                       "driver   : nvidia-driver-550 - distro non-free\n"
                       "driver   : nvidia-driver-575 - distro non-free\n"
                       "driver   : nvidia-driver-580-open - distro non-free recommended\n"
                       "driver   : nvidia-driver-570-server - distro non-free\n"),
    "reboot-required": None,
    "reboot-required-pkgs": None,
    "disk": ("Filesystem     1024-blocks      Used Available Capacity Mounted on\n"
             "/dev/nvme0n1p2  960000000 400000000 512000000      44% /\n"
             "/dev/nvme0n1p1    1000000    300000    700000      30% /boot\n"),
    "apt-holds": "",
    "driver-packages": "nvidia-driver-550\t550.107.02-0ubuntu0.22.04.1\tii \n",
}


def rec(pid: str, out: str | None, exit_: int | str | None = 0, err: str = "",
        timed_out: bool = False) -> ProbeRecord:
    kind = "path" if pid in ("nvml-library", "kernel-headers", "efi") else (
        "file" if pid in ("module-version", "proc-version", "os-release", "reboot-required",
                          "reboot-required-pkgs") else "command")
    if out is None and exit_ == 0:
        exit_ = "missing"
    return ProbeRecord(pid, kind, (pid,) if kind == "command" else None, None if kind == "command" else pid,
                       out or "", err, exit_, 0.01, timed_out)


def operator_snapshot(**override: ProbeRecord | str | None) -> snapshot.Snapshot:
    """The operator's host before the upgrade, with ``override`` records swapped in."""
    records = {k: rec(k, v) for k, v in OPERATOR.items()}
    for k, v in override.items():
        k = k.replace("_", "-")
        records[k] = v if isinstance(v, ProbeRecord) else rec(k, v)
    return snapshot.make(records.values(), source="test")


def project() -> Project:
    return Project(ROOT)


def run(snap: snapshot.Snapshot, m: str = "a", **kw: object) -> preflight.Report:
    p = project()
    return preflight.evaluate(hostfacts.from_snapshot(snap), p.matrix(m), p.host(), today=TODAY,
                              **kw)  # type: ignore[arg-type]


def by_id(r: preflight.Report) -> dict[str, preflight.Check]:
    return {c.id: c for c in r.checks}


# --------------------------------------------------------------------------- driver series
def test_target_for_matrix_a_is_575_with_580_lts_alternative() -> None:
    t = preflight.driver_target("575.57.08", today=TODAY)
    assert (t.package, t.label, t.status) == ("nvidia-driver-575", "575.x", "eol")
    assert [(a.series, a.status(TODAY)) for a in t.alternatives] == [(580, "lts"), (595, "production")]
    assert t.note() == ("R575 is end of life (listed by NVIDIA as end of life by 2025-08-04); R580 (long-term "
                        "support until June 2028) also meets the floor 575.57.08; R595 (production until March "
                        "2027) also meets the floor 575.57.08")


def test_target_for_matrix_b_is_570_whose_end_of_life_depends_on_the_date() -> None:
    t = preflight.driver_target("570.26", today=TODAY)
    assert (t.package, t.status) == ("nvidia-driver-570", "eol")
    assert t.note().startswith("R570 reached end of life in February 2026; ")
    assert [a.series for a in t.alternatives] == [580, 595]  # 575 is EOL: not offered as an alternative
    before = preflight.driver_target("570.26", today=datetime.date(2026, 2, 28))  # its last day
    assert before.status == "production" and "end of life" not in before.note()
    assert preflight.driver_target("570.26", today=datetime.date(2026, 3, 1)).status == "eol"


def test_branch_table_is_the_documented_one() -> None:
    table = preflight.load_branches()
    assert {(b.series, b.status(TODAY)) for b in table} == {
        (535, "eol"), (550, "eol"), (570, "eol"), (575, "eol"), (580, "lts"), (595, "production"), (620, "lts")}
    assert all(b.source for b in table)
    assert {b.series: b.eol for b in table if b.eol}[580] == "2028-06"


# --------------------------------------------------------------------------- decisions
def test_operator_host_before_upgrade_is_ready_with_warnings() -> None:
    r = run(operator_snapshot())
    c = by_id(r)
    assert r.verdict == "ready" and r.exit_code == 0
    assert c["driver-floor"].level == "warn"
    assert "upgrade needed: current 550.107.02 -> target 575.x" in c["driver-floor"].message
    assert "R580 (long-term support until June 2028) also meets" in c["driver-floor"].message
    assert c["driver-package"].level == "pass" and "nvidia-driver-575" in c["driver-package"].message
    assert c["gpus"].level == "pass" and "2 GPU(s)" in c["gpus"].message
    assert c["module"].level == "pass"
    assert c["gpu-processes"].level == "warn" and "pid 4242" in c["gpu-processes"].message
    assert "ray stop" in c["gpu-processes"].next
    assert {k: c[k].level for k in ("secure-boot", "kernel-headers", "dkms", "pending-reboot", "disk",
                                    "held-packages", "os", "glibc")} == dict.fromkeys(
        ("secure-boot", "kernel-headers", "dkms", "pending-reboot", "disk", "held-packages", "os", "glibc"),
        "pass")


def test_matrix_b_target_570() -> None:
    c = by_id(run(operator_snapshot(), "b"))
    assert "target 570.x" in c["driver-floor"].message
    assert c["driver-package"].level == "pass" and "nvidia-driver-570-server" in c["driver-package"].message


@pytest.mark.parametrize("smi,proc,module,lib", [
    ("mismatch-two-line-535-ubuntu-forums", "proprietary-550-78-during-mismatch", "550.78", "535.154"),
    ("mismatch-two-line-570", None, None, "570.124"),
    ("mismatch-one-line", "proprietary-580-during-mismatch", None, None),
])
def test_version_mismatch_fails_and_says_what_a_reboot_does(smi: str, proc: str | None, module: str | None,
                                                           lib: str | None) -> None:
    f = fixture("nvidia-smi", smi)
    over = {"nvidia_smi_gpus": rec("nvidia-smi-gpus", f.text, 18),
            "nvidia_smi_apps": rec("nvidia-smi-apps", f.text, 18)}
    if proc:
        over["proc_version"] = rec("proc-version", fixture("proc-driver-version", proc).text)
    if module:
        over["module_version"] = rec("module-version", module + "\n")
    r = run(operator_snapshot(**over))
    c = by_id(r)
    assert r.verdict == "not-ready" and r.exit_code == 1
    assert c["nvml"].level == "fail" and "installed userspace differ" in c["nvml"].message
    assert "older" not in c["nvml"].message and "newer" not in c["nvml"].message  # never inferred from order
    assert c["nvml"].raw.startswith("Failed to initialize NVML")
    assert c["module"].level == "fail" and "module on disk for 5.15.0-119-generic is 550.107.02" in c["module"].message
    if lib:
        assert f"NVML library {lib}" in c["module"].message
        assert "a reboot will not help" in c["module"].message  # modinfo still says 550.107.02
    assert c["gpus"].level == "unknown" and c["gpu-processes"].level == "unknown"


@pytest.mark.parametrize("case,words", [
    ("no-devices-were-found", "No devices were found"),
    ("couldnt-communicate", "cannot communicate"),
    ("couldnt-communicate-two-line-typographic-quote", "cannot communicate"),
])
def test_nvidia_smi_failure_states_fail(case: str, words: str) -> None:
    text = fixture("nvidia-smi", case).text
    r = run(operator_snapshot(nvidia_smi_gpus=rec("nvidia-smi-gpus", text, 6)))
    assert by_id(r)["nvml"].level == "fail" and words in by_id(r)["nvml"].message
    assert r.exit_code == 1


def test_versions_disagree_without_nvml_error() -> None:
    # userspace library upgraded, nvidia-smi still answering from the old NVML.
    r = run(operator_snapshot(nvml_library="/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.575.57.08"))
    c = by_id(r)["module"]
    assert c.level == "fail" and "575.57.08" in c.message and "550.107.02" in c.message


def test_module_not_loaded_fails() -> None:
    r = run(operator_snapshot(module_version=None, nvidia_smi_gpus=rec(
        "nvidia-smi-gpus", fixture("nvidia-smi", "couldnt-communicate").text, 9)))
    assert by_id(r)["module"].level == "fail" and "not loaded" in by_id(r)["module"].message


def test_missing_nvidia_smi_is_unknown_not_pass() -> None:
    r = run(operator_snapshot(nvidia_smi_gpus=rec("nvidia-smi-gpus", None, "missing", "nvidia-smi: not found"),
                              nvidia_smi_apps=rec("nvidia-smi-apps", None, "missing")))
    c = by_id(r)
    assert c["nvml"].level == "unknown" and c["gpus"].level == "unknown"
    assert c["driver-floor"].level == "warn"  # the module still says 550.107.02
    assert r.verdict == "unknown" and r.exit_code == 3


def test_hung_nvidia_smi_is_unknown() -> None:
    # A wedged driver: nvidia-smi and the procfs/sysfs reads all killed at their bound.
    r = run(operator_snapshot(nvidia_smi_gpus=rec("nvidia-smi-gpus", "", None, timed_out=True),
                              module_version=rec("module-version", "", None, timed_out=True),
                              proc_version=rec("proc-version", "", None, timed_out=True)))
    c = by_id(r)
    assert c["nvml"].level == "unknown" and "killed" in c["nvml"].message
    assert c["driver-floor"].level == "unknown"
    assert r.exit_code == 3


def test_unparsable_output_keeps_raw_text() -> None:
    r = run(operator_snapshot(nvidia_smi_gpus="garbage, from, a, wrapper\n1, 2\n"))
    c = by_id(r)["gpus"]
    assert c.level == "unknown" and "unparsable" in c.message and "garbage" in c.raw


def test_gpu_count_or_capability_differs_from_host_toml() -> None:
    one = OPERATOR["nvidia-smi-gpus"].rsplit("1, NVIDIA", 1)[0]  # type: ignore[union-attr]
    c = by_id(run(operator_snapshot(nvidia_smi_gpus=one)))["gpus"]
    assert c.level == "fail" and "shows 1 GPU(s)" in c.message and "expects 2" in c.message
    na = OPERATOR["nvidia-smi-gpus"].replace("8.9", "[N/A]", 1)  # type: ignore[union-attr]
    assert by_id(run(operator_snapshot(nvidia_smi_gpus=na)))["gpus"].level == "unknown"


@pytest.mark.parametrize("case,level", [
    ("enabled", "warn"), ("enabled-validation-disabled-in-shim", "pass"), ("disabled-setup-mode", "pass"),
    ("not-supported-cloud-vm", "pass"), ("enabled-ansi-colour", "warn"),
])
def test_secure_boot(case: str, level: str) -> None:
    f = fixture("mokutil", case)
    c = by_id(run(operator_snapshot(secure_boot=rec("secure-boot", f.text, int(f.meta.get("exit", 0))))))
    assert c["secure-boot"].level == level
    if level == "warn":
        assert "MOK" in c["secure-boot"].message


def test_secure_boot_unknown_without_mokutil_with_or_without_efi() -> None:
    # The absence of /sys/firmware/efi never turns a missing mokutil into pass.
    missing = rec("secure-boot", None, "missing")
    assert by_id(run(operator_snapshot(secure_boot=missing)))["secure-boot"].level == "unknown"
    c = by_id(run(operator_snapshot(secure_boot=missing, efi=None)))["secure-boot"]
    assert c.level == "unknown" and "/sys/firmware/efi is absent" in c.message


def test_headers_dkms_holds_reboot_disk() -> None:
    r = run(operator_snapshot(
        kernel_headers=None, dkms=rec("dkms", None, "missing"),
        apt_holds="nvidia-driver-550\nlibnvidia-compute-550\nzfsutils-linux\n",
        reboot_required="*** System restart required ***\n",
        reboot_required_pkgs="linux-image-5.15.0-126-generic\nlinux-base\n",
        disk=("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
              "/dev/sda2 100000000 99000000 1000000 99% /\n/dev/sda1 500000 450000 50000 90% /boot\n")))
    c = by_id(r)
    assert c["kernel-headers"].level == "warn" and f"linux-headers-{KERNEL}" in c["kernel-headers"].next
    assert c["dkms"].level == "warn" and "not installed" in c["dkms"].message
    assert c["held-packages"].level == "warn"
    assert "nvidia-driver-550, libnvidia-compute-550" in c["held-packages"].message
    assert "zfsutils" not in c["held-packages"].message
    assert c["pending-reboot"].level == "warn" and "kernel changes" in c["pending-reboot"].message
    assert c["disk"].level == "fail" and "/boot 49 MiB free" in c["disk"].message
    assert r.verdict == "not-ready"


def test_dkms_without_nvidia_for_this_kernel() -> None:
    f = fixture("dkms", "v3-nvidia-535-and-other")
    c = by_id(run(operator_snapshot(dkms=f.text)))["dkms"]
    assert c.level == "warn" and "nvidia/535.86.05" in c.message


def test_ubuntu_drivers_not_offering_target() -> None:
    f = fixture("ubuntu-drivers", "server-recommended-gtx650")
    c = by_id(run(operator_snapshot(ubuntu_drivers=f.text)))["driver-package"]
    assert c.level == "warn" and "does not offer nvidia-driver-575" in c.message
    assert "nvidia-driver-450-server" in c.message  # what it recommends instead


def test_other_os_and_glibc_warn() -> None:
    c = by_id(run(operator_snapshot(os_release=fixture("os-release", "debian-12-builder-dev-machine").text,
                                    glibc="glibc 2.36\n")))
    assert (c["os"].level, c["glibc"].level) == ("warn", "warn")


def test_json_shape() -> None:
    data = run(operator_snapshot()).to_json()
    assert data["verdict"] == "ready"
    assert all({"id", "level", "message"} <= set(c) for c in data["checks"])
    assert data["host"]["driver"] == "550.107.02"
    assert data["host"]["gpus"][0] == {"index": 0, "name": "NVIDIA RTX 6000 Ada Generation",
                                       "compute_capability": "8.9", "memory_mib": 49140,
                                       "bus_id": "00000000:01:00.0", "uuid": "GPU-aaaa"}
    assert data["target"]["package"] == "nvidia-driver-575"
    json.dumps(data)


# --------------------------------------------------------------------------- CLI
builder = functools.partial(builder_cmd, cwd=ROOT, timeout=60)


def test_cli_exit_codes(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    ready.write_text(snapshot.render(operator_snapshot()))
    r = builder("preflight", "--matrix", "A", "--from-snapshot", str(ready))
    assert r.returncode == 0, r.stderr
    assert "upgrade needed: current 550.107.02 -> target 575.x" in r.stdout
    assert "verdict: ready" in r.stdout

    bad = tmp_path / "mismatch.json"
    text = fixture("nvidia-smi", "mismatch-two-line-570").text
    bad.write_text(snapshot.render(operator_snapshot(nvidia_smi_gpus=rec("nvidia-smi-gpus", text, 18))))
    r = builder("preflight", "-m", "a", "--from-snapshot", str(bad), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["verdict"] == "not-ready"

    unk = tmp_path / "unknown.json"
    unk.write_text(snapshot.render(operator_snapshot(nvidia_smi_gpus=rec("nvidia-smi-gpus", None, "missing"))))
    assert builder("preflight", "-m", "a", "--from-snapshot", str(unk)).returncode == 3

    r = builder("preflight", "-m", "z", "--from-snapshot", str(ready))
    assert r.returncode == 2 and r.stderr.startswith("builder: error: unknown matrix 'z'")
    r = builder("preflight", "-m", "a", "--from-snapshot", str(tmp_path / "nope.json"))
    assert r.returncode == 2 and "snapshot file not found" in r.stderr
    assert "Traceback" not in r.stderr
