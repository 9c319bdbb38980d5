"""Driver-branch advice tells the whole truth (issue 11 point 6), and snapshots of the
previous format still load (format 1 -> 2).

Matrix B declares the 570 series and its runbook keeps it; preflight and runbook
also say that B's lock has a native floor above 570 (taken from the checker, offline
from a warm check cache: tests/data/check-cache/matrix-b, real wheel facts read from
PyPI), that R570 reached end of life in February 2026 (judged against "today"), and
that R580 (long-term support) meets every floor.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.driver import branches, preflight, runbook, snapshot
from builder.driver import facts as hostfacts
from builder.ops import lockfloor
from builder.project import Project
from tests.test_preflight import ROOT, TODAY, by_id, operator_snapshot

CACHE = ROOT / "tests" / "data" / "check-cache" / "matrix-b"
REAL = ROOT / "tests" / "data" / "host" / "snapshots" / "h200-driver-580-ubuntu-24.04.json"


@pytest.fixture
def warm(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    shutil.copytree(CACHE, d)
    return d


def test_lock_floor_of_matrix_b_comes_from_the_checker_offline(warm: Path, tmp_path: Path) -> None:
    p = Project(ROOT)
    lf = lockfloor.lock_floor(p, p.matrix("b"), cache_dir=warm)
    assert lf is not None and lf.exact
    assert (lf.driver, lf.what) == ("575.57.08", "vllm 0.13.0 build toolkit 12.9.86 (CUDA 12.9 Update 1)")
    assert lf.lock.startswith("locks/matrix-b/pylock.py3") and "offline from its cache" in lf.source
    # Cold cache, no network: a lower bound from data, named as such.
    cold = lockfloor.lock_floor(p, p.matrix("b"), cache_dir=tmp_path / "cold")
    assert cold is not None and not cold.exact
    assert cold.driver == "570.124.06" and "of CUDA 12.8 Update 1" in cold.what  # cudart or cuBLAS of 12.8 U1
    assert cold.phrase().startswith("a native floor of at least 570.124.06 (set by nvidia-")
    assert "a lower bound from the lock's CUDA packages" in cold.phrase()
    assert "builder check --matrix b" in cold.source


def _b(lf: branches.LockFloor | None, **over: object) -> preflight.Report:
    p = Project(ROOT)
    return preflight.evaluate(hostfacts.from_snapshot(operator_snapshot(**over)), p.matrix("b"), p.host(),  # type: ignore[arg-type]
                              lock_floor=lf, today=TODAY)


def test_preflight_for_matrix_b_tells_the_whole_truth(warm: Path) -> None:
    p = Project(ROOT)
    lf = lockfloor.lock_floor(p, p.matrix("b"), cache_dir=warm)
    r = _b(lf)
    c = by_id(r)["driver-floor"]
    assert c.level == "warn" and "target 570.x" in c.message and "install nvidia-driver-570" in c.message
    for words in ("R570 reached end of life in February 2026",
                  "matrix-b's lock has a native floor of 575.57.08 (set by vllm 0.13.0 build toolkit 12.9.86",
                  "the 570 series runs it only under minor-version compatibility",
                  "R580 (long-term support until June 2028) meets every floor"):
        assert words in c.message, words
    t = r.to_json()["target"]
    assert (t["series"], t["status"], t["lock_floor"]["driver"], t["today"]) == (570, "eol", "575.57.08",
                                                                                "2026-11-30")
    # On a 570 driver the declared floor is met, but the lock runs only under compatibility: not a plain pass.
    on570 = by_id(_b(lf, nvidia_smi_gpus=operator_snapshot().records["nvidia-smi-gpus"].stdout.replace(
        "550.107.02", "570.133.20"), module_version="570.133.20\n", proc_version=None, nvml_library=None,
        modinfo="570.133.20\n"))["driver-floor"]
    assert on570.level == "warn" and "meets matrix-b's declared floor 570.26" in on570.message
    assert "driver 570.133.20 runs it only under minor-version compatibility" in on570.message
    # Before R570's end of life the same advice says nothing about it.
    early = preflight.evaluate(hostfacts.from_snapshot(operator_snapshot()), p.matrix("b"), p.host(),
                               lock_floor=lf, today=datetime.date(2025, 12, 30))
    assert "end of life" not in by_id(early)["driver-floor"].message.split("R575")[0]


def test_runbook_for_matrix_b_keeps_570_and_says_why_it_is_not_enough(warm: Path) -> None:
    p = Project(ROOT)
    lf = lockfloor.lock_floor(p, p.matrix("b"), cache_dir=warm)
    md = runbook.render(runbook.plan(p.matrix("b"), p.host(), hostfacts.from_snapshot(operator_snapshot()),
                                     source="t", lock_floor=lf, today=TODAY), "md")
    assert "**current 550.107.02 -> target 570.x** (`nvidia-driver-570`" in md
    assert "sudo apt-get install -y nvidia-driver-570" in md
    assert "R570 reached end of life in February 2026" in md
    assert "matrix-b's lock has a native floor of 575.57.08" in md
    assert "R580 (long-term support until June 2028) meets every floor" in md


def test_matrix_a_whose_lock_floor_is_its_declared_floor(warm: Path) -> None:
    p = Project(ROOT)
    lf = branches.LockFloor("575.57.08", "vllm 0.13.0 build toolkit 12.9.86", "locks/matrix-a/x", "test")
    t = branches.driver_target(p.matrix("a").driver_floor, today=TODAY, lock_floor=lf, matrix="matrix-a")
    assert not t.native_above_floor and "runs it only under" not in t.note()
    assert "R580 (long-term support until June 2028) meets every floor" in t.note()


def test_cli_preflight_and_runbook_use_the_cache(warm: Path, tmp_path: Path) -> None:
    snap = tmp_path / "s.json"
    snap.write_text(snapshot.render(operator_snapshot()))
    env = {**{k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"}, "BUILDER_CACHE_DIR": str(warm)}
    r = subprocess.run([sys.executable, "-m", "builder", "preflight", "-m", "b", "--from-snapshot", str(snap),
                        "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    note = json.loads(r.stdout)["target"]["note"]
    # Date-independent words only: the real "today" decides the rest.
    assert "R570 reached end of life in February 2026" in note and "native floor of 575.57.08" in note
    r = subprocess.run([sys.executable, "-m", "builder", "runbook", "-m", "b", "--from-snapshot", str(snap)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "target 570.x" in r.stdout and "native floor of 575.57.08" in r.stdout


# --------------------------------------------------------------------------- snapshot format 1
#: What builder's previous version (format 1, before this change) said for the real H200 snapshot,
#: recorded by running that version's `builder preflight --from-snapshot` for A and B.
BEFORE = {"nvml": "pass", "module": "pass", "driver-floor": "pass", "driver-package": "pass", "gpus": "fail",
          "secure-boot": "pass", "kernel-headers": "warn", "dkms": "warn", "gpu-processes": "pass",
          "pending-reboot": "pass", "disk": "pass", "held-packages": "pass", "os": "warn", "glibc": "warn"}


@pytest.mark.parametrize("m", ["a", "b"])
def test_a_format_1_snapshot_gives_the_same_preflight(m: str) -> None:
    snap = snapshot.load(REAL)
    assert snap.version == 1 and "modinfo" not in snap.records and "machine" not in snap.records
    p = Project(ROOT)
    r = preflight.evaluate(hostfacts.from_snapshot(snap), p.matrix(m), p.host(), today=TODAY)
    now = {c.id: c.level for c in r.checks}
    # New check: the platform, read from the module banner ("Open Kernel Module for x86_64").
    assert now.pop("platform") == "pass"
    # Changed on purpose: no mokutil and no /sys/firmware/efi was "pass" (legacy BIOS); a missing
    # mokutil is now unknown whatever /sys/firmware/efi says (a container hides it).
    assert now.pop("secure-boot") == "unknown" and BEFORE["secure-boot"] == "pass"
    assert now == {k: v for k, v in BEFORE.items() if k != "secure-boot"}
    assert r.verdict == "not-ready"


def test_format_1_snapshot_without_the_new_probes_never_passes_on_them(tmp_path: Path) -> None:
    data = json.loads(REAL.read_text())
    data["probes"] = [p for p in data["probes"] if p["id"] != "proc-version"]  # no banner, no uname -m
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(data))
    p = Project(ROOT)
    r = preflight.evaluate(hostfacts.from_snapshot(snapshot.load(path)), p.matrix("a"), p.host(), today=TODAY)
    c = by_id(r)["platform"]
    assert c.level == "unknown" and "not captured in this snapshot" in c.message


REAL2 = ROOT / "tests" / "data" / "host" / "snapshots" / "h200-driver-580-ubuntu-24.04-format2.json"


def test_a_real_format_2_snapshot(warm: Path) -> None:
    """Taken on a lent H200 by this branch's `builder host snapshot` (uname -m answered; modinfo is
    not installed there; no mokutil, no /sys/firmware/efi)."""
    snap = snapshot.load(REAL2)
    assert snap.version == 2 and snap.records["machine"].stdout == "x86_64\n"
    assert snap.records["modinfo"].missing and not any(r.capped for r in snap.records.values())
    p = Project(ROOT)
    lf = lockfloor.lock_floor(p, p.matrix("b"), cache_dir=warm)
    r = preflight.evaluate(hostfacts.from_snapshot(snap), p.matrix("b"), p.host(), lock_floor=lf, today=TODAY)
    c = by_id(r)
    assert c["platform"].message == "x86_64 (uname -m)" and c["module"].level == "pass"
    assert c["driver-floor"].level == "pass"  # 580.159.04 meets the declared and the native floor
    assert {k: v.level for k, v in c.items() if k not in ("platform",)} == {
        **{k: v for k, v in BEFORE.items()}, "secure-boot": "unknown"}
