"""A snapshot captured for real by `builder host snapshot` on a lent GPU host
(1x NVIDIA H200, driver 580.159.04 open kernel module, Ubuntu 24.04, glibc 2.39,
Firecracker VM, no dkms/mokutil/ubuntu-drivers), analysed here with --from-snapshot."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, builder_cmd

SNAP = Path(__file__).parent / "data" / "host" / "snapshots" / "h200-driver-580-ubuntu-24.04.json"


def _preflight(matrix: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = builder_cmd("preflight", "--matrix", matrix, "--from-snapshot", str(SNAP), "--json", cwd=ROOT)
    return r.returncode, json.loads(r.stdout)


def test_preflight_from_real_snapshot_reads_driver_and_gpu() -> None:
    for m in ("A", "B"):
        rc, rep = _preflight(m)
        levels = {c["id"]: c["level"] for c in rep["checks"]}
        assert rep["host"]["driver"] == "580.159.04"
        assert rep["host"]["gpus"][0]["name"] == "NVIDIA H200"
        assert rep["host"]["gpus"][0]["compute_capability"] == "9.0"
        assert rep["host"]["gpus"][0]["memory_mib"] == 143771
        assert levels["nvml"] == levels["module"] == levels["driver-floor"] == "pass"
        # One H200 is not the operator's 2x RTX 6000 Ada: correctly not ready.
        assert levels["gpus"] == "fail" and rc == 1 and rep["verdict"] != "ready"
        # Tools absent there are never reported as passing checks.
        assert levels["dkms"] == "warn" and levels["kernel-headers"] == "warn"


def test_verify_driver_from_real_snapshot() -> None:
    r = builder_cmd("verify-driver", "--matrix", "A", "--from-snapshot", str(SNAP), "--skip-torch", cwd=ROOT)
    assert r.returncode == 1  # the GPU set differs from envs/host.toml
    assert "driver 580.159.04 meets matrix-a's floor 575.57.08" in r.stdout


def test_runbook_never_downgrades_a_driver_that_meets_the_floor() -> None:
    # 580.159.04 already meets A's floor 575.57.08: installing nvidia-driver-575 would be a downgrade.
    for fmt in ("md", "sh"):
        r = builder_cmd("runbook", "--matrix", "A", "--from-snapshot", str(SNAP), "--format", fmt, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert "580.159.04" in r.stdout
        assert "nvidia-driver-575" not in r.stdout.split("no driver change", 1)[-1]
        assert "apt-get install" not in r.stdout and "reboot\n" not in r.stdout



def test_runbook_without_a_driver_reading_takes_envs_host_toml(tmp_path: Path) -> None:
    """The same host with no NVIDIA driver answering: the current driver is envs/host.toml's
    550.107.02, which needs the step-up. A snapshot, not the live host: on a GPU host the live
    runbook rightly reads the real driver."""
    data = json.loads(SNAP.read_text())
    for p in data["probes"]:
        if p["id"] in ("nvidia-smi-gpus", "nvidia-smi-apps", "module-version", "proc-version", "nvml-library"):
            p.update(stdout="", stderr=f"{p['id']}: not found", exit="missing")
    nodriver = tmp_path / "no-driver.json"
    nodriver.write_text(json.dumps(data))
    r = builder_cmd("runbook", "--matrix", "A", "--from-snapshot", str(nodriver), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "current 550.107.02 -> target 575.x" in r.stdout and "Values from: envs/host.toml." in r.stdout
    assert "Rollback: `nvidia-driver-550`." in r.stdout and "sudo apt-get install -y nvidia-driver-575" in r.stdout


def test_host_facts_are_built_once_and_frozen() -> None:
    """The probe's facts are one frozen, keyword-only value: nothing fills them in afterwards."""
    import dataclasses

    import pytest

    from builder.driver import facts as hostfacts
    from builder.driver import snapshot

    f = hostfacts.from_snapshot(snapshot.load(SNAP))
    assert f.driver == "580.159.04" and f.gpus is not None and f.gpus[0].name == "NVIDIA H200"
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.glibc = "2.35"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hostfacts.HostFacts("snapshot")  # type: ignore[misc]  # keyword-only
    sequences = {k: v for k, v in vars(f).items() if isinstance(v, (list, tuple))}
    assert sequences and all(isinstance(v, tuple) for v in sequences.values()), sequences
    # Options on top are new facts; the probed ones stay as they were.
    g = f.overridden(driver="575.57.08", glibc="2.35", origin="snapshot + options")
    assert (g.driver, g.glibc, g.origin, f.driver, f.glibc, f.origin) == (
        "575.57.08", "2.35", "snapshot + options", "580.159.04", "2.39", "snapshot")
