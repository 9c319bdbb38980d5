"""builder/report.py: the one ordered Level that check's findings and preflight's checks share."""

from __future__ import annotations

import json

import pytest

from builder.check import rules
from builder.check.model import Finding
from builder.driver import preflight
from builder.report import Level, worst


def test_the_order_is_stated_once_pass_info_warn_unknown_fail() -> None:
    assert [lv.value for lv in Level] == ["pass", "info", "warn", "unknown", "fail"]
    assert [lv.rank for lv in Level] == [0, 1, 2, 3, 4]
    # info: a pass with something to say, below any warning; unknown: worse than a warning,
    # better than a failure.
    assert worst([Level.INFO, Level.PASS]) is Level.INFO
    assert worst([Level.WARN, Level.INFO]) is Level.WARN
    assert worst([Level.WARN, Level.UNKNOWN]) is Level.UNKNOWN
    assert worst([Level.UNKNOWN, Level.FAIL, Level.WARN]) is Level.FAIL
    assert worst([]) is Level.PASS and worst([], default=Level.UNKNOWN) is Level.UNKNOWN
    assert worst(["warn", "unknown"]) is Level.UNKNOWN  # type: ignore[list-item]  # plain strings count too


def test_levels_render_as_the_strings_they_always_were() -> None:
    assert json.dumps({"level": Level.WARN}) == '{"level": "warn"}'
    assert f"{Level.FAIL}" == "fail" and Level.UNKNOWN == "unknown" and Level.PASS.upper() == "PASS"
    assert {"pass": "ok"}[Level.PASS] == "ok"


@pytest.mark.parametrize(("levels", "check", "preflight_level"), [
    ((), "pass", "pass"),
    (("pass", "info"), "pass", "pass"),
    (("info", "warn"), "warn", "pass"),
    (("warn", "unknown"), None, "unknown"),
    (("unknown", "fail"), None, "fail"),
    (("pass", "fail"), "fail", "fail"),
])
def test_check_and_preflight_judge_from_the_one_order(levels: tuple[str, ...], check: str | None,
                                                      preflight_level: str) -> None:
    if check is not None:  # check has no unknown finding
        assert rules.verdict([Finding("x", Level(lv), "m") for lv in levels]) == check
    if "info" not in levels:  # preflight has no info check
        checks = [preflight.Check(f"c{i}", Level(lv), "m") for i, lv in enumerate(levels)]
        rep = preflight.Report("preflight", "matrix-a", preflight.verdict(checks), checks, {})
        assert rep.verdict_level == preflight_level
        assert rep.exit_code == {"pass": 0, "unknown": 3, "fail": 1}[preflight_level]
        assert rep.verdict == {"pass": "ready", "unknown": "unknown", "fail": "not-ready"}[preflight_level]
