"""`builder suggest` on a local index of fake vLLM and torch releases (tests/helpers/suggest_world.py),
with real uv and builder's real checker: search order, skipping by data, the three policies,
bounds, the cache (no uv on a second run), --offline, yanked and pre-releases, a fleet of three
snapshot hosts, every exit code, --json, and --write + lock + check agreeing with the search."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.project import Project
from builder.suggest.model import SuggestResult
from builder.suggest.search import SuggestRequest, run_suggest
from tests.helpers import httpserver, suggest_world
from tests.helpers.cli import builder_cmd
from tests.helpers.httpserver import Misbehave

SNAPSHOT = Path(__file__).parent / "data" / "host" / "snapshots" / "h200-driver-580-ubuntu-24.04-format2.json"
DATE = "2025-12-30"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, httpserver.Stats]]:
    with suggest_world.served(tmp_path_factory) as w:
        yield w


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return suggest_world.write_project(tmp_path / "proj")


def _run(proj: Path, url: str, cache: Path, **kw: object) -> SuggestResult:
    req = SuggestRequest(index_url=url, exclude_newer=DATE, cache_dir=cache, **kw)  # type: ignore[arg-type]
    return run_suggest(Project(proj), req)


def _table(res: SuggestResult, host: int = 0) -> list[tuple[str, str, str]]:
    """(vLLM, status or verdict, rule) per row, as the table shows them."""
    out = []
    for r in res.rows:
        o = r.outcomes[host]
        out.append((r.vllm, o.verdict or o.status, o.rule if not o.accepted else "accepted"))
    return out


def _cli(proj: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["--project", str(proj), "suggest", *args])
    return r.exit_code, r.stdout, r.stderr


# ---------------------------------------------------------------- search order and policies


def test_default_takes_the_newest_release_that_warns_skipping_cuda_13_by_data(world, proj: Path,
                                                                             tmp_path: Path) -> None:
    url, _ = world
    res = _run(proj, url, tmp_path / "c")
    assert _table(res) == [("0.20.0", "skipped", "cuda-driver"), ("0.13.0", "warn", "accepted")]
    assert [(x.version, x.why.split(" (")[0]) for x in res.left_out] == [("0.14.0rc1", "pre-release"),
                                                                          ("0.13.1", "yanked")]
    w = res.winner
    assert w is not None and (w.vllm, w.torch, w.cuda) == ("0.13.0", "2.9.0", "12.8")
    js = w.outcomes[0].judgements
    assert [j.python for j in js] == ["3.11", "3.12"]  # both Pythons by default, both judged
    assert {j.declared_floor for j in js} == {"525.60.13"}  # minor-version compatibility floor
    assert {j.native_floor for j in js} == {"575.57.08"}  # vLLM's kernels: nvcc 12.9.86
    assert "needs driver >= 580.65.06 even under minor-version compatibility" in res.rows[0].outcomes[0].reason
    assert res.stats.resolved == 1 and res.stats.skipped == 1 and res.stopped == "found" and res.exit_code == 0


def test_default_never_accepts_a_fail_and_says_which_finding_blocks_it(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    res = _run(proj, url, tmp_path / "c", vllm="<0.13", pythons=("3.12",))
    assert _table(res) == [("0.12.0", "fail", "cuda-major"), ("0.9.0", "warn", "accepted")]
    assert "CUDA 13: vllm 0.12.0" in res.rows[0].outcomes[0].reason


def test_native_goes_back_to_the_release_the_driver_runs_natively(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    res = _run(proj, url, tmp_path / "c", policy="native", pythons=("3.12",))
    assert _table(res) == [("0.20.0", "skipped", "cuda-driver"), ("0.13.0", "skipped", "native-floor"),
                           ("0.12.0", "skipped", "native-floor"), ("0.9.0", "fail", "driver-native"),
                           ("0.8.5", "warn", "accepted")]
    assert "needs driver >= 570.124.06 natively; host has 550.107.02" in res.rows[1].outcomes[0].reason
    # 0.9.0 pins torch 2.6.0 (CUDA 12.4, not skipped by data) but its kernels are nvcc 12.8 builds
    nine = res.rows[3].outcomes[0].judgements[0]
    assert nine.native_floor == "570.124.06" and nine.declared_floor == "570.124.06"
    win = res.winner.outcomes[0].judgements[0]  # type: ignore[union-attr]
    assert (win.native_floor, win.declared_floor, win.native_exact) == ("550.54.15", "550.54.15", True)


def test_strict_needs_pass_which_here_only_a_deep_read_of_the_kernels_gives(world, proj: Path,
                                                                           tmp_path: Path) -> None:
    url, _ = world
    res = _run(proj, url, tmp_path / "c", policy="strict", pythons=("3.12",))
    assert res.common is None and res.exit_code == 1 and res.stopped == "exhausted"
    assert ("0.8.5", "warn", "gpu-arch") in _table(res) and res.rows[-1].outcomes[0].rule == "no-wheel"
    deep = _run(proj, url, tmp_path / "c", policy="strict", pythons=("3.12",), deep=True)
    assert _table(deep)[-1] == ("0.8.5", "pass", "accepted") and deep.exit_code == 0


def test_the_bound_counts_resolved_candidates_not_data_skips(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    res = _run(proj, url, tmp_path / "c", policy="native", pythons=("3.12",), max_candidates=1)
    assert [r.vllm for r in res.rows] == ["0.20.0", "0.13.0", "0.12.0", "0.9.0"]  # three skips, one resolved
    assert res.stats.resolved == 1 and res.stopped == "bound" and res.stats.not_tried == 2
    assert res.common is None and res.exit_code == 1


def test_pre_releases_and_yanked_releases_are_tried_when_asked(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    pre = _run(proj, url, tmp_path / "c", pre=True, pythons=("3.12",))
    assert pre.winner is not None and pre.winner.vllm == "0.14.0rc1"
    yanked = _run(proj, url, tmp_path / "c", include_yanked=True, pythons=("3.12",))
    assert yanked.winner is not None and yanked.winner.vllm == "0.13.1"  # uv takes a yanked release pinned with ==
    assert "0.13.1" not in [x.version for x in yanked.left_out]


def test_a_release_without_a_wheel_for_a_python_is_skipped_for_it(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    res = _run(proj, url, tmp_path / "c", vllm="<0.8", pythons=("3.11", "3.12"))
    assert _table(res) == [("0.7.0", "skipped", "no-wheel")] and res.exit_code == 1
    only311 = _run(proj, url, tmp_path / "c", vllm="<0.8", pythons=("3.11",))
    assert _table(only311) == [("0.7.0", "warn", "accepted")]


def test_torch_constraint_skips_by_data(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    res = _run(proj, url, tmp_path / "c", torch="<2.9", pythons=("3.12",), max_candidates=1)
    assert _table(res)[:3] == [("0.20.0", "skipped", "torch-constraint"), ("0.13.0", "skipped", "torch-constraint"),
                               ("0.12.0", "skipped", "torch-constraint")]
    assert res.winner is not None and res.winner.vllm == "0.9.0"


# ---------------------------------------------------------------- the cache


def _logging_uv(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A stand-in uv on $BUILDER_UV that logs each invocation and runs the real one."""
    from builder import tools

    real = tools.uv_bin()
    log = tmp_path / "uv.log"
    wrapper = tmp_path / "uv"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "BUILDER_UV": str(wrapper)}, log


def test_a_second_search_runs_no_uv_and_reads_nothing_from_the_index(world, proj: Path, tmp_path: Path) -> None:
    url, stats = world
    env, log = _logging_uv(tmp_path)
    args = ["--project", str(proj), "suggest", "--index-url", url, "--exclude-newer", DATE, "--native",
            "--cache-dir", str(tmp_path / "c"), "--json"]
    first = builder_cmd(*args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    compiles = [ln for ln in log.read_text().splitlines() if ln.startswith("pip compile")]
    assert len(compiles) == 4  # 0.9.0 and 0.8.5, for 3.11 and 3.12
    before = stats.requests
    second = builder_cmd(*args, cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert [ln for ln in log.read_text().splitlines() if ln.startswith("pip compile")] == compiles
    assert stats.requests == before  # pages, METADATA and wheel facts all from builder's cache
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert b["stats"]["uv_runs"] == 0 and b["stats"]["kept_resolutions"] == 4 and b["stats"]["kept_verdicts"] == 2
    assert a["answer"] == b["answer"] and a["candidates"] == b["candidates"]


def test_a_repeated_search_reads_no_metadata_past_its_answer(world, proj: Path, tmp_path: Path) -> None:
    """The first search reads METADATA ahead of its answer (a cold search gains time so); a
    repeated one (its pages kept) reads ahead only once it meets a wheel the cache lacks."""
    url, stats = world
    cache = tmp_path / "c"
    first = _run(proj, url, cache, pythons=("3.12",))
    assert first.winner is not None and first.winner.vllm == "0.13.0"
    gone = []
    for f in (cache / "wheels").glob("*.json"):
        name = json.loads(f.read_text())["filename"]
        if name.startswith(("vllm-0.9.0-", "vllm-0.8.5-")):  # as if the first search ended before reading them
            f.unlink()
            gone.append(name)
    assert len(gone) == 2
    before = stats.requests
    again = _run(proj, url, cache, pythons=("3.12",))
    assert again.winner is not None and again.winner.vllm == "0.13.0" and stats.requests == before
    native = _run(proj, url, cache, pythons=("3.12",), policy="native")  # this one needs them: read again
    assert native.winner is not None and native.winner.vllm == "0.8.5" and stats.requests > before


def test_a_wheel_past_the_answer_that_cannot_be_read_fails_only_a_search_that_needs_it(world, proj: Path,
                                                                                       tmp_path: Path) -> None:
    from builder.errors import Unavailable

    url, stats = world
    bad = "/files/vllm-0.9.0-cp38-abi3-manylinux1_x86_64.whl"
    stats.misbehave[bad] = Misbehave(status=500)
    try:
        res = _run(proj, url, tmp_path / "c", pythons=("3.12",))
        assert res.exit_code == 0 and res.winner is not None and res.winner.vllm == "0.13.0"
        with pytest.raises(Unavailable, match=r"vllm-0\.9\.0-.*HTTP 500"):
            _run(proj, url, tmp_path / "d", pythons=("3.12",), policy="native")
    finally:
        del stats.misbehave[bad]


def test_offline_answers_from_the_cache_and_names_what_it_could_not_judge(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    cache = tmp_path / "c"
    code, _out, err = _cli(proj, "--index-url", url, "--exclude-newer", DATE, "--offline", "--cache-dir", str(cache))
    assert code == 3 and "no page" in err and "--offline" in err
    _run(proj, url, cache, pythons=("3.12",))  # the default search, online: fills the cache to 0.13.0
    again = _run(proj, url, cache, pythons=("3.12",), offline=True)
    assert again.exit_code == 0 and again.winner is not None and again.winner.vllm == "0.13.0"
    assert again.stats.uv_runs == 0
    native = _run(proj, url, cache, pythons=("3.12",), offline=True, policy="native")
    assert native.exit_code == 3 and not native.decided and native.unjudged[0] == "0.9.0"
    assert ("0.9.0", "not-judged", "cache") in _table(native)


# ---------------------------------------------------------------- a fleet


def test_three_snapshot_hosts_get_their_own_answers_and_a_common_one(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    snaps = [suggest_world.snapshot(SNAPSHOT, tmp_path / "new.json", driver="580.95.05", cc="9.0", glibc="2.39"),
             suggest_world.snapshot(SNAPSHOT, tmp_path / "ada.json", driver="550.107.02", cc="8.9"),
             suggest_world.snapshot(SNAPSHOT, tmp_path / "volta.json", driver="580.95.05", cc="7.0")]
    args = ["--index-url", url, "--exclude-newer", DATE, "--python", "3.12", "--cache-dir", str(tmp_path / "c")]
    code, out, _err = _cli(proj, *args, *(x for s in snaps for x in ("--from-snapshot", str(s))), "--json")
    assert code == 0
    d = json.loads(out)
    assert [h["origin"] for h in d["hosts"]] == ["snapshot new.json", "snapshot ada.json", "snapshot volta.json"]
    assert [a["vllm"] for a in d["answers"]] == ["0.20.0", "0.13.0", "0.13.0"]
    assert d["answer"]["vllm"] == "0.13.0" and d["platform"] == "x86_64-manylinux_2_35"  # the oldest glibc
    first = d["candidates"][0]["outcomes"]
    assert [(o["status"], o["rule"]) for o in first] == [("judged", ""), ("skipped", "cuda-driver"),
                                                         ("skipped", "cuda-arch")]
    code, text, _err = _cli(proj, *args, *(x for s in snaps for x in ("--from-snapshot", str(s))))
    assert "host 1: vLLM 0.20.0 + torch 2.11.0" in text and "for every host" in text


# ---------------------------------------------------------------- CLI: exit codes, JSON, progress


@pytest.mark.parametrize(("args", "says"), [
    (["--max-candidates", "0"], "--max-candidates must be at least 1"),
    (["--python", "312"], "not a Python version: '312'"),
    (["--vllm", "newest"], "--vllm: not a version specifier"),
    (["--write", "Bad_ID"], "--write: not a matrix id"),
    (["--write", "a"], "envs/matrix-a.toml exists"),
    (["--force"], "--force only goes with --write"),
    (["--exclude-newer", "2999-01-01"], "has not ended yet"),
    (["--driver", "575"], "not an NVIDIA driver version"),
    (["--probe", "--from-snapshot", "x.json"], "exclusive"),
])
def test_usage_errors_exit_2_with_one_line(world, proj: Path, tmp_path: Path, args: list[str], says: str) -> None:
    url, _ = world
    code, out, err = _cli(proj, "--index-url", url, "--cache-dir", str(tmp_path / "c"), *args)
    assert code == 2 and says in err and out == "" and len(err.strip().splitlines()) == 1, err


def test_an_unreachable_index_is_exit_3(proj: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _out, err = _cli(proj, "--index-url", f"http://127.0.0.1:{port}/simple", "--cache-dir", str(tmp_path))
    assert code == 3 and "cannot reach" in err


@pytest.mark.parametrize(("uv", "code", "says"), [
    ("", 4, "BUILDER_UV="),  # names no executable
    ("#!/bin/sh\nexit 3\n", 5, "uv --version failed (exit 3)"),
])
def test_a_uv_that_is_missing_or_does_not_run_is_one_line_and_its_exit_code(world, proj: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch, uv: str,
                                                                           code: int, says: str) -> None:
    exe = tmp_path / "uv"
    if uv:
        exe.write_text(uv)
        exe.chmod(0o755)
    monkeypatch.setenv("BUILDER_UV", str(exe))
    got, out, err = _cli(proj, "--index-url", world[0], "--exclude-newer", DATE, "--cache-dir", str(tmp_path / "c"))
    assert (got, out) == (code, "") and says in err and len(err.strip().splitlines()) == 1, err
    assert {4: "4 no uv", 5: "5 uv does not run"}[code] in " ".join(_cli(proj, "--help")[1].split())


@pytest.mark.parametrize("page", ["vllm", "torch"])
def test_an_index_page_that_fails_while_the_search_loads_is_one_line_exit_3(world, proj: Path, tmp_path: Path,
                                                                           page: str) -> None:
    # the pages are read together, in threads: their error reaches the one error mapping, once
    url, stats = world
    stats.misbehave[f"/simple/{page}/"] = Misbehave(status=500)
    try:
        code, out, err = _cli(proj, "--index-url", url, "--cache-dir", str(tmp_path / "c"))
    finally:
        del stats.misbehave[f"/simple/{page}/"]
    assert code == 3 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{page} index page: HTTP 500" in err


@pytest.fixture(scope="module")
def odd_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test index, plus what a server may say: a vLLM 0.21.0 whose METADATA pins torch to a
    string that is no PEP 440 version (``===nightly``), and 0.20.0 yanked with a reason holding a
    newline and a terminal escape."""
    from tests.helpers import wheels

    house = suggest_world.build_wheelhouse(tmp_path_factory.mktemp("odd-house"))
    wheels.make_wheel(house, "vllm", "0.21.0", tag="cp38-abi3-manylinux_2_35_x86_64", requires=["torch===nightly"],
                      files={"vllm/__init__.py": '__version__ = "0.21.0"\n'})
    root = tmp_path_factory.mktemp("odd-index")
    yanked = {**suggest_world.YANKED, "vllm-0.20.0-cp38-abi3-manylinux_2_35_x86_64.whl":
              "bad\nanswer: vLLM 9.9 + torch 9.9 for this host\x1b]0;title\x07"}
    httpserver.write_simple_index(root, house, yanked=yanked, requires_python=suggest_world.REQUIRES_PYTHON)
    with httpserver.serve(root) as (url, _stats):
        yield f"{url}/simple"


def test_a_torch_pin_that_is_no_version_skips_the_candidate_by_data(odd_world: str, proj: Path,
                                                                   tmp_path: Path) -> None:
    code, text, err = _cli(proj, "--index-url", odd_world, "--exclude-newer", DATE, "--python", "3.12",
                           "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    row = next(line for line in text.splitlines() if line.startswith("0.21.0 "))
    assert "skipped" in row and "torch-pin: vLLM 0.21.0 requires torch===nightly" in row
    assert "answer: vLLM 0.13.0 + torch 2.9.0" in text


def test_an_index_yank_reason_is_printed_escaped_on_its_line(odd_world: str, proj: Path, tmp_path: Path) -> None:
    code, text, _err = _cli(proj, "--index-url", odd_world, "--exclude-newer", DATE, "--python", "3.12",
                            "--cache-dir", str(tmp_path / "c"))
    assert code == 0
    assert "0.20.0 (yanked (bad\\nanswer: vLLM 9.9 + torch 9.9 for this host\\x1b]0;title\\x07)" in text
    assert "\x1b" not in text and not any(line.startswith("answer: vLLM 9.9") for line in text.splitlines())


def test_judging_a_python_as_its_resolution_ends_gives_the_verdicts_of_judging_after(world, proj: Path,
                                                                                   tmp_path: Path) -> None:
    # online, each Python's lock is modelled and its facts gathered as soon as its uv run ends;
    # offline from the kept resolutions (no uv), the checker gathers them after: the same verdicts
    import shutil

    from builder.suggest import judge

    url, _ = world
    cache = tmp_path / "c"
    early = _run(proj, url, cache)
    assert early.stats.uv_runs == 2
    shutil.rmtree(cache / judge.KIND)
    after = _run(proj, url, cache, offline=True)
    assert after.stats.uv_runs == 0 and after.stats.kept_resolutions == 2 and after.stats.kept_verdicts == 0
    assert early.winner is not None and after.winner is not None
    assert early.winner.outcomes == after.winner.outcomes and early.rows == after.rows


def test_judging_early_never_raises_and_an_error_drops_what_it_made(tmp_path: Path) -> None:
    # on uv's thread: an error there would end the resolution; the search builds and gathers
    # again after uv, and meets (and reports) the error itself
    from builder.check.fetchplan import FetchStats
    from builder.suggest import judge, stack

    m = stack.candidate_matrix(vllm="0.13.0", torch="2.9.0", torch_cuda="12.8", pythons=("3.11", "3.12"),
                               platform="x86_64-manylinux_2_35", exclude_newer=DATE,
                               index_url="http://127.0.0.1:9/simple")
    early = judge.Early(vllm="0.13.0", matrix=m, hosts=[None], cache=tmp_path, deep=False, stats=FetchStats())
    early.resolved("3.12", "not = [a lock")  # no raise
    assert early.lock("3.12") is None and early.facts(0, ("3.12",)) is None
    assert judge.label("0.13.0", "3.12") == "suggest: vllm 0.13.0 py3.12"


def test_json_on_stdout_progress_on_stderr_quiet_with_q(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    args = ["--project", str(proj), "suggest", "--index-url", url, "--exclude-newer", DATE, "--python", "3.12",
            "--cache-dir", str(tmp_path / "c"), "--json"]
    r = builder_cmd(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) >= {"format", "policy", "pythons", "platform", "exclude_newer", "hosts", "answer", "answers",
                      "candidates", "left_out", "stats", "decided", "unjudged", "exit_code", "written"}
    row = d["candidates"][1]
    assert set(row) == {"vllm", "torch", "cuda", "vllm_wheel", "native_floor", "lock_hashes", "outcomes"}
    assert set(row["outcomes"][0]["judgements"][0]) >= {"python", "verdict", "native_floor", "compat_floor",
                                                       "declared_floor", "findings", "lock_hash"}
    lines = r.stderr.splitlines()
    assert any(ln.startswith("  vllm 0.20.0 + torch 2.11.0: skipped (cuda-driver") for ln in lines)
    assert any(ln.startswith("  vllm 0.13.0 + torch 2.9.0: WARN, accepted") for ln in lines)
    quiet = builder_cmd("-q", *args, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["answer"] == d["answer"]


# ---------------------------------------------------------------- --write, lock, check agree


@pytest.mark.parametrize("policy", ["default", "native"])
def test_written_matrix_locks_what_was_judged_and_checks_to_the_same_verdict(world, proj: Path, tmp_path: Path,
                                                                            policy: str) -> None:
    url, _ = world
    flags = ["--native"] if policy == "native" else []
    code, text, err = _cli(proj, "--index-url", url, "--exclude-newer", DATE, "--cache-dir", str(tmp_path / "c"),
                           *flags, "--write", "s", "--json")
    assert code == 0, err
    d = json.loads(text)
    spec = (proj / "envs" / "matrix-s.toml").read_text()
    assert d["written"] == str(proj / "envs" / "matrix-s.toml")
    want = {"default": ("0.13.0", "2.9.0", "525.60.13"), "native": ("0.8.5", "2.6.0", "550.54.15")}[policy]
    assert f'version = "{want[0]}"' in spec and f'version = "{want[1]}"' in spec
    assert f'driver-floor = "{want[2]}"' in spec and 'exclude-newer = "2025-12-30"' in spec
    head = " ".join(ln.lstrip("# ") for ln in spec.split("\n# Chosen")[0].splitlines())
    assert spec.startswith("# Written by `builder suggest ") and f"--index-url {url}" in head
    assert f"--exclude-newer {DATE}" in head and "--write s`" in head and "--cache-dir" not in head
    if policy == "default":
        assert "# minor-version compatibility floor of CUDA 12; native floor 575.57.08" in spec
    else:
        assert "# the lock's native floor, set by" in spec
    judged = {j["python"]: j for j in d["candidates"][d["answer"]["row"]]["outcomes"][0]["judgements"]}
    lock = builder_cmd("--project", str(proj), "lock", "--matrix", "s", cwd=tmp_path)
    assert lock.returncode == 0, lock.stderr
    from builder import pylock

    for py in ("3.11", "3.12"):
        got = pylock.read(proj / "locks" / "matrix-s" / f"pylock.py{py.replace('.', '')}.toml")
        assert got.content_hash == judged[py]["lock_hash"]  # the same packages, versions and hashes
    chk = builder_cmd("--project", str(proj), "check", "--matrix", "s", "--json", "--cache-dir", str(tmp_path / "c"),
                      cwd=tmp_path)
    assert chk.returncode == 0, chk.stderr
    reports = {r["python"]: r for r in json.loads(chk.stdout)["reports"]}
    for py, j in judged.items():
        assert reports[py]["verdict"] == j["verdict"]
        assert [(f["id"], f["level"]) for f in reports[py]["findings"]] == [(f["id"], f["level"])
                                                                           for f in j["findings"]]
        assert reports[py]["driver"]["declared"] == j["declared_floor"]
    again = _cli(proj, "--index-url", url, "--exclude-newer", DATE, "--cache-dir", str(tmp_path / "c"), *flags,
                 "--write", "s")
    assert again[0] == 2 and "exists" in again[2]
    forced = _cli(proj, "--index-url", url, "--exclude-newer", DATE, "--cache-dir", str(tmp_path / "c"), *flags,
                  "--write", "s", "--force")
    assert forced[0] == 0


def test_nothing_is_written_when_nothing_meets_the_policy(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    code, text, _err = _cli(proj, "--index-url", url, "--exclude-newer", DATE, "--cache-dir", str(tmp_path / "c"),
                            "--strict", "--python", "3.12", "--write", "s")
    assert code == 1 and not (proj / "envs" / "matrix-s.toml").exists()
    assert "answer: none" in text and "gpu-arch" in text


def test_the_human_view_names_the_deciding_facts(world, proj: Path, tmp_path: Path) -> None:
    url, _ = world
    code, text, _err = _cli(proj, "--index-url", url, "--exclude-newer", DATE, "--cache-dir", str(tmp_path / "c"),
                            "--python", "3.12")
    assert code == 0
    assert "host: envs/host.toml: driver 550.107.02, GPU cc 8.9, glibc 2.35, x86_64" in text
    assert "cuda-driver: torch's CUDA 13.0 Update 2 (cudart 13.0.96) needs driver >= 580.65.06" in text
    assert "answer: vLLM 0.13.0 + torch 2.9.0 (CUDA 12.8 Update 1) for this host" in text
    assert "[WARN] driver-compat: host driver 550.107.02 runs this lock only under minor-version compatibility" in text


# ---------------------------------------------------------------- the real index (network)


def _pypi_project(tmp_path: Path) -> Path:
    """A project whose one matrix has nothing to do with the search (suggest needs a project)."""
    from tests.helpers import projects

    return projects.write_project(tmp_path / "proj", {"a": projects.matrix_toml("a", "https://pypi.org/simple",
                                                                               title="unrelated")})


@pytest.mark.network
def test_real_search_for_the_operators_host_on_pypi(tmp_path: Path) -> None:
    """PyPI as of 2026-12-06, envs/host.toml's facts: every CUDA 13 stack is skipped by data and
    vLLM 0.19.1 + torch 2.10.0 (CUDA 12.8) is the newest that runs, under minor-version
    compatibility; the written matrix locks to the judged packages and checks to the same verdict."""
    proj = _pypi_project(tmp_path)
    res = run_suggest(Project(proj), SuggestRequest(exclude_newer="2026-12-06", pythons=("3.12",),
                                                    cache_dir=tmp_path / "c", write="x"))
    assert res.winner is not None and (res.winner.vllm, res.winner.torch, res.winner.cuda) == ("0.19.1", "2.10.0",
                                                                                              "12.8")
    assert all(o.rule == "cuda-driver" for r in res.rows[:-1] for o in r.outcomes)
    assert res.rows[-2].vllm == "0.20.0" and res.stats.resolved == 1
    j = res.winner.outcomes[0].judgements[0]
    assert j.verdict == "warn" and j.declared_floor == "525.60.13" and j.native_floor == "575.57.08"
    assert builder_cmd("--project", str(proj), "lock", "--matrix", "x", cwd=tmp_path).returncode == 0
    from builder import pylock

    assert pylock.read(proj / "locks" / "matrix-x" / "pylock.py312.toml").content_hash == j.lock_hash
    chk = builder_cmd("--project", str(proj), "check", "--matrix", "x", "--json", "--cache-dir", str(tmp_path / "c"),
                      cwd=tmp_path)
    assert json.loads(chk.stdout)["verdict"] == "warn"


@pytest.mark.network
def test_real_native_search_for_the_operators_host_on_pypi(tmp_path: Path) -> None:
    """--native on PyPI as of 2026-12-06: everything from vLLM 0.9.0 on is skipped by data (torch
    on CUDA 12.6+ needs more than 550.107.02 natively) and vLLM 0.8.5.post1 + torch 2.6.0 passes,
    its kernels known to be CUDA 12.4 builds from builder/data/kernels.toml."""
    proj = _pypi_project(tmp_path)
    res = run_suggest(Project(proj), SuggestRequest(exclude_newer="2026-12-06", pythons=("3.12",),
                                                    cache_dir=tmp_path / "c", policy="native"))
    assert res.winner is not None and (res.winner.vllm, res.winner.torch, res.winner.cuda) == ("0.8.5.post1", "2.6.0",
                                                                                              "12.4")
    assert {o.rule for r in res.rows[:-1] for o in r.outcomes} == {"cuda-driver", "native-floor"}
    j = res.winner.outcomes[0].judgements[0]
    assert (j.verdict, j.native_floor, j.native_exact, j.declared_floor) == ("pass", "550.54.15", True, "550.54.15")


@pytest.mark.network
@pytest.mark.parametrize("policy", ["default", "native"])
def test_on_pypi_uv_started_ahead_is_taken_and_answers_as_a_search_that_guesses_nothing(tmp_path: Path,
                                                                                        policy: str) -> None:
    """At the default date (yesterday), the search starts uv for the candidate builder's shipped
    facts name while PyPI's pages are read; on envs/host.toml's facts the pages confirm it (every
    newer vLLM pins a CUDA 13 torch, or, --native, one whose native floor is above 550: skipped by
    data), so the search takes those runs.  A search at the same date stated (no guess) answers
    the same, with the same locks.  Should PyPI carry a vLLM newer than the shipped facts that
    the data rules do not skip, the guess is dropped and this fails: refresh the facts
    (scripts/requires_data.py, run by the lock-refresh workflow)."""
    from builder.lock.refresh import parse_date

    proj = _pypi_project(tmp_path)
    guessed = run_suggest(Project(proj), SuggestRequest(pythons=("3.12",), cache_dir=tmp_path / "c1", policy=policy))
    plain = run_suggest(Project(proj), SuggestRequest(exclude_newer=parse_date(None).isoformat(), pythons=("3.12",),
                                                      cache_dir=tmp_path / "c2", policy=policy))
    assert (guessed.stats.uv_ahead, guessed.stats.uv_ahead_taken) == (1, 1)
    assert plain.stats.uv_ahead == 0
    assert guessed.exclude_newer == plain.exclude_newer
    assert guessed.winner is not None and plain.winner is not None
    assert (guessed.winner.vllm, guessed.winner.torch) == (plain.winner.vllm, plain.winner.torch)
    assert guessed.winner.lock_hashes == plain.winner.lock_hashes
