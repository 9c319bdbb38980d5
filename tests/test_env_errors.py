"""Environmental errors are not bugs: each gets its documented code and one line, never 70.

* the filesystem refuses (exit 8, with the path): a read-only bind mount
  (EROFS), ``chattr +i`` (EPERM), a full tmpfs (ENOSPC), an unprivileged user
  on a root-owned directory (EACCES), for builder's own writes and for uv's;
* bad input (exit 2): non-UTF-8 and deeply nested specs, locks and snapshots,
  a lock whose ``tool`` is not a table, a snapshot whose ``probes`` are
  numbers, bad ``check`` options;
* any command run from a deleted working directory (derived from the click tree);
* a hypothesis property: random and mutated TOML/JSON through the spec, lock
  and snapshot loaders and the commands that read them never end in exit 70.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder import pylock, spec
from builder.driver import facts as hostfacts
from builder.driver import preflight, snapshot
from builder.errors import EXIT_FS_REFUSED, EXIT_INTERNAL, EXIT_USAGE, BuilderError
from tests.conftest import ROOT
from tests.helpers.cli import builder_cmd
from tests.helpers.runtimes import PY312, World
from tests.test_write_gate import DRIVER, invocation, leaves

SNAPSHOT = ROOT / "tests" / "data" / "host" / "snapshots" / "h200-driver-580-ubuntu-24.04.json"
SPEC = ROOT / "envs" / "matrix-a.toml"
LOCK = ROOT / "locks" / "matrix-a" / "pylock.py312.toml"


builder = functools.partial(builder_cmd, timeout=180)


def one_line(r: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("builder: ")]
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])


def in_namespace(setup: str) -> list[str]:
    """Run the command after ``setup`` (mounts) in a private mount namespace."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{setup} && exec "$@"', "sh"]


def _mounts_work() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    r = subprocess.run(in_namespace("mount -t tmpfs -o size=64k tmpfs /mnt") + ["true"], capture_output=True,
                       text=True)
    return None if r.returncode == 0 else f"no private mount namespace here: {r.stderr.strip()}"


needs_mounts = pytest.mark.skipif(_mounts_work() is not None, reason=str(_mounts_work()))


@pytest.fixture
def proj(w: World, tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    shutil.copytree(w.project, p, symlinks=True)
    return p


def _env(w: World) -> dict[str, str]:
    return {**os.environ, "UV_CACHE_DIR": str(w.cache)}


# --------------------------------------------------------------------------- the filesystem refuses


@needs_mounts
@pytest.mark.parametrize(("what", "args"), [("locks", ["lock", "-m", "t"]),
                                            ("envs", ["spec", "set", "t", "torch.version", "2.9.0"])])
def test_a_read_only_directory_is_exit_8_with_its_path(w: World, proj: Path, what: str, args: list[str]) -> None:
    d = proj / what
    if what == "locks":  # so that the lock must be rewritten
        for f in d.rglob("*.toml"):
            f.write_text(f.read_text() + "# changed\n")
    before = {f: f.read_bytes() for f in d.rglob("*") if f.is_file()}
    r = builder(*args, cwd=proj, env=_env(w),
                wrap=in_namespace(f'mount --bind "{d}" "{d}" && mount -o remount,bind,ro "{d}"'))
    one_line(r, EXIT_FS_REFUSED, "read-only file system", str(d))
    assert {f: f.read_bytes() for f in d.rglob("*") if f.is_file()} == before


@pytest.fixture
def immutable(proj: Path) -> Iterator[Path]:
    d = proj / "locks" / "matrix-t"
    r = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)


def test_an_immutable_lock_directory_is_exit_8(w: World, proj: Path, immutable: Path) -> None:
    for f in immutable.glob("*.toml"):
        subprocess.run(["chattr", "-i", str(immutable)], check=True)
        f.write_text(f.read_text() + "# changed\n")  # the lock must be rewritten
        subprocess.run(["chattr", "+i", str(immutable)], check=True)
    r = builder("lock", "-m", "t", cwd=proj, env=_env(w))
    one_line(r, EXIT_FS_REFUSED, "operation not permitted", str(immutable))


@needs_mounts
def test_a_full_locks_directory_is_exit_8(w: World, proj: Path) -> None:
    d = proj / "locks"
    for f in d.rglob("*.toml"):
        f.write_text(f.read_text() + "# changed\n")
    fill = (f'mount -t tmpfs -o size=64k tmpfs "{d}" && cp -r "{proj}/locks-copy/." "{d}" && '
            f'(dd if=/dev/zero of="{d}/fill" bs=4k 2>/dev/null; true)')
    shutil.copytree(d, proj / "locks-copy")
    r = builder("lock", "-m", "t", cwd=proj, env=_env(w), wrap=in_namespace(fill))
    one_line(r, EXIT_FS_REFUSED, "no space left on device")


@needs_mounts
def test_a_full_runtimes_root_fails_in_uv_and_is_exit_8(w: World, proj: Path, tmp_path: Path) -> None:
    root = tmp_path / "rt"
    root.mkdir()
    fill = (f'mount -t tmpfs -o size=256k tmpfs "{root}" && '
            f'(dd if=/dev/zero of="{root}/fill" bs=4k 2>/dev/null; rm -f "{root}/fill.small"; true)')
    r = builder("build", "-m", "t", "-p", PY312, "--root", str(root), "--cache-dir", str(w.cache), "--no-gpu",
                cwd=proj, wrap=in_namespace(fill))
    one_line(r, EXIT_FS_REFUSED, "no space left on device")


@pytest.fixture
def world_readable(w: World) -> Iterator[Path]:
    """A project copy an unprivileged user can read but not write (our tmp_path is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="builder-eacces-"))
    try:
        base.chmod(0o755)
        p = base / "proj"
        shutil.copytree(w.project, p, symlinks=True)
        for d in (p, *p.rglob("*")):
            d.chmod(0o755 if d.is_dir() else 0o644)
        yield p
    finally:
        shutil.rmtree(base)


def test_permission_denied_is_exit_8(world_readable: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to run builder as an unprivileged user (setpriv)")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # The precondition is builder itself, not only the interpreter: a venv under a root-only
    # directory runs as its base Python for another user (pyvenv.cfg unreadable) and has no builder.
    probe = subprocess.run([*nobody, sys.executable, "-m", "builder", "--version"], capture_output=True, text=True,
                           cwd=world_readable)  # as the test runs it: -c would find builder in this checkout
    if probe.returncode != 0:  # e.g. a pyenv Python whose libpython sits under a root-only /root
        pytest.skip(f"an unprivileged user cannot run builder from here: {probe.stderr.strip()[:200]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "BUILDER_"))}
    env["HOME"] = str(world_readable.parent)
    r = builder("spec", "set", "t", "torch.version", "2.9.0", cwd=world_readable, env=env,
                wrap=nobody)
    one_line(r, EXIT_FS_REFUSED, "permission denied", str(world_readable / "envs"))


def test_a_file_size_limit_is_exit_8(w: World, proj: Path) -> None:
    """RLIMIT_FSIZE: Python ignores SIGXFSZ, so the write fails with EFBIG."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    r = builder("spec", "set", "t", "torch.version", "2.9.0", cwd=proj,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, wrap=["prlimit", "--fsize=64", "--"])
    one_line(r, EXIT_FS_REFUSED, "file too large", str(proj / "envs"))


# --------------------------------------------------------------------------- bad input, exit 2


BAD_INPUTS = {
    "non-UTF-8 spec": ("envs/matrix-c.toml", b'id = "c"\n\xff\xfe\n', ["list"]),
    "deep spec": ("envs/matrix-c.toml", b"x = " + b"[" * 50000 + b"]" * 50000 + b"\n", ["list"]),
    "deep inline tables": ("envs/matrix-c.toml", b"a = " + b"{b=" * 5000 + b"1" + b"}" * 5000 + b"\n",
                           ["spec", "validate"]),
    "non-UTF-8 lock": ("l.toml", LOCK.read_bytes() + b"\xff", ["check", "--lock", "l.toml", "--offline"]),
    "deep lock": ("l.toml", b'lock-version = "1.0"\nx = ' + b"[" * 50000 + b"]" * 50000 + b"\n",
                  ["check", "--lock", "l.toml", "--offline"]),
    "tool is not a table": ("l.toml", b'lock-version = "1.0"\ncreated-by = "uv"\ntool = 3\n',
                            ["check", "--lock", "l.toml", "--offline"]),
    "probes are numbers": ("s.json", b'{"format": "builder-host-snapshot", "version": 1, "probes": [1, 2]}',
                           ["preflight", "-m", "a", "--from-snapshot", "s.json"]),
    "deep snapshot": ("s.json", b"[" * 50000 + b"]" * 50000, ["preflight", "-m", "a", "--from-snapshot", "s.json"]),
    "non-UTF-8 snapshot": ("s.json", b'{"format": "\xff"}', ["runbook", "-m", "a", "--from-snapshot", "s.json"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_exit_2_with_one_line(tmp_path: Path, case: str) -> None:
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "envs", proj / "envs")
    shutil.copytree(ROOT / "locks", proj / "locks")
    rel, data, args = BAD_INPUTS[case]
    (proj / rel).write_bytes(data)
    r = builder(*args, cwd=proj)
    one_line(r, EXIT_USAGE)


@pytest.mark.parametrize("args", [["--glibc", "foo"], ["--python", "3"], ["--python", "foo"], ["--python", "99"],
                                  ["--driver", ""], ["--driver", "999999999999999999999.1.1x"],
                                  ["--gpu-cc", "eight"]])
def test_bad_check_options_are_exit_2(args: list[str]) -> None:
    one_line(builder("check", "--offline", *args, cwd=ROOT), EXIT_USAGE)


#: A bad value for each host override option, and a word its usage error must contain.
BAD_HOST_OPTIONS = {"--driver": ("", "--driver is empty"), "--gpu-cc": ("x", "not a compute capability"),
                    "--glibc": ("", "--glibc is empty")}


def test_every_host_option_refuses_a_bad_value_before_touching_the_environment(tmp_path: Path) -> None:
    """``--driver ''`` (a bad ``--gpu-cc``, ``--glibc ''``) is a usage error on every command that
    has the option (derived from the click tree), and it wins over environment errors: here the
    project is no git checkout (``lock diff``'s default ``--git HEAD``) and PATH holds neither git
    nor nvidia-smi (``check --probe``)."""
    proj = tmp_path / "proj"
    for d in ("envs", "locks"):
        shutil.copytree(ROOT / d, proj / d)
    (tmp_path / "empty-bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    cases = [(n, c, opt) for n, c in leaves() for opt in BAD_HOST_OPTIONS
             if any(opt in getattr(p, "opts", ()) for p in c.params)]
    assert {n for n, _c, o in cases if o == "--driver"} >= {"check", "lock diff"}
    for name, cmd, opt in cases:
        value, words = BAD_HOST_OPTIONS[opt]
        probe = ["--probe"] if any("--probe" in getattr(p, "opts", ()) for p in cmd.params) else []
        one_line(builder(*invocation(name, cmd), *probe, opt, value, cwd=proj, env=env), EXIT_USAGE, words)


def test_every_command_from_a_deleted_directory_is_not_a_bug(tmp_path: Path) -> None:
    """One driver process started in a directory it then removes; every leaf command runs there."""
    gone = tmp_path / "gone"
    gone.mkdir()
    cases = [{"id": n, "argv": invocation(n, c), "env": {}} for n, c in leaves()]
    cases += [{"id": f"{n} --project", "argv": ["--project", str(ROOT), *invocation(n, c)], "env": {}}
              for n, c in leaves() if n in ("list", "spec validate")]
    spec_file, out = tmp_path / "cases.json", tmp_path / "results.json"
    spec_file.write_text(json.dumps([{**c, "argv": [*c["argv"]]} for c in cases]))
    env = {k: v for k, v in os.environ.items() if k != "BUILDER_PROJECT"}
    r = subprocess.run(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "$@"', "sh", sys.executable,
                        str(DRIVER), str(spec_file), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = {x["id"]: x for x in json.loads(out.read_text())}
    bad = {k: (v["rc"], v["stderr"]) for k, v in res.items() if v["rc"] == EXIT_INTERNAL or v["rc"] is None}
    assert not bad, bad
    assert res["list"]["rc"] == EXIT_USAGE and "current directory no longer exists" in res["list"]["stderr"][-1]


# --------------------------------------------------------------------------- property: no input is a bug


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for pos, drop, insert in edits:
        i = pos % (len(data) + 1)
        data = data[:i] + insert + data[i + drop:]
    return data


_EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 40),
                            st.sampled_from([b"", b"[", b"]", b"{", b"}", b'"', b"=", b"\n", b"\xff", b"[[packages]]\n",
                                             b"tool = 1\n", b"0", b"-", b",", b"null", b"[1, 2]", b"\\"])),
                  min_size=1, max_size=8)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                     st.text(max_size=20))
_TREES = st.recursive(_SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=12), kids, max_size=5)),
                      max_leaves=25)
_KEYED = st.dictionaries(st.sampled_from(["id", "title", "driver-floor", "cuda-track", "pythons", "platform",
                                          "exclude-newer", "torch", "vllm", "packages", "index", "conda",
                                          "lock-version", "created-by", "requires-python", "packages", "tool",
                                          "format", "version", "probes", "created", "builder"]),
                         _TREES, max_size=8)


def _toml(d: object) -> bytes:
    import tomlkit

    try:
        return tomlkit.dumps(d).encode()  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - not every tree is TOML (null, nested arrays of tables ...)
        return json.dumps(d, default=str).encode()


def _load_all(raw: bytes) -> None:
    """Every loader that reads these formats: only builder's typed errors may come out."""
    for load in (lambda: spec.matrix_from_mapping(spec.parse_toml(raw, "x.toml"), "x.toml"),
                 lambda: spec.host_from_mapping(spec.parse_toml(raw, "host.toml"), "host.toml"),
                 lambda: pylock.parse(raw, "pylock.toml"),
                 lambda: pylock.stamp_state(raw.decode("utf-8", "replace")),
                 lambda: _preflight(raw)):
        try:
            load()
        except BuilderError:
            pass


_HOST_AND_MATRIX: list[object] = []


def _preflight(raw: bytes) -> None:
    snap = snapshot.parse(raw, "s.json")
    if not _HOST_AND_MATRIX:
        _HOST_AND_MATRIX[:] = [spec.load_host(ROOT / "envs" / "host.toml"), spec.load_matrix(SPEC)]
    host, matrix = _HOST_AND_MATRIX
    preflight.evaluate(hostfacts.from_snapshot(snap), matrix, host)  # type: ignore[arg-type]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from([SPEC, ROOT / "envs" / "host.toml", LOCK, SNAPSHOT]), edits=_EDITS)
def test_mutated_real_files_only_raise_builder_errors(base: Path, edits: list[tuple[int, int, bytes]]) -> None:
    _load_all(_mutate(base.read_bytes(), edits))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.one_of(_KEYED, _TREES))
def test_random_documents_only_raise_builder_errors(tree: object) -> None:
    _load_all(_toml(tree))
    _load_all(json.dumps(tree, default=str).encode())
    if isinstance(tree, dict):
        snap = {"format": "builder-host-snapshot", "version": 1, "probes": [tree, {**tree, "id": "nvidia-smi-gpus"}]}
        _load_all(json.dumps(snap, default=str).encode())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(["spec", "lock", "snapshot"]), edits=_EDITS)
def test_commands_reading_mutated_files_never_exit_70(tmp_path_factory: pytest.TempPathFactory, base: str,
                                                      edits: list[tuple[int, int, bytes]]) -> None:
    """The same through the CLI (in process): ``spec validate``, ``check --lock``, ``preflight``."""
    from click.testing import CliRunner

    from builder.cli import main

    d = tmp_path_factory.mktemp("prop")
    src, name, args = {"spec": (SPEC, "matrix-a.toml", ["spec", "validate"]),
                       "lock": (LOCK, "pylock.py312.toml", ["check", "--offline", "--lock"]),
                       "snapshot": (SNAPSHOT, "s.json", ["preflight", "-m", "a", "--from-snapshot"])}[base]
    f = d / name
    f.write_bytes(_mutate(src.read_bytes(), edits))
    res = CliRunner().invoke(main, ["--project", str(ROOT), *args, str(f)],
                             env={"BUILDER_CACHE_DIR": str(d / "cache")})
    assert res.exit_code != EXIT_INTERNAL, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
