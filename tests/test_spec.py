"""Spec validation: every problem at once, dotted paths, "did you mean", no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder import spec, spec_edit
from builder.errors import EXIT_USAGE, SpecError
from builder.project import Project, normalize_selector
from tests.conftest import ROOT, builder_cmd

INVALID = Path(__file__).parent / "data" / "specs" / "invalid"


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as ei:
        spec.load_matrix(path)
    return ei.value.problems


def test_shipped_specs_are_valid_and_say_what_the_plan_says() -> None:
    proj = Project(ROOT)
    a, b = proj.matrix("A"), proj.matrix("matrix-b")
    assert (a.driver_floor, b.driver_floor) == ("575.57.08", "570.26")
    for m in (a, b):
        assert m.pythons == ("3.11", "3.12")
        assert m.platform == "x86_64-manylinux_2_35"
        assert m.exclude_newer == "2025-12-30"
        assert (m.torch.version, m.vllm.version) == ("2.9.0", "0.13.0")
        assert m.torch.source == m.vllm.source == "pypi"
        assert m.conda is None  # shipped matrices keep a PyPI-only lock
    assert any(o.startswith("nvidia-cublas-cu12>=12.9") for o in a.overrides)
    assert b.overrides == ()
    host = proj.host()
    assert host.driver == "550.107.02" and host.glibc == "2.35"
    assert host.gpu_count == 2 and host.compute_capabilities == ("8.9",)
    assert host.protected_conda_envs == ("QL_1",)


def test_unknown_keys_get_did_you_mean_with_dotted_paths() -> None:
    probs = problems_of(INVALID / "unknown-key.toml")
    f = str(INVALID / "unknown-key.toml")
    assert f"{f}: driver_flor: unknown key (did you mean 'driver-floor'?)" in probs
    assert f"{f}: torch.sourc: unknown key (did you mean 'source'?)" in probs


def test_every_problem_is_reported_at_once() -> None:
    probs = problems_of(INVALID / "many-problems.toml")
    f = str(INVALID / "many-problems.toml")
    expected = [
        f"{f}: title: must be a string, got 3",
        f"{f}: driver-floor: not a valid version: 'five-seventy'",
        f"{f}: cuda-track: must be a CUDA release like '12.8', got '12'",
        f"{f}: pythons[1]: must be like '3.12', got '312'",
        f"{f}: exclude-newer: must be a date like 2025-12-30, got 'yesterday'",
        f"{f}: torch.cuda: required key is missing",
        f"{f}: torch.source: must be one of pypi, pytorch-index, vllm-index, url, got 'conda'",
        f"{f}: vllm.url: required when source = 'url'",
        f"{f}: vllm.sha256: required when source = 'url'",
    ]
    for e in expected:
        assert e in probs, (e, probs)
    assert any(p.startswith(f"{f}: platform:") for p in probs)
    assert any(p.startswith(f"{f}: packages.overrides[0]: not a valid requirement") for p in probs)


def test_missing_tables_and_empty_pythons() -> None:
    probs = problems_of(INVALID / "missing-tables.toml")
    assert any(p.endswith("torch: required key is missing") for p in probs)
    assert any(p.endswith("vllm: required key is missing") for p in probs)
    assert any(p.endswith("pythons: must name at least one Python") for p in probs)


def test_bad_toml_is_one_clear_problem() -> None:
    probs = problems_of(INVALID / "bad-toml.toml")
    assert len(probs) == 1 and "not valid TOML" in probs[0]


def test_cli_reports_all_problems_exit_2_no_traceback(tmp_path: Path) -> None:
    proj = tmp_path / "p"
    shutil.copytree(ROOT / "envs", proj / "envs")
    shutil.copy(INVALID / "many-problems.toml", proj / "envs" / "matrix-x.toml")
    r = builder_cmd("lock", "--check", cwd=proj)
    assert r.returncode == EXIT_USAGE
    assert "Traceback" not in r.stderr
    assert "matrix-x.toml: torch.cuda: required key is missing" in r.stderr
    assert "matrix-x.toml: vllm.url: required when source = 'url'" in r.stderr
    r = builder_cmd("spec", "validate", cwd=proj)
    assert r.returncode == EXIT_USAGE and "problems in spec" in r.stderr


@pytest.mark.parametrize("sel", ["A", "a", "matrix-a", " matrix-A "])
def test_selector_forms(sel: str) -> None:
    assert normalize_selector(sel, ["a", "b"]) == "a"


def test_unknown_matrix_is_usage_error(tmp_path: Path) -> None:
    r = builder_cmd("lock", "--matrix", "C", "--check", cwd=ROOT)
    assert r.returncode == EXIT_USAGE
    assert "unknown matrix 'C'" in r.stderr and "matrix-a, matrix-b" in r.stderr


def test_spec_set_keeps_comments_and_layout(tmp_path: Path) -> None:
    src = ROOT / "envs" / "matrix-a.toml"
    p = tmp_path / "matrix-a.toml"
    shutil.copy(src, p)
    old, new = spec_edit.set_value(p, "torch.version", "2.9.1")
    assert (old, new) == ("2.9.0", "2.9.1")
    before, after = src.read_text().splitlines(), p.read_text().splitlines()
    diff = [(x, y) for x, y in zip(before, after, strict=True) if x != y]
    assert diff == [('version = "2.9.0"', 'version = "2.9.1"')]
    assert spec.load_matrix(p).torch.version == "2.9.1"


def test_spec_set_rejects_invalid_value_and_writes_nothing(tmp_path: Path) -> None:
    p = tmp_path / "matrix-a.toml"
    shutil.copy(ROOT / "envs" / "matrix-a.toml", p)
    before = p.read_bytes()
    with pytest.raises(SpecError) as ei:
        spec_edit.set_value(p, "torch.cuda", "twelve")
    assert "torch.cuda" in ei.value.problems[0]
    assert p.read_bytes() == before


def test_spec_hash_ignores_title_but_not_pins() -> None:
    a = Project(ROOT).matrix("a")
    import dataclasses

    assert dataclasses.replace(a, title="x").spec_hash("3.12") == a.spec_hash("3.12")
    assert dataclasses.replace(a, overrides=()).spec_hash("3.12") != a.spec_hash("3.12")
    assert a.spec_hash("3.11") != a.spec_hash("3.12")


# Hypothesis: mutate a valid spec in arbitrary ways; validation must either
# succeed or raise SpecError with at least one "file: path: message" problem.
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_keys = st.sampled_from(["id", "title", "driver-floor", "cuda-track", "pythons", "platform", "exclude-newer",
                         "torch", "vllm", "packages", "index", "conda", "torch.version", "torch.cuda",
                         "torch.source", "vllm.url", "packages.extra", "packages.overrides", "bogus"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_keys, _values), min_size=1, max_size=4))
def test_mutated_specs_never_traceback(mutations: list[tuple[str, object]]) -> None:
    doc = tomlkit.parse((ROOT / "envs" / "matrix-b.toml").read_text()).unwrap()
    for key, value in mutations:
        node = doc
        *parents, last = key.split(".")
        for k in parents:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    try:
        spec.matrix_from_mapping(doc, "matrix-b.toml", expect_id="b")
    except SpecError as exc:
        assert exc.problems and all(p.startswith("matrix-b.toml") for p in exc.problems)
        assert exc.line()


def test_id_must_match_file_name(tmp_path: Path) -> None:
    p = tmp_path / "matrix-z.toml"
    shutil.copy(ROOT / "envs" / "matrix-a.toml", p)
    probs = problems_of(p)
    assert probs == [f"{p}: id: must be 'z' to match the file name, got 'a'"]


# The plain-form fast path (spec._PLAIN_*): validating a shipped spec must not need
# packaging, and the shortcut may only ever accept what packaging accepts.
@settings(max_examples=100, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.from_regex(spec._PLAIN_REQUIREMENT_RE, fullmatch=True))
def test_every_plain_requirement_is_one_packaging_accepts(text: str) -> None:
    from packaging.requirements import Requirement

    Requirement(text)


@settings(max_examples=50, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.from_regex(spec._PLAIN_VERSION_RE, fullmatch=True))
def test_every_plain_version_is_one_packaging_accepts(text: str) -> None:
    from packaging.version import Version

    Version(text)


def test_shipped_spec_values_take_the_fast_path_and_odd_ones_go_to_packaging() -> None:
    proj = Project(ROOT)
    for m in proj.matrices():
        for r in (*m.extra, *m.overrides, *m.constraints):
            assert spec._PLAIN_REQUIREMENT_RE.fullmatch(r), r
        for v in (m.driver_floor, m.torch.version, m.vllm.version):
            assert spec._PLAIN_VERSION_RE.fullmatch(v), v
    # Not plain, still judged (and worded) by packaging: valid ones pass, invalid ones fail.
    for ok in ("torch==2.9.0+cu128", "foo[bar]>=1", 'x ; python_version < "3.12"', "x===1", "y>=1.0rc1"):
        assert not spec._PLAIN_REQUIREMENT_RE.fullmatch(ok) and spec._requirement(ok) is None, ok
    for bad in ("x>=", "~=1", "x ~= 1", "torch==٢.9", "x>=1.*"):
        assert spec._requirement(bad) is not None and "not a valid requirement" in str(spec._requirement(bad)), bad
    assert spec._version("2.9.0rc1") is None and spec._version("٢.9") == "not a valid version: '٢.9'"
