"""Run `python -m builder ...` and measure its own peak memory (shared by tests).

``ru_maxrss`` of a child is no good here: the kernel carries the peak of the
address space the child had before exec, i.e. the test runner's, into it.
``VmHWM`` in /proc/self/status belongs to the current address space only, so
the child reads its own at exit and writes it to a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_WRAP = (
    "import atexit, os, runpy, sys\n"
    "def _hwm():\n"
    "    line = next(x for x in open('/proc/self/status') if x.startswith('VmHWM:'))\n"
    "    with open(os.environ['BUILDER_TEST_HWM'], 'w') as f:\n"
    "        f.write(line.split()[1])\n"
    "atexit.register(_hwm)\n"
    "sys.argv = ['builder', *sys.argv[1:]]\n"
    "runpy.run_module('builder', run_name='__main__', alter_sys=True)\n"
)


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_bytes: int
    seconds: float


def run_builder(args: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 120) -> Measured:
    hwm = Path(tempfile.gettempdir()) / f"builder-test-hwm-{os.getpid()}-{time.monotonic_ns()}"
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", _WRAP, *args], cwd=cwd, env={**env, "BUILDER_TEST_HWM": str(hwm)},
                       capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t
    try:
        peak = int(hwm.read_text()) * 1024
    finally:
        hwm.unlink(missing_ok=True)
    return Measured(r.returncode, r.stdout, r.stderr, peak, took)
