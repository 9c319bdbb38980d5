"""Output paths that are not regular files are refused (exit 2); ``-`` is stdout.

``atomic_write`` renames a temp file over its target: over a device node, a
FIFO or a symlink to one, that would replace the node itself.  Real FIFOs,
symlinks and a device node made with mknod in a temp dir (never the real
/dev/full or /dev/stdout) are used.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from builder.errors import EXIT_USAGE, UsageError
from builder.files import fsio
from tests.conftest import ROOT
from tests.helpers.cli import builder_cmd
from tests.helpers.runtimes import World
from tests.test_write_gate import Host, case, drive, invocation, is_path, make_host, modes

SNAPSHOT = ROOT / "tests" / "data" / "host" / "snapshots" / "h200-driver-580-ubuntu-24.04.json"


builder = functools.partial(builder_cmd, cwd=ROOT)


def runbook_to(target: str) -> subprocess.CompletedProcess[str]:
    return builder("runbook", "-m", "a", "--from-snapshot", str(SNAPSHOT), "-o", target)


def _fifo(tmp_path: Path) -> Path:
    p = tmp_path / "fifo"
    os.mkfifo(p)
    return p


def _full_node(tmp_path: Path) -> Path:
    """A character device like /dev/full (1, 7), made in the temp dir."""
    p = tmp_path / "full"
    try:
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("mknod needs root (CAP_MKNOD); the FIFO and symlink cases cover the rest")
    return p


def _stdout_link(tmp_path: Path) -> Path:
    """What /dev/stdout is: a symlink to /proc/self/fd/1 (a pipe in a test run)."""
    p = tmp_path / "stdout"
    p.symlink_to("/proc/self/fd/1")
    return p


_PIPES: list[int] = []


def _pipe_link(tmp_path: Path) -> Path:
    """The same in this process, whose fd 1 pytest may have made a regular file: a real pipe."""
    r, w = os.pipe()
    _PIPES.extend((r, w))
    p = tmp_path / "stdout"
    p.symlink_to(f"/proc/self/fd/{w}")
    return p


def _devnull_link(tmp_path: Path) -> Path:
    p = tmp_path / "null"
    p.symlink_to(os.devnull)
    return p


def _dir(tmp_path: Path) -> Path:
    p = tmp_path / "adir"
    p.mkdir()
    return p


KINDS = {"fifo": _fifo, "device node": _full_node, "symlink to /proc/self/fd/1": _stdout_link,
         "symlink to /dev/null": _devnull_link, "directory": _dir}
IN_PROCESS = {**KINDS, "symlink to /proc/self/fd/1": _pipe_link}


def _fingerprint(p: Path) -> tuple[object, ...]:
    st = os.lstat(p)
    return (stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev, os.readlink(p) if p.is_symlink() else None)


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_atomic_write_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    target = IN_PROCESS[kind](tmp_path)
    before = _fingerprint(target)
    with pytest.raises(UsageError, match="not a regular file") as exc:
        fsio.atomic_write(target, "data\n")
    assert exc.value.exit_code == EXIT_USAGE
    assert _fingerprint(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temp file left


@pytest.mark.parametrize("kind", KINDS)
def test_runbook_and_snapshot_refuse_it_with_one_line(tmp_path: Path, kind: str) -> None:
    target = KINDS[kind](tmp_path)
    before = _fingerprint(target)
    for r in (runbook_to(str(target)), builder("host", "snapshot", str(target))):
        assert r.returncode == EXIT_USAGE, r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        if kind == "directory":  # click's own check of the option comes first
            assert "is a directory" in r.stderr
        else:
            assert r.stderr.count("\n") == 1 and "not a regular file" in r.stderr
    assert _fingerprint(target) == before
    if kind == "symlink to /dev/null":
        assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_symlink_to_a_regular_file_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real.md"
    real.write_text("old\n")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    assert runbook_to(str(link)).returncode == 0
    assert link.is_symlink() and "# " in real.read_text()


def test_dash_is_standard_output(tmp_path: Path) -> None:
    r = runbook_to("-")
    assert r.returncode == 0 and r.stdout.startswith("#") and not (ROOT / "-").exists()
    r = builder("host", "snapshot", "-", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "builder-host-snapshot"
    assert "wrote standard output" in r.stderr and not (tmp_path / "-").exists()


@pytest.fixture(scope="module")
def gh(w: World, tmp_path_factory: pytest.TempPathFactory) -> Host:
    """The write-gate test's fake host (a copy of the world project with envs/service.toml), with a copy
    of the world's runtime in the project's runtimes/ (``serve unit`` renders a unit for it)."""
    h = make_host(w, tmp_path_factory.mktemp("missing-parent"))
    shutil.copytree(w.root, h.project / "runtimes", symlinks=True)
    return h


def test_a_missing_parent_of_an_output_is_a_usage_error(gh: Host) -> None:
    """Every path parameter of every command and mode, derived from the click tree (so a command
    added later is covered): pointed at ``<dir>/new`` (an existing dir), the control tells an
    output (the write gate approves a path there) from an input. Pointed at ``<dir>/no/such/x``
    an output is refused with exit 2 and one line, and no parameter creates anything there."""
    targets: dict[str, tuple[str, click.Command, click.Parameter]] = {}
    for name, cmd in modes():
        for p in (p for p in cmd.params if is_path(p)):
            targets[f"{name} {p.name}"] = (name, cmd, p)

    def cases(kind: str, value: Callable[[Path], Path], control: bool) -> list[dict[str, object]]:
        out = []
        for i, (cid, (name, cmd, p)) in enumerate(targets.items()):
            d = gh.scratch / kind / str(i)
            d.mkdir(parents=True)
            out.append(case(cid, gh.project, invocation(name, cmd, p, str(value(d))),
                            abort_under=d if control else None))
        return out

    ctl = drive(gh, cases("ctl", lambda d: d / "new", control=True))
    outputs = {k for k, r in ctl.items() if r["aborted"]}
    assert {"check cache_dir", "build root", "build cache_dir", "host snapshot file", "runbook output",
            "serve unit output", "route init route_file", "route set route_file", "route rollback route_file",
            "serve stop --force route_file"} <= outputs, outputs  # the derivation is not vacuous
    miss = drive(gh, cases("miss", lambda d: d / "no" / "such" / "x", control=False))
    created = {k: got for i, k in enumerate(targets)
               if (got := sorted(map(str, (gh.scratch / "miss" / str(i)).rglob("*"))))}
    assert not created, created
    wrong = {k: (r["rc"], r["stderr"]) for k, r in miss.items() if k in outputs and (
        r["rc"] != EXIT_USAGE or len(r["stderr"]) != 1 or "does not exist (create the directory" not in r["stderr"][0])}
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in sorted(wrong.items()))
    assert not [k for k, r in miss.items() if r["violations"]]
