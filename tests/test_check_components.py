"""CUDA components as the rules see them (builder/check/components.py) and the identities
built from them (builder/check/identity.py): names of both CUDA majors, placements by the
cuda-toolkit pins, torch's identity through its cuda-toolkit pin, PTX ISA as toolkit."""

from __future__ import annotations

import pytest

from builder.binaries.archcompat import KernelArchs
from builder.check import components, knowledge, toolkit
from builder.check.identity import apply_kernels, identify, needs_binary, nvidia_identity
from builder.check.model import Identity, KernelEvidence, Pkg, WheelFacts, WheelRef

K = knowledge.load()
TK = toolkit.load()
ENV = {"python_version": "3.12", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "implementation_name": "cpython", "os_name": "posix", "platform_python_implementation": "CPython",
       "python_full_version": "3.12.0", "platform_release": "", "platform_version": ""}
# torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl METADATA (builder/data/cuda.toml, [[toolkit-user]])
TORCH_211 = ("cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.2; "
             'platform_system == "Linux"', 'nvidia-cudnn-cu13==9.19.0.56; platform_system == "Linux"')


@pytest.mark.parametrize(("name", "want"), [
    ("nvidia-cufft", ("cufft", 13)), ("nvidia-cufft-cu12", ("cufft", 12)), ("nvidia-cuda-nvrtc", ("nvrtc", 13)),
    ("nvidia-cudnn-cu13", ("cudnn", 13)), ("nvidia-cuda-crt", ("crt", 13)), ("nvidia-ml-py", None),
])
def test_component_and_major_come_from_the_name(name: str, want: tuple[str, int] | None) -> None:
    assert components.component_of(K, TK, name) == want


@pytest.mark.parametrize(("component", "version", "kw", "release", "update", "driver"), [
    ("cudart", "13.0.96", {"name": "nvidia-cuda-runtime"}, "13.0", 2, "580.95.05"),
    ("cublas", "13.1.1.3", {"name": "nvidia-cublas"}, "13.0", 2, "580.95.05"),  # a patch re-pinned for U2
    ("cufft", "12.0.0.61", {"name": "nvidia-cufft"}, "13.0", 1, "580.82.07"),  # version 12.x, CUDA 13
    ("nvcc", "12.9.86", {"major": 12}, "12.9", 1, "575.57.08"),  # an nvcc banner
    ("nvcc", "12.8.93", {"major": 12}, "12.8", 1, "570.124.06"),
    ("nvjitlink", "13.5.37", {"name": "nvidia-nvjitlink"}, "13.5", 0, None),  # no driver row for 13.5
    ("cupti", "13.0.99", {"name": "nvidia-cuda-cupti"}, "13.0", None, "580.95.05"),  # between pins: the release
])
def test_place(component: str, version: str, kw: dict[str, object], release: str, update: int | None,
               driver: str | None) -> None:
    pl = components.place(K, TK, component, version=version, **kw)  # type: ignore[arg-type]
    assert pl is not None and (pl.release, pl.update, pl.driver) == (release, update, driver)


def test_a_library_version_no_release_pins_is_not_placed() -> None:
    assert components.place(K, TK, "cufft", version="99.0.0.1", name="nvidia-cufft") is None
    i = nvidia_identity("nvidia-cufft", "99.0.0.1", K, tk=TK)
    assert i is not None and i.major == {13} and "no cuda-toolkit release" in i.unplaced
    own = nvidia_identity("nvidia-nccl-cu13", "9.9.9", K, tk=TK)  # own versioning: known by its name
    assert own is not None and own.major == {13} and not own.unplaced


@pytest.mark.parametrize(("driver", "want"), [
    ("575.57.08", ("12.9", False)), ("575.51.03", ("12.9", False)), ("575.51.02", ("12.8", False)),
    ("580.95.05", ("13.0", False)), ("595.71.05", ("13.2", True)), ("600.1.2", ("13.2", True)),
    ("500.0.0", (None, False)),
])
def test_driver_release(driver: str, want: tuple[str | None, bool]) -> None:
    assert components.driver_release(K, driver) == want


def test_ptx_isa_names_the_release_only_when_unique() -> None:
    assert components.ptx_isa_release(K, "8.7")[0] == "12.8"  # type: ignore[index]
    assert components.ptx_isa_release(K, "9.0")[0] == "13.0"  # type: ignore[index]
    assert components.ptx_isa_release(K, "8.5") is None  # 12.5 and 12.6 both write 8.5
    assert components.ptx_isa_release(K, None) is None


def test_sonames_and_install_paths_per_major() -> None:
    assert components.sonames(TK, "cublas", 12) == ("libcublas.so.12", "libcublasLt.so.12")
    assert components.install_paths(TK, "cublas", 13) == ("nvidia/cu13/lib/libcublas.so.13",
                                                         "nvidia/cu13/lib/libcublasLt.so.13")
    assert components.install_paths(TK, "cudnn", 12) == components.install_paths(TK, "cudnn", 13)
    assert components.sonames(TK, "nvcc", 13) == () and components.sonames(TK, "nothing", 12) == ()


def _torch(reqs: tuple[str, ...], platform: bool = True) -> Pkg:
    w = WheelRef(name="torch", version="2.11.0", filename="torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                 platform=platform)
    return Pkg("torch", "2.11.0", w, facts=WheelFacts(w.filename, None, "torch", "2.11.0", reqs))


def test_torch_identity_follows_its_cuda_toolkit_pin() -> None:
    t = _torch(TORCH_211)
    i = identify(t, K, ENV, torch=None, tk=TK)
    assert (i.major, i.runtime, i.cublas, i.release, i.kind) == ({13}, "13.0.96", "13.1.0.3", "13.0", "requires-dist")
    assert i.cudart_soname == "libcudart.so.13"
    assert any("cuda-toolkit" in e["detail"] and "nvidia-cuda-runtime==13.0.96.*" in e["detail"] for e in i.evidence)
    assert needs_binary(K, TK, "torch", env=ENV)(TORCH_211) is False  # the pin says it: no binary read


def test_an_unknown_cuda_toolkit_release_is_said() -> None:
    reqs = ("cuda-toolkit[cudart]==13.9.0",)
    i = identify(_torch(reqs), K, ENV, torch=None, tk=TK)
    assert not i.major and any("does not list" in e["detail"] for e in i.evidence)
    assert needs_binary(K, TK, "torch", env=ENV)(reqs) is True  # then its binaries must tell


def test_ptx_isa_supplies_a_missing_build_toolkit_and_never_overrides_a_banner() -> None:
    ev = KernelEvidence("vllm/_C.abi3.so", KernelArchs.of(["sm_89"]), "8.7", "shipped data", "by hand")
    i = Identity()
    apply_kernels(i, ev, K)
    assert i.build_release == "12.8" and i.kernels is ev and "PTX ISA 8.7" in i.toolkit_from
    banner = Identity(build_toolkit="12.9.86")
    apply_kernels(banner, ev, K)
    assert banner.build_release is None and banner.build_toolkit == "12.9.86"
    assert any("the banner is kept" in e["detail"] for e in banner.evidence)
    unknown_isa = Identity()
    apply_kernels(unknown_isa, KernelEvidence("m", KernelArchs.of(["sm_89"]), "8.5", "deep read", "x"), K)
    assert unknown_isa.build_release is None and unknown_isa.kernels is not None
