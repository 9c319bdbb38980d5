"""Host probes on real-world states (issue 11 point 6) and host facts that cannot be
trusted (issue 10 point 6).

Every text comes from tests/data/host/<tool>/ (each file names its public source)
or from a real child process; the operator's own records (2x RTX 6000 Ada, driver
550.107.02) are the synthetic baseline of tests/test_preflight.py, with one probe
swapped for a real capture at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.check.pipeline import host_from_snapshot
from builder.driver import facts as hostfacts
from builder.driver import parse as hp
from builder.driver import runbook, snapshot
from builder.errors import Unavailable
from builder.project import Project
from tests.helpers import rss
from tests.helpers.scripts import sh
from tests.test_hostparse import fixture
from tests.test_preflight import KERNEL, ROOT, TODAY, by_id, operator_snapshot, rec, run

SMI_HEADER = "index, name, driver_version, compute_cap, memory.total [MiB], pci.bus_id, uuid\n"


def smi(*rows: str) -> str:
    return SMI_HEADER + "".join(r + "\n" for r in rows)


def gpu(i: int, driver: str = "550.107.02", cc: str = "8.9") -> str:
    return f"{i}, NVIDIA RTX 6000 Ada Generation, {driver}, {cc}, 49140, 00000000:{i + 1:02X}:00.0, GPU-{i}"


# --------------------------------------------------------------------------- dkms
@pytest.mark.parametrize("case,kernel,version", [
    ("v3-nvidia-repeated-diff-warnings", "6.8.0-31-generic", "535.154.05"),
    ("v2-nvidia-396-diff-warnings-440-built", "3.10.0-862.3.2.el7.x86_64", "396.44"),
])
def test_dkms_diff_between_built_and_installed_is_not_pass(case: str, kernel: str, version: str) -> None:
    f = fixture("dkms", case)
    (e, *_rest) = hp.parse_dkms_status(f.text)
    assert e.diff_warning and e.version == version
    c = by_id(run(operator_snapshot(dkms=f.text, kernel=kernel + "\n")))["dkms"]
    assert c.level == "warn" and f"nvidia/{version}" in c.message
    assert "not the one it built" in c.message and "modinfo -n nvidia" in c.next


def test_dkms_diff_warning_on_another_kernel_and_other_notes() -> None:
    # The warning is about 6.11.11-2-pve; the running kernel's entry is clean, but it is not nvidia.
    two = fixture("dkms", "v3-diff-warning-two-kernels")
    assert [e.diff_warning for e in hp.parse_dkms_status(two.text)] == [False, True]
    note = fixture("dkms", "v2-nvidia-original-module-exists")
    c = by_id(run(operator_snapshot(dkms=note.text, kernel="4.17.14-202.fc28.x86_64\n")))["dkms"]
    assert c.level == "pass"  # "(original_module exists)" is not a diff warning


# --------------------------------------------------------------------------- reboot outlook
MISMATCH_570 = fixture("nvidia-smi", "mismatch-two-line-570").text  # NVML library version: 570.124


def _mismatch(smi_text: str, modinfo: str | None, modinfo_exit: int = 0, module: str = "550.107.02",
              **over: object) -> dict[str, object]:
    checks = by_id(run(operator_snapshot(
        nvidia_smi_gpus=rec("nvidia-smi-gpus", smi_text, 18), nvidia_smi_apps=rec("nvidia-smi-apps", smi_text, 18),
        module_version=module + "\n", proc_version=None, nvml_library=None,
        modinfo=rec("modinfo", modinfo, modinfo_exit) if modinfo is not None else rec("modinfo", None, "missing"),
        **over)))  # type: ignore[arg-type]
    return {"nvml": checks["nvml"], "module": checks["module"]}


def test_mismatch_where_the_module_on_disk_matches_userspace_is_fixed_by_a_reboot() -> None:
    c = _mismatch(MISMATCH_570, "570.124.06\n")["module"]
    assert c.level == "fail"  # still not ready: the reboot is pending
    assert (f"the module on disk for {KERNEL} is 570.124.06, matching the userspace 570.124" in c.message
            and "a reboot loads the matching module" in c.message)
    assert c.next.startswith("reboot in the maintenance window")


def test_mismatch_where_the_module_on_disk_differs_is_not_fixed_by_a_reboot() -> None:
    disk = fixture("modinfo", "version-580-119-02").text
    c = _mismatch(MISMATCH_570, disk)["module"]
    assert c.level == "fail" and "a reboot will not help" in c.message
    assert f"the module on disk for {KERNEL} is 580.119.02 while the userspace is 570.124" in c.message
    assert "dkms install" in c.next and "modinfo -F version nvidia" in c.next


def test_mismatch_with_no_module_on_disk_is_not_fixed_by_a_reboot() -> None:
    gone = fixture("modinfo", "module-not-found")
    c = _mismatch(MISMATCH_570, gone.text, int(gone.meta["exit"]))["module"]
    assert c.level == "fail" and "a reboot will not help: there is no nvidia module on disk" in c.message


@pytest.mark.parametrize("loaded", ["545.29.06", "575.57.08"])
def test_outlook_never_depends_on_which_version_is_newer(loaded: str) -> None:
    # A rollback installed without a reboot: userspace 550.144 (real NVML text), the
    # loaded module newer or older; modinfo shows 550.144.03 on disk: a reboot fixes it either way.
    text = fixture("nvidia-smi", "mismatch-two-line-550").text
    r = _mismatch(text, "550.144.03\n", module=loaded)
    assert "a reboot loads the matching module" in r["module"].message
    assert "older" not in r["nvml"].message and "newer" not in r["nvml"].message


def test_versions_disagreeing_without_nvml_error_also_get_the_outlook() -> None:
    c = by_id(run(operator_snapshot(nvml_library="/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.575.57.08",
                                    modinfo="575.57.08\n")))["module"]
    assert c.level == "fail" and "driver versions disagree" in c.message
    assert "a reboot loads the matching module" in c.message


def _v1(snap: snapshot.Snapshot, tmp_path: Path, drop: tuple[str, ...] = ("modinfo", "machine")) -> Path:
    """The snapshot as builder's previous version (format 1) wrote it: no modinfo, machine or capped."""
    data = json.loads(snapshot.render(snap))
    data["version"] = 1
    data["probes"] = [{k: v for k, v in p.items() if k != "capped"} for p in data["probes"] if p["id"] not in drop]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(data))
    return path


def test_a_format_1_snapshot_says_the_outlook_was_not_captured(tmp_path: Path) -> None:
    snap = operator_snapshot(nvidia_smi_gpus=rec("nvidia-smi-gpus", MISMATCH_570, 18))
    loaded = snapshot.load(_v1(snap, tmp_path))
    assert loaded.version == 1 and "modinfo" not in loaded.records
    p = Project(ROOT)
    from builder.driver import preflight

    r = preflight.evaluate(hostfacts.from_snapshot(loaded), p.matrix("a"), p.host(), today=TODAY)
    c = by_id(r)["module"]
    assert c.level == "fail" and "whether a reboot fixes it is unknown" in c.message
    assert "not captured in this snapshot (snapshot format 1 predates that probe" in c.message


# --------------------------------------------------------------------------- nvidia-smi error states
@pytest.mark.parametrize("case,kind,bus", [
    ("device-handle-unknown-error", "device-handle", "0000:0B:00.0"),
    ("device-handle-unknown-error-no-space", "device-handle", "0000:65:00.0"),
    ("device-handle-gpu-is-lost", "gpu-lost", "0000:02:00.0"),
])
def test_device_handle_errors_printed_with_exit_0_are_failures_never_zero_gpus(case: str, kind: str,
                                                                               bus: str) -> None:
    text = fixture("nvidia-smi", case).text
    err = hp.nvsmi_error(text)
    assert err is not None and (err.kind, err.bus_id) == (kind, bus)
    snap = operator_snapshot(nvidia_smi_gpus=rec("nvidia-smi-gpus", text, 0))  # exit 0, as reported
    r = run(snap)
    c = by_id(r)
    assert c["nvml"].level == "fail" and bus in c["nvml"].message and "0 GPU" not in c["nvml"].message
    if kind == "gpu-lost":
        assert "fell off the bus" in c["nvml"].message
    assert c["gpus"].level == "unknown" and r.verdict == "not-ready"
    with pytest.raises(Unavailable, match="nvidia-smi could not report the driver"):
        host_from_snapshot(snap)  # check --probe reads the same snapshot the same way


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_first_line_that_is_not_the_requested_header_is_never_pass(where: str) -> None:
    # The warning line is real (tests/data/host/nvidia-smi/inforom-corrupted-warning.txt); its
    # place inside a --query-gpu answer is built here.
    warn = fixture("nvidia-smi", "inforom-corrupted-warning")
    body = smi(gpu(0), gpu(1))
    text = warn.text + body if where == "first" else body + warn.text
    for exit_ in (0, int(warn.meta["exit"])):
        snap = operator_snapshot(nvidia_smi_gpus=rec("nvidia-smi-gpus", text, exit_))
        c = by_id(run(snap))
        assert c["nvml"].level == "unknown" and c["gpus"].level == "unknown", c["nvml"]
        assert c["driver-floor"].level != "pass"
        with pytest.raises(Unavailable):
            host_from_snapshot(snap)
    if where == "first":
        with pytest.raises(hp.ParseError, match="not the requested header"):
            hp.parse_query_csv(text, expect=snapshot.GPU_FIELDS)


def test_header_only_answer_is_not_zero_gpus_that_pass() -> None:
    c = by_id(run(operator_snapshot(nvidia_smi_gpus=SMI_HEADER)))
    assert c["nvml"].level == "unknown" and "no GPU row" in c["nvml"].message


# --------------------------------------------------------------------------- facts that cannot be trusted
HUGE = "999999999999999999999.1.1"


@pytest.mark.parametrize("probe,text", [
    ("nvidia-smi-gpus", smi(gpu(0, HUGE), gpu(1, HUGE))),
    ("module-version", HUGE + "\n"),
    ("proc-version", f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {HUGE}  Wed Jul 24 23:53:00 UTC 2024\n"),
    ("modinfo", HUGE + "\n"),
    ("nvml-library", f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{HUGE}"),
    ("nvidia-smi-gpus", "Failed to initialize NVML: Driver/library version mismatch\n"
                        f"NVML library version: {HUGE}\n"),
])
def test_a_huge_version_is_not_a_driver_anywhere(probe: str, text: str) -> None:
    f = hostfacts.from_snapshot(operator_snapshot(**{probe.replace("-", "_"): rec(probe, text, 0)}))
    seen = [f.driver, f.module_version, f.module_on_disk, f.proc.driver if f.proc else None,
            *(f.nvml_libs or []), *(g.driver for g in f.gpus or []),
            f.nvsmi_error.nvml_version if f.nvsmi_error else None]
    assert HUGE not in seen and not any(v and v.startswith("9999") for v in seen)
    if probe == "nvidia-smi-gpus" and "mismatch" not in text:
        assert "not an NVIDIA driver version" in f.problems["gpus"]


def test_disagreeing_drivers_are_not_pass_in_preflight_nor_in_check() -> None:
    snap = operator_snapshot(nvidia_smi_gpus=smi(gpu(0, "550.107.02"), gpu(1, "575.57.08")))
    r = run(snap)
    c = by_id(r)
    assert (c["nvml"].level, c["module"].level, c["driver-floor"].level) == ("unknown", "unknown", "unknown")
    assert "GPUs report different driver versions (550.107.02, 575.57.08)" in c["driver-floor"].message
    assert r.exit_code == 3
    with pytest.raises(Unavailable, match="GPUs report different drivers"):
        host_from_snapshot(snap)


def test_unreadable_compute_capability_is_unknown_in_preflight() -> None:
    c = by_id(run(operator_snapshot(nvidia_smi_gpus=smi(gpu(0), gpu(1, cc="[N/A]")))))["gpus"]
    assert c.level == "unknown" and "GPU 1" in c.message and "[N/A]" in c.message


# --------------------------------------------------------------------------- mokutil
@pytest.mark.parametrize("case,state,efi,level", [
    ("failed-to-read-setupmode", "read-error", True, "unknown"),
    ("failed-to-read-setupmode", "read-error", False, "unknown"),
    ("cannot-determine", "undetermined", True, "unknown"),
    ("cannot-determine", "undetermined", False, "unknown"),
    ("efi-variables-not-supported", "no-efivars", True, "unknown"),
    ("efi-variables-not-supported", "no-efivars", False, "warn"),
    ("not-supported-cloud-vm", "unsupported", True, "pass"),
    ("disabled", "disabled", True, "pass"),
])
def test_mokutil_answers_are_classified_one_by_one(case: str, state: str, efi: bool, level: str) -> None:
    f = fixture("mokutil", case)
    assert hp.parse_sb_state(f.text).state == state
    c = by_id(run(operator_snapshot(secure_boot=rec("secure-boot", f.text, int(f.meta.get("exit", 0))),
                                    efi="/sys/firmware/efi" if efi else None)))["secure-boot"]
    assert c.level == level, c
    if state in ("read-error", "undetermined"):
        assert f.text.strip().rstrip(".") in c.message  # mokutil's own words, not a guess


# --------------------------------------------------------------------------- platform
def _jetson() -> snapshot.Snapshot:
    uname = fixture("uname", "jetson-igx-orin-l4t-r36").text.split()
    return operator_snapshot(
        kernel=uname[2] + "\n", machine=uname[-2] + "\n",
        proc_version=fixture("proc-driver-version", "open-jetson-aarch64").text,
        nvidia_smi_gpus=rec("nvidia-smi-gpus", None, "missing"),
        nvidia_smi_apps=rec("nvidia-smi-apps", None, "missing"), module_version=None, nvml_library=None,
        modinfo=rec("modinfo", None, 1),
        driver_packages=rec("driver-packages", None, 1, "dpkg-query: no packages found matching nvidia-driver-*"))


def test_a_jetson_host_is_unsupported_and_gets_no_apt_advice() -> None:
    r = run(_jetson())
    c = by_id(r)
    assert c["platform"].level == "fail" and "Jetson/Tegra" in c["platform"].message
    assert "kernel 5.15.136-l4t-r36.3-1009.9+g46cdb595bebc" in c["platform"].message
    assert "35.3.1 for aarch64" in c["platform"].message
    assert r.verdict == "not-ready" and r.target is None
    text = json.dumps(r.to_json())
    assert "nvidia-driver-5" not in text and "apt-get" not in text and "apt-cache" not in text
    p = Project(ROOT)
    for fmt in ("md", "sh"):
        book = runbook.render(runbook.plan(p.matrix("a"), p.host(), hostfacts.from_snapshot(_jetson()), source="t",
                                           today=TODAY), fmt)
        assert "Jetson/Tegra" in book and "nvidia-driver-5" not in book
        assert not any(cmd in book for cmd in ("apt-get", "apt-cache", "apt-mark", "sudo", "reboot"))


def test_an_aarch64_server_is_unsupported_by_this_runbook() -> None:
    c = by_id(run(operator_snapshot(machine="aarch64\n")))["platform"]
    assert c.level == "fail" and "aarch64" in c.message


def test_x86_64_from_the_module_banner_when_uname_m_was_not_captured() -> None:
    c = by_id(run(operator_snapshot(machine=rec("machine", None, "missing"))))["platform"]
    assert c.level == "pass" and "banner" in c.message


# --------------------------------------------------------------------------- output cap
def _fake_smi(bindir: Path, body: str) -> None:
    sh(bindir / "nvidia-smi", body)


def test_a_probe_printing_100_mb_is_cut_and_killed_and_says_so(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.driver import probe

    _fake_smi(tmp_path / "bin", "yes '0, NVIDIA RTX 6000 Ada Generation, 550.107.02, 8.9, 49140, x, y' "
                                "| head -c 100000000\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    t = time.monotonic()
    recd = probe.run_probe(next(p for p in probe.probes() if p.id == "nvidia-smi-gpus"))
    assert time.monotonic() - t < 5
    assert recd.capped and recd.exit is None and len(recd.stdout) <= probe.MAX_OUTPUT
    c = by_id(run(operator_snapshot(nvidia_smi_gpus=recd)))["nvml"]
    assert c.level == "unknown" and "printed more than the probe's output cap" in c.message
    # The whole command, in a real process: bounded time and memory.
    out = tmp_path / "snap.json"
    env = {**{k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"}, "PYTHONPATH": str(ROOT)}
    m = rss.run_builder(["host", "snapshot", str(out)], cwd=ROOT, env=env)
    assert m.returncode == 0, m.stderr
    assert m.seconds < 30 and m.peak_bytes < 150 * 2**20, (m.seconds, m.peak_bytes)
    capped = [p for p in json.loads(out.read_text())["probes"] if p["capped"]]
    assert [p["id"] for p in capped] == ["nvidia-smi-gpus", "nvidia-smi-apps"]


# --------------------------------------------------------------------------- one answer, real commands
def test_check_probe_and_preflight_give_one_answer_on_the_same_host(tmp_path: Path) -> None:
    """A fake nvidia-smi whose GPUs disagree: `host snapshot` + `preflight` and `check --probe`
    run on the same host state and both refuse to trust a driver (exit 3)."""
    rows = smi(gpu(0, "550.107.02"), gpu(1, "575.57.08"))
    _fake_smi(tmp_path / "bin", f"case \"$1\" in --query-gpu=*) printf '%s' '{rows}' ;; "
                                "*) printf 'gpu_uuid, pid, process_name, used_memory [MiB]\\n' ;; esac\n")
    env = {**{k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"},
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}

    def builder(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "builder", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    snap = tmp_path / "s.json"
    assert builder("host", "snapshot", str(snap)).returncode == 0
    pre = builder("preflight", "-m", "a", "--from-snapshot", str(snap), "--json")
    levels = {c["id"]: c["level"] for c in json.loads(pre.stdout)["checks"]}
    assert (levels["nvml"], levels["driver-floor"]) == ("unknown", "unknown")
    # exit 3, or 1 where this machine fails another check (no nvidia module loaded here)
    assert pre.returncode == (1 if "fail" in levels.values() else 3)
    chk = builder("check", "--probe", "--matrix", "a", "--python", "3.12", "--offline",
                  "--cache-dir", str(tmp_path / "c"))
    assert chk.returncode == 3 and "GPUs report different drivers (550.107.02, 575.57.08)" in chk.stderr


def test_unreadable_compute_capability_warns_in_check_and_is_unknown_in_preflight(tmp_path: Path) -> None:
    rows = smi(gpu(0), gpu(1, cc="[N/A]"))
    _fake_smi(tmp_path / "bin", f"case \"$1\" in --query-gpu=*) printf '%s' '{rows}' ;; "
                                "*) printf 'gpu_uuid, pid, process_name, used_memory [MiB]\\n' ;; esac\n")
    cache = tmp_path / "cache"
    shutil.copytree(ROOT / "tests" / "data" / "check-cache" / "matrix-b", cache)
    env = {**{k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"},
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    run_ = lambda *a: subprocess.run([sys.executable, "-m", "builder", *a], cwd=ROOT, env=env,  # noqa: E731
                                     capture_output=True, text=True, timeout=120)
    chk = run_("check", "--probe", "--matrix", "b", "--python", "3.12", "--offline", "--cache-dir", str(cache),
               "--json")
    finding = {f["id"]: f for f in json.loads(chk.stdout)["findings"]}["gpu-arch"]
    assert finding["level"] == "warn" and "could not be read for GPU 1" in finding["message"]
    snap = tmp_path / "s.json"
    assert run_("host", "snapshot", str(snap)).returncode == 0
    pre = json.loads(run_("preflight", "-m", "b", "--from-snapshot", str(snap), "--json").stdout)
    assert {c["id"]: c["level"] for c in pre["checks"]}["gpus"] == "unknown"


def test_ubuntu_drivers_without_the_target_series_names_the_supported_one_it_offers() -> None:
    f = fixture("ubuntu-drivers", "l4-ada-580-595-no-570-575")
    for m, series in (("a", "575"), ("b", "570")):
        c = by_id(run(operator_snapshot(ubuntu_drivers=f.text), m))["driver-package"]
        assert c.level == "warn" and f"does not offer nvidia-driver-{series}" in c.message
        assert "recommends nvidia-driver-595-open" in c.message
        assert "it offers nvidia-driver-580" in c.message and "nvidia-driver-580" in c.next


def test_a_pending_kernel_update_makes_the_outlook_unknown() -> None:
    c = _mismatch(MISMATCH_570, "570.124.06\n", reboot_required="*** System restart required ***\n",
                  reboot_required_pkgs="linux-image-5.15.0-126-generic\n")["module"]
    assert c.level == "fail" and "a kernel update is pending (linux-image-5.15.0-126-generic)" in c.message
    assert c.next.startswith("check `modinfo -k 5.15.0-126-generic -F version nvidia`")
