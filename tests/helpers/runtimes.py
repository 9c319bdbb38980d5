"""A tiny but real torch + vLLM world for runtime tests (built once per session).

Fake ``torch`` and ``vllm`` wheels that behave like the real ones where the
smoke tests look: versions, ``torch.version.cuda``, ELF extensions linking a
stub ``libcudart.so.12`` (vLLM's with nvcc's 12.9 banner), ``AsyncLLMEngine``,
and a ``vllm`` console script failing with "Failed to infer device type" like
vLLM 0.13.0 on a host without a GPU
(https://docs.vllm.ai/en/latest/usage/troubleshooting.html#failed-to-infer-device-type).
They are served by a local
PEP 691 index and locked by the real ``builder lock``.

Session sharing across test modules goes through :func:`world`, memoised here,
because session fixtures defined in (or imported into) several modules would
build several times.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import httpserver, projects, wheels
from tests.helpers.cli import builder_cmd

ROOT = Path(__file__).resolve().parent.parent.parent
PY312 = "3.12"

VLLM_CLI = """\
def main():
    import sys
    if "--help" in sys.argv and __import__("os").environ.get("FAKE_VLLM_GPU") == "1":
        print("usage: vllm [-h] {serve,chat}")
        return 0
    raise RuntimeError("Failed to infer device type")
"""


def make_wheelhouse(dest: Path) -> Path:
    """torch 2.9.0 (+cu128), nvidia-cuda-runtime-cu12, vllm 0.13.0 and a broken vllm 0.13.1."""
    build = dest / "build"
    cudart = wheels.stub_cudart(build, 12)
    c10 = wheels.compile_shared_object(
        build / "libc10_cuda.so", c_source="extern int cudaRuntimeGetVersion(int*);\n"
        "int c10_probe(void){int v; return cudaRuntimeGetVersion(&v);}\n", link=[cudart])
    ext = wheels.cuda_extension(build, "_flashmla_extension_C.abi3.so", cudart, "12.9.86")
    out = dest / "wheels"
    wheels.make_wheel(out, "torch", "2.9.0", tag="cp312-cp312-manylinux_2_28_x86_64",
                      requires=["nvidia-cuda-runtime-cu12==12.8.90"],
                      files={"torch/__init__.py": '__version__ = "2.9.0+cu128"\nfrom torch import cuda, nn, version\n',
                             # like torch on a host whose driver is too old: no device, no exception
                             "torch/cuda/__init__.py": "def is_available():\n    return False\n"
                                                       "def device_count():\n    return 0\n",
                             "torch/nn/__init__.py": "", "torch/nn/functional.py": "",
                             "torch/version.py": "from typing import Optional\n"
                                                 "__version__ = '2.9.0+cu128'\n"
                                                 "cuda: Optional[str] = '12.8'\n",
                             "torch/lib/libc10_cuda.so": c10.read_bytes()})
    wheels.make_wheel(out, "nvidia-cuda-runtime-cu12", "12.8.90", tag="py3-none-manylinux_2_27_x86_64",
                      files={"nvidia/cuda_runtime/lib/libcudart.so.12": cudart.read_bytes()})
    vllm_files = {
        "vllm/__init__.py": "from vllm._version import __version__\n",
        "vllm/_version.py": "__version__ = version = '0.13.0'\n",
        "vllm/engine/__init__.py": "",
        "vllm/engine/async_llm_engine.py": "class AsyncLLMEngine:\n    pass\n",
        "vllm/entrypoints/__init__.py": "",
        "vllm/entrypoints/cli.py": VLLM_CLI,
        "vllm/_flashmla_extension_C.abi3.so": ext.read_bytes(),
    }
    wheels.make_wheel(out, "vllm", "0.13.0", tag="cp38-abi3-manylinux_2_31_x86_64", requires=["torch==2.9.0"],
                      files=vllm_files, console_scripts={"vllm": "vllm.entrypoints.cli:main"})
    broken = {k: v for k, v in vllm_files.items() if "engine" not in k}
    broken["vllm/_version.py"] = "__version__ = version = '0.13.1'\n"
    wheels.make_wheel(out, "vllm", "0.13.1", tag="cp38-abi3-manylinux_2_31_x86_64", requires=["torch==2.9.0"],
                      files=broken, console_scripts={"vllm": "vllm.entrypoints.cli:main"})
    return out


def write_project(root: Path, index: str, matrices: dict[str, str]) -> Path:
    """A project with host.toml and one matrix per ``{id: vllm_version}``."""
    return projects.write_project(root, {mid: projects.matrix_toml(mid, index, title=f"runtime test matrix {mid}",
                                                                   vllm=vllm) for mid, vllm in matrices.items()})


builder = builder_cmd  # the real CLI, as an operator would run it


@dataclass
class World:
    base: Path
    index_root: Path
    index: str  # .../simple
    project: Path  # matrices t (good) and u (broken vllm)
    cache: Path  # warm uv cache shared by the session's builds
    root: Path  # runtimes root of the shared build
    runtime: Path  # the built matrix-t py3.12 runtime

    def build(self, *args: str, root: Path | None = None, env: dict[str, str] | None = None,
              project: Path | None = None) -> subprocess.CompletedProcess[str]:
        return builder("build", "--matrix", "t", "--python", PY312, "--root", str(root or self.root),
                       "--cache-dir", str(self.cache), "--no-gpu", *args,
                       cwd=project or self.project, env=env)


_WORLD: World | None = None
_SERVERS = contextlib.ExitStack()


def serve(index_root: Path) -> str:
    """Serve ``index_root`` for the rest of the session; return the simple index URL."""
    url, _stats = _SERVERS.enter_context(httpserver.serve(index_root))
    return f"{url}/simple"


def close_servers() -> None:
    """Stop the session's servers (tests/conftest.py's ``pytest_sessionfinish``).

    Left to interpreter exit, the generator's ``finally`` would run after the
    daemon serving threads are frozen, and ``httpd.shutdown()`` would wait on
    them forever (the run printed its summary, then hung).
    """
    _SERVERS.close()


def world(base: Path) -> World:
    """Build the shared world once (wheels, index, locks, one runtime)."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    whl = make_wheelhouse(base / "wheelhouse")
    index_root = base / "index"
    httpserver.write_simple_index(index_root, whl)
    index = serve(index_root)
    project = write_project(base / "proj", index, {"t": "0.13.0", "u": "0.13.1"})
    r = builder("lock", cwd=project)
    assert r.returncode == 0, r.stderr
    w = World(base, index_root, index, project, base / "uv-cache", base / "runtimes", Path())
    r = w.build("--json")
    assert r.returncode == 0, r.stderr
    import json

    w.runtime = Path(json.loads(r.stdout)[0]["path"])
    _WORLD = w
    return w


# The fixture of every test module that builds on the world: registered as a plugin by tests/conftest.py.
@pytest.fixture(scope="session")
def w(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The shared runtime world (:func:`world`): built on first use, once per test process."""
    return world(tmp_path_factory.mktemp("rtworld"))
