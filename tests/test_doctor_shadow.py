"""`builder doctor` on a real venv created with --system-site-packages: the venv's own
packages shadow the base's (doctor reports the version Python would import), and the
closest lock is one for the env's Python version.

The base is a real prefix of this interpreter's Python (its stdlib symlinked in, its
own site-packages), so the test can install into the "system" site-packages without
touching the machine's Python.  Packages are tiny real wheels, unpacked as an
installer would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from builder.runtime import doctor
from tests.helpers import wheels as hw

VER = f"{sys.version_info[0]}.{sys.version_info[1]}"
ROOT = Path(__file__).resolve().parent.parent


def _base(root: Path) -> Path:
    """A Python prefix whose stdlib is this interpreter's and whose site-packages is empty."""
    real = Path(sys.base_prefix)
    lib = root / "lib" / f"python{VER}"
    (lib / "site-packages").mkdir(parents=True)
    for entry in (real / "lib" / f"python{VER}").iterdir():
        if entry.name != "site-packages":
            (lib / entry.name).symlink_to(entry)
    for so in (real / "lib").glob("libpython*"):
        (root / "lib" / so.name).symlink_to(so)
    (root / "bin").mkdir()
    exe = Path(sysconfig.get_config_var("BINDIR") or real / "bin") / f"python{VER}"
    (root / "bin" / f"python{VER}").symlink_to(exe.resolve() if exe.exists() else Path(sys.executable).resolve())
    return root / "bin" / f"python{VER}"


def _install(whl: Path, site: Path) -> None:
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(site)


def _torch(d: Path, version: str, local: str, cuda: str) -> Path:
    return hw.make_wheel(d, "torch", version, files={
        "torch/__init__.py": f"__version__ = '{version}+{local}'\n",
        "torch/version.py": f"__version__ = '{version}+{local}'\ncuda: str = '{cuda}'\n"})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    t = tmp_path_factory.mktemp("shadow")
    base_py = _base(t / "base")
    _install(_torch(t / "w", "2.8.0", "cu126", "12.6"), t / "base" / "lib" / f"python{VER}" / "site-packages")
    _install(hw.make_wheel(t / "w", "filelock", "3.19.1"), t / "base" / "lib" / f"python{VER}" / "site-packages")
    v = t / "venv"
    subprocess.run([str(base_py), "-m", "venv", "--without-pip", "--system-site-packages", str(v)], check=True,
                   timeout=120)
    site = v / "lib" / f"python{VER}" / "site-packages"
    _install(_torch(t / "w2", "2.9.0", "cu128", "12.8"), site)
    # What Python itself imports in that venv (the ground truth doctor must report):
    out = subprocess.run([str(v / "bin" / "python"), "-c", "import torch, filelock, sys; "
                          "print(torch.__version__, sys.base_prefix)"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2.9.0+cu128", str(t / "base")]
    return v


def test_doctor_reports_the_venv_version_that_shadows_the_base(env: Path) -> None:
    rep = doctor.doctor(str(env / "bin" / "python"), [])
    assert rep.probe.venv and rep.probe.site_dirs[0].startswith(str(env))
    assert rep.torch["version"] == "2.9.0" and rep.torch["__version__"] == "2.9.0+cu128"
    assert rep.torch["cuda"] == "12.8"
    assert rep.probe.versions()["filelock"] == "3.19.1"  # only in the base: visible through it
    (hidden,) = rep.probe.shadowed()
    assert hidden.startswith("torch 2.8.0 in ") and "/base/" in hidden
    assert rep.as_dict()["python"]["shadowed"] == [hidden]


def _lock(path: Path, requires_python: str, packages: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f'\n[[packages]]\nname = "{n}"\nversion = "{v}"\nwheels = [{{ url = "https://example.invalid/'
                   f'{n}-{v}-py3-none-any.whl", hashes = {{ sha256 = "{"0" * 64}" }} }}]\n'
                   for n, v in packages.items())
    path.write_text(f'lock-version = "1.0"\ncreated-by = "test"\nrequires-python = "{requires_python}"\n{body}')
    return path


def test_the_closest_lock_prefers_the_env_python(env: Path, tmp_path: Path) -> None:
    # A lock for another Python matches the names and versions exactly; the one for this
    # env's Python misses a package: it is still the closest lock for this env.
    other = "3.99" if VER != "3.99" else "3.98"
    mine = _lock(tmp_path / "locks" / "m" / f"pylock.py{VER.replace('.', '')}.toml", f">={VER}",
                 {"torch": "2.9.0", "filelock": "3.19.1", "numpy": "2.1.0"})
    theirs = _lock(tmp_path / "locks" / "m" / f"pylock.py{other.replace('.', '')}.toml", f">={other}",
                   {"torch": "2.9.0", "filelock": "3.19.1"})
    rep = doctor.doctor(str(env / "bin" / "python"), [("theirs", theirs), ("mine", mine)])
    assert rep.match is not None and rep.match.lock == "mine" and rep.match.python == VER
    assert rep.match.missing == ("numpy==2.1.0",) and not rep.match.exact


def test_cli_doctor_names_the_shadowed_package(env: Path) -> None:
    e = {k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"}
    r = subprocess.run([sys.executable, "-m", "builder", "doctor", "--python", str(env / "bin" / "python")],
                       cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "torch: 2.9.0 (__version__ 2.9.0+cu128, torch.version.cuda 12.8)" in r.stdout
    assert "shadowed (not imported): torch 2.8.0 in" in r.stdout
    data = json.loads(subprocess.run([sys.executable, "-m", "builder", "doctor", "--python",
                                      str(env / "bin" / "python"), "--json"], cwd=ROOT, env=e,
                                     capture_output=True, text=True, timeout=120).stdout)
    assert data["torch"]["version"] == "2.9.0"
