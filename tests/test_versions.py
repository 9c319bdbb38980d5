"""Typed versions: NVIDIA driver versions (one parse, one comparison) and the one binary-compat rule."""

from __future__ import annotations

import pytest

from builder.binaries.archcompat import runs_on_name as runs_on
from builder.versions import DriverVersion, compute_capability, driver_max


@pytest.mark.parametrize("a, b", [("575.57.08", "570.124.06"), ("570.124.06", "570.26"),
                                  ("550.107.02", "550.54.15"), ("580.65.06", "575.57.08"),
                                  ("575.57.08", "575.57.7")])
def test_driver_versions_compare_numerically(a: str, b: str) -> None:
    assert DriverVersion.parse(a) > DriverVersion.parse(b)
    assert driver_max(b, None, a) == a


@pytest.mark.parametrize("text", ["570.26", "575.57.08", "550.107.02", " 580.159.04\n"])
def test_nvidia_shapes_parse(text: str) -> None:
    v = DriverVersion.parse(text)
    assert str(v) == text.strip() and v.branch == int(text.strip()[:3])


@pytest.mark.parametrize("text", ["999999999999999999999.1.1", "575", "57.1", "5750.1", "575.57.08.1",
                                  "", "575.x", "[N/A]", "575.57.08-1ubuntu1", "1575.57.08"])
def test_other_shapes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an NVIDIA driver version"):
        DriverVersion.parse(text)
    assert DriverVersion.maybe(text) is None


def test_equal_versions_and_text_are_kept() -> None:
    assert DriverVersion.parse("575.57.08") == DriverVersion.parse("575.57.8")
    assert str(DriverVersion.parse("575.57.08")) == "575.57.08"


@pytest.mark.parametrize("sm, cc, ok", [
    ("sm_89", "8.9", True), ("sm_80", "8.9", True), ("sm_90", "8.9", False), ("sm_86", "8.0", False),
    ("compute_80", "8.9", True), ("compute_90", "8.9", False), ("compute_89", "8.9", True),
    ("compute_52", "12.0", True), ("sm_90a", "9.0", True), ("sm_90a", "10.0", False), ("sm_100", "8.9", False),
    ("sm_120", "12.0", True), ("sm_100f", "10.3", True), ("sm_100f", "11.0", False), ("sm_75", "8.9", False),
    ("bogus", "8.9", False), ("sm_89", "eight", False),
])
def test_runs_on(sm: str, cc: str, ok: bool) -> None:
    assert runs_on(sm, cc) is ok


@pytest.mark.parametrize("text", ["8", "8.9.1", "", "x.y", "[N/A]"])
def test_compute_capability_shape(text: str) -> None:
    with pytest.raises(ValueError):
        compute_capability(text)
