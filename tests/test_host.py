"""The probe run layer: real child processes, hard bounds, read-only allowlist."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from builder import _proc
from builder.driver import facts as hostfacts
from builder.driver import probe as host
from builder.driver import snapshot
from tests.helpers.scripts import sh

SMI_GPUS = ("index, name, driver_version, compute_cap, memory.total [MiB], pci.bus_id, uuid\n"
            "0, NVIDIA RTX 6000 Ada Generation, 550.107.02, 8.9, 49140, 00000000:01:00.0, GPU-aaaa\n"
            "1, NVIDIA RTX 6000 Ada Generation, 550.107.02, 8.9, 49140, 00000000:41:00.0, GPU-bbbb\n")


def script(d: Path, name: str, body: str) -> Path:
    return sh(d / name, body)


def fake_nvidia_smi(bindir: Path) -> None:
    """A fake nvidia-smi answering builder's two queries like driver 550 on 2 GPUs."""
    script(bindir, "nvidia-smi", f"""
case "$1" in
  --query-gpu=*) printf '%s' '{SMI_GPUS}' ;;
  --query-compute-apps=*) printf 'gpu_uuid, pid, process_name, used_memory [MiB]\\n'
                          printf 'GPU-aaaa, 4242, /opt/conda/envs/QL_1/bin/python, 40000\\n' ;;
  *) echo "unexpected: $*" >&2; exit 9 ;;
esac
""")


@pytest.fixture
def fakebin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


def probe(pid: str) -> host.Probe:
    return next(p for p in host.probes() if p.id == pid)


def test_live_path_with_a_fake_nvidia_smi(fakebin: Path) -> None:
    fake_nvidia_smi(fakebin)
    recs = [host.run_probe(probe("nvidia-smi-gpus")), host.run_probe(probe("nvidia-smi-apps"))]
    assert all(r.ok for r in recs)
    assert recs[0].command is not None and recs[0].command[1].startswith("--query-gpu=index,name,driver_version")
    facts = hostfacts.from_snapshot(snapshot.make(recs))
    assert facts.driver == "550.107.02"
    assert [g.compute_capability for g in facts.gpus or []] == ["8.9", "8.9"]
    assert facts.apps is not None and facts.apps[0].pid == 4242


def test_nvidia_smi_runs_with_c_locale_and_scrubbed_env(fakebin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    script(fakebin, "nvidia-smi", 'echo "LC_ALL=$LC_ALL PYTHONPATH=${PYTHONPATH:-unset}"\n')
    r = host.run_probe(probe("nvidia-smi-gpus"))
    assert r.stdout.strip() == "LC_ALL=C PYTHONPATH=unset"


def test_missing_tool_and_failing_tool_are_recorded_not_raised(fakebin: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fakebin))  # nothing else on PATH
    r = host.run_probe(probe("dkms"))
    assert (r.exit, r.ok, r.missing) == ("missing", False, True)
    script(fakebin, "mokutil", 'echo "EFI variables are not supported on this system" >&2; exit 1\n')
    r = host.run_probe(probe("secure-boot"))
    assert (r.exit, r.stderr.strip()) == (1, "EFI variables are not supported on this system")


def test_stuck_child_ignoring_sigterm_is_killed_within_its_bound(fakebin: Path) -> None:
    # Ignores SIGTERM and keeps sleeping: only the group SIGKILL ends it.
    script(fakebin, "nvidia-smi", "trap '' TERM\nwhile :; do sleep 1; done\n")
    p = host.Probe("nvidia-smi-gpus", "command", probe("nvidia-smi-gpus").argv, timeout=1.0)
    start = time.monotonic()
    r = host.run_probe(p)
    took = time.monotonic() - start
    assert r.timed_out and r.exit is None
    assert took < 1.0 + _proc.TERM_GRACE + _proc.KILL_GRACE + 1.0


def test_unreapable_child_is_abandoned_within_its_bound(fakebin: Path, tmp_path: Path) -> None:
    # A grandchild in its own session keeps the pipes open after the group is
    # killed, as a process in uninterruptible sleep would: builder stops waiting.
    pidfile = tmp_path / "grandchild.pid"
    script(fakebin, "nvidia-smi", f"trap '' TERM\nsetsid sleep 30 &\necho $! > {pidfile}\nsleep 30\n")
    p = host.Probe("nvidia-smi-gpus", "command", probe("nvidia-smi-gpus").argv, timeout=1.0)
    start = time.monotonic()
    try:
        r = host.run_probe(p)
        took = time.monotonic() - start
        assert r.timed_out and r.exit is None
        assert took < 1.0 + _proc.TERM_GRACE + _proc.KILL_GRACE + 1.0
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_file_probe_reads_through_a_bounded_child_and_reports_absence() -> None:
    r = host.run_probe(probe("os-release"))
    assert r.ok and r.command == ("cat", "--", "/etc/os-release") and "ID=" in r.stdout
    r = host.run_probe(host.Probe("module-version", "file", path="/sys/module/nvidia-not-here/version"))
    assert (r.exit, r.command) == ("missing", None)


def test_path_probe_glob() -> None:
    r = host.run_probe(host.Probe("x", "path", path="/etc/os-rel*"))
    assert r.ok and r.stdout == "/etc/os-release"
    assert host.run_probe(host.Probe("x", "path", path="/nonexistent/*.so")).exit == "missing"


# --------------------------------------------------------------------------- read-only guarantee
def test_every_probe_is_on_the_allowlist() -> None:
    for p in host.probes():
        if p.kind == "command":
            assert host.allowed(p.argv), p
        elif p.kind == "file":
            assert host.allowed(("cat", "--", p.path)), p


@pytest.mark.parametrize("argv", [
    ("apt-get", "install", "-y", "nvidia-driver-575"),
    ("apt", "install", "nvidia-driver-575"),
    ("sudo", "apt-get", "update"),
    ("dkms", "install", "nvidia/575.57.08"),
    ("dkms", "remove", "nvidia/550.107.02", "--all"),
    ("mokutil", "--import", "/var/lib/shim-signed/mok/MOK.der"),
    ("mokutil", "--disable-validation"),
    ("modprobe", "nvidia"),
    ("rmmod", "nvidia"),
    ("reboot",),
    ("systemctl", "reboot"),
    ("shutdown", "-r", "now"),
    ("apt-mark", "unhold", "nvidia-driver-550"),
    ("ubuntu-drivers", "install"),
    ("ubuntu-drivers", "autoinstall"),
    ("sh", "-c", "reboot"),
    ("nvidia-smi", "-r"),
    ("nvidia-smi", "-pm", "1"),
    ("cat", "--", "/home/operator/.ssh/id_rsa"),
    ("cat", "--", "/etc/shadow"),
    ("cat", "/etc/os-release"),
    ("/tmp/x/runtimes/matrix-a-py312-abc/bin/python", "-c", "import os; os.system('reboot')"),
])
def test_host_changing_commands_are_refused_before_running(argv: tuple[str, ...], fakebin: Path,
                                                           tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for name in ("apt-get", "apt", "sudo", "dkms", "mokutil", "modprobe", "rmmod", "reboot", "systemctl",
                 "shutdown", "apt-mark", "ubuntu-drivers", "nvidia-smi"):
        script(fakebin, name, f"touch {marker}\n")
    assert not host.allowed(argv)
    with pytest.raises(host.Refused):
        host.run_argv("x", argv, timeout=5)
    assert not marker.exists()


def test_runtime_python_may_only_run_the_torch_check(tmp_path: Path) -> None:
    py = tmp_path / "anywhere" / "matrix-a-py312-conda-0123456789ab" / "bin" / "python"
    assert host.allowed((str(py), "-c", host.TORCH_CODE))
    assert not host.allowed((str(py), "-c", "import os; os.system('reboot')"))
    assert not host.allowed((str(py), "-m", "pip", "install", "x"))
    assert not host.allowed(("bin/python", "-c", host.TORCH_CODE))  # relative: not one the layout found
    assert not host.allowed((str(tmp_path / "bin" / "python3"), "-c", host.TORCH_CODE))


def test_record_json_round_trip() -> None:
    r = snapshot.ProbeRecord("dkms", "command", ("dkms", "status"), None, "out", "err", "missing", 0.0)
    assert snapshot.ProbeRecord.from_json(r.to_json()) == r
    with pytest.raises(ValueError, match="exit must be"):
        snapshot.ProbeRecord.from_json({**r.to_json(), "exit": "boom"})


def test_a_hung_driver_costs_one_bound_not_one_per_probe(fakebin: Path) -> None:
    script(fakebin, "nvidia-smi", "trap '' TERM\nwhile :; do sleep 1; done\n")
    only = [host.Probe(p.id, p.kind, p.argv, p.path, timeout=1.0)
            for p in host.probes() if p.id in ("nvidia-smi-gpus", "nvidia-smi-apps")]
    start = time.monotonic()
    recs = host.capture(only=only)
    took = time.monotonic() - start
    assert [r.timed_out for r in recs] == [True, True]
    assert "not run" in recs[1].stderr and recs[1].duration == 0.0
    assert took < 1.0 + _proc.TERM_GRACE + _proc.KILL_GRACE + 1.0
    facts = hostfacts.from_snapshot(snapshot.make(recs))
    assert facts.gpus is None and "gpus" in facts.problems  # unknown, never OK
