"""`builder check` on a corpus of real uv locks, judged against expected.toml.

Each case runs the real CLI (`builder check --lock COPY --json`) on a copy of a real
lock whose PyPI file URLs point at a local replay of the byte ranges the checker read
when the corpus was captured (tests/data/locks/capture.py); a read the capture does
not hold fails loudly.  Expected values come from the artifacts, with the evidence
quoted in tests/data/locks/expected.toml.  No aspect is excused: every row must hold
(zero false fails, zero false passes).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import replay
from tests.helpers.cli import builder_cmd

CORPUS = Path(__file__).resolve().parent / "data" / "locks"
EXPECTED = tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8"))
CASES = {c["id"]: c for c in EXPECTED["case"]}
ASPECTS = ("reads", "verdict", "fail", "warn", "levels", "native-floor", "compat-floor", "lower-bound")


@dataclass
class Run:
    code: int
    report: dict[str, Any] | None
    stderr: str
    replay_errors: list[str]
    requests: int

    def why(self) -> str:
        return f"exit {self.code}; stderr: {self.stderr.strip()[-600:]}; replay errors: {self.replay_errors[:3]}"


_RUNS: dict[str, Run] = {}


def run_case(case: dict[str, Any], tmp: Path) -> Run:
    """Run the CLI once per case (all aspects share it), on its own replay server."""
    if case["id"] in _RUNS:
        return _RUNS[case["id"]]
    src = CORPUS / case["lock"]
    with replay.serve(CORPUS / "replay") as (url, rp):
        lock = tmp / src.name
        lock.write_text(replay.rewrite_lock(src.read_text(encoding="utf-8"), url), encoding="utf-8")
        h = case["host"]
        args = ["check", "--lock", str(lock), "--json", "--cache-dir", str(tmp / "cache"),
                "--driver", h["driver"], "--glibc", h["glibc"]]
        for cc in h["gpu-cc"]:
            args += ["--gpu-cc", cc]
        res = builder_cmd(*args, cwd=tmp, timeout=300)
        errors, requests = list(rp.errors), len(rp.requests)
    try:
        report = json.loads(res.stdout) if res.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    _RUNS[case["id"]] = Run(res.returncode, report, res.stderr, errors, requests)
    return _RUNS[case["id"]]


def _params() -> list[Any]:
    return [pytest.param(cid, aspect, id=f"{cid}-{aspect}") for cid in CASES for aspect in ASPECTS]


def _ids(report: dict[str, Any], level: str) -> set[str]:
    return {f["id"] for f in report["findings"] if f["level"] == level}


@pytest.mark.parametrize(("cid", "aspect"), _params())
def test_corpus(cid: str, aspect: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    case = CASES[cid]
    run = run_case(case, tmp_path_factory.mktemp(f"corpus-{cid}"))
    if aspect == "reads":
        assert run.replay_errors == [], run.why()
        assert run.code in (0, 1), run.why()
        assert run.report is not None, run.why()
        return
    assert run.report is not None, run.why()
    rep = run.report
    if aspect == "verdict":
        assert rep["verdict"] == case["verdict"], [(f["id"], f["level"]) for f in rep["findings"]]
        assert run.code == (1 if case["verdict"] == "fail" else 0)
    elif aspect in ("fail", "warn"):
        assert _ids(rep, aspect) == set(case[aspect]), [
            (f["id"], f["level"], f["message"][:200]) for f in rep["findings"] if f["level"] in ("fail", "warn")]
    elif aspect == "levels":
        got = {f["id"]: f["level"] for f in rep["findings"]}
        assert {r: got.get(r) for r in case["levels"]} == case["levels"]
    elif aspect == "native-floor":
        assert rep["driver"]["native_min"] == case["native-floor"], rep["driver"]
    elif aspect == "compat-floor":
        assert rep["driver"]["compat_min"] == case["compat-floor"], rep["driver"]
    elif aspect == "lower-bound":
        assert rep["driver"]["native_is_lower_bound"] is case["lower-bound"], rep["driver"]


# ---------------------------------------------------------------- the corpus itself


def test_every_lock_is_a_real_uv_lock_with_its_command() -> None:
    locks = sorted(CORPUS.glob("pylock.*.toml"))
    assert len(locks) >= 8
    assert {c["lock"] for c in CASES.values()} == {p.name for p in locks}
    for p in locks:
        text = p.read_text(encoding="utf-8")
        assert "uv pip compile requirements.in --format pylock.toml" in text, p.name
        assert "by uv 0.13.9" in text, p.name
        assert tomllib.loads(text)["created-by"] == "uv", p.name


def test_every_case_cites_its_evidence() -> None:
    for c in CASES.values():
        assert c["verdict"] in ("pass", "warn", "fail"), c["id"]
        assert (c["verdict"] == "fail") == bool(c["fail"]), c["id"]
        assert c["reasoning"].strip() and c["evidence"], c["id"]
        assert "xfail" not in c, f"{c['id']}: the corpus excuses no aspect"


def test_capture_stays_small() -> None:
    files = [p for p in (CORPUS / "replay").iterdir()]
    assert sum(p.stat().st_size for p in files) < 8 * 1024 * 1024
    assert max(p.stat().st_size for p in files) < 2 * 1024 * 1024


def test_replay_refuses_what_was_not_captured(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    with replay.serve(CORPUS / "replay") as (url, rp):
        # a wheel whose first captured segment is followed by bytes that were not captured
        path, entry = next((p, e) for p, e in rp.files.items() if isinstance(e, replay.Entry)
                           and e.segments[0][0] + len(e.segments[0][1]) < e.size)
        first_start, first = entry.segments[0]
        req = urllib.request.Request(url + path, headers={"Range": f"bytes={first_start}-{first_start + 9}"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206 and resp.read() == first[:10]
        gap = first_start + len(first)
        req = urllib.request.Request(url + path, headers={"Range": f"bytes={gap - 5}-{gap + 5}"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req)
        assert exc.value.code == 416
        exc.value.close()
        with pytest.raises(urllib.error.HTTPError) as exc2:
            urllib.request.urlopen(url + "/packages/not/captured.whl")
        assert exc2.value.code == 500
        exc2.value.close()
    assert any(f"bytes {gap - 5}-{gap + 5} not captured" in e for e in rp.errors), rp.errors
    assert any("not/captured.whl" in e and "path not captured" in e for e in rp.errors), rp.errors
