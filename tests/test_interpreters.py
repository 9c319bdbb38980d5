"""Interpreter discovery: --interpreter, PATH, pyenv, uv-managed; protected envs are never used."""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

import pytest

from builder import _proc, protect
from builder.errors import ToolNotFound, UsageError
from builder.runtime import interpreters
from tests.helpers.scripts import sh


@functools.cache
def real() -> str:
    """A real CPython 3.12 on this machine (pyenv's); the tests link it where discovery looks."""
    return interpreters.find("3.12").path


def _env(tmp_path: Path, path: list[Path], pyenv_root: Path | None) -> dict[str, str]:
    env = _proc.clean_env(extra={"PATH": os.pathsep.join(map(str, path)) or str(tmp_path / "empty"),
                                 "HOME": str(tmp_path)})
    env.pop("PYENV_ROOT", None)
    if pyenv_root is not None:
        env["PYENV_ROOT"] = str(pyenv_root)
    return env


def test_path_comes_first_and_reports_why(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3.12").symlink_to(real())
    got = interpreters.find("3.12", env=_env(tmp_path, [bindir], None))
    assert got.source == "path" and got.reason == "python3.12 on PATH" and got.version.startswith("3.12.")


def test_pyenv_newest_working_patch_wins_and_broken_ones_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "pyenv"
    sh(root / "versions" / "3.12.10" / "bin" / "python3.12", "echo broken >&2; exit 3")
    good = root / "versions" / "3.12.1" / "bin" / "python3.12"
    good.parent.mkdir(parents=True)
    good.symlink_to(real())
    (root / "versions" / "3.12-dev" / "bin").mkdir(parents=True)  # not a release: ignored
    got = interpreters.find("3.12", env=_env(tmp_path, [], root))
    assert got.source == "pyenv" and got.reason == "installed by pyenv"
    assert got.rejected == ((str(root / "versions/3.12.10/bin/python3.12"), "exit 3: broken"),)


def test_a_shim_that_fails_falls_through_to_pyenv_versions(tmp_path: Path) -> None:
    shim = sh(tmp_path / "shims" / "python3.12", "echo 'pyenv: python3.12: command not found' >&2; exit 127")
    root = tmp_path / "pyenv"
    (root / "versions" / "3.12.1" / "bin").mkdir(parents=True)
    (root / "versions" / "3.12.1" / "bin" / "python3.12").symlink_to(real())
    got = interpreters.find("3.12", env=_env(tmp_path, [shim.parent], root))
    assert got.source == "pyenv" and got.rejected[0][0] == str(shim)


def test_interpreter_inside_a_protected_env_is_never_used(tmp_path: Path) -> None:
    ql1 = tmp_path / "miniconda3" / "envs" / "QL_1"
    (ql1 / "bin").mkdir(parents=True)
    (ql1 / "bin" / "python3.12").symlink_to(real())
    prot = protect.resolve(["QL_1"], environ={"HOME": str(tmp_path), "PATH": ""})
    root = tmp_path / "pyenv"
    (root / "versions" / "3.12.1" / "bin").mkdir(parents=True)
    (root / "versions" / "3.12.1" / "bin" / "python3.12").symlink_to(real())
    got = interpreters.find("3.12", protected=prot, env=_env(tmp_path, [ql1 / "bin"], root))
    assert got.source == "pyenv"
    assert got.rejected[0] == (str(ql1 / "bin" / "python3.12"), "inside the protected conda env QL_1 "
                                                               "(conda env directories)")
    with pytest.raises(UsageError, match="protected"):
        interpreters.find("3.12", explicit=str(ql1 / "bin" / "python3.12"), protected=prot)


def test_explicit_interpreter_must_have_the_right_version(tmp_path: Path) -> None:
    assert interpreters.find("3.12", explicit=real()).source == "interpreter"
    # This test's own interpreter asked for another X.Y, whichever the host's python3 is.
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other = "3.11" if mine == "3.12" else "3.12"
    with pytest.raises(UsageError, match=rf"is Python {re.escape(mine)}\.\d+, not {re.escape(other)}"):
        interpreters.find(other, explicit=sys.executable)
    with pytest.raises(UsageError, match="not found or not executable"):
        interpreters.find("3.12", explicit=str(tmp_path / "nope"))


def test_nothing_found_lists_what_was_tried_and_how_to_fix_it(tmp_path: Path) -> None:
    fake_uv = sh(tmp_path / "uvbin" / "uv", "exit 2")  # no uv-managed 3.12
    with pytest.raises(ToolNotFound) as exc:
        interpreters.find("3.12", uv=str(fake_uv), env=_env(tmp_path, [], tmp_path / "nopyenv"))
    assert "no usable Python 3.12 found" in exc.value.message and "--interpreter" in (exc.value.hint or "")


def test_uv_managed_python_is_the_last_resort(tmp_path: Path) -> None:
    managed = tmp_path / "uv-python" / "cpython-3.12.1-linux-x86_64-gnu" / "bin" / "python3.12"
    managed.parent.mkdir(parents=True)
    managed.symlink_to(real())
    # A stand-in for uv: the real one would need to download a managed Python
    # (no network to its mirror here); it prints what `uv python find` prints.
    fake_uv = sh(tmp_path / "uvbin" / "uv", f'echo "{managed}"')
    got = interpreters.find("3.12", uv=str(fake_uv), env=_env(tmp_path, [], tmp_path / "nopyenv"))
    assert got.source == "uv" and got.reason == "managed by uv"


def test_a_venv_python_on_path_is_replaced_by_its_base_interpreter(tmp_path: Path) -> None:
    """nox puts its session venv's bin on PATH: a runtime must not be based on that venv."""
    import sys

    from builder import _proc
    from builder.runtime import interpreters

    venv = tmp_path / "sessionvenv"
    assert _proc.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=60).ok
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    env = _proc.clean_env(extra={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYENV_ROOT": str(tmp_path / "nopyenv")})
    found = interpreters.find(py, env=env)
    assert not found.path.startswith(str(venv)), found
    assert any("belongs to a virtualenv" in why for _p, why in found.rejected)


def _pyenv_shim(tmp_path: Path, marker: Path, target: str) -> Path:
    """pyenv's real shim text, pointing at a stand-in for libexec/pyenv that records being run."""
    root = tmp_path / "pyenv"
    libexec = sh(root / "libexec" / "pyenv", f'touch "{marker}"\nshift 2; exec "{target}" "$@"')
    shim = root / "shims" / "python3.12"
    shim.parent.mkdir(parents=True)
    shim.write_text('#!/usr/bin/env bash\nset -e\n[ -n "$PYENV_DEBUG" ] && set -x\n\nprogram="${0##*/}"\n\n'
                    f'export PYENV_ROOT="{root}"\nexec "{libexec}" exec "$program" "$@"\n')
    shim.chmod(0o755)
    return shim


def test_a_pyenv_shim_on_path_is_not_run_when_pyenv_has_the_version(tmp_path: Path) -> None:
    """Running a shim costs ~0.3 s of bash per probe; pyenv's versions are read directly instead."""
    marker = tmp_path / "shim-ran"
    shim = _pyenv_shim(tmp_path, marker, real())
    good = tmp_path / "pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"
    good.parent.mkdir(parents=True)
    good.symlink_to(real())
    got = interpreters.find("3.12", env=_env(tmp_path, [shim.parent], tmp_path / "pyenv"))
    assert got.source == "pyenv" and not marker.exists()
    assert got.rejected == ((str(shim), "a pyenv shim: pyenv's versions are searched directly, the shim last"),)


def test_a_pyenv_shim_is_still_tried_last(tmp_path: Path) -> None:
    """pyenv's `system` Python is reachable only through its shim: it is found, after the rest."""
    marker = tmp_path / "shim-ran"
    shim = _pyenv_shim(tmp_path, marker, real())
    fake_uv = sh(tmp_path / "uvbin" / "uv", "exit 2")  # no uv-managed 3.12 either
    env = _env(tmp_path, [shim.parent, Path("/usr/bin"), Path("/bin")], tmp_path / "pyenv")  # the shim needs bash
    got = interpreters.find("3.12", uv=str(fake_uv), env=env)
    assert marker.exists() and got.source == "path" and got.version.startswith("3.12.")


def test_later_steps_run_only_when_earlier_ones_found_nothing(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3.12").symlink_to(real())
    ran = tmp_path / "ran"
    spy_uv = sh(tmp_path / "uvbin" / "uv", f'echo uv >> "{ran}"; exit 2')
    spy_pyenv = sh(tmp_path / "pyenvbin" / "pyenv", f'echo pyenv >> "{ran}"; exit 1')
    env = _env(tmp_path, [bindir, spy_pyenv.parent], None)  # no PYENV_ROOT: `pyenv root` would run
    assert interpreters.find("3.12", uv=str(spy_uv), env=env).source == "path"
    assert not ran.exists()


def _counting_probe(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each interpreter actually started (the real probe still runs)."""
    calls: list[str] = []
    started = interpreters.probe

    def counting(exe: str, env: object = None) -> object:
        calls.append(exe)
        return started(exe, env)  # type: ignore[arg-type]

    monkeypatch.setattr(interpreters, "probe", counting)
    return calls


def _copy_of_real(tmp_path: Path) -> Path:
    import shutil

    exe = tmp_path / "bin" / "python3.12"
    exe.parent.mkdir(parents=True)
    shutil.copy2(real(), exe)  # the same binary as another file (pyenv's links libpython absolutely)
    return exe


def test_a_kept_probe_answer_skips_starting_the_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _copy_of_real(tmp_path)
    calls = _counting_probe(monkeypatch)
    cache = tmp_path / "cache"
    first = interpreters.find("3.12", explicit=str(exe), cache=cache)
    again = interpreters.find("3.12", explicit=str(exe), cache=cache)
    assert first == again and first.path == str(exe) and calls == [str(exe)]
    assert len(list((cache / "interpreters").glob("*.json"))) == 1
    st = exe.stat()
    os.utime(exe, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # reinstalled in place: another file
    assert interpreters.find("3.12", explicit=str(exe), cache=cache) == first and len(calls) == 2
    with pytest.raises(UsageError, match="not 3.11"):  # a kept answer still judges the version
        interpreters.find("3.11", explicit=str(exe), cache=cache)
    assert len(calls) == 2


def test_a_venv_beside_it_changes_the_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe reports a venv's base interpreter from the pyvenv.cfg above it: that file is
    part of the key, so a pyvenv.cfg appearing is a miss, not a stale "not a venv"."""
    exe = _copy_of_real(tmp_path)
    calls = _counting_probe(monkeypatch)
    cache = tmp_path / "cache"
    assert not isinstance(interpreters.probe_kept(str(exe), None, cache), str)
    (tmp_path / "pyvenv.cfg").write_text(f"home = {Path(real()).parent}\n")
    got = interpreters.probe_kept(str(exe), None, cache)
    assert not isinstance(got, str) and got[3] is not None  # now seen as a venv's python
    assert len(calls) == 2


def test_a_script_or_a_failure_is_never_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = sh(tmp_path / "bin" / "python3.12", f'exec "{real()}" "$@"')
    broken = sh(tmp_path / "bin2" / "python3.12", "exit 3")
    calls = _counting_probe(monkeypatch)
    cache = tmp_path / "cache"
    for _ in range(2):
        assert not isinstance(interpreters.probe_kept(str(wrapper), None, cache), str)
        assert isinstance(interpreters.probe_kept(str(broken), None, cache), str)
    assert len(calls) == 4 and not (cache / "interpreters").exists()


def test_a_damaged_or_foreign_entry_is_not_believed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _copy_of_real(tmp_path)
    calls = _counting_probe(monkeypatch)
    cache = tmp_path / "cache"
    want = interpreters.probe_kept(str(exe), None, cache)
    [entry] = (cache / "interpreters").glob("*.json")
    entry.write_text(entry.read_text()[:20])
    assert interpreters.probe_kept(str(exe), None, cache) == want and len(calls) == 2
    d = __import__("json").loads(entry.read_text())
    entry.write_text(__import__("json").dumps({"key": d["key"] + "x", "value": ["9.9.9", "cpython", "/x", None]}))
    assert interpreters.probe_kept(str(exe), None, cache) == want and len(calls) == 3
