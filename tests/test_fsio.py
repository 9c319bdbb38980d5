"""Atomic writes and the directory lock (builder.files.fsio)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.errors import Busy
from builder.files import fsio


def test_atomic_write_replaces_whole_file_with_normal_mode(tmp_path: Path) -> None:
    p = tmp_path / "d" / "pylock.toml"
    fsio.atomic_write(p, "one\n")
    fsio.atomic_write(p, "two\n")
    assert p.read_text() == "two\n"
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [x.name for x in p.parent.iterdir()] == ["pylock.toml"]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_atomic_write_honours_the_process_umask(tmp_path: Path) -> None:
    """In a process of its own (the umask is process-wide; no fork of this threaded runner)."""
    code = ("import os, sys; from pathlib import Path; from builder.files import fsio; os.umask(0o027); "
            "fsio.atomic_write(Path(sys.argv[1]), 'x'); print(oct(fsio.current_umask()))")
    f = tmp_path / "f.toml"
    r = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert (r.stdout.strip(), oct(f.stat().st_mode & 0o777)) == (oct(0o027), oct(0o640))


def test_writes_never_open_a_no_umask_window_for_other_threads(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the umask must not set it, even for a moment: a file another thread creates in
    that moment would get another mode (smoke steps and wheel reads run on threads). Linux says
    the umask in /proc/self/status; os.umask is watched (and still does its work) to prove it
    is not called."""
    try:
        reported = "Umask:" in Path("/proc/self/status").read_text(errors="replace")
    except OSError:
        reported = False
    if not reported:
        pytest.skip("this kernel does not report Umask in /proc/self/status (fsio falls back to os.umask)")
    calls: list[int] = []
    real = os.umask

    def watched(mask: int) -> int:
        calls.append(mask)
        return real(mask)

    monkeypatch.setattr(os, "umask", watched)
    fsio.atomic_write(tmp_path / "a.toml", "x\n")
    fsio.write_all([(tmp_path / "b.toml", "y\n"), (tmp_path / "c.toml", "z\n")])
    assert calls == []
    assert {(tmp_path / n).stat().st_mode & 0o777 for n in ("a.toml", "b.toml", "c.toml")} == {0o666 & ~_umask()}


def _hold(directory: str, seconds: float, ready: multiprocessing.synchronize.Event) -> None:
    with fsio.directory_lock(Path(directory)):
        ready.set()
        time.sleep(seconds)


def test_directory_lock_waits_then_reports_busy(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), 3.0, ready))
    proc.start()
    assert ready.wait(10)
    waited: list[bool] = []
    with pytest.raises(Busy):
        with fsio.directory_lock(tmp_path, timeout=0.3, on_wait=lambda: waited.append(True)):
            pass
    assert waited == [True]
    proc.kill()  # SIGKILL releases flock with the process
    proc.join()
    with fsio.directory_lock(tmp_path, timeout=1):
        pass


def test_clean_temp_files_removes_only_ours(tmp_path: Path) -> None:
    (tmp_path / ".pylock.py312.toml.abc.tmp").write_text("x")
    (tmp_path / "pylock.py312.toml").write_text("keep")
    fsio.clean_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["pylock.py312.toml"]
