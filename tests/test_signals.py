"""Signals stop builder cleanly: children killed, temp dirs removed, nothing written.

Real signals to a real ``builder`` process while its real ``uv`` child is
stuck on a stalled local index (the server holds every request); then /proc
is read for survivors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import _proc, cancel
from builder.errors import Interrupted
from builder.files import fsio
from tests.helpers import httpserver
from tests.helpers.runtimes import PY312, World, write_project

WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


@pytest.fixture
def stalled(w: World) -> Iterator[httpserver.Stats]:
    """A second server of the world's index; ``stats.hold`` stalls it on demand."""
    with httpserver.serve(w.index_root) as (url, stats):
        stats.url = f"{url}/simple"  # type: ignore[attr-defined]
        yield stats
        if stats.hold is not None:
            stats.hold.set()  # let the handler threads finish


def children(pid: int, comm: str) -> list[int]:
    """Pids of live processes named ``comm`` whose parent is ``pid``."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if name == comm and int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "builder", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(what: str, cond: object, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond() if callable(cond) else cond
        if got:
            return got
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[str], signum: int, uv: list[int]) -> str:
    """Send ``signum``; return stderr; the builder and its uv children must be gone."""
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert f"builder: {WORDS[signum]}" in err and "Traceback" not in err, err
    wait_for("uv to be gone", lambda: not any(alive(p) for p in uv), timeout=10)
    return err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_lock_writes_nothing_and_leaves_no_child(
        w: World, stalled: httpserver.Stats, tmp_path: Path, signum: int) -> None:
    proj = write_project(tmp_path / "proj", stalled.url, {"t": "0.13.0"})  # type: ignore[attr-defined]
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    env.pop("BUILDER_PROJECT", None)
    (tmp_path / "tmp").mkdir()
    r = subprocess.run([sys.executable, "-m", "builder", "lock", "-m", "t"], cwd=proj, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lock = proj / "locks" / "matrix-t" / "pylock.py312.toml"
    before = lock.read_bytes()
    spec = proj / "envs" / "matrix-t.toml"  # a new spec hash: re-locking would rewrite the lock
    spec.write_text(spec.read_text().replace('exclude-newer = "2025-12-30"', 'exclude-newer = "2025-12-29"'))
    stalled.hold = threading.Event()
    env["UV_CACHE_DIR"] = str(tmp_path / "cold-cache")  # uv must ask the (stalled) index
    seen = stalled.requests
    proc = start(["lock", "-m", "t"], proj, env)
    uv = wait_for("uv to ask the index", lambda: stalled.requests > seen and children(proc.pid, "uv"))
    stop(proc, signum, uv)  # type: ignore[arg-type]
    assert lock.read_bytes() == before
    assert not [p.name for p in lock.parent.iterdir() if p.name.endswith(".tmp")]
    assert not list((tmp_path / "tmp").iterdir()), "builder-lock-* temp dirs left"


def test_the_temp_dirs_of_a_killed_lock_are_swept_by_the_next_run_but_not_a_live_runs(
        w: World, stalled: httpserver.Stats, tmp_path: Path) -> None:
    """SIGKILL cannot be caught: the killed `builder lock` leaves its builder-lock-* dir.  The next
    run (here a lock of another project, sharing $TMPDIR) removes it, and not the dir of a
    concurrent `builder lock` that is still waiting on the index."""
    proj = write_project(tmp_path / "proj", stalled.url, {"t": "0.13.0"})  # type: ignore[attr-defined]
    other = write_project(tmp_path / "other", w.index, {"t": "0.13.0"})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"}
    env.update(TMPDIR=str(tmp), UV_CACHE_DIR=str(tmp_path / "cold-cache"))
    stalled.hold = threading.Event()

    def lock_dirs() -> set[str]:
        return {p.name for p in tmp.iterdir() if p.name.startswith("builder-lock-")}

    killed = start(["lock", "-m", "t"], proj, env)
    uv = wait_for("uv to ask the stalled index", lambda: children(killed.pid, "uv"))
    left = wait_for("its temp dir", lock_dirs)
    killed.kill()
    killed.wait(timeout=30)
    for pid in uv:  # its uv may run on (its own process group): not the subject here
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert lock_dirs() == left  # SIGKILL: nothing removed it

    live = start(["lock", "-m", "t"], proj, env)
    try:
        uv = wait_for("the live run's uv", lambda: children(live.pid, "uv"))
        mine = wait_for("the live run's temp dir", lambda: lock_dirs() - left)
        env_other = {**env, "UV_CACHE_DIR": str(w.cache)}
        r = subprocess.run([sys.executable, "-m", "builder", "lock", "-m", "t"], cwd=other, env=env_other,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert lock_dirs() == mine  # the killed run's swept, the live run's kept
    finally:
        stop(live, signal.SIGTERM, uv)  # type: ignore[arg-type]
    assert not lock_dirs()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_the_install_of_a_build_leaves_nothing(
        w: World, stalled: httpserver.Stats, tmp_path: Path, signum: int) -> None:
    proj = write_project(tmp_path / "proj", stalled.url, {"t": "0.13.0"})  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"}
    assert subprocess.run([sys.executable, "-m", "builder", "lock", "-m", "t"], cwd=proj, env=env,
                          capture_output=True, timeout=120).returncode == 0
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")
    stalled.hold = threading.Event()
    root = tmp_path / "rt"
    proc = start(["build", "-m", "t", "-p", PY312, "--root", str(root), "--cache-dir", str(tmp_path / "cold"),
                  "--no-gpu"], proj, env)
    wait_for("uv pip sync", lambda: any(p.name.startswith("builder-sync-") for p in (tmp_path / "tmp").iterdir()))
    uv = wait_for("uv pip sync to run", lambda: children(proc.pid, "uv"))
    stop(proc, signum, uv)  # type: ignore[arg-type]
    assert not list((tmp_path / "tmp").iterdir()), "builder-sync-* temp dirs left"
    assert not [p for p in root.iterdir() if p.name.startswith((".staging-", "matrix-t-"))]


# --------------------------------------------------------------------------- the mechanism, directly


def test_a_worker_threads_child_is_stopped_by_the_flag() -> None:
    """Signals reach only the main thread: a worker's child is stopped through the flag."""
    got: list[BaseException] = []
    pids: list[int] = []

    def work() -> None:
        try:
            _proc.run(["sh", "-c", "echo $$; exec sleep 30"], timeout=60)
        except BaseException as exc:  # noqa: BLE001 - the test wants exactly what was raised
            got.append(exc)

    t = threading.Thread(target=work)
    t0 = time.monotonic()
    t.start()
    try:
        wait_for("the child", lambda: children(os.getpid(), "sleep") or children(os.getpid(), "sh"), timeout=10)
        pids = children(os.getpid(), "sleep") + children(os.getpid(), "sh")
        cancel.request(signal.SIGTERM)
        t.join(10)
    finally:
        cancel.reset()
    assert not t.is_alive() and time.monotonic() - t0 < 10
    assert len(got) == 1 and isinstance(got[0], Interrupted) and got[0].exit_code == 143
    assert not any(alive(p) for p in pids)


def test_after_a_stop_signal_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    f = tmp_path / "pylock.py312.toml"
    f.write_text("old\n")
    cancel.request(signal.SIGINT)
    try:
        with pytest.raises(Interrupted):
            fsio.atomic_write(f, "new\n")
        with pytest.raises(Interrupted):
            _proc.run(["true"], timeout=5)  # and no new child starts
    finally:
        cancel.reset()
    assert f.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == [f.name]
