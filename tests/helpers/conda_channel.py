"""A tiny local conda channel built in the test session with py-rattler-build.

Packages (real ``.conda`` archives, indexed with rattler's ``index_fs``):

* ``python`` X.Y.Z (linux-64): the test's own interpreter version.  It gives the
  prefix a usable Python without touching the test's environment: the prefix
  becomes a venv of the test's base interpreter (``pyvenv.cfg`` +
  ``bin/python`` symlink).  Depends on ``libtiny``.
* ``python`` 3.99.0 (linux-64): a decoy no ``python 3.11.*`` may pick.
* ``libtiny`` 1.0 (linux-64, ``__glibc >=2.17``), 2.0 (``__cuda >=13``) and
  3.0 (``__glibc >=2.39``): which one is chosen shows the virtual packages.
* ``tinytool`` 0.1 (noarch generic): depends on ``python >=3.11`` and ``libtiny``.
* ``cudart-lite`` 12.8 (linux-64): needs ``__cuda >=12.8`` (conda-lock's implicit
  ``__cuda = 11.4`` could not install it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import needs

STAMP = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
PY = ".".join(map(str, sys.version_info[:3]))
MM = f"{sys.version_info[0]}.{sys.version_info[1]}"


def base_interpreter() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def package(channel: Path, name: str, version: str, subdir: str, files: dict[str, str],
            depends: list[str] | None = None, links: dict[str, str] | None = None,
            build: str = "h0_0") -> Path:
    """Assemble one ``.conda`` package into ``channel/subdir``; return its path."""
    import rattler_build

    stage = channel.parent / "stage" / f"{subdir}-{name}-{version}-{build}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for rel, text in files.items():
        p = stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for rel, target in (links or {}).items():
        p = stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)
    out = channel / subdir
    out.mkdir(parents=True, exist_ok=True)
    res = rattler_build.assemble_package(
        name=name, version=version, target_platform=subdir, build_string=build, output_dir=out,
        files_dir=stage, depends=depends or [], noarch="generic" if subdir == "noarch" else None,
        timestamp=STAMP, compression_level=1,
    )
    return Path(res.path)


def index(channel: Path) -> None:
    from rattler.index import index_fs

    for sub in ("noarch", "linux-64"):
        (channel / sub).mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(channel, force=True))


def python_package(channel: Path, exe: str, version: str) -> Path:
    """A ``python`` package making the prefix a venv of the interpreter ``exe``."""
    base = os.path.realpath(exe)
    mm = ".".join(version.split(".")[:2])
    cfg = f"home = {os.path.dirname(base)}\ninclude-system-site-packages = false\nversion = {version}\n"
    return package(channel, "python", version, "linux-64", {"pyvenv.cfg": cfg},
                   depends=["libtiny >=1"], links={"bin/python": base, f"bin/python{mm}": base})


def build_channel(channel: Path, pythons: tuple[tuple[str, str], ...] = ()) -> Path:
    """Create and index the channel described in the module docstring.

    ``pythons``: more ``(executable, version)`` interpreters to package.
    """
    for exe, version in ((base_interpreter(), PY), *pythons):
        python_package(channel, exe, version)
    package(channel, "python", "3.99.0", "linux-64", {"share/decoy.txt": "not a python"})
    package(channel, "libtiny", "1.0", "linux-64", {"lib/libtiny.txt": "libtiny 1.0\n"},
            depends=["__glibc >=2.17"])
    package(channel, "libtiny", "2.0", "linux-64", {"lib/libtiny.txt": "libtiny 2.0\n"},
            depends=["__cuda >=13"])
    package(channel, "libtiny", "3.0", "linux-64", {"lib/libtiny.txt": "libtiny 3.0\n"},
            depends=["__glibc >=2.39"])
    package(channel, "tinytool", "0.1", "noarch", {"share/tinytool/README": "tinytool\n"},
            depends=["python >=3.11", "libtiny"])
    package(channel, "cudart-lite", "12.8", "linux-64", {"lib/cudart-lite.txt": "12.8\n"},
            depends=["__cuda >=12.8"])
    index(channel)
    return channel


CONDA_TABLE = """
[conda]
channels = ["tiny"]
packages = {packages}

[conda.channel-overrides]
tiny = "{channel}"
"""


def add_conda_base(spec: Path, channel: str, packages: str = '["tinytool", "cudart-lite"]',
                   extra: str = "") -> None:
    """Append a ``[conda]`` table to a matrix spec file."""
    spec.write_text(spec.read_text() + CONDA_TABLE.format(channel=channel, packages=packages) + extra)


# Fixtures shared by the conda test modules: registered as a plugin by tests/conftest.py;
# a module opts in with ``pytestmark = pytest.mark.usefixtures("rattler_cache")``.
@pytest.fixture(scope="module")
def rattler_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private rattler cache, and conda-lock's executable solver out of the way (skips
    without builder's conda extra: the tests that use it exercise conda bases)."""
    needs.conda_extra()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RATTLER_CACHE_DIR", str(tmp_path_factory.mktemp("rattler-cache")))
        mp.delenv("BUILDER_CONDA_EXE", raising=False)
        yield


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local conda channel built with py-rattler-build for this module."""
    needs.conda_extra()
    return build_channel(tmp_path_factory.mktemp("conda") / "channel")
