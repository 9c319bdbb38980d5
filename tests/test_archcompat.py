"""The one binary-compatibility rule (builder.binaries.archcompat), boundary by boundary.

Sources: CUDA C++ Programming Guide "Binary Compatibility" / "PTX Compatibility",
Blackwell Compatibility Guide 1.2, NVIDIA blog "Family-Specific Architecture Features".
"""

from __future__ import annotations

import pytest

from builder.binaries.archcompat import Arch, CodeGroup, KernelArchs, covers, parse_cc, runs_on


@pytest.mark.parametrize(("text", "arch"), [
    ("89", Arch(89)), ("sm_89", Arch(89)), ("compute_90a", Arch(90, "a")), ("100f", Arch(100, "f")),
    ("sm_120", Arch(120)), (" sm_52 ", Arch(52)),
])
def test_arch_parse(text: str, arch: Arch) -> None:
    assert Arch.parse(text) == arch


@pytest.mark.parametrize("text", ["sm_8", "sm_89b", "gfx90a", "", "sm_1000", "compute_"])
def test_arch_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a GPU architecture"):
        Arch.parse(text)


def test_arch_names_and_cc() -> None:
    a = Arch(100, "f")
    assert (a.sm, a.compute, str(a), a.cc) == ("sm_100f", "compute_100f", "100f", (10, 0))
    assert Arch(89).cc == (8, 9) and Arch(120).cc == (12, 0) and Arch(103).cc == (10, 3)


@pytest.mark.parametrize(("cc", "want"), [("8.9", (8, 9)), ("12.0", (12, 0)), ((9, 0), (9, 0))])
def test_parse_cc(cc: str | tuple[int, int], want: tuple[int, int]) -> None:
    assert parse_cc(cc) == want


@pytest.mark.parametrize("cc", ["89", "8", "8.10", "sm_89", ""])
def test_parse_cc_rejects(cc: str) -> None:
    with pytest.raises(ValueError, match="not a compute capability"):
        parse_cc(cc)


# (arch, cc, SASS runs, PTX JITs)
CASES = [
    ("80", "8.0", True, True),
    ("80", "8.6", True, True),     # same major, newer minor
    ("86", "8.0", False, False),   # older minor: never
    ("80", "9.0", False, True),    # SASS never crosses a major; PTX does
    ("89", "8.9", True, True),
    ("89", "8.7", False, False),   # the 8.7 gap: sm_89 does not run on Orin
    ("90", "10.0", False, True),
    ("52", "6.1", False, True),
    ("70", "6.1", False, False),
    ("90a", "9.0", True, True),    # arch-specific: that GPU only
    ("90a", "9.1", False, False),
    ("90a", "10.0", False, False),
    ("100a", "10.3", False, False),
    ("100f", "10.0", True, True),  # family-specific: same major, equal or newer minor
    ("100f", "10.3", True, True),
    ("103f", "10.0", False, False),
    ("100f", "11.0", False, False),
    ("100f", "12.0", False, False),
    ("120", "12.1", True, True),
    ("120", "10.0", False, False),
]


@pytest.mark.parametrize(("arch", "cc", "sass", "ptx"), CASES)
def test_runs_on(arch: str, cc: str, sass: bool, ptx: bool) -> None:
    a = Arch.parse(arch)
    assert runs_on(a, cc, ptx=False) is sass
    assert runs_on(a, cc, ptx=True) is ptx


def test_covers_union_native_compatible_jit_none() -> None:
    k = KernelArchs.of(["sm_80", "sm_89", "sm_90a"], ["compute_90"])
    assert covers(k, "8.9") == (True, "sm_89 SASS runs natively on 8.9")
    assert covers(k, "8.6") == (True, "sm_80 SASS runs on 8.6 (same major, older minor)")
    ok, why = covers(k, "10.0")
    assert ok and why.startswith("no SASS for 10.0; PTX compute_90 is JIT-compiled")
    ok, why = covers(k, "7.5")
    assert not ok and why.startswith("nothing runs on 7.5: no SASS sm_7Y with Y <= 5 and no PTX at or below 7.5")
    assert "sm_80, sm_89, sm_90a, compute_90" in why


def test_covers_empty() -> None:
    ok, why = covers(KernelArchs(), "8.9")
    assert not ok and "no GPU code at all" in why


def _groups(*rows: tuple[int, list[str]]) -> KernelArchs:
    groups = tuple(CodeGroup(n, frozenset(Arch.parse(a) for a in names if a.startswith("sm_")),
                             frozenset(Arch.parse(a) for a in names if a.startswith("compute_")))
                   for n, names in rows)
    return KernelArchs(frozenset().union(*(g.sass for g in groups)), frozenset().union(*(g.ptx for g in groups)),
                       groups)


# The shape of vLLM 0.13.0's _C (builder/data/kernels.toml), reduced.
VLLM_LIKE = _groups(
    (29, ["sm_70", "sm_75", "sm_80", "sm_89", "sm_90", "sm_100", "sm_120"]),
    (20, ["sm_90a"]),
    (12, ["sm_80", "compute_80"]),
    (5, ["sm_89", "sm_120"]),
    (1, ["sm_52", "compute_52"]),
)


def test_groups_stray_ptx_does_not_make_a_gpu_supported() -> None:
    assert covers(KernelArchs(VLLM_LIKE.sass, VLLM_LIKE.ptx), "6.1")[0] is True  # the union alone would say yes
    ok, why = covers(VLLM_LIKE, "6.1")
    assert not ok
    assert "1 of 47 kernel containers have code for 6.1 (1 only as PTX)" in why


def test_groups_full_coverage_on_ada() -> None:
    ok, why = covers(VLLM_LIKE, "8.9")
    assert ok
    assert why.startswith("main arch list (29 containers, sm_70/sm_75/sm_80/sm_89/sm_90/sm_100/sm_120): "
                          "sm_89 SASS runs natively on 8.9; 47 of 47 kernel containers have code for 8.9")


def test_groups_partial_coverage_names_what_is_missing() -> None:
    ok, why = covers(VLLM_LIKE, "8.0")
    assert ok and "42 of 47 kernel containers have code for 8.0" in why and "no code in 5 with sm_89/sm_120" in why
    ok, why = covers(VLLM_LIKE, "7.0")
    assert ok and "30 of 47" in why


def test_groups_arch_specific_containers_count_only_for_their_gpu() -> None:
    ok, why = covers(VLLM_LIKE, "9.0")
    assert ok and "of 67 kernel containers" in why  # the 20 sm_90a containers count on 9.0 ...
    ok, why = covers(VLLM_LIKE, "12.0")
    assert ok and "of 47 kernel containers" in why  # ... and not on 12.0


def test_groups_main_list_decides() -> None:
    ok, why = covers(VLLM_LIKE, "11.0")  # Thor: no sm_110, main list has no PTX
    assert not ok and why.startswith("main arch list (29 containers")


def test_groups_only_arch_specific_for_other_gpus() -> None:
    k = _groups((2, ["sm_90a"]), (2, ["sm_100a"]))
    assert covers(k, "8.9") == (False, "nothing runs on 8.9: only arch-specific code for other GPUs")
    assert covers(k, "9.0")[0] is True


def test_to_dict_roundtrip() -> None:
    assert KernelArchs.from_dict(VLLM_LIKE.to_dict()) == VLLM_LIKE
