"""Every mutant of the rule comparisons is killed by the rules' tests (tests/test_check_rules.py for
builder/check, tests/test_suggest_rules.py for builder/suggest; slow: it runs one of those files
once per mutant, 3-5 minutes on 2 cores; `nox -s lint` runs the same script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_every_rule_mutant_is_killed() -> None:
    res = subprocess.run([sys.executable, str(HERE / "rule_mutants.py")], capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SURVIVED" not in res.stdout
    killed, _of, total, *_rest = res.stdout.strip().splitlines()[-1].split()  # "N of M mutants killed"
    assert killed == total and int(total) >= 129, res.stdout
    assert res.stdout.count(" suggest/") >= 44, res.stdout  # the suggest rules' mutants ran too
