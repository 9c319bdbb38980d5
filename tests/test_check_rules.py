"""The pure rules of `builder check` (builder/check/rules.py), on facts built by hand.

No wheel is read and no network is used: every test builds the packages, identities and
host a rule looks at, from the shipped knowledge tables (builder/data/cuda.toml), and
checks every level of every rule and the boundaries of each comparison (a driver exactly
at a floor, one below, below the minor-version floor).  tests/rule_mutants.py mutates
the comparisons of rules.py one at a time and expects this file to catch each.

Driver rows used (NVIDIA Table 3, builder/data/cuda.toml): 12.8 U1 570.124.06, 12.9 GA
575.51.03, 12.9 U1 575.57.08, 13.0 GA/U1/U2 580.65.06/580.82.07/580.95.05, 13.2 U2
595.71.05; minor-version compatibility 12.x 525.60.13, 13.x 580.65.06.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from builder import pylock
from builder.binaries.archcompat import KernelArchs
from builder.check import components, knowledge, loaded, rules, toolkit
from builder.check.identity import nvidia_identity
from builder.check.loaded import analyze
from builder.check.model import Binary, Facts, Identity, KernelEvidence, Pkg, WheelFacts, WheelRef
from builder.driver.facts import HostFacts
from builder.spec import Matrix, matrix_from_mapping

K = knowledge.load()
TK = toolkit.load()
ENV = {"python_version": "3.12", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "implementation_name": "cpython", "os_name": "posix", "platform_python_implementation": "CPython",
       "python_full_version": "3.12.0", "platform_release": "", "platform_version": "", "extra": ""}
SHA = "ab" * 32


# ---------------------------------------------------------------- builders


def matrix(floor: str = "575.57.08") -> Matrix:
    return matrix_from_mapping({
        "id": "t", "title": "test", "driver-floor": floor, "cuda-track": "12.9", "pythons": ["3.12"],
        "platform": "x86_64-manylinux_2_35", "exclude-newer": "2025-12-30",
        "torch": {"version": "2.9.0", "cuda": "12.8"}, "vllm": {"version": "0.13.0", "cuda": "12.9"},
    })


def host(driver: str | None = "575.57.08", ccs: tuple[str, ...] = ("8.9",), glibc: str | None = "2.35") -> HostFacts:
    return HostFacts(origin="test").overridden(driver=driver, ccs=ccs, glibc=glibc)


def ident(kind: str, majors: tuple[int, ...] = (12,), **kw: Any) -> Identity:
    i = Identity(major=set(majors), **kw)
    i.add(kind, f"by hand ({kind})")
    return i


def wheel(name: str, version: str, platform: bool = True, sha: str = SHA) -> WheelRef:
    tag = "cp312-cp312-manylinux_2_28_x86_64" if platform else "py3-none-any"
    return WheelRef(name=name, version=version, filename=f"{name}-{version}-{tag}.whl", sha256=sha, platform=platform)


def torch(runtime: str = "12.8.90", cublas: str | None = "12.8.4.1", major: int = 12) -> Pkg:
    soname = f"libcudart.so.{major}"
    return Pkg("torch", "2.9.0", wheel("torch", "2.9.0"),
               identity=ident("requires-dist", (major,), runtime=runtime, release=".".join(runtime.split(".")[:2]),
                              cudart_soname=soname, cublas=cublas))


def vllm(toolkit_version: str | None = "12.9.86", major: int = 12, *, needed: tuple[str, ...] | None = None,
         kernels: KernelEvidence | None = None, requires: tuple[str, ...] = ("torch==2.9.0",)) -> Pkg:
    soname = f"libcudart.so.{major}"
    b = Binary("vllm/_flashmla_extension_C.abi3.so", needed or (soname,), toolkit_version)
    facts = WheelFacts("vllm.whl", SHA, "vllm", "0.13.0", requires, True, b, (b.member,), 3)
    i = ident("binary", (major,), cudart_soname=soname, build_toolkit=toolkit_version, kernels=kernels)
    if toolkit_version is None and kernels is None:
        i.toolkit_unknown = "no banner (by hand)"
    return Pkg("vllm", "0.13.0", wheel("vllm", "0.13.0"), facts=facts, identity=i)


def comp(name: str, version: str) -> Pkg:
    """A CUDA component package, identified as the pipeline does (name and version)."""
    return Pkg(name, version, wheel(name, version), identity=nvidia_identity(name, version, K, tk=TK))


def cu12_libs(runtime: str = "12.8.90", cublas: str = "12.8.4.1") -> list[Pkg]:
    return [comp("nvidia-cuda-runtime-cu12", runtime), comp("nvidia-cublas-cu12", cublas)]


def facts(*pkgs: Pkg, h: HostFacts | None = None, m: Matrix | None = None) -> Facts:
    return Facts("pylock.test.toml", "3.12", "x86_64", m, h if h is not None else host(),
                 {p.name: p for p in pkgs}, dict(ENV), K, TK)


def stack(**kw: Any) -> Facts:
    """torch 2.9.0 (CUDA 12.8 U1) + vLLM built with 12.9.86 + the CUDA 12 libraries."""
    return facts(torch(), vllm(), *cu12_libs(), **kw)


def kern(sass: tuple[str, ...] = ("sm_80", "sm_89"), ptx: tuple[str, ...] = ("compute_89",),
         isa: str | None = "8.8", member: str = "vllm/_C.abi3.so") -> KernelEvidence:
    return KernelEvidence(member, KernelArchs.of(list(sass), list(ptx)), isa, "shipped data", "by hand")


def level(f: Facts, rule: str) -> str:
    return finding(f, rule).level


def finding(f: Facts, rule: str) -> Any:
    return next(x for x in rules.evaluate(f) if x.id == rule)


# ---------------------------------------------------------------- cuda-identity


def test_identity_passes_when_every_package_is_placed() -> None:
    f = stack()
    r = rules.rule_identity(f)
    assert r.level == "pass" and r.message.startswith("2 CUDA-linked packages identified, 2 CUDA libraries")


def test_identity_warns_for_a_gpu_package_without_a_major() -> None:
    odd = Pkg("flash-attn", "2.8.0", wheel("flash-attn", "2.8.0"), identity=Identity())
    odd.identity.evidence.append({"kind": "binary", "detail": "no libcudart link in flash_attn/x.so"})  # type: ignore[union-attr]
    r = rules.rule_identity(facts(torch(), odd))
    assert r.level == "warn" and "flash-attn 2.8.0" in r.message
    assert any("no libcudart link" in e for e in r.evidence)


def test_identity_pure_python_jit_package_is_not_unknown() -> None:
    jit = Pkg("flashinfer-python", "0.5.3", wheel("flashinfer-python", "0.5.3", platform=False),
              identity=Identity(jit_only=True))
    assert rules.rule_identity(facts(torch(), jit)).level == "pass"


def test_identity_warns_for_an_unplaced_component_version_and_names_why() -> None:
    future = comp("nvidia-cufft", "99.0.0.1")  # no cuda-toolkit release pins it
    assert future.identity and future.identity.major == {13} and future.identity.unplaced
    r = rules.rule_identity(facts(torch(major=13, runtime="13.0.96"), future))
    assert r.level == "warn" and "nvidia-cufft 99.0.0.1" in r.message
    assert any("no cuda-toolkit release" in e for e in r.evidence)


def test_identity_cuda13_component_names_are_known_whatever_their_version() -> None:
    libs = [comp(n, v) for n, v in (("nvidia-cufft", "12.0.0.61"), ("nvidia-curand", "10.4.0.35"),
                                    ("nvidia-cusparse", "12.6.3.3"), ("nvidia-nvjitlink", "13.0.88"),
                                    ("nvidia-cudnn-cu13", "9.19.0.56"), ("nvidia-nccl-cu13", "2.28.9"))]
    assert all(p.identity and p.identity.major == {13} and not p.identity.unplaced for p in libs)
    assert rules.rule_identity(facts(torch(major=13, runtime="13.0.96"), *libs)).level == "pass"


def test_identity_unknown_nvidia_package_warns() -> None:
    stranger = Pkg("nvidia-something-new", "1.0", wheel("nvidia-something-new", "1.0"), identity=Identity())
    assert rules.rule_identity(facts(torch(), stranger)).level == "warn"


# ---------------------------------------------------------------- torch-pin


def test_torch_pin_pass_fail_and_none() -> None:
    assert rules.rule_torch_pin(stack()).level == "pass"
    r = rules.rule_torch_pin(facts(torch(), vllm(requires=("torch==2.8.0",))))
    assert r.level == "fail" and "requires torch==2.8.0; the lock has torch 2.9.0" in r.message
    none = rules.rule_torch_pin(facts(torch(), vllm(requires=("numpy>=2", "torch"))))
    assert none.level == "pass" and none.message == "no package pins torch, torchvision or torchaudio"


def test_torch_pin_ignores_pins_on_packages_not_locked_and_fails_an_unparsable_version() -> None:
    v = vllm(requires=("torchaudio==2.9.0",))
    assert rules.rule_torch_pin(facts(torch(), v)).level == "pass"  # no torchaudio in the lock
    odd = torch()
    odd.version = "not-a-version"
    assert rules.rule_torch_pin(facts(odd, vllm())).level == "fail"


# ---------------------------------------------------------------- cuda-major


def test_cuda_major_pass_on_one_major() -> None:
    r = rules.rule_cuda_major(stack())
    assert r.level == "pass" and r.message == "every CUDA-linked package is on CUDA 12"


def test_cuda_major_fails_when_packages_loaded_together_disagree() -> None:
    r = rules.rule_cuda_major(facts(torch(), vllm(toolkit_version="13.0.88", major=13), *cu12_libs(),
                                    comp("nvidia-cuda-runtime", "13.0.96")))
    assert r.level == "fail" and "CUDA 12: torch 2.9.0" in r.message and "CUDA 13: vllm 0.13.0" in r.message


def _family(files12: tuple[str, ...] | None, files13: tuple[str, ...] | None) -> list[Pkg]:
    a = Pkg("nvidia-cutlass-dsl-libs-cu12", "4.8.1", wheel("nvidia-cutlass-dsl-libs-cu12", "4.8.1"),
            identity=nvidia_identity("nvidia-cutlass-dsl-libs-cu12", "4.8.1", K, tk=TK), files=files12)
    b = Pkg("nvidia-cutlass-dsl-libs-cu13", "4.8.1", wheel("nvidia-cutlass-dsl-libs-cu13", "4.8.1"),
            identity=nvidia_identity("nvidia-cutlass-dsl-libs-cu13", "4.8.1", K, tk=TK), files=files13)
    return [a, b]


def test_cuda_major_per_major_builds_in_disjoint_files_coexist() -> None:
    fam = _family(("nvidia_cutlass_dsl/cu12/lib/libcute_dsl_runtime.so", "nvidia_cutlass_dsl/__init__.py"),
                  ("nvidia_cutlass_dsl/cu13/lib/libcute_dsl_runtime.so", "nvidia_cutlass_dsl/__init__.py"))
    f = facts(torch(), vllm(), *cu12_libs(), *fam)
    r = rules.rule_cuda_major(f)
    assert r.level == "info" and "disjoint" in r.message and "nvidia-cutlass-dsl-libs-cu13" in r.message
    v = analyze(f)
    assert "nvidia-cutlass-dsl-libs-cu13" in v.not_loaded and v.majors == {12}
    assert rules.driver_summary(f)["compat_min"] == "525.60.13"  # the unloaded CUDA 13 build sets no floor


def test_builds_that_are_not_loaded_set_no_floor() -> None:
    f = facts(torch(), vllm(), *cu12_libs(), comp("nvidia-cuda-runtime", "13.0.96"))  # nvidia/cu13/lib: beside
    assert rules.rule_cuda_major(f).level == "info"
    d = rules.driver_summary(f)
    assert (d["native_min"], d["compat_min"]) == ("575.57.08", "525.60.13")


def test_cuda_major_builds_that_install_the_same_library_conflict() -> None:
    fam = _family(("nvidia_cutlass_dsl/lib/libcute_dsl_runtime.so",),
                  ("nvidia_cutlass_dsl/lib/libcute_dsl_runtime.so",))
    r = rules.rule_cuda_major(facts(torch(), vllm(), *cu12_libs(), *fam))
    assert r.level == "fail" and "both install nvidia_cutlass_dsl/lib/libcute_dsl_runtime.so" in r.message


def test_cuda_major_family_without_file_lists_is_a_warning() -> None:
    r = rules.rule_cuda_major(facts(torch(), vllm(), *cu12_libs(), *_family(None, None)))
    assert r.level == "warn" and "file lists were not read" in r.message


def test_cuda_major_component_families_fall_back_to_the_table() -> None:
    # nvidia-cublas (CUDA 13) installs nvidia/cu13/lib/...: beside the CUDA 12 one, not loaded
    both = facts(torch(), vllm(), *cu12_libs(), comp("nvidia-cublas", "13.1.0.3"))
    assert rules.rule_cuda_major(both).level == "info"
    # cuDNN uses one path for both majors: the CUDA 12 process would load the CUDA 13 build
    nccl = facts(torch(), vllm(), *cu12_libs(), comp("nvidia-nccl-cu12", "2.27.5"), comp("nvidia-nccl-cu13", "2.28.9"))
    r = rules.rule_cuda_major(nccl)
    assert r.level == "fail" and "nvidia/nccl/lib/libnccl.so.2" in r.message
    lone = rules.rule_cuda_major(facts(torch(), vllm(), *cu12_libs(), comp("nvidia-cudnn-cu13", "9.19.0.56")))
    assert lone.level == "fail" and "the file the CUDA 12 packages load" in lone.message


def test_cuda_major_lone_other_major_package_is_a_warning() -> None:
    cupy = Pkg("cupy-cuda13x", "14.0.0", wheel("cupy-cuda13x", "14.0.0"),
               identity=nvidia_identity("cupy-cuda13x", "14.0.0", K, tk=TK))
    r = rules.rule_cuda_major(facts(torch(), vllm(), *cu12_libs(), cupy))
    assert r.level == "warn" and "cupy-cuda13x 14.0.0 is built for CUDA 13" in r.message


def test_cuda_major_libraries_without_a_framework() -> None:
    assert rules.rule_cuda_major(facts(*cu12_libs())).level == "pass"
    two = rules.rule_cuda_major(facts(*cu12_libs(), comp("nvidia-cuda-runtime", "13.0.96")))
    assert two.level == "warn" and "says which CUDA major" in two.message
    assert rules.rule_cuda_major(facts()).message == "no CUDA-linked packages"


def test_cuda_major_an_extension_whose_runtime_no_package_installs_fails() -> None:
    r = rules.rule_cuda_major(facts(torch(), vllm(needed=("libcudart.so.12", "libcublas.so.12")),
                                    comp("nvidia-cuda-runtime-cu12", "12.8.90")))
    assert r.level == "fail" and "links libcublas.so.12, which no package in the lock installs" in r.message
    assert rules.rule_cuda_major(facts(torch(), vllm(needed=("libcudart.so.12", "libcublas.so.12")),
                                       *cu12_libs())).level == "pass"


# ---------------------------------------------------------------- cuda-toolkit-order


def test_toolkit_order_warns_when_cublas_is_older_than_the_build_toolkit() -> None:
    r = rules.rule_toolkit_order(stack())
    assert r.level == "warn" and "nvidia-cublas-cu12>=12.9,<12.10" in r.message and "174949" in r.source


def test_toolkit_order_boundaries_same_release_passes_or_infos() -> None:
    # cuBLAS of exactly the build toolkit's release: fine; cudart one release older: info
    same = facts(torch(), vllm(), *cu12_libs(cublas="12.9.1.4"))
    r = rules.rule_toolkit_order(same)
    assert r.level == "info" and "nvidia-cuda-runtime-cu12 12.8.90" in r.message
    newer = facts(torch(), vllm(toolkit_version="12.8.93"), *cu12_libs(cublas="12.9.1.4"))
    assert rules.rule_toolkit_order(newer).level == "pass"
    exact = facts(torch(), vllm(toolkit_version="12.8.93"), *cu12_libs())
    assert rules.rule_toolkit_order(exact).level == "pass"


def test_toolkit_order_unknown_toolkit_is_a_warning_never_a_pass() -> None:
    r = rules.rule_toolkit_order(facts(torch(), vllm(toolkit_version=None), *cu12_libs(cublas="12.9.1.4")))
    assert r.level == "warn" and "cannot tell" in r.message and "no banner (by hand)" in r.message
    sdist = Pkg("vllm", "0.13.0", None, identity=Identity(built_on_host=True,
                                                          toolkit_unknown="built on the host (by hand)"))
    assert rules.rule_toolkit_order(facts(torch(), sdist, *cu12_libs())).level == "warn"


def test_toolkit_order_reads_the_release_from_the_ptx_isa() -> None:
    from builder.check.identity import apply_kernels

    v = vllm(toolkit_version=None)
    assert v.identity is not None
    v.identity.toolkit_unknown = ""
    apply_kernels(v.identity, kern(isa="8.8"), K)
    assert v.identity.build_release == "12.9"
    r = rules.rule_toolkit_order(facts(torch(), v, *cu12_libs()))
    assert r.level == "warn" and "CUDA 12.9 (PTX ISA 8.8 of vllm/_C.abi3.so" in r.message


def test_toolkit_order_without_builders_and_across_majors() -> None:
    assert rules.rule_toolkit_order(facts(torch(), *cu12_libs())).level == "pass"
    # a CUDA 13 build toolkit does not compare with CUDA 12 libraries
    r = rules.rule_toolkit_order(facts(torch(major=13, runtime="13.0.96", cublas=None),
                                       vllm(toolkit_version="13.0.88", major=13), *cu12_libs(),
                                       comp("nvidia-cuda-runtime", "13.0.96"), comp("nvidia-cublas", "13.1.0.3")))
    assert r.level == "pass"


def test_toolkit_order_skips_run_time_compilers_and_other_majors() -> None:
    # nvJitLink is a run-time compiler, not a library kernels link against: an older one is no
    # toolkit-order finding (driver-compat names the JIT risk)
    jit = facts(torch(), vllm(toolkit_version="12.8.93"), *cu12_libs(), comp("nvidia-nvjitlink-cu12", "12.6.85"))
    assert rules.rule_toolkit_order(jit).level == "pass"
    # kernels built by CUDA 13.0 are not compared with the loaded CUDA 12 libraries (cuda-major fails that)
    across = facts(torch(), vllm("13.0.88", major=13), *cu12_libs())
    assert rules.rule_toolkit_order(across).level == "pass" and rules.rule_cuda_major(across).level == "fail"


# ---------------------------------------------------------------- driver-native


def test_driver_native_exactly_at_the_floor_and_one_below() -> None:
    at = rules.rule_driver_native(stack(h=host("575.57.08")))
    assert at.level == "pass" and "meets the native floor 575.57.08" in at.message
    below = rules.rule_driver_native(stack(h=host("575.57.07")))
    assert below.level == "pass" and "below the native floor 575.57.08" in below.message
    assert rules.driver_summary(stack())["native_min"] == "575.57.08"


def test_driver_native_declared_floor_and_host_below_it() -> None:
    low = rules.rule_driver_native(stack(m=matrix("570.26")))
    assert low.level == "warn" and "declared floor 570.26 is below the native floor 575.57.08" in low.message
    exact = rules.rule_driver_native(stack(m=matrix("575.57.08")))
    assert exact.level == "pass"
    fail = rules.rule_driver_native(stack(m=matrix("575.57.08"), h=host("575.57.07")))
    assert fail.level == "fail" and fail.message.startswith("driver upgrade required")
    at_declared = rules.rule_driver_native(stack(m=matrix("570.26"), h=host("570.26")))
    assert at_declared.level == "warn"  # at the declared floor: no upgrade, but the floor is too low


def test_driver_native_unknown_host_and_no_runtime() -> None:
    assert rules.rule_driver_native(stack(h=host(None))).level == "warn"
    none = rules.rule_driver_native(facts(vllm(toolkit_version=None)))
    assert none.level == "pass" and "no CUDA runtime" in none.message


def test_driver_native_says_a_lower_bound_when_a_toolkit_is_unknown() -> None:
    f = facts(torch(), vllm(toolkit_version=None), *cu12_libs())
    r = rules.rule_driver_native(f)
    assert r.level == "pass" and "a lower bound" in r.message and "no banner (by hand)" in r.message
    d = rules.driver_summary(f)
    assert d["native_min"] == "570.124.06" and d["native_is_lower_bound"] is True


def test_driver_native_release_without_a_driver_row_is_never_guessed() -> None:
    f = facts(torch(runtime="13.5.37", cublas=None, major=13), comp("nvidia-cuda-runtime", "13.5.37"),
              h=host("600.10.01"))
    r = rules.rule_driver_native(f)
    assert r.level == "warn" and "no driver row for CUDA 13.5" in r.message
    with_floor = facts(torch(runtime="13.0.96", cublas=None, major=13), comp("nvidia-cuda-runtime", "13.5.37"),
                       h=host("600.10.01"))
    r2 = rules.rule_driver_native(with_floor)
    assert r2.level == "warn" and "meets the known floor 580.95.05" in r2.message


def test_native_floor_uses_the_build_toolkit_not_the_release_ga_floor() -> None:
    # a +cu129 label with an nvcc 12.8.93 banner: the banner decides (12.8 U1), not CUDA 12.9's GA floor
    p = Pkg("flash-attn", "2.8.0", wheel("flash-attn", "2.8.0"),
            identity=ident("local-version", release="12.9", build_toolkit="12.8.93"))
    assert rules.driver_summary(facts(p))["native_min"] == "570.124.06"


def test_a_version_known_only_by_its_release_takes_the_highest_update_floor() -> None:
    # 12.9 GA 575.51.03, 12.9 U1 575.57.08: an nvrtc 12.9.x no table pins may be either update
    pl = components.place(K, TK, "nvrtc", version="12.9.999")
    assert pl is not None and (pl.release, pl.update, pl.driver) == ("12.9", None, "575.57.08")
    assert components.place(K, TK, "nvrtc", version="12.7.1") is None  # there is no CUDA 12.7: never placed
    assert components.place(K, TK, "cudart", version="12.7.1", name="nvidia-cuda-runtime-cu12") is None


# ---------------------------------------------------------------- driver-compat


def test_driver_compat_boundaries() -> None:
    assert rules.rule_driver_compat(stack(h=host("575.57.08"))).level == "pass"
    below = rules.rule_driver_compat(stack(h=host("575.57.07")))
    assert below.level == "warn" and "only under minor-version compatibility (>= 525.60.13)" in below.message
    at_compat = rules.rule_driver_compat(stack(h=host("525.60.13")))
    assert at_compat.level == "warn"
    under = rules.rule_driver_compat(stack(h=host("525.60.12")))
    assert under.level == "fail" and "below the minor-version compatibility floor 525.60.13" in under.message


def test_driver_compat_unknown_host_no_runtime_and_cuda13_floor() -> None:
    assert rules.rule_driver_compat(stack(h=host(None))).level == "warn"
    assert rules.rule_driver_compat(facts(vllm(toolkit_version=None))).level == "pass"
    cu13 = facts(torch(runtime="13.0.96", cublas="13.1.0.3", major=13), comp("nvidia-cuda-runtime", "13.0.96"),
                 comp("nvidia-cublas", "13.1.0.3"), h=host("580.65.05"))
    assert rules.rule_driver_compat(cu13).level == "fail"
    cu13.host = host("580.65.06")
    assert rules.rule_driver_compat(cu13).level == "warn"
    cu13.host = host("580.95.05")
    assert rules.rule_driver_compat(cu13).level == "pass"


def test_driver_compat_names_run_time_compilers_newer_than_the_driver() -> None:
    base = [torch(runtime="13.0.96", cublas="13.1.0.3", major=13), comp("nvidia-cuda-runtime", "13.0.96"),
            comp("nvidia-cublas", "13.1.0.3")]
    risky = facts(*base, comp("nvidia-nvjitlink", "13.5.37"), comp("nvidia-cuda-nvcc", "13.5.37"),
                  h=host("580.95.05"))
    r = rules.rule_driver_compat(risky)
    assert r.level == "warn" and "nvidia-nvjitlink 13.5.37 (nvjitlink, CUDA 13.5 GA) is newer than driver" in r.message
    assert "runs the lock natively" in r.message
    assert rules.rule_driver_native(risky).level == "pass"  # a JIT risk is not a floor
    same = facts(*base, comp("nvidia-nvjitlink", "13.0.88"), h=host("580.95.05"))
    assert rules.rule_driver_compat(same).level == "pass"
    future = facts(*base, comp("nvidia-nvjitlink", "13.5.37"), h=host("600.10.01"))
    r3 = rules.rule_driver_compat(future)
    assert r3.level == "warn" and "no driver row for CUDA 13.5" in r3.message


def test_driver_compat_native_floor_unknown_is_not_a_lock_without_cuda() -> None:
    # CUDA 13.5 has no driver row: the native floor is unknown (not absent), so with a known
    # host driver the rule judges the minor-version floor; it never passes as "no CUDA runtime"
    f = facts(torch(runtime="13.5.37", cublas=None, major=13), comp("nvidia-cuda-runtime", "13.5.37"),
              h=host("600.10.01"))
    assert rules.driver_summary(f)["native_min"] is None and rules.driver_summary(f)["native_unknown"]
    r = rules.rule_driver_compat(f)
    assert r.level == "warn" and "no CUDA runtime" not in r.message, r.message
    assert "only under minor-version compatibility (>= 580.65.06)" in r.message
    assert "native floor unknown" in r.evidence
    f.host = host("580.65.05")  # one below the 13.x minor-version floor
    assert rules.rule_driver_compat(f).level == "fail"


def test_driver_compat_host_older_than_every_table_row_names_the_jit_risk() -> None:
    # 545.23.08 (CUDA 12.3) is below the oldest GA row (12.4, 550.54.14) but above the 12.x
    # minor-version floor: every loaded run-time compiler is newer than what the driver runs
    f = stack(h=host("545.23.08"))
    f.packages["nvidia-nvjitlink-cu12"] = comp("nvidia-nvjitlink-cu12", "12.8.93")
    r = rules.rule_driver_compat(f)
    risk = "nvidia-nvjitlink-cu12 12.8.93 (nvjitlink, CUDA 12.8 Update 1) is newer than driver 545.23.08 " \
           "(CUDA older than the table)"
    assert r.level == "warn" and f"run-time compilers newer than the driver: {risk}" in r.message, r.message
    assert risk in r.evidence


def test_driver_compat_says_when_the_native_floor_is_a_lower_bound() -> None:
    r = rules.rule_driver_compat(facts(torch(), vllm(toolkit_version=None), *cu12_libs()))
    assert r.level == "pass" and "meets the known native floor 570.124.06, a lower bound" in r.message


def test_jit_risk_boundaries_driver_at_a_ga_row_and_compilers_not_loaded() -> None:
    # exactly 12.9 GA's driver runs CUDA 12.9 code: an nvJitLink 12.9 is no risk there
    at_ga = stack(h=host("575.51.03"))
    at_ga.packages["nvidia-nvjitlink-cu12"] = comp("nvidia-nvjitlink-cu12", "12.9.41")
    r = rules.rule_driver_compat(at_ga)
    assert r.level == "warn" and "run-time compilers" not in r.message, r.message  # warn: below the native floor
    # the CUDA 13 nvJitLink sits beside the CUDA 12 process (nvidia/cu13/lib): not loaded, no risk
    beside = stack()
    beside.packages["nvidia-nvjitlink"] = comp("nvidia-nvjitlink", "13.0.88")
    assert "nvidia-nvjitlink" in analyze(beside).not_loaded
    assert rules.rule_driver_compat(beside).level == "pass"


# ---------------------------------------------------------------- gpu-arch


def test_gpu_arch_levels() -> None:
    assert rules.rule_gpu_arch(stack(h=host(ccs=()))).level == "warn"
    unjudged = rules.rule_gpu_arch(stack())
    assert unjudged.level == "warn" and "--deep" in unjudged.message
    ok = rules.rule_gpu_arch(facts(torch(), vllm(kernels=kern()), *cu12_libs()))
    assert ok.level == "pass" and "sm_89 SASS runs natively on 8.9" in ok.message
    no = rules.rule_gpu_arch(facts(torch(), vllm(kernels=kern(sass=("sm_90a",), ptx=())), *cu12_libs()))
    assert no.level == "fail" and "vllm/_C.abi3.so" in no.message
    sdist = Pkg("vllm", "0.13.0", None, identity=Identity(built_on_host=True))
    assert rules.rule_gpu_arch(facts(torch(), sdist)).level == "info"


def test_gpu_arch_ptx_jit_and_sass_of_an_older_minor() -> None:
    jit = rules.rule_gpu_arch(facts(torch(), vllm(kernels=kern(sass=("sm_80",), ptx=("compute_80",))),
                                    h=host(ccs=("9.0",))))
    assert jit.level == "pass" and "PTX compute_80 is JIT-compiled" in jit.message
    minor = rules.rule_gpu_arch(facts(torch(), vllm(kernels=kern(sass=("sm_80",), ptx=())), h=host(ccs=("8.9",))))
    assert minor.level == "pass" and "same major, older minor" in minor.message


def test_gpu_arch_cuda_line_floors() -> None:
    cu13 = facts(torch(runtime="13.0.96", major=13), h=host(ccs=("7.5",)))
    assert rules.rule_gpu_arch(cu13).level == "pass"
    cu13.host = host(ccs=("7.2",))
    r = rules.rule_gpu_arch(cu13)
    assert r.level == "fail" and "CUDA 13 supports compute capability 7.5" in r.message
    old = facts(torch(runtime="12.6.77"), h=host(ccs=("10.0",)))
    r2 = rules.rule_gpu_arch(old)
    assert r2.level == "fail" and "needs CUDA 12.8" in r2.message
    old.packages["torch"] = torch(runtime="12.8.90")
    assert rules.rule_gpu_arch(old).level == "pass"


def test_gpu_arch_judged_kernels_pass_beside_an_extension_built_on_the_host() -> None:
    # two main extensions: vLLM's fatbin is judged (covers 8.9), flash-attn is built on the host
    # from its sdist (a note): the judged one decides, the rule passes and keeps the note
    k = replace(K, main_extensions={**K.main_extensions, "flash-attn": ("flash_attn_2_cuda.so",)})
    fa = Pkg("flash-attn", "2.8.0", None, identity=Identity(built_on_host=True))
    f = facts(torch(), vllm(kernels=kern()), fa, *cu12_libs())
    f.k = k
    r = rules.rule_gpu_arch(f)
    assert r.level == "pass" and "sm_89 SASS runs natively on 8.9" in r.message, r.message
    assert any("flash-attn 2.8.0 is built on the host" in e for e in r.evidence)
    del f.packages["vllm"]  # only the note: info
    assert rules.rule_gpu_arch(f).level == "info"


def test_gpu_arch_unreadable_gpu_is_a_warning() -> None:
    h = host(ccs=("8.9", "[N/A]"))
    assert rules.rule_gpu_arch(facts(torch(), vllm(kernels=kern()), h=h)).level == "warn"


# ---------------------------------------------------------------- tag rules


LOCK = b"""\
lock-version = "1.0"
created-by = "hand"
requires-python = ">=3.12"

[[packages]]
name = "srconly"
version = "1.0"
sdist = { url = "https://x.invalid/srconly-1.0.tar.gz", hashes = { sha256 = "%s" } }

[[packages]]
name = "newglibc"
version = "1.0"
wheels = [{ url = "https://x.invalid/newglibc-1.0-cp312-cp312-manylinux_2_36_x86_64.whl", hashes = { sha256 = "%s" } }]

[[packages]]
name = "py313only"
version = "1.0"
wheels = [{ url = "https://x.invalid/py313only-1.0-cp313-cp313-manylinux_2_17_x86_64.whl", hashes = { sha256 = "%s" } }]

[[packages]]
name = "twoglibc"
version = "1.0"
wheels = [{ url = "https://x.invalid/twoglibc-1.0-cp312-cp312-manylinux_2_39_x86_64.whl", hashes = { sha256 = "%s" } },
          { url = "https://x.invalid/twoglibc-1.0-cp312-cp312-manylinux_2_37_x86_64.whl", hashes = { sha256 = "%s" } }]

[[packages]]
name = "glibc3"
version = "1.0"
wheels = [{ url = "https://x.invalid/glibc3-1.0-cp312-cp312-manylinux_2_38_x86_64.whl", hashes = { sha256 = "%s" } },
          { url = "https://x.invalid/glibc3-1.0-cp312-cp312-manylinux_2_36_x86_64.whl", hashes = { sha256 = "%s" } },
          { url = "https://x.invalid/glibc3-1.0-cp312-cp312-manylinux_2_39_x86_64.whl", hashes = { sha256 = "%s" } }]

[[packages]]
name = "armglibc"
version = "1.0"
wheels = [{ url = "https://x.invalid/armglibc-1.0-cp312-cp312-manylinux_2_17_aarch64.whl", hashes = { sha256 = "%s" } },
          { url = "https://x.invalid/armglibc-1.0-cp312-cp312-manylinux_2_39_x86_64.whl", hashes = { sha256 = "%s" } }]

[[packages]]
name = "armonly"
version = "1.0"
wheels = [{ url = "https://x.invalid/armonly-1.0-cp312-cp312-linux_armv7l.whl", hashes = { sha256 = "%s" } }]
""" % ((b"0" * 64,) * 11)


def _tag_facts(glibc: str | None, only: tuple[str, ...]) -> Facts:
    lock = pylock.parse(LOCK, "pylock.hand.toml")
    pkgs = [Pkg(e.name, e.version, None, locked=e) for e in lock.packages if e.name in only]
    return facts(*pkgs, h=host(glibc=glibc))


def _tags(f: Facts) -> dict[str, str]:
    return {x.id: x.level for x in rules.tag_rules(f)}


def test_tag_rules_each_level() -> None:
    assert _tags(_tag_facts("2.35", ())) == {"sdist-only": "pass", "platform-tag": "pass", "python-tag": "pass"}
    assert _tags(_tag_facts("2.35", ("srconly",)))["sdist-only"] == "fail"
    glibc = rules.tag_rules(_tag_facts("2.35", ("newglibc",)))
    assert glibc[1].level == "fail" and "needs glibc 2.36, host has 2.35" in glibc[1].message
    assert _tags(_tag_facts("2.36", ("newglibc",)))["platform-tag"] == "pass"  # exactly the glibc it needs
    two = rules.tag_rules(_tag_facts("2.35", ("twoglibc",)))[1]
    assert "twoglibc: needs glibc 2.37" in two.message  # the oldest glibc any of its wheels needs
    # whatever the wheels' order: any one wheel installs, so the host needs the lowest glibc of them
    # (2.36 here, the second of three wheels; the first needs 2.38, the last 2.39)
    three = rules.tag_rules(_tag_facts("2.35", ("glibc3",)))[1]
    assert "glibc3: needs glibc 2.36, host has 2.35" in three.message, three.message
    assert _tags(_tag_facts("2.36", ("glibc3",)))["platform-tag"] == "pass"
    # only wheels for the target's arch count: the aarch64 wheel's glibc 2.17 is not what x86_64 needs
    arch = rules.tag_rules(_tag_facts("2.35", ("armglibc",)))[1]
    assert "armglibc: needs glibc 2.39, host has 2.35" in arch.message, arch.message
    assert _tags(_tag_facts("2.35", ("py313only",)))["python-tag"] == "fail"
    arm = rules.tag_rules(_tag_facts("2.35", ("armonly",)))
    assert arm[1].level == "fail" and "no wheel for x86_64 Linux" in arm[1].message
    assert _tags(_tag_facts(None, ()))["platform-tag"] == "warn"


# ---------------------------------------------------------------- evaluate / verdict


@pytest.mark.parametrize(("levels", "want"), [
    ((), "pass"), (("pass",), "pass"), (("pass", "info"), "pass"), (("info", "warn"), "warn"),
    (("warn", "fail", "pass"), "fail"), (("fail",), "fail"),
])
def test_verdict_is_the_worst_level(levels: tuple[str, ...], want: str) -> None:
    from builder.check.model import Finding

    assert rules.verdict([Finding("x", lv, "m") for lv in levels]) == want


def test_evaluate_runs_every_rule_in_order() -> None:
    assert [x.id for x in rules.evaluate(stack())] == list(rules.RULES)


def test_gpu_arch_judges_only_the_major_a_process_loads() -> None:
    fam = _family(("nvidia_cutlass_dsl/cu12/lib/libx.so",), ("nvidia_cutlass_dsl/cu13/lib/libx.so",))
    f = facts(torch(), *cu12_libs(), *fam, h=host(ccs=("6.1",)))  # Pascal: CUDA 12 yes, CUDA 13 no
    assert rules.rule_gpu_arch(f).level == "pass"
    f.packages["nvidia-cutlass-dsl-libs-cu13"].files = ("nvidia_cutlass_dsl/cu12/lib/libx.so",)  # now they clash
    assert rules.rule_gpu_arch(f).level == "fail"


def test_a_cuda_13_extension_without_its_runtime_package_fails() -> None:
    r = rules.rule_cuda_major(facts(torch(runtime="13.0.96", major=13), vllm("13.0.88", major=13)))
    assert r.level == "fail" and "links libcudart.so.13, which no package in the lock installs" in r.message


def test_file_lists_are_wanted_for_families_on_two_majors_and_read_only_in_pairs() -> None:
    assert loaded.wants_file_lists(stack()) == set()
    fam = _family(None, None)
    assert loaded.wants_file_lists(facts(torch(), *fam)) == {p.name for p in fam}
    # one file list is not enough to compare: the pair stays unsure
    one = _family(("nvidia_cutlass_dsl/cu12/lib/libx.so",), None)
    assert rules.rule_cuda_major(facts(torch(), vllm(), *cu12_libs(), *one)).level == "warn"


def test_a_cuda_11_runtime_is_not_claimed_missing() -> None:
    # CUDA 11 era torch bundled its runtime: no package name tells, so nothing is claimed
    old = vllm(toolkit_version="11.8.89", major=11, needed=("libcudart.so.11.0", "libcublas.so.11"))
    assert rules.rule_cuda_major(facts(old)).level == "pass"


# ---------------------------------------------------------------- cuda-bindings
# NVIDIA's cuda-bindings install guides (builder/data/cuda.toml [[bindings-driver]]): 12.x
# "Driver: Linux (525.60.13 or later)", 13.x "Driver: Linux (580.65.06 or later)"; cuda-python
# 12.8.0 and later is a meta package over cuda-bindings, 12.6.2.post1 carries the bindings itself.
SRC_B13 = "https://github.com/NVIDIA/cuda-python/blob/main/cuda_bindings/docs/source/install.rst"


def py(name: str, version: str) -> Pkg:
    """A pure-Python package of the lock (no CUDA identity), as the pipeline leaves it."""
    return Pkg(name, version, wheel(name, version, platform=False))


def bound(*extra: Pkg, driver: str | None = "575.57.08", major: int = 12, m: Matrix | None = None) -> Facts:
    """The CUDA ``major`` stack with these bindings packages (and cutlass-dsl, their user)."""
    base = [torch(), vllm(), *cu12_libs()] if major == 12 else [
        torch("13.0.96", "13.1.0.3", major=13), vllm("13.0.88", major=13)]
    return facts(*base, py("nvidia-cutlass-dsl", "4.3.4"), *extra, h=host(driver), m=m)


def b13() -> tuple[Pkg, Pkg]:
    return py("cuda-python", "13.1.1"), py("cuda-bindings", "13.1.1")


def test_bindings_absent_passes() -> None:
    r = rules.rule_bindings(stack())
    assert (r.level, r.message) == ("pass", "the lock holds no CUDA Python bindings (cuda-bindings, cuda-python)")


def test_bindings_of_the_stack_major_pass() -> None:
    r = rules.rule_bindings(bound(py("cuda-python", "12.9.4"), py("cuda-bindings", "12.9.4")))
    assert r.level == "pass" and r.message.startswith("cuda-bindings 12.9.4 (CUDA 12 bindings) needs driver >= "
                                                      "525.60.13")
    assert "cuda-python 12.9.4 carries no bindings of its own" in " ".join(r.evidence)


def test_bindings_of_another_major_below_their_floor_warn() -> None:
    f = bound(*b13(), m=matrix())
    r = rules.rule_bindings(f)
    assert r.level == "warn" and r.source == SRC_B13
    assert r.message.startswith(f"cuda-bindings 13.1.1 (CUDA 13 bindings in a CUDA 12 stack) needs driver >= "
                                f"580.65.06 (NVIDIA: {SRC_B13}); host driver 575.57.08 is below it: code that "
                                "imports cuda.bindings (nvidia-cutlass-dsl) fails on drivers below that floor")
    assert "vllm 0.13.0 itself does not import cuda.bindings" in r.message
    assert 'overrides "cuda-bindings>=12.8.0,<13", "cuda-python>=12.8.0,<13"' in r.message
    assert r.message.endswith("or upgrade the driver to >= 580.65.06")
    # a warning only: the native floor and the verdict's other rules do not move
    assert rules.driver_summary(f) == rules.driver_summary(stack(m=matrix()))
    assert level(f, "driver-native") == "pass" and rules.verdict(rules.evaluate(f)) == "warn"


@pytest.mark.parametrize(("driver", "want"), [
    ("580.65.06", "info"),  # exactly the 13.x floor
    ("580.65.05", "warn"),  # one below it
    ("580.95.05", "info"),
    (None, "warn"),
])
def test_bindings_driver_floor_boundary(driver: str | None, want: str) -> None:
    r = rules.rule_bindings(bound(*b13(), driver=driver))
    assert r.level == want, r.message
    if driver is None:
        assert r.message.startswith("host driver unknown: cuda-bindings 13.1.1")
    elif want == "info":
        assert r.message.startswith(f"cuda-bindings 13.1.1 (CUDA 13 bindings in a CUDA 12 stack) needs driver "
                                    f">= 580.65.06 (NVIDIA: {SRC_B13}); host driver {driver} meets it: code that "
                                    "imports cuda.bindings (nvidia-cutlass-dsl) runs on this driver")


def test_bindings_of_the_stack_major_below_their_floor_warn() -> None:
    r = rules.rule_bindings(bound(py("cuda-bindings", "12.9.4"), driver="520.61.05"))
    assert r.level == "warn" and "host driver 520.61.05 is below it" in r.message
    assert r.message.endswith("upgrade the driver to >= 525.60.13") and "overrides" not in r.message


def test_bindings_old_cuda_python_and_cuda_bindings_of_another_major_clash() -> None:
    f = bound(py("cuda-python", "12.6.2.post1"), py("cuda-bindings", "13.5.0"), driver="580.95.05", major=13)
    r = rules.rule_bindings(f)
    assert r.level == "warn"
    assert r.message.startswith("cuda-bindings 13.5.0 and cuda-python 12.6.2.post1 both install cuda/bindings/ "
                                "(the same paths): the last installed wins, mixing CUDA 12 and 13 bindings")
    assert 'overrides "cuda-bindings>=13.0,<14", "cuda-python>=13.0,<14"' in r.message


def test_bindings_cuda_python_12_8_0_is_a_meta_package() -> None:
    # cuda-python 12.8.0 (exactly the version that became a meta package) carries no bindings:
    # beside cuda-bindings 13 on a 13.x driver this is no clash, only CUDA 13 bindings in a 12 stack
    r = rules.rule_bindings(bound(py("cuda-python", "12.8.0"), py("cuda-bindings", "13.1.1"), driver="580.95.05"))
    assert r.level == "info", r.message
    old = rules.rule_bindings(bound(py("cuda-python", "12.6.2.post1"), driver="580.95.05"))
    assert old.level == "pass" and old.message.startswith("cuda-python 12.6.2.post1 (CUDA 12 bindings)")


def test_bindings_two_floors_name_the_highest_and_an_unreadable_version_warns() -> None:
    f = bound(py("cuda-python", "12.6.2.post1"), py("cuda-bindings", "13.5.0"), driver="520.61.05", major=13)
    r = rules.rule_bindings(f)  # below both the 13.x (580.65.06) and the 12.x (525.60.13) floor
    assert r.level == "warn" and r.message.endswith("or upgrade the driver to >= 580.65.06"), r.message
    odd = rules.rule_bindings(bound(py("cuda-bindings", "weird!")))
    assert odd.level == "warn" and "cuda-bindings weird!: not a version builder can read" in odd.message


def test_bindings_without_a_known_vllm_release_say_so() -> None:
    f = bound(*b13())
    f.packages["vllm"].version = "0.12.0"
    assert "whether vllm 0.12.0 itself imports cuda.bindings is not known" in rules.rule_bindings(f).message
