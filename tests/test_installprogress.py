"""Install progress from uv's own lines, replayed from real `uv pip sync` runs (uv 0.13.9).

tests/data/uv/*.stderr are uv's stderr as builder reads it (a pipe, NO_COLOR=1):
sync-cold-pypi from PyPI (numpy 2.2.6, pillow 11.2.1, six), the other two from a
local index serving two wheels of 1.5 and 2.9 MiB, with an empty and a warm cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.runtime.installprogress import InstallProgress, human, parse_size

DATA = Path(__file__).parent / "data" / "uv"


def replay(name: str, sizes: dict[str, int] | None = None) -> list[str]:
    said: list[str] = []
    feed = InstallProgress(said.append, sizes or {}).feed
    for line in (DATA / name).read_text().splitlines():
        feed("stderr", line)
    return said


def test_cold_pypi_install_reports_each_large_download_with_running_totals() -> None:
    said = replay("sync-cold-pypi.stderr")
    assert said == [
        "downloading the wheels uv's cache lacks (each file over 1 MiB is reported)",
        "downloaded pillow (4.4 MiB): 1/2 large files, 4.4 MiB/20.2 MiB",
        "downloaded numpy (15.8 MiB): 2/2 large files, 20.2 MiB/20.2 MiB",
        "prepared (downloaded, unpacked) 3 packages in 1.34s",
        "installed 3 packages in 66ms",
    ]


def test_exact_sizes_come_from_the_lock_when_it_has_them() -> None:
    said = replay("sync-cold-two-large-files.stderr", {"bigone": 1_601_497, "bigtwo": 3_001_925})
    assert said[1] == "downloaded bigtwo (2.9 MiB): 1/2 large files, 2.9 MiB/4.4 MiB"
    assert said[2] == "downloaded bigone (1.5 MiB): 2/2 large files, 4.4 MiB/4.4 MiB"


def test_a_warm_install_downloads_nothing_and_says_so_in_one_line() -> None:
    assert replay("sync-warm.stderr") == ["installed 2 packages in 7ms"]


def test_stdout_and_unknown_lines_are_ignored() -> None:
    said: list[str] = []
    p = InstallProgress(said.append)
    p.feed("stdout", "Installed 3 packages in 1ms")
    p.feed("stderr", " + numpy==2.2.6")
    p.feed("stderr", "Using Python 3.12.1 environment at: v4")
    p.feed("stderr", "warning: something uv wants to say")
    assert said == []


@pytest.mark.parametrize(("text", "size"), [
    ("2.9MiB", int(2.9 * 2**20)), ("15.8MiB", int(15.8 * 2**20)), ("1.2GiB", int(1.2 * 2**30)),
    ("512KiB", 512 * 1024), ("12B", 12), ("3 MB", 3_000_000), ("lots", None), ("1.2.3MiB", None),
])
def test_uv_sizes(text: str, size: int | None) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1_601_497, "1.5 MiB"), (5 * 2**30, "5.0 GiB"),
])
def test_human_sizes(n: int, text: str) -> None:
    assert human(n) == text
