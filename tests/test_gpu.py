"""Tests that need a real NVIDIA GPU and driver (marker ``gpu``; deselected by default).

Run on a GPU host whose python has torch:  pytest -m gpu tests/test_gpu.py
They drive the real CLI against the real driver: host probes, `check --probe`,
`doctor` and the smoke GPU steps (CUDA available, arch list, cuBLAS GEMM).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from builder.driver import facts as hostfacts
from builder.driver import snapshot
from tests.conftest import ROOT, builder_cmd
from tests.helpers import needs

pytestmark = pytest.mark.gpu


def test_snapshot_reads_the_real_driver_and_gpus(tmp_path: Path) -> None:
    out = tmp_path / "host.json"
    r = builder_cmd("host", "snapshot", str(out), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    facts = hostfacts.from_snapshot(snapshot.load(out))
    assert facts.nvsmi_error is None
    assert facts.gpus, facts.problems
    assert facts.driver and facts.driver.count(".") >= 1
    for g in facts.gpus:
        assert g.compute_capability and g.memory_mib
    assert facts.module_version == facts.driver  # no mismatch state on a healthy host


def test_check_probe_uses_the_live_driver() -> None:
    r = builder_cmd("check", "--probe", "--matrix", "B", "--python", "3.12", "--json", cwd=ROOT)
    assert r.returncode in (0, 1, 3), r.stderr
    if r.returncode == 3:
        pytest.skip("wheel facts not cached and no network: " + r.stderr.strip())
    report = json.loads(r.stdout)
    assert report["driver"]["host"] and "nvidia-smi" in report["driver"]["host_origin"], report["driver"]


def test_smoke_gpu_steps_pass_on_this_python() -> None:
    needs.torch()
    r = builder_cmd("smoke", "--env", sys.executable, "--gpu", "--json", cwd=ROOT, timeout=600)
    report = json.loads(r.stdout)[0]
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["torch.cuda.is_available()"]["status"] == "pass", steps
    gpu_steps = [s for name, s in steps.items() if name.startswith(("GEMM", "arch"))]
    assert gpu_steps and all(s["status"] == "pass" for s in gpu_steps), gpu_steps


def test_doctor_reads_torch_cuda_identity() -> None:
    needs.torch()
    r = builder_cmd("doctor", "--python", sys.executable, "--json", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["torch"]["installed"]
    assert rep["torch"].get("cuda") or rep["torch"].get("version_cuda"), rep["torch"]
