"""``lock diff`` on the committed locks (offline, from wheel facts committed under tests/data),
the pure regression rule, the refresh date rule and the multi-file write transaction."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest

from builder.check.model import CheckReport, Finding
from builder.errors import UsageError
from builder.files import fsio
from builder.lock.diff import regressions
from builder.lock.refresh import default_date, parse_date
from tests.conftest import ROOT, builder_cmd

CACHE = ROOT / "tests" / "data" / "lock-diff" / "wheel-cache"


def test_real_locks_b_to_a_show_the_cublas_line_and_the_driver_floors(tmp_path: Path) -> None:
    """The committed matrix B and A locks, judged offline from the wheel facts `builder check`
    read from PyPI once (tests/data/lock-diff/wheel-cache: torch, vLLM, torchvision, torchaudio,
    flashinfer; 8 small JSON files with the cp311 builds of torch, torchvision, torchaudio)."""
    cache = tmp_path / "cache"
    shutil.copytree(CACHE, cache)
    env = dict(os.environ, BUILDER_CACHE_DIR=str(tmp_path / "unused"))
    r = builder_cmd("lock", "diff", "locks/matrix-b/pylock.py312.toml", "locks/matrix-a/pylock.py312.toml",
                    "--offline", "--cache-dir", str(cache), "--format", "json", cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["changed"] == [{"name": "nvidia-cublas-cu12", "old": "12.8.4.1", "new": "12.9.1.4"}]
    assert d["added"] == d["removed"] == d["rehashed"] == []
    cuda = {c["name"]: c for c in d["cuda"]}
    assert (cuda["nvidia-cublas-cu12"]["old"]["cublas"], cuda["nvidia-cublas-cu12"]["new"]["cublas"]) == (
        "12.8.4.1", "12.9.1.4")
    assert cuda["nvidia-cublas-cu12"]["changed"] == ["version", "cublas"]
    # What stays: torch's own pins (cudart 12.8.90, cuBLAS 12.8.4.1), vLLM's CUDA 12.9.86 kernels.
    assert cuda["torch"]["changed"] == [] and cuda["torch"]["new"]["runtime"] == "12.8.90"
    assert cuda["torch"]["new"]["cublas"] == "12.8.4.1"
    assert cuda["vllm"]["new"]["cudart_soname"] == "libcudart.so.12"
    assert cuda["vllm"]["new"]["build_toolkit"] == "12.9.86"
    assert d["driver"] == {"old": {"native_min": "575.57.08", "compat_min": "525.60.13"},
                           "new": {"native_min": "575.57.08", "compat_min": "525.60.13"}}
    assert d["host"]["driver"] == "575.57.08" and d["host"]["gpu_cc"] == ["8.9"]  # A's floor, host.toml's GPUs
    # A fixes B's cuBLAS warning (cuda-toolkit-order warn -> info) but both keep the cuda-bindings warning:
    # they lock cuda-bindings 13.1.1, whose NVIDIA driver floor 580.65.06 is above 575.57.08
    assert d["verdict"] == {"old": "warn", "new": "warn"} and d["regression"] is False
    changed = {f["id"]: (f["old"], f["new"]) for f in d["findings"]}
    assert changed.get("cuda-toolkit-order") == ("warn", "info") and "cuda-bindings" not in changed, changed
    r = builder_cmd("lock", "diff", "locks/matrix-b/pylock.py312.toml", "locks/matrix-a/pylock.py312.toml",
                    "--offline", "--cache-dir", str(cache), cwd=ROOT, env=env)
    assert "nvidia-cublas-cu12: version 12.8.4.1 -> 12.9.1.4; cuBLAS 12.8.4.1 -> 12.9.1.4" in r.stdout
    assert "driver floors: native 575.57.08, minor-version compat 525.60.13" in r.stdout


def test_locks_for_two_pythons_are_each_judged_with_their_own(tmp_path: Path) -> None:
    """Matrix B for Python 3.11 -> 3.12: the 3.11 lock judged with 3.12 would pick no torch wheel
    (it has only cp311 ones) and fail python-tag; each judged with its own Python, both warn alike."""
    cache = tmp_path / "cache"
    shutil.copytree(CACHE, cache)
    env = dict(os.environ, BUILDER_CACHE_DIR=str(tmp_path / "unused"))
    old, new = "locks/matrix-b/pylock.py311.toml", "locks/matrix-b/pylock.py312.toml"
    r = builder_cmd("lock", "diff", old, new, "--offline", "--cache-dir", str(cache), "--format", "json",
                    cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["old_python"], d["python"]) == ("3.11", "3.12")
    assert d["verdict"] == {"old": "warn", "new": "warn"} and d["findings"] == [] and d["regression"] is False
    cuda = {c["name"]: c for c in d["cuda"]}
    assert cuda["torch"]["old"]["runtime"] == cuda["torch"]["new"]["runtime"] == "12.8.90"
    text = builder_cmd("lock", "diff", old, new, "--offline", "--cache-dir", str(cache), cwd=ROOT, env=env).stdout
    assert "  Python: 3.11 -> 3.12 (each lock judged with its own)" in text
    md = builder_cmd("lock", "diff", old, new, "--offline", "--cache-dir", str(cache), "--format", "md", cwd=ROOT,
                     env=env).stdout
    assert "Python: 3.11 → **3.12** (each lock judged with its own)." in md
    # --python names one Python for both: the 3.11 lock has no CPython 3.12 wheel of torch
    both = json.loads(builder_cmd("lock", "diff", old, new, "--offline", "--cache-dir", str(cache), "--python",
                                  "3.12", "--format", "json", cwd=ROOT, env=env).stdout)
    assert both["old_python"] == both["python"] == "3.12"
    assert both["verdict"]["old"] == "fail" and any(f["id"] == "python-tag" for f in both["findings"])


def test_diff_offline_without_cached_facts_is_exit_3(tmp_path: Path) -> None:
    r = builder_cmd("lock", "diff", "locks/matrix-b/pylock.py312.toml", "locks/matrix-a/pylock.py312.toml",
                    "--offline", "--cache-dir", str(tmp_path), cwd=ROOT)
    assert r.returncode == 3 and "run the check once online" in r.stderr


# --------------------------------------------------------------------------- the regression rule (pure)


def _rep(native: str | None, fails: tuple[str, ...] = (), warns: tuple[str, ...] = ()) -> CheckReport:
    findings = [Finding(i, "fail", f"{i} failed") for i in fails] + [Finding(i, "warn", "w") for i in warns]
    return CheckReport("lock", "a", "3.12", "fail" if fails else "pass", findings, {},
                       {"native_min": native, "compat_min": "525.60.13", "native_from": "vllm"})


@pytest.mark.parametrize(("old", "new", "expect"), [
    (_rep("575.57.08"), _rep("575.57.08"), []),
    (_rep("575.57.08"), _rep("570.124.06"), []),  # a lower floor is no regression
    (_rep("570.124.06"), _rep("575.57.08"), ["native driver floor rose: 570.124.06 -> 575.57.08 (set by vllm)"]),
    (_rep("570.26"), _rep("570.124.06"), ["native driver floor rose: 570.26 -> 570.124.06 (set by vllm)"]),
    (_rep(None), _rep("570.26"), ["native driver floor rose: none -> 570.26 (set by vllm)"]),
    (_rep("575.57.08"), _rep(None), []),
    (_rep("575.57.08", fails=("cuda-major",)), _rep("575.57.08", fails=("cuda-major",)), []),  # not new
    (_rep("575.57.08", warns=("driver-compat",)), _rep("575.57.08", fails=("driver-compat",)),
     ["new fail: driver-compat: driver-compat failed"]),
    (_rep("575.57.08", fails=("torch-pin",)), _rep("575.57.08"), []),  # a fixed failure
    (None, _rep("575.57.08", fails=("gpu-arch",)), ["new fail: gpu-arch: gpu-arch failed"]),  # a new lock
    (None, _rep("575.57.08"), []),
    (_rep("575.57.08"), None, []),  # a removed lock
])
def test_regression_is_a_new_fail_or_a_higher_native_floor(old: CheckReport | None, new: CheckReport | None,
                                                           expect: list[str]) -> None:
    assert regressions(old, new) == expect


# --------------------------------------------------------------------------- the refresh date


NOON = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def test_default_date_is_yesterday_utc_whose_cutoff_has_passed() -> None:
    assert default_date(NOON) == dt.date(2026, 3, 9)
    assert default_date(dt.datetime(2026, 3, 10, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))) == \
        dt.date(2026, 3, 8)  # 21:30 UTC on the 9th
    assert parse_date(None, NOON) == dt.date(2026, 3, 9)
    assert parse_date("2026-03-09", NOON) == dt.date(2026, 3, 9)
    for bad in ("2026-03-10", "2026-04-01", "2026-3-9x", "yesterday", ""):
        with pytest.raises(UsageError):
            parse_date(bad, NOON)


# --------------------------------------------------------------------------- the write transaction


def test_write_all_writes_nothing_when_one_temp_file_cannot_be_made(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("old a\n")
    b.write_text("old b\n")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be\n")
    with pytest.raises(OSError):
        fsio.write_all([(a, "new a\n"), (b, "new b\n"), (blocker / "c.toml", "new c\n")])
    assert (a.read_text(), b.read_text()) == ("old a\n", "old b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.toml", "b.toml", "not-a-dir"]  # no temp files
    fsio.write_all([(a, "new a\n"), (b, "new b\n")])
    assert (a.read_text(), b.read_text()) == ("new a\n", "new b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.toml", "b.toml", "not-a-dir"]
