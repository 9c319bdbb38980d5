"""Existing environments builder did not build: real venvs (uv) holding fake torch and vLLM wheels.

For the tests of ``smoke`` on vLLM's main-extension shapes and of ``builder runtime adopt``.
vLLM's main extension is a real CPython extension module compiled here (``vllm/_C.abi3.so``,
``vllm/_C_stable_libtorch.abi3.so`` or both), so importing it is the real import.  The
torch here answers ``torch.cuda`` from ``$FAKE_TORCH_DEVICES`` (``8.9,8.9``: two devices of
compute capability 8.9; unset: no device), like torch on a host with those GPUs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import needs, wheels

TORCH_CUDA = '''\
import os

def _caps():
    spec = os.environ.get("FAKE_TORCH_DEVICES", "")
    return [tuple(int(x) for x in c.split(".")) for c in spec.split(",") if c]

def is_available():
    return bool(_caps())

def device_count():
    return len(_caps())

def get_device_name(i=0):
    return "NVIDIA Fake GPU %d" % i

def get_device_capability(i=0):
    return _caps()[i]

def get_arch_list():
    return ["sm_80", "sm_90"] if _caps() else []
'''

VLLM_CLI = """\
def main():
    import sys
    if "--help" in sys.argv:
        print("usage: vllm [-h] {serve,chat}")
        return 0
    return 2
"""


def include_dir(python: str) -> str:
    """The C headers of ``python`` (to compile extension modules for it)."""
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def python_extension(out: Path, module: str, include: str) -> Path:
    """A real CPython extension module (``PyInit_<module>``) at ``out``."""
    src = ("#define PY_SSIZE_T_CLEAN\n#include <Python.h>\n"
           f'static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{module}", NULL, -1, NULL}};\n'
           f"PyMODINIT_FUNC PyInit_{module}(void) {{ return PyModule_Create(&def); }}\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    c = out.with_name(f"{module}.c")
    c.write_text(src)
    needs.python_headers(include)
    subprocess.run([needs.gcc(), "-shared", "-fPIC", f"-I{include}", "-o", str(out), str(c)], check=True,
                   capture_output=True, timeout=120)
    c.unlink()
    return out


def torch_wheel(dest: Path, version: str = "2.11.0", cuda: str = "13.0") -> Path:
    local = "cu" + cuda.replace(".", "")
    return wheels.make_wheel(dest, "torch", version, tag="cp312-cp312-manylinux_2_28_x86_64", files={
        "torch/__init__.py": f'__version__ = "{version}+{local}"\nfrom torch import cuda, version\n',
        "torch/cuda/__init__.py": TORCH_CUDA,
        "torch/version.py": f"from typing import Optional\n__version__ = '{version}+{local}'\n"
                            f"cuda: Optional[str] = '{cuda}'\n"})


def vllm_wheel(dest: Path, version: str, extensions: Sequence[str], include: str, build: Path) -> Path:
    """vLLM ``version`` whose package holds the main extensions named (``_C``, ``_C_stable_libtorch``);
    ``dest``: a directory of its own (wheels of one version share a file name)."""
    files: dict[str, str | bytes] = {
        "vllm/__init__.py": "from vllm._version import __version__\n",
        "vllm/_version.py": f"__version__ = version = '{version}'\n",
        "vllm/engine/__init__.py": "",
        "vllm/engine/async_llm_engine.py": "class AsyncLLMEngine:\n    pass\n",
        "vllm/entrypoints/__init__.py": "",
        "vllm/entrypoints/cli.py": VLLM_CLI,
    }
    for ext in extensions:
        so = python_extension(build / f"{version}-{'-'.join(extensions)}" / f"{ext}.abi3.so", ext, include)
        files[f"vllm/{ext}.abi3.so"] = so.read_bytes()
    return wheels.make_wheel(dest, "vllm", version, tag="cp38-abi3-manylinux_2_31_x86_64",
                             requires=["torch"], files=files, console_scripts={"vllm": "vllm.entrypoints.cli:main"})


def make_env(dest: Path, wheel_files: Sequence[Path], *, uv: str, python: str, cache: Path,
             system_site_packages: bool = False) -> Path:
    """A venv at ``dest`` (uv, on ``python``) with ``wheel_files`` installed; returns its ``bin/python``."""
    argv = [uv, "venv", str(dest), "--python", python, "--no-config", "-q"]
    if system_site_packages:
        argv.append("--system-site-packages")
    subprocess.run(argv, check=True, timeout=120)
    subprocess.run([uv, "pip", "install", "--python", str(dest / "bin" / "python"), "--no-deps", "--no-config",
                    "--offline", "--cache-dir", str(cache), "-q", *map(str, wheel_files)], check=True, timeout=300)
    return dest / "bin" / "python"
