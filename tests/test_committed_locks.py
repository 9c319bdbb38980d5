"""The committed locks: valid PEP 751, fresh, torch 2.9.0 + vLLM 0.13.0 wheels for their Python."""

from __future__ import annotations

import tomllib

import pytest
from packaging.pylock import Pylock
from packaging.utils import parse_wheel_filename

from builder.lock.state import lock_state
from builder.project import Project, lock_path
from tests.conftest import ROOT, builder_cmd

PROJECT = Project(ROOT)
TARGETS = [(m, py) for m in PROJECT.matrices() for py in m.pythons]


@pytest.mark.parametrize(("matrix", "python"), TARGETS, ids=lambda x: getattr(x, "name", x))
def test_committed_lock_is_valid_and_complete(matrix, python) -> None:  # type: ignore[no-untyped-def]
    path = lock_path(PROJECT.locks, matrix, python)
    data = tomllib.loads(path.read_text())
    lock = Pylock.from_dict(data)
    assert lock_state(PROJECT.locks, matrix, python).state == "fresh"
    by_name = {p.name: p for p in lock.packages}
    assert str(by_name["torch"].version) == "2.9.0"
    assert str(by_name["vllm"].version) == "0.13.0"
    cp = "cp" + python.replace(".", "")
    for name in ("torch", "vllm"):
        wheels = by_name[name].wheels or []
        tags = {t for w in wheels for t in parse_wheel_filename(w.name or str(w.url).rsplit("/", 1)[-1])[3]}
        assert any(t.platform.startswith("manylinux") and t.platform.endswith("x86_64") for t in tags), name
        assert any(t.interpreter in (cp, "cp38") for t in tags), (name, tags)
    for p in lock.packages:
        assert p.wheels, f"{p.name} has no wheel"
        for w in p.wheels:
            assert w.hashes and len(w.hashes.get("sha256", "")) == 64, p.name
    if matrix.id == "a":
        assert str(by_name["nvidia-cublas-cu12"].version).startswith("12.9.")
    else:
        assert str(by_name["nvidia-cublas-cu12"].version) == "12.8.4.1"


def test_check_passes_on_the_checkout() -> None:
    r = builder_cmd("lock", "--check", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "all 4 locks are fresh" in r.stdout
