"""The runbook (Markdown and shell), and the proof that builder itself never
runs apt, dkms changes, mokutil changes, modprobe or reboot."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder import _proc
from builder.cli import main
from builder.driver import facts as hostfacts
from builder.driver import probe as host
from builder.driver import runbook, snapshot
from builder.project import Project
from tests.helpers import manifests
from tests.test_host import fake_nvidia_smi, script
from tests.test_preflight import ROOT, TODAY, operator_snapshot

BUILDER = ROOT / "builder"


def render(fmt: str = "md", m: str = "a", **override: str | None) -> str:
    p = Project(ROOT)
    facts = hostfacts.from_snapshot(operator_snapshot(**override))
    return runbook.render(runbook.plan(p.matrix(m), p.host(), facts, source="snapshot test.json", today=TODAY), fmt)


def sections(md: str) -> dict[str, str]:
    """Markdown ``## N. Title`` sections by title."""
    parts = re.split(r"^## \d+\. ", md, flags=re.M)[1:]
    return {p.splitlines()[0]: p for p in parts}


# --------------------------------------------------------------------------- content
def test_markdown_for_the_operator_host() -> None:
    md = render()
    assert "**current 550.107.02 -> target 575.x** (`nvidia-driver-575`" in md
    assert ("R575 is end of life (listed by NVIDIA as end of life by 2025-08-04); R580 (long-term support until "
            "June 2028) also meets the floor 575.57.08") in md
    assert "sudo apt-get install -y nvidia-driver-575" in md
    assert "Rollback: `nvidia-driver-550=550.107.02-0ubuntu0.22.04.1`" in md
    assert "do not run `ray stop`" in md
    assert "pid 4242 /opt/conda/envs/QL_1/bin/python" in md
    assert "builder verify-driver --matrix a" in md
    assert "Secure Boot is disabled on this host: no MOK enrollment needed." in md
    assert 'sudo apt-get install -y build-essential dkms "linux-headers-$(uname -r)" ubuntu-drivers-common' in md
    titles = list(sections(md))
    assert titles == ["Record the current state", "Secure Boot plan", "Stop your own GPU workloads",
                      "Install prerequisites", "Install the driver package (nvidia-driver-575)",
                      "MAINTENANCE WINDOW ONLY: Reboot", "Verify after the reboot",
                      "MAINTENANCE WINDOW ONLY: Rollback to nvidia-driver-550 (only if the new driver fails)"]


def test_reboot_appears_only_in_fenced_window_steps() -> None:
    for title, body in sections(render()).items():
        if "sudo reboot" in body:
            assert title.startswith("MAINTENANCE WINDOW ONLY"), title
            assert "> **Do not run this outside the scheduled maintenance window.**" in body
    assert re.search(r"^---\n\n## 6\. MAINTENANCE WINDOW ONLY: Reboot", render(), re.M)


def test_secure_boot_enabled_plans_mok_enrollment_and_holds_are_handled() -> None:
    md = render(secure_boot="SecureBoot enabled\n", apt_holds="nvidia-driver-550\nnvidia-dkms-550\n")
    sb = sections(md)["Secure Boot plan"]
    assert "sudo mokutil --import /var/lib/shim-signed/mok/MOK.der" in sb
    assert "Enroll MOK" in sections(md)["MAINTENANCE WINDOW ONLY: Reboot"]
    install = sections(md)["Install the driver package (nvidia-driver-575)"]
    assert install.index("sudo apt-mark unhold nvidia-driver-550 nvidia-dkms-550") < install.index(
        "sudo apt-get install -y nvidia-driver-575")
    assert "sudo apt-mark hold nvidia-driver-575" in sections(md)["Verify after the reboot"]


def test_pending_kernel_update_adds_generic_headers() -> None:
    md = render(reboot_required="*** System restart required ***\n",
                reboot_required_pkgs="linux-image-5.15.0-126-generic\n")
    assert "ubuntu-drivers-common linux-headers-generic" in md


def test_matrix_b_and_no_snapshot_values_from_host_toml() -> None:
    p = Project(ROOT)
    md = runbook.render(runbook.plan(p.matrix("b"), p.host(), today=TODAY), "md")
    assert "**current 550.107.02 -> target 570.x** (`nvidia-driver-570`" in md
    assert "Values from: envs/host.toml." in md
    assert "Rollback: `nvidia-driver-550`." in md
    assert "Secure Boot state unknown" in md
    assert "R570 reached end of life in February 2026" in md
    assert "R580 (long-term support until June 2028) also meets the floor 570.26" in md


# --------------------------------------------------------------------------- shell format
@pytest.fixture
def recording_path(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH whose sudo/apt-get/mokutil/reboot/... only record that they ran."""
    bindir, log = tmp_path / "bin", tmp_path / "ran.log"
    for name in ("sudo", "apt-get", "apt-mark", "apt-cache", "mokutil", "reboot", "dkms", "nvidia-smi",
                 "ubuntu-drivers", "builder", "dpkg-query", "uname", "cat"):
        script(bindir, name, f'echo "{name} $*" >> {log}\n')
    return bindir, log


def run_sh(tmp_path: Path, bindir: Path, *args: str, window: bool = False) -> subprocess.CompletedProcess[str]:
    sh = tmp_path / "runbook.sh"
    sh.write_text(render("sh"))
    env = {"PATH": f"{bindir}{os.pathsep}/usr/bin:/bin"}
    if window:
        env["MAINTENANCE_WINDOW"] = "yes"
    return subprocess.run(["bash", str(sh), *args], env=env, capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)


def test_sh_is_valid_bash_and_runs_nothing_without_a_step(tmp_path: Path,
                                                          recording_path: tuple[Path, Path]) -> None:
    bindir, log = recording_path
    (tmp_path / "runbook.sh").write_text(render("sh"))
    assert subprocess.run(["bash", "-n", str(tmp_path / "runbook.sh")]).returncode == 0
    r = run_sh(tmp_path, bindir)
    assert r.returncode == 2 and "usage:" in r.stderr
    assert not log.exists()


def test_sh_reboot_refuses_outside_the_window(tmp_path: Path, recording_path: tuple[Path, Path]) -> None:
    bindir, log = recording_path
    for step in ("reboot", "rollback"):
        r = run_sh(tmp_path, bindir, step)
        assert r.returncode == 2 and "maintenance window" in r.stderr
    assert not log.exists()
    r = run_sh(tmp_path, bindir, "reboot", window=True)
    assert r.returncode == 0 and log.read_text() == "sudo reboot\n"


def test_sh_steps_run_their_commands_in_order(tmp_path: Path, recording_path: tuple[Path, Path]) -> None:
    bindir, log = recording_path
    assert run_sh(tmp_path, bindir, "install-driver").returncode == 0
    assert log.read_text().splitlines() == [
        "ubuntu-drivers devices", "apt-cache policy nvidia-driver-575",
        "sudo apt-get install -y nvidia-driver-575", "dkms status"]


def test_cli_writes_runbook_atomically(tmp_path: Path) -> None:
    snap = tmp_path / "s.json"
    snap.write_text(snapshot.render(operator_snapshot()))
    out = tmp_path / "runbook.sh"
    res = CliRunner().invoke(main, ["runbook", "-m", "a", "--format", "sh", "--from-snapshot", str(snap),
                                    "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("#!/usr/bin/env bash\n") and os.access(out, os.X_OK)
    res = CliRunner().invoke(main, ["runbook", "-m", "b", "--from-snapshot", str(snap)])
    assert "current 550.107.02 -> target 570.x" in res.output


# --------------------------------------------------------------------------- builder never changes the host
FORBIDDEN = {"apt", "apt-get", "aptitude", "dpkg", "modprobe", "rmmod", "insmod", "reboot", "shutdown",
             "systemctl", "init", "telinit", "sudo", "kexec"}
DRIVER_MODULES = ["driver/probe.py", "driver/parse.py", "driver/facts.py", "driver/snapshot.py",
                  "driver/preflight.py", "driver/runbook.py", "driver/verify.py", "ops/driver.py",
                  "cli/host_cmds.py"]


def _tree(rel: str) -> ast.Module:
    return ast.parse((BUILDER / rel).read_text(encoding="utf-8"))


def test_only_host_run_argv_reaches_the_subprocess_wrapper() -> None:
    for rel in DRIVER_MODULES:
        tree = _tree(rel)
        imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
            f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
            for a in n.names}
        uses_proc = any("_proc" in i or "subprocess" in i for i in imports)
        assert uses_proc == (rel == "driver/probe.py"), rel
    calls = [(fn.name, n) for fn in ast.walk(_tree("driver/probe.py")) if isinstance(fn, ast.FunctionDef)
             for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "run" and isinstance(n.func.value, ast.Name) and n.func.value.id == "_proc"]
    assert [name for name, _ in calls] == ["run_argv"]
    src = (BUILDER / "driver" / "probe.py").read_text()
    body = src[src.index("def run_argv"):src.index("def run_probe")]
    assert body.index("if not allowed(argv)") < body.index("_proc.run(")


def test_no_builder_module_names_a_host_changing_program() -> None:
    """Repo-wide: outside the runbook's text, no string constant names apt,
    modprobe, reboot...  (a subprocess argv would need one)."""
    for path in sorted(BUILDER.rglob("*.py")):
        rel = path.relative_to(BUILDER).as_posix()
        if rel == "driver/runbook.py":
            continue  # renders these commands as text for the operator; imports nothing that runs
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                word = node.value.strip().split(" ")[0] if node.value.strip() else ""
                assert not (node.value.strip() in FORBIDDEN or (word in FORBIDDEN and len(
                    node.value.split()) <= 4 and word == node.value.split()[0])), f"{rel}: {node.value!r}"


def test_pure_modules_cannot_run_anything() -> None:
    code = ("import sys, builder.driver.runbook, builder.driver.preflight, builder.driver.verify, "
            "builder.driver.facts, builder.driver.parse, builder.driver.snapshot; "
            "print(sorted(m for m in ('builder._proc', 'builder.driver.probe', 'builder.ops.driver')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_child_of_every_command_is_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every driver command for real (fake read-only tools on PATH) and
    record each argv that reaches the subprocess wrapper."""
    bindir = tmp_path / "bin"
    fake_nvidia_smi(bindir)
    for name in ("dkms", "mokutil", "ubuntu-drivers", "apt-mark", "dpkg-query"):
        script(bindir, name, "exit 0\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "envs", proj / "envs")
    rt = proj / "runtimes" / "matrix-a-py312-0123456789ab"
    script(rt / "bin", "python", "echo '{}'\n")
    manifests.write_built(rt)
    seen: list[tuple[str, ...]] = []
    real = _proc.run

    def recording(argv: tuple[str, ...], **kw: object) -> _proc.Result:
        seen.append(tuple(argv))
        return real(argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_proc, "run", recording)
    runner = CliRunner()
    snap = tmp_path / "s.json"
    for args in (["host", "snapshot", str(snap)], ["preflight", "-m", "a"], ["preflight", "-m", "b", "--json"],
                 ["runbook", "-m", "a"], ["runbook", "-m", "a", "--format", "sh"], ["verify-driver", "-m", "a"],
                 ["preflight", "-m", "a", "--from-snapshot", str(snap)]):
        res = runner.invoke(main, ["--project", str(proj), *args])
        assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.output)
        # A documented outcome (0 ready/verified, 1 not, 3 cannot probe); never an internal error.
        assert res.exit_code in (0, 1, 3), (args, res.exit_code, res.output)
    assert seen, "no probe ran"
    for argv in seen:
        assert host.allowed(argv), argv
        assert os.path.basename(argv[0]) not in FORBIDDEN, argv
    progs = {os.path.basename(a[0]) for a in seen}
    assert {"nvidia-smi", "cat", "uname", "df", "apt-mark", "python"} <= progs
