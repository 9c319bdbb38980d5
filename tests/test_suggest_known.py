"""Shipped METADATA facts for the search (builder/data/requires.toml, builder/suggest/known.py,
scripts/requires_data.py): the real rows pinned against the real wheels' facts; on the local
index of fake releases (tests/helpers/suggest_world.py, real uv), a row whose sha256 the page
lists spares that wheel's METADATA requests, a row whose sha256 differs is not trusted, and the
answer is the same with and without the data."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from builder import data as datafiles
from builder import pylock
from builder.check import kerneldata, toolkit
from builder.check import knowledge as cuda
from builder.project import Project
from builder.suggest import known
from builder.suggest.cudaline import torch_line
from builder.suggest.model import SuggestResult
from builder.suggest.search import SuggestRequest, run_suggest
from scripts import requires_data
from tests.helpers import httpserver, suggest_world

DATE = "2025-12-30"


def _rows(k: known.Known, package: str, version: str, arch: str) -> list[known.KnownWheel]:
    return [w for w in k.by_sha256.values() if (w.package, w.version) == (package, version) and arch in w.filename]


def _line(w: known.KnownWheel, py: str, arch: str) -> str | None:
    ln = torch_line(w.requires, pylock.target_env(py, arch), cuda.load(), tk=toolkit.load())
    return ln.release if ln else None


# ---------------------------------------------------------------- the shipped rows


def test_every_cuda_vllm_wheel_of_the_kernel_data_has_its_facts_by_the_same_sha256() -> None:
    k = known.load()
    rows = kerneldata.from_mapping(datafiles.read(datafiles.KERNELS))
    assert rows and all(k.get(r.wheel_sha256) is not None for r in rows)
    assert all(k.get(r.wheel_sha256).filename == r.wheel for r in rows)  # type: ignore[union-attr]
    assert known.usable(k, cuda.load().gpu)  # filtered with today's GPU list


def test_real_rows_pin_the_torch_that_the_real_wheels_pin() -> None:
    k = known.load()
    (v191,) = _rows(k, "vllm", "0.19.1", "x86_64")
    assert v191.filename == "vllm-0.19.1-cp38-abi3-manylinux_2_31_x86_64.whl"
    assert "torch==2.10.0" in v191.requires and "torchaudio==2.10.0" in v191.requires
    (v085,) = _rows(k, "vllm", "0.8.5.post1", "x86_64")
    assert "torch==2.6.0" in v085.requires
    assert all(not r.startswith(("regex", "fastapi", "transformers")) for r in v191.requires)  # only what is read


def test_real_torch_rows_give_each_release_its_cuda_line() -> None:
    k = known.load()
    t26 = [w for w in _rows(k, "torch", "2.6.0", "x86_64") if "-cp312-" in w.filename]
    t210 = [w for w in _rows(k, "torch", "2.10.0", "x86_64") if "-cp312-" in w.filename]
    assert t26 and t210  # torch 2.10.0 also has build-tagged re-uploads (torch-2.10.0-3-...): rows of their own
    assert {_line(w, "3.12", "x86_64") for w in t26} == {"12.4"}
    assert {_line(w, "3.12", "x86_64") for w in t210} == {"12.8"}
    # PyPI's aarch64 torch 2.4.0 pins its CUDA runtime for x86_64 only: a CPU build, no line
    t24a = _rows(k, "torch", "2.4.0", "aarch64")
    assert t24a and {_line(w, "3.11", "aarch64") for w in t24a} == {None}


def test_a_bad_wheel_entry_is_named_by_its_dotted_path() -> None:
    doc: dict[str, Any] = {"schema": 1, "gpu": ["torch"], "release": [
        {"package": "vllm", "version": "0.19.1", "arch": "x86_64", "requires": ["torch==2.10.0"],
         "wheels": ["vllm-0.19.1-cp38-abi3-manylinux_2_31_x86_64.whl"], "source": "https://pypi.org/simple/vllm/",
         "date": "2026-12-07"}]}
    assert datafiles.problems_of(datafiles.REQUIRES, doc) == [
        "builder/data/requires.toml: release[0].wheels[0]: must be '<sha256> <wheel file name>', "
        "got 'vllm-0.19.1-cp38-abi3-manylinux_2_31_x86_64.whl'"]


def test_a_file_filtered_with_a_shorter_gpu_list_is_not_used() -> None:
    k = known.Known(gpu=frozenset({"torch", "vllm"}), by_sha256={})
    assert not known.usable(k, frozenset({"torch", "vllm", "xformers"}))
    assert known.usable(k, frozenset({"torch"}))


# ---------------------------------------------------------------- the search on a local index


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, httpserver.Stats]]:
    with suggest_world.served(tmp_path_factory) as w:
        yield w


@pytest.fixture(scope="module")
def data(world: tuple[str, httpserver.Stats], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """requires.toml for the local index, made by the real script from its real wheels."""
    url, _ = world
    path = tmp_path_factory.mktemp("data") / "requires.toml"
    summary = path.with_name("summary.json")
    assert requires_data.main(["--all", "--index", url, "--data", str(path), "--summary", str(summary)]) == 0
    added = json.loads(summary.read_text())["added"]
    # vLLM 0.20.0 down to 0.7.0 (no pre-release, no yanked file), then torch 2.11.0, 2.9.0, 2.6.0 for 3.11 and 3.12
    assert len(added) == 6 + 6 and "vllm-0.20.0-cp38-abi3-manylinux_2_35_x86_64.whl" in added
    assert requires_data.main(["--all", "--index", url, "--data", str(path), "--summary", str(summary)]) == 0
    assert json.loads(summary.read_text())["added"] == []  # restartable: nothing read twice
    return path


def _run(proj: Path, url: str, cache: Path, **kw: Any) -> SuggestResult:
    req = SuggestRequest(index_url=url, exclude_newer=DATE, cache_dir=cache, **kw)
    return run_suggest(Project(proj), req)


def _shipping(monkeypatch: pytest.MonkeyPatch, path: Path | None) -> None:
    """The search takes its shipped facts from ``path`` (None: from no file at all)."""
    k = known.from_mapping(datafiles.read(path)) if path else known.Known(gpu=cuda.load().gpu, by_sha256={})
    monkeypatch.setattr(known, "load", lambda: k)


def _reads(stats: httpserver.Stats, since: int, *prefixes: str) -> list[str]:
    return [p for p in stats.paths[since:] if p.rsplit("/", 1)[-1].startswith(prefixes)]


def _answer(res: SuggestResult) -> dict[str, Any]:
    d = res.as_dict()
    d.pop("stats")
    d.pop("index_read")  # when the pages were read
    return d


@pytest.mark.parametrize(("policy", "skipped"), [
    ("default", ("vllm-0.20.0-", "torch-2.11.0-")),
    ("native", ("vllm-0.20.0-", "vllm-0.13.0-", "vllm-0.12.0-", "torch-2.11.0-", "torch-2.9.0-")),
])
def test_a_row_whose_sha256_the_page_lists_spares_the_metadata_reads(world: tuple[str, httpserver.Stats],
                                                                      data: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch, policy: str,
                                                                      skipped: tuple[str, ...]) -> None:
    url, stats = world
    proj = suggest_world.write_project(tmp_path / "proj")
    _shipping(monkeypatch, None)
    start = len(stats.paths)
    without = _run(proj, url, tmp_path / "c1", policy=policy)
    assert {p.rsplit("/", 1)[-1].split("-")[1] for p in _reads(stats, start, *skipped)} == \
        {s.split("-")[1] for s in skipped}  # every wheel skipped by data: its METADATA read
    _shipping(monkeypatch, data)
    start = len(stats.paths)
    shipped = _run(proj, url, tmp_path / "c2", policy=policy)
    assert _reads(stats, start, *skipped) == []  # skipped by data, never read
    assert _answer(shipped) == _answer(without)
    assert shipped.winner is not None and shipped.winner.vllm == ("0.13.0" if policy == "default" else "0.8.5")
    # nothing partial entered the wheel cache: the checker's entries are whole METADATA
    for f in (tmp_path / "c2" / "wheels").glob("*.json"):
        d = json.loads(f.read_text())
        assert d["origin"] != "shipped data"
        if d["name"] == "torch":  # read during uv for the checker: its every pin, not the filtered ones
            assert any(r.startswith("nvidia-cublas") for r in d["requires_dist"])


def test_a_row_whose_sha256_differs_is_not_trusted(world: tuple[str, httpserver.Stats], data: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row for vLLM 0.20.0 that names another sha256 (a replaced file, another index) and says it
    pins torch 2.6.0 (CUDA 12.4): the search reads the wheel and keeps to what it says (torch
    2.11.0, CUDA 13: skipped by data)."""
    url, stats = world
    _shipping(monkeypatch, _lying(data, tmp_path))
    proj = suggest_world.write_project(tmp_path / "proj")
    start = len(stats.paths)
    res = _run(proj, url, tmp_path / "c", pythons=("3.12",))
    assert _reads(stats, start, "vllm-0.20.0-")  # read, not taken from the row
    assert _reads(stats, start, "torch-2.11.0-") == []  # torch 2.11.0's row still matches: not read
    first = res.rows[0]
    assert (first.vllm, first.torch, first.outcomes[0].rule) == ("0.20.0", "2.11.0", "cuda-driver")
    assert res.winner is not None and res.winner.vllm == "0.13.0"


# ---------------------------------------------------------------- uv started ahead, from the rows


def _uv(tmp_path: Path, *, hang: str | None = None) -> tuple[Path, Path]:
    """A uv that logs each ``pip compile`` (its pid, then its requirements) and, when they name
    ``hang``, never ends (a resolution slower than the search: it must be killed)."""
    from builder import tools

    real = tools.uv_bin()
    log, script = tmp_path / "uv.log", tmp_path / "uv"
    stall = f'if grep -q "{hang}" "$3"; then exec sleep 60; fi' if hang else ""
    script.write_text(f'#!/bin/sh\nif [ "$1" = pip ] && [ "$2" = compile ]; then\n'
                      f'    echo "$$ $(tr "\\n" " " < "$3")" >> "{log}"\n    {stall}\nfi\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    return script, log


def _runs(log: Path) -> list[tuple[int, str]]:
    return [(int(pid), reqs) for pid, _, reqs in (line.partition(" ") for line in log.read_text().splitlines())]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _lying(data: Path, tmp_path: Path) -> Path:
    """The rows, but vLLM 0.20.0's names a sha256 the index does not list (a replaced file, another
    index) and torch 2.6.0 (CUDA 12.4, which driver 550 runs): the search reads that wheel (torch
    2.11.0, CUDA 13) and skips it; a guess from the rows alone resolves vLLM 0.20.0 first."""
    doc = tomlkit.parse(data.read_text())
    for row in doc["release"]:  # type: ignore[union-attr]
        if row["package"] == "vllm" and row["version"] == "0.20.0":
            row["wheels"] = [f"{'0' * 64} {e.split(' ', 1)[1]}" for e in row["wheels"]]
            row["requires"] = ["torch==2.6.0"]
    out = tmp_path / "lie" / "requires.toml"
    out.parent.mkdir()
    out.write_text(tomlkit.dumps(doc))
    return out


def test_uv_starts_for_the_candidate_the_rows_name_and_the_search_takes_those_runs(
        world: tuple[str, httpserver.Stats], data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = world
    proj = suggest_world.write_project(tmp_path / "proj")
    uv, log = _uv(tmp_path)
    monkeypatch.setenv("BUILDER_UV", str(uv))
    _shipping(monkeypatch, data)
    res = run_suggest(Project(proj), SuggestRequest(index_url=url, cache_dir=tmp_path / "c"))  # the default date
    assert res.winner is not None and res.winner.vllm == "0.13.0"
    s = res.stats
    assert (s.uv_ahead, s.uv_ahead_taken, s.uv_runs) == (2, 2, 2)
    runs = _runs(log)
    assert len(runs) == 2 and all("vllm==0.13.0" in reqs for _pid, reqs in runs)  # no run twice
    # The answer is the one a search that guesses nothing gives.
    _shipping(monkeypatch, None)
    plain = run_suggest(Project(proj), SuggestRequest(index_url=url, cache_dir=tmp_path / "c2"))
    assert plain.stats.uv_ahead == 0 and _answer(plain) == _answer(res)
    # At a stated date the rows (no upload times) are not trusted to guess: nothing starts ahead.
    _shipping(monkeypatch, data)
    assert _run(proj, url, tmp_path / "c3").stats.uv_ahead == 0
    # Offline, nothing starts either (the kept resolutions answer).
    assert run_suggest(Project(proj), SuggestRequest(index_url=url, cache_dir=tmp_path / "c",
                                                     offline=True)).stats.uv_ahead == 0


@pytest.mark.parametrize(("vllm", "winner", "uv_runs", "asked"), [
    (None, "0.13.0", 1, ["vllm==0.20.0", "vllm==0.13.0"]),  # the search resolves another candidate
    ("==0.20.0", None, 0, ["vllm==0.20.0"]),  # it resolves nothing: 0.20.0 needs CUDA 13, skipped by data
])
def test_a_wrong_guess_is_killed_and_the_search_answers_as_without_it(
        world: tuple[str, httpserver.Stats], data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        vllm: str | None, winner: str | None, uv_runs: int, asked: list[str]) -> None:
    url, _ = world
    proj = suggest_world.write_project(tmp_path / "proj")
    uv, log = _uv(tmp_path, hang="vllm==0.20.0")
    monkeypatch.setenv("BUILDER_UV", str(uv))
    _shipping(monkeypatch, _lying(data, tmp_path))
    t = time.monotonic()
    res = run_suggest(Project(proj), SuggestRequest(index_url=url, cache_dir=tmp_path / "c", pythons=("3.12",),
                                                    vllm=vllm))
    assert time.monotonic() - t < 30  # the stalled guess did not hold the search up
    assert (res.winner.vllm if res.winner else None) == winner and res.exit_code == (0 if winner else 1)
    assert (res.stats.uv_ahead, res.stats.uv_ahead_taken, res.stats.uv_runs) == (1, 0, uv_runs)
    runs = _runs(log)
    assert [reqs.split()[1] for _pid, reqs in runs] == asked
    assert _gone(runs[0][0])  # killed, not left running
    assert res.rows[0].vllm == "0.20.0" and res.rows[0].outcomes[0].rule == "cuda-driver"


def test_the_script_skips_a_pin_that_is_no_version_and_rereads_a_broken_file(tmp_path: Path) -> None:
    assert requires_data.torch_pins([{"requires": ["torch===nightly", "torch==2.9.0"]}]) == {"2.9.0"}
    gpu = cuda.load().gpu
    good = datafiles.REQUIRES.read_text(encoding="utf-8")
    assert requires_data.load_rows(datafiles.REQUIRES, gpu)  # the shipped file loads
    for bad in (good[: len(good) // 2], good.replace('version = "0.19.1"', "version = 19", 1)):
        path = tmp_path / "requires.toml"
        path.write_text(bad, encoding="utf-8")
        assert requires_data.load_rows(path, gpu) == {}  # truncated or wrong: read again whole, no traceback
