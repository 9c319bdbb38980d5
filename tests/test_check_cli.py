"""`builder check` on the command line: output, --json, exit codes."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from tests.conftest import builder_cmd
from tests.helpers import cuda_world, httpserver
from tests.test_import_hygiene import HARNESS


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, httpserver.Stats]]:
    with cuda_world.served(tmp_path_factory) as w:
        yield w


def run(proj: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["--project", str(proj), "check", *args])
    return r.exit_code, r.stdout, r.stderr


def test_json_report_for_one_lock(world, tmp_path: Path) -> None:
    proj, _ = world
    code, out, _ = run(proj, "--matrix", "B", "--python", "3.12", "--driver", "575.57.08", "--json",
                       "--cache-dir", str(tmp_path))
    assert code == 0
    d = json.loads(out)
    assert d["verdict"] == "warn"
    assert {f["id"]: f["level"] for f in d["findings"]}["cuda-toolkit-order"] == "warn"
    assert all({"id", "level", "message"} <= set(f) for f in d["findings"])
    v = d["packages"]["vllm"]
    assert v["version"] == "0.13.0" and v["cuda"]["cudart_soname"] == "libcudart.so.12"
    assert v["cuda"]["build_toolkit"] == "12.9.86" and v["cuda"]["evidence_kind"] == "binary"
    assert d["packages"]["torch"]["cuda"]["runtime"] == "12.8.90"
    assert d["driver"] == {**d["driver"], "native_min": "575.57.08", "compat_min": "525.60.13",
                           "host": "575.57.08"}


def test_a_warm_check_loads_no_wheel_reader(world, tmp_path: Path) -> None:
    """The second check of a lock answers from the facts cache: no zip, socket, ELF or fatbin
    code is even imported (the structure behind the warm-check speed budget, benchmarks/)."""
    proj, stats = world
    argv = ["--project", str(proj), "check", "-m", "b", "-p", "3.12", "--cache-dir", str(tmp_path)]
    loaded = []
    for _ in range(2):
        before = stats.requests
        r = subprocess.run([sys.executable, "-c", HARNESS, "-", *argv], capture_output=True, text=True, timeout=120)
        out = ast.literal_eval(r.stderr.strip().splitlines()[-1])
        assert out["code"] == 1, r.stderr  # envs/host.toml's 550 driver fails matrix b
        loaded.append(set(out["modules"]) - set(out["startup"]))  # a host's .pth files may load zipfile
    cold, warm = loaded
    assert stats.requests == before  # the warm run fetched nothing
    reader = {"builder.check.wheelread", "builder._http", "socket", "zipfile", "builder.binaries.elf",
              "concurrent.futures", "builder.check.deepread", "builder.binaries.fatbin", "tempfile"}
    # The cold run did read (by ranges, over HTTP; stdlib modules its start-up loaded are not counted).
    assert {"builder.check.wheelread", "builder._http", "builder.binaries.elf"} <= cold
    assert reader & warm == set()
    # Nor is the lock validated again: its validated model is kept by content (builder.pylock).
    assert "packaging.pylock" in cold and "packaging.pylock" not in warm


def test_exit_codes(world, tmp_path: Path) -> None:
    proj, stats = world
    c = ["--cache-dir", str(tmp_path)]
    assert run(proj, "-m", "a", "--python", "3.12", *c)[0] == 1  # host.toml: 550.107.02
    assert run(proj, "-m", "b", "--driver", "575.57.08", *c)[0] == 0  # warn
    assert run(proj, "-m", "b", "--driver", "575.57.08", "--strict", *c)[0] == 1
    code, _out, err = run(proj, "-m", "b", "--driver", "5x5", *c)
    assert code == 2 and "not an NVIDIA driver version" in err
    code, _out, err = run(proj, "-m", "b", "--lock", "x.toml", *c)
    assert code == 2 and "exclusive" in err
    code, _out, err = run(proj, "--lock", str(tmp_path / "missing.toml"), *c)
    assert code == 2 and "no such lock file" in err
    stats.fail_with = 404
    try:
        code, _out, err = run(proj, "-m", "b", "--cache-dir", str(tmp_path / "cold"))
    finally:
        stats.fail_with = None
    assert code == 3 and "HTTP 404" in err and "Traceback" not in err
    assert run(proj, "-m", "b", "--offline", *c)[0] == 1  # warm cache answers; 550 fails B too


def test_no_selector_prints_the_matrix_chooser(world, tmp_path: Path) -> None:
    proj, _ = world
    code, out, _ = run(proj, "--cache-dir", str(tmp_path))
    assert code == 1
    chooser = out[out.index("matrix chooser"):]
    rows = {ln.split()[0]: ln for ln in chooser.splitlines()[3:6]}
    assert "575.57.08" in rows["matrix-a"] and "driver upgrade required: needs a reboot" in rows["matrix-a"]
    assert "570.26" in rows["matrix-b"] and "FAIL" in rows["matrix-b"]
    assert "torch-pin" in rows["matrix-c"]
    d = json.loads(run(proj, "--json", "--driver", "575.57.08", "--deep", "--cache-dir", str(tmp_path))[1])
    assert [(r["matrix"], r["verdict"]) for r in d["chooser"]] == [("a", "pass"), ("b", "warn"), ("c", "fail")]


def test_foreign_lock_outside_a_project(world, tmp_path: Path) -> None:
    proj, _ = world
    lock = tmp_path / "pylock.toml"
    shutil.copy(proj / "locks" / "matrix-c" / "pylock.py312.toml", lock)
    r = builder_cmd("check", "--lock", str(lock), "--python", "3.12", "--driver", "580.95.05", "--gpu-cc", "8.9",
                    "--glibc", "2.35", "--cache-dir", str(tmp_path / "c"), cwd=tmp_path,
                    env={**__import__("os").environ, "BUILDER_PROJECT": ""})
    assert r.returncode == 1, r.stderr
    assert "[FAIL] torch-pin" in r.stdout and "[FAIL] cuda-major" in r.stdout


def test_deep_names_its_evidence_and_its_bytes(world, tmp_path: Path) -> None:
    proj, _ = world
    c = ["-m", "a", "--python", "3.12", "--driver", "575.57.08", "--cache-dir", str(tmp_path)]
    code, out, _ = run(proj, *c)
    assert code == 0 and "[WARN] gpu-arch:" in out and "check --deep" in out  # no shipped data for this wheel
    code, out, _ = run(proj, *c, "--deep", "--json")
    assert code == 0
    d = json.loads(out)
    ga = next(f for f in d["findings"] if f["id"] == "gpu-arch")
    assert ga["level"] == "pass" and "deep read" in ga["message"] and "range requests" in ga["message"]
    kern = d["packages"]["vllm"]["cuda"]["kernels"]
    assert kern["member"] == "vllm/_C.abi3.so" and kern["origin"] == "deep read" and "sm_89" in kern["sass"]
    assert d["fetched"]["deep_bytes"] > 0 and d["verdict"] == "pass"
    cached = list((tmp_path / "kernels").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["members"]["vllm/_C.abi3.so"]["sha256"]
    code, out, _ = run(proj, *c, "--deep", "--offline")  # answered from the kernels cache
    assert code == 0 and "[  ok] gpu-arch:" in out and "deep read (cached)" in out
