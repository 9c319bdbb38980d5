"""The pure parts of `builder suggest`: the simple API page, release selection (cut-off, yanked,
pre-releases), wheel picking, torch's CUDA line, the data skips (each at its boundary), the
three policies, the fleet answers and the keys results are kept under."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from packaging.specifiers import SpecifierSet

from builder.check import knowledge as cuda
from builder.check import toolkit
from builder.pylock import target_env, target_tags
from builder.suggest import fleet, policy, releases, skips, stack
from builder.suggest.cudaline import CudaLine, torch_line
from builder.suggest.model import JUDGED, NOT_JUDGED, SKIPPED, Judgement, Line, Outcome, Row

LINUX = 'platform_system == "Linux" and platform_machine == "x86_64"'
PAGE = "https://example.org/simple/vllm/"


def _file(name: str, *, up: str | None = "2025-06-01T00:00:00Z", yanked: bool | str = False,
          rp: str | None = None) -> dict[str, object]:
    d: dict[str, object] = {"filename": name, "url": f"../../files/{name}", "hashes": {"sha256": "AB" * 32},
                            "size": 10, "yanked": yanked}
    if up is not None:
        d["upload-time"] = up
    if rp is not None:
        d["requires-python"] = rp
    return d


def _page(*files: dict[str, object]) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "vllm", "files": list(files)}).encode()


def _rels(*files: dict[str, object]) -> list[releases.Release]:
    return releases.group(releases.parse_page(_page(*files), PAGE), "vllm")


W = "cp38-abi3-manylinux_2_31_x86_64"

# ---------------------------------------------------------------- the page


def test_page_files_resolve_relative_urls_and_keep_yanked_reasons_and_requires_python() -> None:
    fs = releases.parse_page(_page(_file(f"vllm-0.13.1-{W}.whl", yanked="broken kernels", rp=">=3.10")), PAGE)
    f = fs[0]
    assert f.url == "https://example.org/files/vllm-0.13.1-cp38-abi3-manylinux_2_31_x86_64.whl"
    assert f.sha256 == "ab" * 32 and f.size == 10 and f.yanked and f.yanked_reason == "broken kernels"
    assert f.requires_python == ">=3.10" and f.uploaded == dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("raw", "says"), [
    (b"<html><body></body></html>", "not JSON"),
    (b'{"meta": {"api-version": "1.0"}}', "no 'files' list"),
    (b'{"meta": {"api-version": "2.0"}, "files": []}', "unsupported api-version"),
    (b'{"meta": {"api-version": "1.1"}, "files": [{"filename": "x"}]}', "files[0]: needs a filename and a url"),
])
def test_a_page_that_is_not_pep_691_json_is_refused_with_why(raw: bytes, says: str) -> None:
    with pytest.raises(releases.PageError, match=says.replace("[", r"\[").replace("]", r"\]")):
        releases.parse_page(raw, PAGE)


def test_releases_come_newest_first_in_pep_440_order_with_post_releases_and_sdists() -> None:
    rels = _rels(_file(f"vllm-0.8.5-{W}.whl"), _file("vllm-0.8.5.post1.tar.gz"), _file(f"vllm-0.10.0-{W}.whl"),
                 _file(f"vllm-0.9.0-{W}.whl"), _file("not-vllm-1.0.tar.gz"), _file("vllm-0.8.5.post1.tar.gz"))
    assert [r.version for r in rels] == ["0.10.0", "0.9.0", "0.8.5.post1", "0.8.5"]
    assert len(rels[2].files) == 1  # the same file listed twice counts once


def test_the_cutoff_is_the_end_of_the_day_utc_and_a_file_at_it_is_not_seen() -> None:
    until = releases.cutoff("2025-12-30")
    assert until == dt.datetime(2025, 12, 31, tzinfo=dt.UTC)
    rels = _rels(_file(f"vllm-0.3.0-{W}.whl", up="2025-12-31T00:00:00Z"),
                 _file(f"vllm-0.2.0-{W}.whl", up="2025-12-30T23:59:59.999999Z"),
                 _file(f"vllm-0.1.0-{W}.whl", up=None))  # no upload time: uv leaves it out too
    keep, left = releases.select(rels, until=until)
    assert [r.version for r in keep] == ["0.2.0"] and left == []


def test_yanked_and_pre_releases_are_left_out_unless_asked() -> None:
    rels = _rels(_file(f"vllm-0.14.0rc1-{W}.whl"), _file(f"vllm-0.13.1-{W}.whl", yanked="broken kernels"),
                 _file(f"vllm-0.13.0-{W}.whl"), _file(f"vllm-0.12.0-{W}.whl", yanked=True),
                 _file("vllm-0.12.0.tar.gz"))
    until = releases.cutoff("2025-12-30")
    keep, left = releases.select(rels, until=until)
    assert [r.version for r in keep] == ["0.13.0", "0.12.0"]
    assert [f.filename for f in keep[1].files] == ["vllm-0.12.0.tar.gz"]  # only its yanked wheel is dropped
    assert [(x.version, x.why) for x in left] == [
        ("0.14.0rc1", "pre-release (--pre tries it)"),
        ("0.13.1", "yanked (broken kernels) (--include-yanked tries it)")]
    keep, left = releases.select(rels, until=until, pre=True, yanked=True)
    assert [r.version for r in keep] == ["0.14.0rc1", "0.13.1", "0.13.0", "0.12.0"] and left == []
    keep, _ = releases.select(rels, until=until, spec=SpecifierSet(">=0.14.0rc1"))
    assert [r.version for r in keep] == ["0.14.0rc1"]  # a range naming a pre-release takes it
    keep, left = releases.select(rels, until=until, spec=SpecifierSet("<0.13"))
    assert [r.version for r in keep] == ["0.12.0"] and "outside --vllm <0.13" in left[-1].why
    keep, left = releases.select(rels, until=until, spec=SpecifierSet(">=0.13"), pre=True)
    assert [r.version for r in keep] == ["0.14.0rc1", "0.13.0"]  # --pre: a pre-release inside a plain range


def test_pick_wheel_takes_the_best_tag_the_target_installs_and_respects_requires_python() -> None:
    rel = _rels(_file(f"vllm-0.20.0-{W}.whl"), _file("vllm-0.20.0-cp38-abi3-manylinux_2_35_x86_64.whl"),
                _file("vllm-0.20.0-cp38-abi3-manylinux_2_35_aarch64.whl"), _file("vllm-0.20.0.tar.gz"))[0]
    best = releases.pick_wheel(rel, target_tags("3.12", "x86_64", "2.35"), "3.12")
    assert best is not None and best.filename.endswith("manylinux_2_35_x86_64.whl")
    older = releases.pick_wheel(rel, target_tags("3.12", "x86_64", "2.31"), "3.12")
    assert older is not None and older.filename.endswith("manylinux_2_31_x86_64.whl")
    assert releases.pick_wheel(rel, target_tags("3.12", "x86_64", "2.28"), "3.12") is None
    only311 = _rels(_file(f"vllm-0.7.0-{W}.whl", rp=">=3.9,<3.12"))[0]
    assert releases.pick_wheel(only311, target_tags("3.12", "x86_64", "2.35"), "3.12") is None
    assert releases.pick_wheel(only311, target_tags("3.11", "x86_64", "2.35"), "3.11") is not None


def test_a_range_on_torch_takes_the_newest_release_it_admits() -> None:
    rels = releases.group(releases.parse_page(_page(*(_file(f"torch-{v}-cp312-cp312-manylinux_2_28_x86_64.whl")
                                                      for v in ("2.9.0", "2.8.0", "2.10.0rc1"))), PAGE), "torch")
    assert releases.newest_matching(rels, SpecifierSet(">=2.8,<2.10")).version == "2.9.0"  # type: ignore[union-attr]
    assert releases.newest_matching(rels, SpecifierSet(">=3")) is None
    assert releases.newest_matching(rels, SpecifierSet(">=2.8")).version == "2.9.0"  # type: ignore[union-attr]
    assert releases.newest_matching(rels, SpecifierSet(">=2.10.0rc1")).version == "2.10.0rc1"  # type: ignore[union-attr]


def test_spec_set_names_the_option_on_a_bad_specifier() -> None:
    assert releases.spec_set(None, "--vllm") is None and releases.spec_set(" ", "--vllm") is None
    with pytest.raises(ValueError, match="--torch: not a version specifier: 'two point nine'"):
        releases.spec_set("two point nine", "--torch")


# ---------------------------------------------------------------- torch's CUDA line

K, TK = cuda.load(), toolkit.load()
ENV = target_env("3.12", "x86_64")


@pytest.mark.parametrize(("reqs", "release", "update", "native", "compat"), [
    ([f"nvidia-cuda-runtime-cu12==12.8.90; {LINUX}", f"nvidia-cublas-cu12==12.8.4.1; {LINUX}", "filelock"],
     "12.8", 1, "570.124.06", "525.60.13"),  # torch 2.9.0 (PyPI)
    ([f"nvidia-cuda-runtime-cu12==12.4.127; {LINUX}"], "12.4", 1, "550.54.15", "525.60.13"),  # torch 2.6.0
    ([f"cuda-toolkit[cublas,cudart,nvrtc]==13.0.3; {LINUX}"], "13.0", 2, "580.95.05", "580.65.06"),  # torch 2.14
])
def test_torch_line_from_its_pins(reqs: list[str], release: str, update: int, native: str, compat: str) -> None:
    line = torch_line(tuple(reqs), ENV, K, tk=TK)
    assert line is not None
    assert (line.release, line.update, line.native, line.compat) == (release, update, native, compat)


def test_a_torch_without_cuda_pins_for_the_target_has_no_line() -> None:
    reqs = (f"nvidia-cuda-runtime-cu12==12.8.90; {LINUX}", "filelock")
    assert torch_line(reqs, target_env("3.12", "aarch64"), K, tk=TK) is None  # PyPI's aarch64 CPU build
    assert torch_line(("filelock",), ENV, K, tk=TK) is None


# ---------------------------------------------------------------- data skips, at their boundaries

L12 = CudaLine(major=12, release="12.8", update=1, runtime="12.8.90", native="570.124.06", native_source="",
               compat="525.60.13", compat_source="", how="pin")
L13 = CudaLine(major=13, release="13.0", update=2, runtime="13.0.96", native="580.95.05", native_source="",
               compat="580.65.06", compat_source="", how="pin")


@pytest.mark.parametrize(("line", "driver", "skipped"), [
    (L13, "580.65.06", False), (L13, "580.65.05", True), (L13, "575.57.08", True), (L13, "590.44.01", False),
    (L12, "525.60.13", False), (L12, "525.60.12", True), (L12, "550.107.02", False),
    (L12, None, False), (None, "470.1", False),
])
def test_cuda_driver_skips_only_below_the_minor_version_compatibility_floor(line: CudaLine | None,
                                                                          driver: str | None,
                                                                          skipped: bool) -> None:
    s = skips.cuda_driver(line, driver)
    assert (s is not None) == skipped
    if s is not None:
        assert s.rule == "cuda-driver" and "even under minor-version compatibility" in s.fact and driver in s.fact


@pytest.mark.parametrize(("driver", "skipped"), [("570.124.06", False), ("570.124.05", True), ("570.26", True),
                                                 ("575.51.03", False), (None, False)])
def test_native_floor_skips_only_below_torchs_native_floor(driver: str | None, skipped: bool) -> None:
    s = skips.native_floor(L12, driver)
    assert (s is not None) == skipped
    assert skips.native_floor(CudaLine(**{**L12.__dict__, "native": None}), "470.1") is None  # no row: unknown


@pytest.mark.parametrize(("line", "ccs", "skipped"), [
    (L13, ("7.5",), False), (L13, ("7.0",), True), (L13, ("8.9", "7.2"), True), (L12, ("7.0",), False),
    (L12, ("5.0",), False), (L12, ("3.7",), True), (None, ("3.0",), False),
])
def test_cuda_arch_skips_gpus_older_than_the_major_supports(line: CudaLine | None, ccs: tuple[str, ...],
                                                            skipped: bool) -> None:
    s = skips.cuda_arch(line, ccs, K)
    assert (s is not None) == skipped
    if s is not None:
        assert s.rule == "cuda-arch"


def test_wheel_pin_and_constraint_skips() -> None:
    assert skips.no_wheel(found=True, version="0.7.0", python="3.12", platform="p") is None
    s = skips.no_wheel(found=False, version="0.7.0", python="3.12", platform="x86_64-manylinux_2_35")
    assert s is not None and s.fact.startswith("vLLM 0.7.0 has no wheel for CPython 3.12 on x86_64-manylinux_2_35")
    assert skips.torch_pin("torch==2.9.0", available=True, version="0.13.0") is None
    assert skips.torch_pin(None, available=False, version="0.13.0").rule == "torch-pin"  # type: ignore[union-attr]
    assert "does not have" in skips.torch_pin("torch==9.9", available=False, version="0.1").fact  # type: ignore[union-attr]
    assert skips.torch_constraint("2.9.0", None, version="0.13.0") is None
    assert skips.torch_constraint("2.9.0", SpecifierSet("<2.9"), version="0.13.0").rule == "torch-constraint"  # type: ignore[union-attr]
    assert skips.torch_constraint("2.9.0", SpecifierSet("<=2.9.0"), version="0.13.0") is None
    # vLLM may pin a pre-release torch exactly: a plain range still admits it
    assert skips.torch_constraint("2.10.0rc1", SpecifierSet(">=2.9"), version="0.14.0rc1") is None


# ---------------------------------------------------------------- policies


def _j(verdict: str, *, native: str | None = "570.124.06", exact: bool = True, levels: tuple[str, ...] = (),
       python: str = "3.12") -> Judgement:
    return Judgement(python=python, verdict=verdict, native_floor=native, native_exact=exact, native_note="set by x",
                     compat_floor="525.60.13", declared_floor="525.60.13",
                     findings=tuple(Line(id=f"rule-{i}", level=lv, message=f"{lv} {i}") for i, lv in enumerate(levels)),
                     lock_hash="sha256:0", packages=1, vllm_cuda="12.8")


def test_default_accepts_warn_and_never_fail() -> None:
    assert policy.accept("default", [_j("pass")], "550.107.02")[0]
    ok, rule, why = policy.accept("default", [_j("warn", levels=("pass", "warn"))], "550.107.02")
    assert ok and rule == "" and why.startswith("WARN accepted; first warning rule-1")
    ok, rule, why = policy.accept("default", [_j("pass", python="3.11"), _j("fail", levels=("warn", "fail"))],
                                  "550.107.02")
    assert (ok, rule, why) == (False, "rule-1", "py3.12: fail 1")
    assert not policy.accept("default", [], "550.107.02")[0]
    ok, _rule, why = policy.accept("default", [_j("pass", python="3.11"), _j("warn", levels=("warn",))],
                                   "550.107.02")
    assert ok and why.startswith("WARN accepted")  # a warn on one Python is the stack's warn


@pytest.mark.parametrize(("driver", "ok"), [("570.124.06", True), ("570.124.05", False), (None, False)])
def test_native_needs_the_host_driver_at_the_locks_native_floor(driver: str | None, ok: bool) -> None:
    got = policy.accept("native", [_j("warn", levels=("warn",))], driver)
    assert got[0] == ok and (ok or got[1] == "native-floor")


def test_native_refuses_a_floor_that_is_not_known_exactly() -> None:
    ok, rule, why = policy.accept("native", [_j("warn", exact=False)], "999.1.1")
    assert not ok and rule == "native-floor" and "not known exactly" in why
    assert not policy.accept("native", [_j("warn", native=None)], "999.1.1")[0]


def test_strict_needs_pass_on_every_python() -> None:
    assert policy.accept("strict", [_j("pass"), _j("pass", python="3.11")], "575.57.08")[0]
    ok, rule, why = policy.accept("strict", [_j("pass"), _j("warn", levels=("pass", "warn"), python="3.11")],
                                  "575.57.08")
    assert (ok, rule) == (False, "rule-1") and why.startswith("py3.11: --strict needs pass")
    assert not policy.accept("strict", [_j("pass")], "570.26")[0]  # below the native floor


def test_declared_floor_per_policy_and_its_fallbacks() -> None:
    assert policy.declared_floor("default", "575.57.08", "525.60.13", fallback="x") == "525.60.13"
    assert policy.declared_floor("native", "575.57.08", "525.60.13", fallback="x") == "575.57.08"
    assert policy.declared_floor("strict", "575.57.08", "525.60.13", fallback="x") == "575.57.08"
    assert policy.declared_floor("native", None, "525.60.13", fallback="x") == "525.60.13"
    assert policy.declared_floor("default", "575.57.08", None, fallback="x") == "575.57.08"
    assert policy.declared_floor("default", None, None, fallback="550.107.02") == "550.107.02"
    assert policy.stack_floors([("570.26", "525.60.13"), ("575.57.08", None)]) == ("575.57.08", "525.60.13")
    assert [policy.choose(native=n, strict=s) for n, s in ((False, False), (True, False), (False, True),
                                                           (True, True))] == ["default", "native", "strict", "strict"]


# ---------------------------------------------------------------- fleet


def _row(v: str, *accepted: bool | None) -> Row:
    outs = tuple(Outcome(status=NOT_JUDGED) if a is None else Outcome(status=JUDGED, accepted=a) if a
                 else Outcome(status=SKIPPED) for a in accepted)
    return Row(vllm=v, torch="2.9.0", line=None, vllm_wheel=None, outcomes=outs)


def test_each_host_has_its_newest_answer_and_the_fleet_the_newest_common_one() -> None:
    rows = [_row("0.20.0", True, False, False), _row("0.13.0", True, True, False), _row("0.9.0", True, True, True)]
    assert [fleet.answer(rows, h) for h in range(3)] == [0, 1, 2]
    assert fleet.common(rows) == 2
    assert fleet.common(rows[:2]) is None and fleet.answer(rows[:1], 1) is None


def test_an_unjudged_candidate_before_the_answer_leaves_it_undecided() -> None:
    rows = [_row("0.20.0", None), _row("0.13.0", True)]
    assert fleet.unjudged_before(rows, fleet.common(rows)) == ["0.20.0"]
    assert fleet.unjudged_before([_row("0.20.0", True), _row("0.13.0", None)], 0) == []
    assert fleet.unjudged_before([_row("0.20.0", False), _row("0.13.0", None)], None) == ["0.13.0"]
    two = [_row("0.20.0", None, False), _row("0.13.0", True, True)]  # one host of two could not judge it
    assert fleet.unjudged_before(two, fleet.common(two)) == ["0.20.0"]


def test_a_fleet_is_locked_for_one_architecture_and_its_oldest_glibc() -> None:
    assert fleet.platform(["x86_64", "x86_64"], ["2.39", "2.35", None]) == "x86_64-manylinux_2_35"
    assert fleet.platform(["aarch64"], ["2.31"]) == "aarch64-manylinux_2_31"
    assert fleet.platform(["x86_64", "x86_64"], ["2.17", "2.5"]) == "x86_64-manylinux_2_5"  # by number, not text
    with pytest.raises(ValueError, match="different architectures"):
        fleet.platform(["x86_64", "aarch64"], ["2.35", "2.35"])
    with pytest.raises(ValueError, match="glibc"):
        fleet.platform(["x86_64"], [None])


# ---------------------------------------------------------------- keys


def _m(**kw: object) -> object:
    base: dict[str, object] = dict(vllm="0.13.0", torch="2.9.0", torch_cuda="12.8", pythons=("3.12",),
                                   platform="x86_64-manylinux_2_35", exclude_newer="2025-12-30")
    return stack.candidate_matrix(**{**base, **kw})  # type: ignore[arg-type]


def test_a_candidate_is_a_matrix_with_pypi_pins() -> None:
    m = _m()
    assert m.requirements() == ["torch==2.9.0", "vllm==0.13.0"]  # type: ignore[attr-defined]
    assert m.index_url == "https://pypi.org/simple" and m.vllm.cuda == "12.8"  # type: ignore[attr-defined]


@pytest.mark.parametrize("change", [
    {"uv_version": "0.14.0"}, {"python": "3.11"}, {"exclude_newer": "2025-12-31"},
    {"index_url": "https://mirror.example/simple"}, {"platform": "x86_64-manylinux_2_31"},
    {"wheels": {"vllm/x.whl": "ff" * 32}}, {"torch": "2.9.1"},
])
def test_the_resolution_key_changes_with_every_input(change: dict[str, object]) -> None:
    def key(**kw: object) -> str:
        mk = {k: v for k, v in kw.items() if k in ("exclude_newer", "index_url", "platform", "torch")}
        return stack.resolution_key(_m(**mk), str(kw.get("python", "3.12")),  # type: ignore[arg-type]
                                    uv_version=str(kw.get("uv_version", "0.13.9")),
                                    wheels=kw.get("wheels", {"vllm/x.whl": "aa" * 32}))  # type: ignore[arg-type]

    assert key() == key() and key(**change) != key()
