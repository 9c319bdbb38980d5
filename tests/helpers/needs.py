"""What a test needs that an operator's host may lack: find out, and skip with the reason.

The default suite passes on every host the README's two commands run on: a source archive
without ``.git``, a host with one Python, a venv without the conda extra, no GPU.  A test that
needs more either makes it (a temporary git repository, wheels for the Python it found) or
calls one of these, which skips it with what is missing and how to get it.  A test whose
*subject* is the missing thing does not call them: it sets the absence up itself and must fail
when builder mishandles it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import pytest

#: The conda extra (``pip install -e '.[conda]'``): what the conda tests import.
CONDA_EXTRA = ("yaml", "rattler", "rattler_build", "conda_lock")


def modules(*names: str, extra: str) -> None:
    """Skip unless every module in ``names`` can be imported (``extra``: the extra that brings them)."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        pytest.skip(allow_module_level=True, reason=f"needs {', '.join(missing)} (pip install -e '.[{extra}]')")


def conda_extra() -> None:
    """Skip unless builder's conda extra is installed."""
    modules(*CONDA_EXTRA, extra="conda")


def nox() -> None:
    """Skip unless nox is importable (the dev extra; an air-gapped host may have only builder)."""
    modules("nox", extra="dev")


def git() -> str:
    """The git executable, or skip: tests make their own repositories with it."""
    exe = shutil.which("git")
    if exe is None:
        pytest.skip(allow_module_level=True, reason="needs git (to make a temporary repository): it is not on PATH")
    return exe


def python(*versions: str) -> tuple[str, str]:
    """The first of ``versions`` (``"3.11"``) for which builder finds a CPython: (version, path).

    Found as ``builder build`` finds one (PATH, pyenv, uv-managed); skip when none is there.
    """
    from builder import tools
    from builder.errors import BuilderError
    from builder.runtime import interpreters

    tried = []
    for v in versions:
        try:
            return v, interpreters.find(v, uv=tools.uv_bin()).path
        except BuilderError as exc:
            tried.append(exc.message)
    pytest.skip(allow_module_level=True,
                reason=f"needs a CPython {' or '.join(versions)} (PATH, pyenv or uv-managed): {'; '.join(tried)}")


def gcc() -> str:
    """The C compiler that makes the tests' real ELF files (shared objects, extension modules), or skip."""
    exe = shutil.which("gcc")
    if exe is None:
        pytest.skip("needs gcc to compile real ELF test files (apt install gcc): it is not on PATH")
    return exe


def python_headers(include: str) -> None:
    """Skip unless ``include`` (a Python's sysconfig include dir) has Python.h (python3-dev)."""
    if not os.path.isfile(os.path.join(include, "Python.h")):
        pytest.skip(f"needs Python's C headers to compile an extension module: no Python.h in {include} "
                    "(apt install python3-dev, or a Python built with its headers)")


def debian_python(path: str = "/usr/bin/python3") -> str:
    """The Debian/Ubuntu system Python at ``path`` if it runs and has ``venv``, or skip.

    Present is not enough: a host (or a test of the one-Python case) may have the name with
    nothing runnable behind it.
    """
    from builder import _proc

    if not os.path.lexists(path):
        pytest.skip(f"needs a Debian/Ubuntu system python: no {path} here")
    r = _proc.run([path, "-c", "import venv"], timeout=60)
    if not r.ok:
        pytest.skip(f"needs a Debian/Ubuntu system python with venv: {path} did not run it "
                    f"({(r.stderr.strip() or f'exit {r.returncode}')[:200]})")
    return path


def gpu() -> None:
    """Skip on a host with no NVIDIA GPU at all: no ``nvidia-smi`` on PATH and no ``/dev/nvidiactl``.

    Either one present means a GPU host: its tests run, and a broken driver fails them.
    """
    if shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidiactl"):
        pytest.skip("needs an NVIDIA GPU: no nvidia-smi on PATH and no /dev/nvidiactl")


def torch() -> None:
    """Skip unless the interpreter running the tests has torch (the GPU tests drive it directly)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip(f"needs torch in the interpreter running the tests ({sys.executable} -m pip install torch)")
