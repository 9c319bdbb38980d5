"""Conda locks of a matrix's interpreter base: py-rattler solver, conda-lock format,
freshness and bad inputs, against a local channel built in the test session."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.conda import backend as conda_backend
from builder.conda import lockfile as conda_lockfile
from builder.errors import EXIT_FAILED, EXIT_TOOL_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, ToolFailed, UsageError
from builder.project import Project
from tests.conftest import builder_cmd, write_project
from tests.helpers import conda_channel
from tests.helpers.conda_channel import MM, PY

pytestmark = pytest.mark.usefixtures("rattler_cache")  # fixtures: tests/helpers/conda_channel.py

CLOCK = Path(f"locks/matrix-c/conda-lock.py{MM.replace('.', '')}.yml")
PYLOCK = Path(f"locks/matrix-c/pylock.py{MM.replace('.', '')}.toml")


@pytest.fixture
def cproject(tmp_path: Path, index: str, channel: Path) -> Path:
    root = write_project(tmp_path / "proj", index, {"c": {"pythons": f'["{MM}"]'}})
    conda_channel.add_conda_base(root / "envs" / "matrix-c.toml", str(channel))
    return root


def _matrix(root: Path) -> object:
    return Project(root).matrix("c")


def expected_solver() -> str:
    return "rattler" if conda_backend.find_executable() is None else "conda-lock"


def test_lock_writes_a_conda_lock_file_with_both_hashes(cproject: Path, channel: Path) -> None:
    r = builder_cmd("lock", "--matrix", "C", cwd=cproject)
    assert r.returncode == 0, r.stderr
    assert (cproject / PYLOCK).exists()
    lf = conda_lockfile.read(cproject / CLOCK)  # conda-lock's own reader and models
    got = {p.name: p.version for p in lf.package}
    assert got == {"python": PY, "libtiny": "1.0", "tinytool": "0.1", "cudart-lite": "12.8"}
    for p in lf.package:
        assert p.manager == "conda" and p.platform == "linux-64" and p.categories == {"main"}
        data = Path(p.url.removeprefix("file://")).read_bytes()
        assert p.hash.sha256 == hashlib.sha256(data).hexdigest()
        assert p.hash.md5 == hashlib.md5(data).hexdigest()
    assert lf.package[[p.name for p in lf.package].index("tinytool")].dependencies == {
        "python": ">=3.11", "libtiny": ""}
    meta = lf.metadata
    assert meta.platforms == ["linux-64"]
    assert [c.url for c in meta.channels] == [channel.as_uri()]
    assert len(meta.content_hash["linux-64"]) == 64
    custom = meta.custom_metadata
    assert custom["builder-solver"].startswith(expected_solver())
    assert custom["builder-spec-hash"] == Project(cproject).matrix("c").spec_hash(MM)
    assert json.loads(custom["builder-virtual-packages"]) == {
        "__archspec": "1 x86_64", "__cuda": "12.8", "__glibc": "2.35", "__linux": "5.10", "__unix": "0"}
    assert json.loads(custom["builder-specs"]) == [f"python {MM}.*", "tinytool", "cudart-lite"]
    text = (cproject / CLOCK).read_text()
    assert "defaults" not in text and text.startswith("# conda lock of the interpreter base of matrix-c")


def test_relock_is_byte_identical_and_check_covers_conda_lock(cproject: Path) -> None:
    assert builder_cmd("lock", cwd=cproject).returncode == 0
    first = (cproject / CLOCK).read_bytes()
    r = builder_cmd("lock", "--json", cwd=cproject)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out[0]["conda_lock"] == str(CLOCK) and out[0]["conda_solver"].startswith(expected_solver())
    assert (cproject / CLOCK).read_bytes() == first
    r = builder_cmd("lock", "--check", cwd=cproject)
    assert r.returncode == 0 and "all 2 locks are fresh" in r.stdout, r.stdout + r.stderr


def test_check_reports_stale_modified_and_missing_conda_lock(cproject: Path) -> None:
    assert builder_cmd("lock", cwd=cproject).returncode == 0
    path = cproject / CLOCK
    good = path.read_text()
    sha = conda_lockfile.read(path).package[0].hash.sha256
    path.write_text(good.replace(sha, "0" * 64))
    r = builder_cmd("lock", "--check", cwd=cproject)
    assert r.returncode == EXIT_FAILED
    assert f"{CLOCK}: modified: edited by hand" in r.stderr
    path.write_text(good.replace("# Generated", "# a harmless comment edit\n# Generated"))
    assert builder_cmd("lock", "--check", cwd=cproject).returncode == 0
    spec = cproject / "envs" / "matrix-c.toml"
    spec.write_text(spec.read_text().replace('packages = ["tinytool", "cudart-lite"]', 'packages = ["tinytool"]'))
    r = builder_cmd("lock", "--check", "--json", cwd=cproject)
    assert r.returncode == EXIT_FAILED
    states = {s["path"]: s["state"] for s in json.loads(r.stdout)}
    assert states == {str(PYLOCK): "stale", str(CLOCK): "stale"}
    path.unlink()
    r = builder_cmd("lock", "--check", cwd=cproject)
    assert f"{CLOCK}: missing" in r.stderr
    assert builder_cmd("lock", cwd=cproject).returncode == 0
    assert builder_cmd("lock", "--check", cwd=cproject).returncode == 0


def test_virtual_packages_are_explicit_and_decide_the_solution(cproject: Path, tmp_path: Path) -> None:
    m = Project(cproject).matrix("c")
    assert conda_backend.virtual_packages(m)["__cuda"] == "12.8"  # never conda-lock's implicit 11.4
    spec = cproject / "envs" / "matrix-c.toml"
    spec.write_text(spec.read_text() + '\n[conda.virtual-packages]\n__cuda = "13.0"\n')
    m13 = Project(cproject).matrix("c")
    out = conda_backend.lock(tmp_path / "locks", m13, MM, solver="rattler")
    got = {p.name: p.version for p in conda_lockfile.read(out.path).package}
    assert got["libtiny"] == "2.0"  # needs __cuda >=13; 3.0 needs __glibc >=2.39 > 2.35
    spec.write_text(spec.read_text().replace('__cuda = "13.0"', '__cuda = ""'))
    with pytest.raises(ToolFailed, match="cudart-lite"):
        conda_backend.lock(tmp_path / "locks", Project(cproject).matrix("c"), MM, solver="rattler")


def test_python_pin_and_platform_rules(cproject: Path) -> None:
    spec = cproject / "envs" / "matrix-c.toml"
    spec.write_text(spec.read_text().replace("[conda]\n", f'[conda]\npython = {{ "{MM}" = "{PY}" }}\n'))
    m = Project(cproject).matrix("c")
    assert conda_backend.specs(m, MM)[0] == f"python {PY}"
    spec.write_text(spec.read_text().replace(f'"{MM}" = "{PY}"', f'"{MM}" = "3.99.0"'))
    with pytest.raises(UsageError, match="is not a Python"):
        conda_backend.specs(Project(cproject).matrix("c"), MM)
    spec.write_text(spec.read_text().replace('platform = "x86_64-manylinux_2_35"', 'platform = "linux"'))
    with pytest.raises(UsageError, match="does not say the glibc version"):
        conda_backend.virtual_packages(Project(cproject).matrix("c"))


def test_defaults_channel_is_refused(cproject: Path) -> None:
    spec = cproject / "envs" / "matrix-c.toml"
    spec.write_text(spec.read_text().replace('channels = ["tiny"]', 'channels = ["tiny", "defaults"]'))
    r = builder_cmd("lock", cwd=cproject)
    assert r.returncode == EXIT_USAGE
    assert "channel 'defaults' is Anaconda's `defaults`" in r.stderr and "Traceback" not in r.stderr


def test_unsatisfiable_spec_fails_and_keeps_the_old_lock(cproject: Path) -> None:
    assert builder_cmd("lock", cwd=cproject).returncode == 0
    before = (cproject / CLOCK).read_bytes()
    spec = cproject / "envs" / "matrix-c.toml"
    spec.write_text(spec.read_text().replace('"tinytool"', '"tinytool >=9"'))
    r = builder_cmd("lock", cwd=cproject)
    assert r.returncode == EXIT_TOOL_FAILED
    assert "conda solve of matrix-c" in r.stderr and "tinytool >=9" in r.stderr and "Traceback" not in r.stderr
    assert (cproject / CLOCK).read_bytes() == before


def test_unknown_channel_and_bad_override(cproject: Path, tmp_path: Path) -> None:
    r = builder_cmd("lock", "--channel-override", f"tiny={tmp_path / 'nowhere'}", cwd=cproject)
    assert r.returncode == EXIT_USAGE and "no such directory" in r.stderr, r.stderr
    r = builder_cmd("lock", "--channel-override", "tiny", cwd=cproject)
    assert r.returncode == EXIT_USAGE and "is not NAME=URL" in r.stderr
    empty = tmp_path / "empty-root"
    empty.mkdir()
    with _serve(empty) as url:
        r = builder_cmd("lock", "--channel-override", f"tiny={url}/no-such-channel", cwd=cproject)
    assert r.returncode == EXIT_UNAVAILABLE, r.stderr
    assert "channel 'tiny' not found at" in r.stderr and "no linux-64 or noarch repodata" in r.stderr
    assert not (cproject / CLOCK).exists()


def test_cli_override_solves_from_an_http_mirror(cproject: Path, channel: Path) -> None:
    with _serve(channel.parent) as url:
        r = builder_cmd("lock", "--channel-override", f"tiny={url}/channel", cwd=cproject)
    assert r.returncode == 0, r.stderr
    lf = conda_lockfile.read(cproject / CLOCK)
    assert all(p.url.startswith(f"{url}/channel/") for p in lf.package)
    assert [c.url for c in lf.metadata.channels] == [f"{url}/channel"]


class _Vanishing(SimpleHTTPRequestHandler):
    """Serves the first request of a solve, then deletes the channel.

    Requests are serialised so that the solver's concurrent second request
    (rattler fetches linux-64 and noarch at once) finds the channel gone.
    """

    gone = threading.Event()
    serial = threading.Lock()
    root: Path

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.serial:
            super().do_GET()
            if not self.gone.is_set():
                self.gone.set()
                shutil.rmtree(self.root)


class _serve:
    def __init__(self, root: Path, handler: type[SimpleHTTPRequestHandler] = SimpleHTTPRequestHandler) -> None:
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]

    def __enter__(self) -> str:
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.srv.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def test_channel_vanishing_mid_solve_fails_cleanly(cproject: Path, channel: Path, tmp_path: Path) -> None:
    assert builder_cmd("lock", cwd=cproject).returncode == 0
    before = (cproject / CLOCK).read_bytes()
    copy = tmp_path / "mirror" / "channel"
    shutil.copytree(channel, copy)
    handler = type("H", (_Vanishing,), {"gone": threading.Event(), "serial": threading.Lock(), "root": copy})
    with _serve(copy.parent, handler) as url:
        r = builder_cmd("lock", "--channel-override", f"tiny={url}/channel", cwd=cproject)
    assert handler.gone.is_set() and not copy.exists()
    assert r.returncode == EXIT_UNAVAILABLE, r.stderr
    # Which of rattler's two concurrent requests finds the channel gone decides
    # the wording: a failed read, or an empty subdir that builder re-probes.
    assert re.search(r"a channel could not be read: .*404|channel 'tiny' changed during the solve "
                     r"\(linux-64: present -> missing, noarch: present -> missing\)", r.stderr), r.stderr
    assert "Traceback" not in r.stderr
    assert (cproject / CLOCK).read_bytes() == before
    assert not list((cproject / CLOCK).parent.glob(".*.tmp"))


def test_shipped_matrices_have_no_conda_base() -> None:
    root = Path(__file__).resolve().parent.parent
    for m in Project(root).matrices():
        assert m.conda is None, m.name
        assert not list((root / "locks" / m.name).glob("conda-lock.*"))


@pytest.mark.conda
def test_conda_lock_solver_agrees_with_rattler(cproject: Path, tmp_path: Path) -> None:
    exe = conda_backend.find_executable()
    if exe is None:
        pytest.skip("no conda, mamba or micromamba executable: conda-lock's own solver cannot run here")
    m = Project(cproject).matrix("c")
    a = conda_backend.lock(tmp_path / "a", m, MM, solver="rattler")
    b = conda_backend.lock(tmp_path / "b", m, MM, solver="conda-lock")
    assert b.solver.startswith("conda-lock")

    def pkgs(p: Path) -> set[tuple[str, str, str]]:
        return {(x.name, x.version, x.hash.sha256) for x in conda_lockfile.read(p).package}

    assert pkgs(a.path) == pkgs(b.path)
    from builder.runtime.condabase import install

    for out, prefix in ((a, tmp_path / "pa"), (b, tmp_path / "pb")):
        install(out.path, prefix, cache_dir=tmp_path / "cache")
    names = [sorted(os.listdir(p / "conda-meta")) for p in (tmp_path / "pa", tmp_path / "pb")]
    assert names[0] == names[1]
