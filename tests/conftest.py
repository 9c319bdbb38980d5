"""Shared fixtures: a local PEP 503 index of tiny real wheels, and temp projects.

Fixture owners: the lead. Add fixtures specific to one area in that area's
test module (or a tests/helpers module), not here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import httpserver, projects, wheels
from tests.helpers.cli import builder_cmd

ROOT = Path(__file__).resolve().parent.parent

# Fixtures live beside their helpers: the conda tests' (channel, rattler_cache) and the
# runtime world's (w).
pytest_plugins = ["tests.helpers.conda_channel", "tests.helpers.runtimes"]


_own_cache: str | None = None
_own_mamba: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """builder's cache for the whole run (xdist workers inherit it): what the tests' builds and
    checks keep there (wheel facts, lock models, interpreter answers) must not pile up in the
    developer's ~/.cache/builder.  A BUILDER_CACHE_DIR set by hand (the GPU runs') is kept."""
    global _own_cache, _own_mamba
    import tempfile

    if not os.environ.get("BUILDER_CACHE_DIR"):
        _own_cache = tempfile.mkdtemp(prefix="builder-test-cache-")
        os.environ["BUILDER_CACHE_DIR"] = _own_cache
    # The tests' host is an operator's: the QL_1 its projects protect exists, so builder can
    # guard it and says nothing.  Here: an empty env under a micromamba root prefix (one of the
    # places builder looks, and no CONDA_* variable, which tests scrub).  The tests of a QL_1
    # builder cannot locate (tests/test_unguarded.py) run without it.
    if not os.environ.get("MAMBA_ROOT_PREFIX"):
        _own_mamba = tempfile.mkdtemp(prefix="builder-test-mamba-")
        os.chmod(_own_mamba, 0o755)  # builder run as another user (tests/test_env_errors.py) looks too
        os.makedirs(os.path.join(_own_mamba, "envs", "QL_1", "conda-meta"))
        os.environ["MAMBA_ROOT_PREFIX"] = _own_mamba


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    for own, var in ((_own_cache, "BUILDER_CACHE_DIR"), (_own_mamba, "MAMBA_ROOT_PREFIX")):
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
            os.environ.pop(var, None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``gpu`` test (``pytest -m gpu``) on a host with no NVIDIA GPU at all is skipped with
    that reason; where a GPU shows (nvidia-smi or the device node), it runs and may fail."""
    if item.get_closest_marker("gpu") is not None:
        from tests.helpers import needs

        needs.gpu()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Close the runtime world's index servers while their threads still run (see close_servers)."""
    from tests.helpers import runtimes

    runtimes.close_servers()


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny wheels standing in for torch/vLLM and friends (plus one sdist-only package)."""
    d = tmp_path_factory.mktemp("wheelhouse")
    wheels.make_wheel(d, "torch", "2.9.0", requires=["nvidia-cublas-cu12==12.8.4.1", "filelock"],
                      tag="cp312-cp312-manylinux_2_28_x86_64")
    wheels.make_wheel(d, "torch", "2.9.0", requires=["nvidia-cublas-cu12==12.8.4.1", "filelock"],
                      tag="cp311-cp311-manylinux_2_28_x86_64")
    wheels.make_wheel(d, "vllm", "0.13.0", requires=["torch==2.9.0", "filelock>=3"],
                      tag="cp38-abi3-manylinux_2_31_x86_64")
    wheels.make_wheel(d, "nvidia-cublas-cu12", "12.8.4.1", tag="py3-none-manylinux_2_27_x86_64")
    wheels.make_wheel(d, "nvidia-cublas-cu12", "12.9.1.4", tag="py3-none-manylinux_2_27_x86_64")
    wheels.make_wheel(d, "filelock", "3.20.0")
    wheels.make_wheel(d, "filelock", "3.19.1")
    wheels.make_sdist(d, "srconly", "1.0")
    return d


@pytest.fixture(scope="session")
def index(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PEP 503 simple index serving ``wheelhouse`` on 127.0.0.1."""
    root = tmp_path_factory.mktemp("index")
    simple = httpserver.write_simple_index(root, wheelhouse)
    with httpserver.serve(root) as (url, _stats):
        assert simple.is_dir()
        yield f"{url}/simple"


HOST = projects.REPO_HOST


def write_project(root: Path, index: str, matrices: dict[str, dict[str, object]] | None = None) -> Path:
    """A temp project with ``envs/`` (host + matrices) and an empty ``locks/``.

    Matrix ``t`` by default; per matrix, ``pythons``, ``extra``, ``overrides`` (TOML
    text) or any other keyword of :func:`tests.helpers.projects.matrix_toml`.
    """
    texts = {}
    for mid, opts in (matrices or {"t": {}}).items():
        o = {"pythons": '["3.11", "3.12"]', "extra": "[]", "overrides": "[]", **{k: str(v) for k, v in opts.items()}}
        texts[mid] = projects.matrix_toml(mid, index, title=f"test matrix {mid}", comment="# a test matrix\n",
                                          source="pypi", packages={"extra": o.pop("extra"),
                                                                   "overrides": o.pop("overrides")}, **o)
    return projects.write_project(root, texts)


@pytest.fixture
def project(tmp_path: Path, index: str) -> Path:
    return write_project(tmp_path / "proj", index)




@pytest.fixture(scope="session")
def uv_exe() -> str:
    from builder import tools

    return tools.uv_bin()


def tree_digest(root: Path) -> str:
    """Hash of a tree's paths, modes, contents and mtimes (for untouched-env proofs)."""
    import hashlib

    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            h.update(f"{p.relative_to(root)}|{st.st_mode}|{st.st_mtime_ns}|".encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


__all__ = ["builder_cmd", "tree_digest", "write_project"]
