"""`builder --version` from an installed builder and from a bare source checkout."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import builder
from tests.conftest import ROOT


def _bare_checkout(tmp_path: Path) -> str:
    """PYTHONPATH for the checkout's builder/ plus its dependencies, with no dist-info anywhere."""
    src = tmp_path / "checkout"
    shutil.copytree(ROOT / "builder", src / "builder", ignore=shutil.ignore_patterns("__pycache__"))
    deps = tmp_path / "deps"
    deps.mkdir()
    for name in ("click", "packaging", "tomlkit"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, name
        (deps / name).symlink_to(next(iter(spec.submodule_search_locations)))
    return f"{src}:{deps}"


def test_version_from_a_source_checkout_without_installation(tmp_path: Path) -> None:
    path = _bare_checkout(tmp_path)
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin"}
    # -S: no site-packages, so neither builder's dist-info nor its editable finder is visible.
    probe = subprocess.run([sys.executable, "-S", "-c", "import importlib.metadata as m; m.version('builder')"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "PackageNotFoundError" in probe.stderr  # really no metadata
    r = subprocess.run([sys.executable, "-S", "-m", "builder", "--version"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"builder, version {builder.__version__}\n" and "Traceback" not in r.stderr


def test_installed_metadata_and_package_agree() -> None:
    """pyproject.toml takes the version from builder.__version__: one source."""
    assert importlib.metadata.version("builder") == builder.__version__
    r = subprocess.run([sys.executable, "-m", "builder", "--version"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == f"builder, version {builder.__version__}\n"
