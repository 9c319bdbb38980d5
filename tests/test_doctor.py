"""``builder doctor``: read-only inspection of any environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

from builder import _proc, tools
from builder.runtime import doctor
from tests.conftest import tree_digest
from tests.helpers import needs
from tests.helpers.runtimes import World, builder


def test_doctor_on_a_built_runtime_reports_identity_and_its_lock(w: World) -> None:
    before = tree_digest(w.runtime)
    r = builder("doctor", "--python", str(w.runtime / "bin" / "python"), "--json", cwd=w.project)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["python"]["venv"] and d["python"]["version"].startswith("3.12.")
    assert d["torch"] | {"files": None, "skipped_large": None} == {
        "installed": True, "version": "2.9.0", "__version__": "2.9.0+cu128", "cuda": "12.8",
        "cudart_soname": "libcudart.so.12", "toolkit": None, "toolkit_release": None,
        "files": None, "skipped_large": None}
    assert d["vllm"]["__version__"] == "0.13.0" and d["vllm"]["toolkit"] == "12.9.86"
    assert d["vllm"]["files"] == ["vllm/_flashmla_extension_C.abi3.so"]
    assert d["consistency"] == {"ok": True, "problems": []}
    assert d["lock"]["exact"] and d["lock"]["lock"] == "locks/matrix-t/pylock.py312.toml"
    assert tree_digest(w.runtime) == before  # nothing written, not even __pycache__


def test_doctor_reports_broken_dependencies_and_the_closest_lock(w: World, tmp_path: Path) -> None:
    uv = tools.uv_bin()
    py = os.path.realpath(w.runtime / "bin" / "python")
    v = tmp_path / "v"
    _proc.run([uv, "venv", str(v), "--python", py, "--no-config", "-q"], timeout=60, check=True)
    vllm = next((w.index_root / "files").glob("vllm-0.13.0-*.whl"))
    _proc.run([uv, "pip", "install", "--python", str(v / "bin" / "python"), "--no-deps", "--no-config",
               "--cache-dir", str(w.cache), "-q", str(vllm)], timeout=60, check=True)
    before = tree_digest(v)
    r = builder("doctor", "--python", str(v / "bin" / "python"), cwd=w.project)
    assert r.returncode == 0, r.stderr
    assert "vllm 0.13.0 requires torch==2.9.0, which is not installed" in r.stdout
    assert "torch: not installed" in r.stdout
    assert "lock: matches none; closest locks/matrix-t/pylock.py312.toml (2 missing, 0 different, 0 extra)" \
        in r.stdout
    assert tree_digest(v) == before


def test_consistency_honours_markers_and_specifiers() -> None:
    probe = doctor.EnvProbe(
        python="p", executable="p", version="3.12.1", prefix="/x", venv=True, conda=False, site_dirs=(),
        markers={"python_version": "3.12", "sys_platform": "linux", "platform_machine": "x86_64",
                 "python_full_version": "3.12.1", "implementation_name": "cpython", "os_name": "posix",
                 "platform_system": "Linux", "platform_release": "", "platform_version": "",
                 "platform_python_implementation": "CPython", "implementation_version": "3.12.1"},
        dists=({"name": "a", "version": "1", "requires": [
            "b>=2", 'c; sys_platform == "darwin"', 'd; extra == "x"', "e==1.0"]},
               {"name": "b", "version": "1.5", "requires": []},
               {"name": "E", "version": "1.0.0", "requires": []}),
    )
    assert doctor.consistency(probe) == ["a 1 requires b>=2, but 1.5 is installed"]


def test_read_assignment_handles_torch_and_vllm_styles(tmp_path: Path) -> None:
    f = tmp_path / "version.py"
    f.write_text("__version__ = '2.9.0+cu128'\ncuda: Optional[str] = '12.8'\n")
    assert doctor.read_assignment(f, "cuda") == "12.8"
    f.write_text("__version__ = version = '0.13.0'\n")
    assert doctor.read_assignment(f, "__version__") == "0.13.0"
    assert doctor.read_assignment(tmp_path / "missing.py", "x") is None


def test_binary_identity_reads_small_files_first_and_skips_huge_ones(w: World, tmp_path: Path) -> None:
    pkg = tmp_path / "vllm"
    pkg.mkdir()
    site = next((w.runtime / "lib").glob("python3.12/site-packages"))
    small = (site / "vllm" / "_flashmla_extension_C.abi3.so").read_bytes()
    (pkg / "_small.abi3.so").write_bytes(small)
    (pkg / "_C.abi3.so").write_bytes(small + b"\0" * (2 * 1024 * 1024))
    ident = doctor.binary_identity(pkg, cap=1024 * 1024)
    assert ident.cudart_soname == "libcudart.so.12" and ident.toolkit_release == "12.9"
    assert ident.files == ("vllm/_small.abi3.so",) and ident.skipped == ()  # stopped before the big one
    (pkg / "_small.abi3.so").unlink()
    ident = doctor.binary_identity(pkg, cap=1024 * 1024)
    assert ident.cudart_soname is None and ident.skipped == ("vllm/_C.abi3.so (2 MB)",)


def test_doctor_on_a_missing_interpreter_is_one_clear_line(w: World, tmp_path: Path) -> None:
    r = builder("doctor", "--python", str(tmp_path / "nope" / "python"), cwd=w.project)
    assert r.returncode == 2 and r.stderr.startswith("builder: error:") and r.stderr.count("\n") == 1


def test_doctor_sees_packages_that_a_pth_file_adds_without_running_it(tmp_path: Path) -> None:
    """Some envs (e.g. a GPU image's torch venv) reach their packages through .pth files."""
    import sys

    from tests.helpers.wheels import make_wheel

    env = tmp_path / "env"
    r = _proc.run([sys.executable, "-m", "venv", "--without-pip", str(env)], timeout=60)
    assert r.ok, r.stderr
    extra = tmp_path / "extra"
    whl = make_wheel(tmp_path / "w", "torch", "2.9.0")
    import zipfile

    zipfile.ZipFile(whl).extractall(extra)
    site = next(env.glob("lib/python3.*/site-packages"))
    marker = tmp_path / "executed"
    (site / "extra.pth").write_text(f"{extra}\nimport os; open({str(marker)!r}, 'w')\n")
    res = _proc.run([sys.executable, "-m", "builder", "doctor", "--python", str(env / "bin" / "python"),
                     "--json"], timeout=60)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["torch"]["installed"] and data["torch"]["version"] == "2.9.0", data["torch"]
    assert not marker.exists()  # the .pth import line was not executed


def test_doctor_reads_a_venv_of_a_debian_patched_python(tmp_path: Path) -> None:
    """Debian's site.getsitepackages() names only dist-packages; a uv/venv env of the
    system python (as on Ubuntu GPU hosts) keeps its packages in site-packages."""
    import sys
    import zipfile

    from tests.helpers.wheels import make_wheel

    debian_py = needs.debian_python()
    env = tmp_path / "env"
    assert _proc.run([debian_py, "-m", "venv", "--without-pip", str(env)], timeout=60).ok
    site = next(env.glob("lib/python3.*/site-packages"))
    zipfile.ZipFile(make_wheel(tmp_path / "w", "torch", "2.9.0")).extractall(site)
    res = _proc.run([sys.executable, "-m", "builder", "doctor", "--python", str(env / "bin" / "python3"),
                     "--json"], timeout=60)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["python"]["packages"] >= 1 and data["torch"]["installed"], data
