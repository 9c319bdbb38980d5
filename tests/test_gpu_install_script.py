"""scripts/gpu_install.sh, offline: parts checked and joined, a venv over the given python3 with
every wheel installed --no-deps --no-index, and, where that python3 is itself a venv (the lent GPU
host's python3 is /opt/torch/.venv, which holds torch), its packages visible in the new venv."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_ENSUREPIP = importlib.util.find_spec("ensurepip")
BUNDLED = sorted((Path(_ENSUREPIP.origin).parent / "_bundled").glob("pip-*.whl")) \
    if _ENSUREPIP is not None and _ENSUREPIP.origin else []  # this interpreter's own pip wheel


def _wheel(dest: Path, name: str, version: str) -> Path:
    """A pure wheel with one module, ``name``, that says its version."""
    path = dest / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as z:
        for n, text in files.items():
            z.writestr(n, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
    return path


def _parts(tmp: Path, wheels: list[Path]) -> Path:
    """The wheels as scripts/gpu_wheels.sh ships them: one tar in two parts, and their sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for w in wheels:
            tar.add(w, arcname=f"wheels/{w.name}")
    data = buf.getvalue()
    parts = tmp / "parts"
    parts.mkdir()
    sums = []
    for suffix, chunk in (("aa", data[: len(data) // 2]), ("ab", data[len(data) // 2:])):
        (parts / f"gpu-wheels.tar.part-{suffix}").write_bytes(chunk)
        sums.append(f"{hashlib.sha256(chunk).hexdigest()}  gpu-wheels.tar.part-{suffix}\n")
    (parts / "SHA256SUMS").write_text("".join(sums))
    return parts


def _install(parts: Path, venv: Path, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ROOT / "scripts/gpu_install.sh"), str(parts), str(venv)], capture_output=True,
                          text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(python), "PYTHONNOUSERSITE": "1"})


@pytest.mark.skipif(not BUNDLED, reason="no pip wheel bundled with this Python (ensurepip)")
def test_a_python3_that_is_a_venv_keeps_its_packages_visible(tmp_path: Path) -> None:
    host = tmp_path / "host-venv"  # the host's python3: a venv holding "hosttorch"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(host)], check=True, timeout=120)
    (next(host.glob("lib/python*/site-packages")) / "hosttorch.py").write_text("VERSION = 'host'\n")
    wheels = tmp_path / "w"
    wheels.mkdir()
    parts = _parts(tmp_path, [_wheel(wheels, "servestack", "1.0"), BUNDLED[-1]])
    venv = tmp_path / "gpu-venv"
    r = _install(parts, venv, host / "bin/python")
    # its last step prints the versions of torch and vLLM, which this host lacks (a GPU host's
    # interpreter may have torch): it fails there, with everything before it done
    assert r.returncode != 0 and ("No module named 'torch'" in r.stderr or "vllm" in r.stderr), r.stderr
    probe = "import hosttorch, servestack; print(hosttorch.VERSION, servestack.VERSION)"
    out = subprocess.run([str(venv / "bin/python"), "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["host", "1.0"], out.stderr
    # A damaged part is refused before anything is joined or made.
    (parts / "gpu-wheels.tar.part-ab").write_bytes(b"damaged")
    bad = _install(parts, tmp_path / "v2", host / "bin/python")
    assert bad.returncode != 0 and not (tmp_path / "v2").exists()
