"""Host snapshots: atomic, readable, secrets-free JSON that loads back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from builder.driver import probe as host
from builder.driver import snapshot
from builder.errors import EXIT_USAGE, UsageError
from tests.test_host import fake_nvidia_smi, script
from tests.test_preflight import ROOT, operator_snapshot

SECRET = "hunter2-s3cr3t-token-value"


@pytest.fixture
def fakehost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with fake read-only tools of a driver-550 host, and a secret in the environment."""
    d = tmp_path / "bin"
    fake_nvidia_smi(d)
    script(d, "dkms", "echo 'nvidia/550.107.02, 5.15.0-119-generic, x86_64: installed'\n")
    script(d, "mokutil", "echo 'SecureBoot disabled'\n")
    script(d, "ubuntu-drivers", "echo '== /sys/devices/pci0000:00/0000:01:00.0 =='\n"
                                "echo 'driver   : nvidia-driver-575 - distro non-free recommended'\n")
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return d


def test_capture_write_load_round_trip(fakehost: Path, tmp_path: Path) -> None:
    snap = snapshot.make(host.capture())
    path = tmp_path / "snap.json"
    path.write_text(snapshot.render(snap))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".snap.json")] == []  # no temp left
    back = snapshot.load(path)
    assert back.records == snap.records
    assert back.created == snap.created and back.created.endswith("Z")
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == ("builder-host-snapshot", 2)
    gpus = next(p for p in data["probes"] if p["id"] == "nvidia-smi-gpus")
    assert set(gpus) >= {"command", "path", "stdout", "stderr", "exit", "duration", "timed_out"}
    assert gpus["exit"] == 0 and "RTX 6000 Ada" in gpus["stdout"]
    assert {p["id"] for p in data["probes"]} == {p.id for p in host.probes()}


def test_snapshot_is_secrets_free(fakehost: Path, tmp_path: Path) -> None:
    path = tmp_path / "snap.json"
    path.write_text(snapshot.render(snapshot.make(host.capture())))
    text = path.read_text()
    assert SECRET not in text
    assert "HF_TOKEN" not in text and "PATH" not in text
    name = socket.gethostname()
    if len(name) >= 6:  # a two-letter hostname would match unrelated text
        assert name not in text
    assert str(fakehost) not in text  # argv as builder passed it, not resolved tool paths
    data = json.loads(text)
    # Nothing but the probes and when/with what they were taken.
    assert set(data) == {"format", "version", "created", "builder", "probes"}
    assert all(set(p) == {"id", "kind", "command", "path", "stdout", "stderr", "exit", "duration",
                          "timed_out", "capped"} for p in data["probes"])


def test_torch_probes_of_runtimes_are_captured(fakehost: Path, tmp_path: Path) -> None:
    rt = tmp_path / "runtimes" / "matrix-a-py312-0123456789ab"
    script(rt / "bin", "python", "echo '{\"torch\": \"2.9.0+cu128\", \"count\": 2}'\n")
    snap = snapshot.make(host.capture([rt]))
    t = snap.records["torch:matrix-a-py312-0123456789ab"]
    assert t.ok and '"count": 2' in t.stdout


@pytest.mark.parametrize("content,words", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not a builder host snapshot"),
    ('{"format": "builder-host-snapshot", "version": 99, "probes": []}', "version 99 is not supported"),
    ('{"format": "builder-host-snapshot", "version": 1, "probes": {}}', '"probes" must be a list'),
    ('{"format": "builder-host-snapshot", "version": 1, "probes": [{"kind": "command"}]}', "probes[0] is invalid"),
])
def test_bad_snapshot_files_are_usage_errors(tmp_path: Path, content: str, words: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(UsageError, match=words.replace("[", r"\[").replace("]", r"\]")) as exc:
        snapshot.load(p)
    assert exc.value.exit_code == EXIT_USAGE
    with pytest.raises(UsageError, match="not found"):
        snapshot.load(tmp_path / "missing.json")


def test_cli_snapshot_then_preflight_elsewhere(fakehost: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu-host.json"
    env = {k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"}
    r = subprocess.run([sys.executable, "-m", "builder", "host", "snapshot", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "nvidia-smi-gpus: ok" in r.stderr
    # Analyse it "anywhere": no fake tools on PATH this time.
    env["PATH"] = os.defpath
    r = subprocess.run([sys.executable, "-m", "builder", "preflight", "-m", "a", "--from-snapshot", str(out),
                        "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    data = json.loads(r.stdout)
    assert data["host"]["driver"] == "550.107.02"
    assert data["source"].startswith(f"snapshot {out}")


def test_operator_snapshot_helper_round_trips(tmp_path: Path) -> None:
    p = tmp_path / "op.json"
    p.write_text(snapshot.render(operator_snapshot()))
    assert snapshot.load(p).records == operator_snapshot().records


def test_unwritable_snapshot_path_is_a_usage_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from builder.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    res = CliRunner().invoke(main, ["host", "snapshot", str(blocker / "snap.json")])
    assert res.exit_code == EXIT_USAGE
    assert "cannot write" in res.output and "Traceback" not in res.output
