"""What ``check``, ``lock diff``, ``preflight``, ``verify-driver`` and ``runbook`` print for the
committed locks and host snapshots, byte for byte: stdout, stderr and exit code, text and JSON.

The expected outputs in tests/data/outputs/ were recorded by the code *before* HostFacts became
frozen and before check and preflight shared one ordered level type (issue 21), so these tests
prove that change left every rendering as it was.  Re-record deliberately, after a change that
means to alter an output:  ``.venv/bin/python -m tests.test_outputs_unchanged --record``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, builder_cmd

OUT = ROOT / "tests" / "data" / "outputs"
CACHE = ROOT / "tests" / "data" / "lock-diff" / "wheel-cache"
SNAPSHOTS = sorted((ROOT / "tests" / "data" / "host" / "snapshots").glob("*.json"))
LOCK_A, LOCK_B = "locks/matrix-a/pylock.py312.toml", "locks/matrix-b/pylock.py312.toml"


def _cases() -> dict[str, list[str]]:
    wheel = ["--offline", "--cache-dir", "{cache}"]
    cases: dict[str, list[str]] = {}
    for m in ("a", "b"):
        for extra, tag in (([], "host"), (["--driver", "575.57.08"], "575"), (["--driver", "570.124.06"], "570"),
                           (["--driver", "580.95.05", "--gpu-cc", "7.0"], "580-cc70"), (["--strict"], "strict")):
            cases[f"check-{m}-{tag}"] = ["check", "-m", m, "-p", "3.12", *extra, *wheel]
            if tag in ("host", "580-cc70"):
                cases[f"check-{m}-{tag}-json"] = ["check", "-m", m, "-p", "3.12", *extra, *wheel, "--json"]
    cases["check-lock-json"] = ["check", "--lock", LOCK_A, "--driver", "580.65.06", "--gpu-cc", "8.9", *wheel,
                                "--json"]
    for fmt in ("text", "md", "json"):
        cases[f"lock-diff-{fmt}"] = ["lock", "diff", LOCK_B, LOCK_A, *wheel, "--format", fmt]
    cases["lock-diff-driver-550"] = ["lock", "diff", LOCK_B, LOCK_A, *wheel, "--driver", "550.107.02"]
    for snap in SNAPSHOTS:
        s = snap.stem
        for m in ("a", "b"):
            src = ["-m", m, "--from-snapshot", str(snap.relative_to(ROOT))]
            cases[f"preflight-{s}-{m}"] = ["preflight", *src]
            cases[f"preflight-{s}-{m}-json"] = ["preflight", *src, "--json"]
            cases[f"verify-driver-{s}-{m}"] = ["verify-driver", *src, "--skip-torch", "--root", "{root}"]
            cases[f"verify-driver-{s}-{m}-json"] = ["verify-driver", *src, "--skip-torch", "--root", "{root}",
                                                    "--json"]
            cases[f"runbook-{s}-{m}-md"] = ["runbook", *src]
            cases[f"runbook-{s}-{m}-sh"] = ["runbook", *src, "--format", "sh"]
    return cases


CASES = _cases()


def _run(argv: list[str], tmp: Path) -> str:
    (tmp / "root").mkdir(exist_ok=True)
    cache = tmp / "cache"
    if not cache.exists():
        shutil.copytree(CACHE, cache)
    args = [a.format(cache=cache, root=tmp / "root") for a in argv]
    env = dict(os.environ, BUILDER_CACHE_DIR=str(tmp / "builder-cache"))
    r = builder_cmd(*args, cwd=ROOT, env=env)
    text = f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    # What may differ between two runs of the same code: the day, where the temp dir and the checkout are.
    text = text.replace(dt.date.today().isoformat(), "<today>").replace(str(tmp), "<tmp>").replace(str(ROOT), "<root>")
    # Whether this machine can locate the protected envs (QL_1) is not what these outputs are about.
    text = re.sub(r"^builder: warning: cannot guard .*\n", "", text, flags=re.M)
    return re.sub(r"\b\d+\.\d+s\b", "<s>", text)


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_is_what_it_was(case: str, tmp_path: Path) -> None:
    expected = (OUT / f"{case}.txt").read_text(encoding="utf-8")
    assert _run(CASES[case], tmp_path) == expected


def test_every_recorded_output_has_a_case() -> None:
    assert sorted(p.stem for p in OUT.glob("*.txt")) == sorted(CASES)
    assert len(SNAPSHOTS) >= 2


def _record() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.txt"):
        old.unlink()
    with tempfile.TemporaryDirectory() as d:
        for case, argv in sorted(CASES.items()):
            (OUT / f"{case}.txt").write_text(_run(argv, Path(d)), encoding="utf-8")
            print(case, file=sys.stderr)


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    _record()
