"""Progress of long work, through the real CLI: on stderr as it happens, silent with -q,
never mixed into --json's stdout."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from builder.runtime import smoke
from tests.helpers import httpserver, wheels
from tests.helpers.runtimes import PY312, World, builder, serve, write_project


def _build(w: World, root: Path, *opts: str, cache: Path | None = None, project: Path | None = None,
           ) -> tuple[list[str], str]:
    r = builder(*opts, "build", "-m", "t", "-p", PY312, "--root", str(root), "--cache-dir", str(cache or w.cache),
                "--no-gpu", "--json", cwd=project or w.project)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # stdout is the JSON document and nothing else
    return r.stderr.splitlines(), r.stdout


def _in_order(lines: list[str], fragments: list[str]) -> None:
    """Each fragment appears in a line after the previous fragment's line."""
    at = -1
    for frag in fragments:
        nxt = next((i for i in range(at + 1, len(lines)) if frag in lines[i]), None)
        assert nxt is not None, f"{frag!r} not found after line {at} in:\n" + "\n".join(lines)
        at = nxt


def test_build_reports_the_install_and_each_smoke_step_with_its_time(w: World, tmp_path: Path) -> None:
    lines, _ = _build(w, tmp_path / "rt")
    _in_order(lines, ["creating the venv base", "base ready in", "installing 3 packages (",
                      "installed 3 packages in", "running smoke tests"])
    # The smoke steps run side by side: each starts and ends in order, the import steps in
    # their own order, and the tally comes last.
    _in_order(lines, ["running smoke tests",
                      "smoke: import torch ...", "smoke: import torch: ok in ",
                      "smoke: import vllm ...", "smoke: import vllm: ok in ",
                      "smoke: import AsyncLLMEngine ...", "smoke: import AsyncLLMEngine: ok in ",
                      "smoke: import vllm main extension ...", "smoke: import vllm main extension: skipped in "])
    for start, end in (("smoke: reading the installed packages and their CUDA binaries ...", "binaries: done in "),
                       ("smoke: vllm --help ...", "smoke: vllm --help: skipped in ")):
        _in_order(lines, ["running smoke tests", start, end])
    tally = next(i for i, ln in enumerate(lines) if "smoke: 9 pass, 0 fail, 6 skipped in " in ln)
    assert all(i < tally for i, ln in enumerate(lines) if "smoke: " in ln and i != tally), lines
    assert all(ln.startswith("  matrix-t-py312-") for ln in lines), lines  # every line says which runtime


def test_quiet_build_prints_nothing_on_stderr(w: World, tmp_path: Path) -> None:
    lines, _ = _build(w, tmp_path / "rt", "-q")
    assert lines == []


def test_verbose_build_keeps_progress_and_adds_the_subprocess_log(w: World, tmp_path: Path) -> None:
    lines, _ = _build(w, tmp_path / "rt", "-v")
    _in_order(lines, ["installing 3 packages (", "installed 3 packages in", "smoke: import torch: ok in "])
    assert any(ln.startswith("builder: run ") and "pip sync" in ln for ln in lines)


def test_a_cold_cache_reports_each_large_download(w: World, tmp_path: Path) -> None:
    """uv names every download over 1 MiB; the build turns that into files and bytes done."""
    files = tmp_path / "wheels"
    shutil.copytree(w.index_root / "files", files)
    # Incompressible, so the wheel stays over uv's 1 MiB threshold.
    big = wheels.make_wheel(files, "bigdata", "1.0", files={"bigdata/__init__.py": "",
                                                           "bigdata/blob.bin": os.urandom(1_600_000)})
    httpserver.write_simple_index(tmp_path / "index", files)
    proj = write_project(tmp_path / "proj", serve(tmp_path / "index"), {"t": "0.13.0"})
    spec = proj / "envs" / "matrix-t.toml"
    spec.write_text(spec.read_text() + '\n[packages]\nextra = ["bigdata==1.0"]\n')
    assert builder("-q", "lock", cwd=proj).returncode == 0
    lines, _ = _build(w, tmp_path / "rt", cache=tmp_path / "cold-cache", project=proj)
    size = f"{big.stat().st_size / 2**20:.1f} MiB"
    _in_order(lines, [
        "installing 4 packages (",
        "downloading the wheels uv's cache lacks",
        f"downloaded bigdata ({size}): 1/1 large files, {size}/{size}",
        "prepared (downloaded, unpacked) 4 packages in",
        "installed 4 packages in",
    ])


def test_smoke_command_reports_steps_on_stderr_and_json_on_stdout(w: World) -> None:
    r = builder("smoke", "-m", "t", "-p", PY312, "--root", str(w.root), "--no-gpu", "--json", cwd=w.project)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["ok"] is True
    _in_order(r.stderr.splitlines(), [f"{w.runtime.name}: import torch ...", "import torch: ok in ",
                                      "vllm --help: skipped in ", "9 pass, 0 fail, 6 skipped in "])
    r = builder("-q", "smoke", "-m", "t", "-p", PY312, "--root", str(w.root), "--no-gpu", "--json", cwd=w.project)
    assert r.returncode == 0 and r.stderr == ""


def test_gpu_steps_are_reported_as_their_results_arrive(w: World) -> None:
    said: list[str] = []
    smoke.run_smoke(w.runtime / "bin" / "python", None, gpu=True, progress=said.append)
    _in_order(said, ["GPU steps (CUDA, architecture, cuBLAS GEMM) ...",
                     "torch.cuda.is_available(): False, 0 device(s) (", "GPU steps: done in "])


def test_lock_json_keeps_per_target_progress_on_stderr(w: World) -> None:
    r = builder("lock", "--json", cwd=w.project)
    assert r.returncode == 0, r.stderr
    assert {(x["matrix"], x["changed"]) for x in json.loads(r.stdout)} == {("t", False), ("u", False)}
    _in_order(r.stderr.splitlines(), ["matrix-t/py3.12: resolving", "matrix-t/py3.12: unchanged ("])
    assert "matrix-u/py3.12: unchanged (" in r.stderr


def test_a_cold_check_reports_each_lock_it_reads_over_the_network(w: World, tmp_path: Path) -> None:
    args = ("check", "-m", "t", "-p", PY312, "--cache-dir", str(tmp_path / "check-cache"), "--json")
    cold = builder(*args, cwd=w.project)
    assert json.loads(cold.stdout)["lock"].endswith("pylock.py312.toml"), cold.stderr
    assert cold.stderr.startswith("  matrix-t/py3.12: fail; read ")  # fail: the declared host's driver is 550
    assert "kB of its wheels over the network (" in cold.stderr
    warm = builder(*args, cwd=w.project)
    assert json.loads(warm.stdout) and warm.stderr == ""  # nothing read, nothing to report
