"""Post-reboot verification: decisions, the runtime torch probe (real child), CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.driver import facts as hostfacts
from builder.driver import snapshot
from builder.driver import verify as verify_driver
from builder.driver.snapshot import ProbeRecord
from builder.ops import driver as hostops
from builder.project import Project
from tests.helpers import manifests
from tests.test_host import fake_nvidia_smi, script
from tests.test_hostparse import fixture
from tests.test_preflight import ROOT, operator_snapshot, rec

NEW = "575.57.08"
RT = "matrix-a-py312-0123456789ab"
TORCH_OK = {"torch": "2.9.0+cu128", "cuda": "12.8", "available": True, "count": 2,
            "devices": [{"name": "NVIDIA RTX 6000 Ada Generation", "capability": "8.9"}] * 2}


def torch_rec(data: dict[str, object] | None, name: str = RT, exit_: int | None = 0,
              timed_out: bool = False, err: str = "") -> ProbeRecord:
    return ProbeRecord(f"torch:{name}", "command", (f"runtimes/{name}/bin/python", "-c", "..."), None,
                       json.dumps(data) + "\n" if data is not None else "", err, exit_, 1.5, timed_out)


def after_reboot(*torch: ProbeRecord, **override: ProbeRecord | str | None) -> snapshot.Snapshot:
    """The operator's host after a good step-up to 575.57.08 (synthetic, see test_preflight)."""
    new: dict[str, ProbeRecord | str | None] = {
        "nvidia_smi_gpus": operator_snapshot().records["nvidia-smi-gpus"].stdout.replace("550.107.02", NEW),
        "module_version": NEW + "\n",
        "proc_version": f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {NEW}  Tue May 27 02:30:31 UTC 2025\n",
        "nvml_library": f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{NEW}",
    }
    base = operator_snapshot(**{**new, **override})
    return snapshot.make([*base.records.values(), *torch], source="test")


def evaluate(snap: snapshot.Snapshot, m: str = "a", **kw: bool) -> verify_driver.Report:
    p = Project(ROOT)
    facts = hostfacts.from_snapshot(snap)
    return verify_driver.evaluate(facts, p.matrix(m), p.host(), torch=hostops.torch_results(facts, m), **kw)


def levels(r: verify_driver.Report) -> dict[str, str]:
    return {c.id: c.level for c in r.checks}


def test_good_upgrade_is_verified() -> None:
    r = evaluate(after_reboot(torch_rec(TORCH_OK)))
    assert levels(r) == {"nvml": "pass", "module": "pass", "driver-floor": "pass", "gpus": "pass",
                         f"torch:{RT}": "pass"}
    assert r.verdict == "verified" and r.exit_code == 0
    assert "sees all 2 GPU(s), capability 8.9" in r.checks[-1].message


def test_still_on_550_fails_the_floor() -> None:
    r = evaluate(snapshot.make([*operator_snapshot().records.values(), torch_rec(TORCH_OK)]))
    assert levels(r)["driver-floor"] == "fail" and r.exit_code == 1
    assert "550.107.02 is below matrix-a's floor 575.57.08" in r.checks[2].message
    # The same host meets Matrix B? No: 550 < 570.26 too.
    assert levels(evaluate(snapshot.make(operator_snapshot().records.values()), "b"))["driver-floor"] == "fail"


def test_mismatch_after_install_without_reboot_fails() -> None:
    text = fixture("nvidia-smi", "mismatch-two-line-570").text
    r = evaluate(after_reboot(torch_rec(TORCH_OK), nvidia_smi_gpus=rec("nvidia-smi-gpus", text, 18),
                              module_version="550.107.02\n"))
    assert levels(r)["nvml"] == "fail" and levels(r)["module"] == "fail"
    assert r.verdict == "not-verified"


def test_no_runtime_is_unknown_never_pass() -> None:
    r = evaluate(after_reboot())
    assert levels(r)["torch"] == "unknown" and r.exit_code == 3
    assert "no torch probe" in r.checks[-1].message
    r = evaluate(after_reboot(), skip_torch=True)
    assert levels(r)["torch"] == "warn" and r.exit_code == 0


@pytest.mark.parametrize("record,level,words", [
    (torch_rec({**TORCH_OK, "count": 1, "devices": TORCH_OK["devices"][:1]}), "fail", "torch sees 1 GPU(s)"),  # type: ignore[index]
    (torch_rec({**TORCH_OK, "available": False, "count": 0, "devices": []}), "fail", "is_available() is False"),
    (torch_rec(None, exit_=1, err="ImportError: libcudart.so.13: cannot open shared object file"), "fail",
     "exit 1"),
    (torch_rec(None, exit_=None, timed_out=True), "unknown", "killed"),
    (torch_rec({**TORCH_OK, "devices": [{"name": "x", "capability": "8.6"}] * 2}), "fail", "capabilities"),
])
def test_torch_failures(record: ProbeRecord, level: str, words: str) -> None:
    r = evaluate(after_reboot(record))
    c = r.checks[-1]
    assert (c.id, c.level) == (f"torch:{RT}", level) and words in c.message


def test_only_this_matrix_runtimes_count() -> None:
    r = evaluate(after_reboot(torch_rec(TORCH_OK), torch_rec({**TORCH_OK, "count": 0}, "matrix-b-py312-ffffffffffff")))
    assert [c.id for c in r.checks if c.id.startswith("torch")] == [f"torch:{RT}"]


# --------------------------------------------------------------------------- live torch probe
@pytest.fixture
def proj(tmp_path: Path) -> Project:
    """A throwaway project (envs copied) so runtimes/ is ours alone."""
    shutil.copytree(ROOT / "envs", tmp_path / "envs")
    return Project(tmp_path)


def fake_runtime(proj: Project, name: str = RT, root: Path | None = None) -> Path:
    # Answers like torch on the operator's host; hides GPUs if CUDA_VISIBLE_DEVICES leaks through.
    d = (root or proj.runtimes) / name
    d.mkdir(parents=True)
    manifests.write_built(d)
    script(d / "bin", "python", f"""
[ "$1" = "-c" ] || exit 64
if [ -n "${{CUDA_VISIBLE_DEVICES+x}}" ]; then echo '{json.dumps({**TORCH_OK, "count": 1})}'; exit 0; fi
echo '{json.dumps(TORCH_OK)}'
""")
    return d


def test_live_torch_probe_runs_the_runtime_python(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_runtime(proj)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # must not hide a GPU from the check
    r = hostops.run_verify(proj, "a")
    (c,) = [c for c in r.checks if c.id.startswith("torch")]
    assert (c.id, c.level) == (f"torch:{RT}", "pass"), c


def test_live_without_runtime_says_so(proj: Project) -> None:
    r = hostops.run_verify(proj, "a")
    (c,) = [c for c in r.checks if c.id.startswith("torch")]
    assert c.level == "unknown" and "no runtime of matrix-a (any Python, any base)" in c.message


def test_verify_finds_conda_runtimes_and_runtimes_under_another_root(
        proj: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conda_rt = "matrix-a-py312-conda-abcdefabcdef"
    fake_runtime(proj, conda_rt)
    fake_runtime(proj, "matrix-b-py312-conda-abcdefabcdef")  # another matrix: not checked
    r = hostops.run_verify(proj, "a")
    assert [(c.id, c.level) for c in r.checks if c.id.startswith("torch")] == [(f"torch:{conda_rt}", "pass")]
    other = tmp_path / "elsewhere"
    fake_runtime(proj, RT, root=other)
    r = hostops.run_verify(proj, "a", root=str(other))
    assert [(c.id, c.level) for c in r.checks if c.id.startswith("torch")] == [(f"torch:{RT}", "pass")]
    monkeypatch.setenv("BUILDER_RUNTIMES", str(other))
    res = CliRunner().invoke(main, ["--project", str(proj.root), "verify-driver", "-m", "a", "--json"])
    ids = [c["id"] for c in json.loads(res.output)["checks"] if c["id"].startswith("torch")]
    assert ids == [f"torch:{RT}"], res.output


def test_cli_verify_json(proj: Project, tmp_path: Path) -> None:
    snap = tmp_path / "after.json"
    snap.write_text(snapshot.render(after_reboot(torch_rec(TORCH_OK))))
    res = CliRunner().invoke(main, ["--project", str(proj.root), "verify-driver", "-m", "A",
                                    "--from-snapshot", str(snap), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["verdict"] == "verified" and data["host"]["driver"] == NEW
    res = CliRunner().invoke(main, ["--project", str(proj.root), "verify-driver", "-m", "a",
                                    "--from-snapshot", str(snap), "--skip-torch"])
    assert res.exit_code == 0 and "torch GPU visibility not checked (--skip-torch)" in res.output


def test_fake_tools_helper_is_importable(tmp_path: Path) -> None:
    fake_nvidia_smi(tmp_path)
    assert (tmp_path / "nvidia-smi").exists()
