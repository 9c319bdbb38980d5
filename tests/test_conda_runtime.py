"""The conda base of a runtime: install a conda lock into a prefix (hashes verified),
sync a PyPI lock into it with uv, smoke it, and never touch QL_1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder import _proc, protect
from builder.conda import backend as conda_backend
from builder.conda import lockfile as conda_lockfile
from builder.errors import BuildError, LockFileError, ProtectedEnvError, StaleLock
from builder.project import Project
from builder.runtime.base import BaseRequest, get_base
from builder.runtime.condabase import CondaRuntimeBase, create_prefix, install, relocate_scripts
from tests.conftest import tree_digest, write_project
from tests.helpers import conda_channel
from tests.helpers.conda_channel import MM, PY

pytestmark = pytest.mark.usefixtures("rattler_cache")  # fixtures: tests/helpers/conda_channel.py


@pytest.fixture
def cproject(tmp_path: Path, index: str, channel: Path) -> Path:
    """A project whose matrix C has a conda base, with its conda lock written (rattler)."""
    root = write_project(tmp_path / "proj", index, {"c": {"pythons": f'["{MM}"]'}})
    conda_channel.add_conda_base(root / "envs" / "matrix-c.toml", str(channel))
    conda_backend.lock(root / "locks", Project(root).matrix("c"), MM, solver="rattler")
    return root


@pytest.fixture
def ql1(tmp_path: Path) -> tuple[protect.Protected, Path]:
    """A stand-in for the operator's QL_1 conda env, and the protected set naming it."""
    home = tmp_path / "home"
    env = home / "miniconda3" / "envs" / "QL_1"
    (env / "conda-meta").mkdir(parents=True)
    (env / "conda-meta" / "history").write_text("# production\n")
    (env / "bin").mkdir()
    (env / "bin" / "python").write_text("#!/bin/sh\n")
    prot = protect.resolve(["QL_1"], [], environ={"HOME": str(home), "PATH": "/nonexistent"})
    assert [r.path for r in prot.roots] == [env.resolve()]
    return prot, env


def _clock(root: Path) -> Path:
    return conda_backend.conda_lock_path(root / "locks", Project(root).matrix("c"), MM)


def test_registered_as_the_conda_base() -> None:
    assert isinstance(get_base("conda"), CondaRuntimeBase)


def test_full_path_install_uv_sync_smoke_and_ql1_untouched(
        cproject: Path, tmp_path: Path, ql1: tuple[protect.Protected, Path], uv_exe: str, index: str) -> None:
    prot, env = ql1
    before = tree_digest(env)
    staging = tmp_path / "runtimes" / ".staging-c"
    staging.mkdir(parents=True)
    base = CondaRuntimeBase(cache_dir=tmp_path / "pkgs")
    req = BaseRequest(staging=staging, python=MM, matrix=Project(cproject).matrix("c"), uv=uv_exe,
                      env=_proc.clean_env(), protected=prot)
    made = base.create(req)
    assert made.python == staging / "bin" / "python" and made.version == PY and made.source == "conda"
    assert made.details["packages"] == 4 and str(made.details["solver"]).startswith("rattler")
    metas = sorted(p.name for p in (staging / "conda-meta").glob("*.json"))
    assert metas == ["cudart-lite-12.8-h0_0.json", "libtiny-1.0-h0_0.json", f"python-{PY}-h0_0.json",
                     "tinytool-0.1-h0_0.json"]
    assert (staging / "lib" / "libtiny.txt").read_text() == "libtiny 1.0\n"
    assert base.identity(req.matrix, MM) == hashlib.sha256(_clock(cproject).read_bytes()).hexdigest()

    # uv: lock a small PyPI set and sync it into the prefix with the prefix's interpreter.
    reqs = tmp_path / "req.in"
    reqs.write_text("filelock==3.20.0\n")
    pylock = tmp_path / "pylock.toml"
    env_ = _proc.clean_env()
    r = _proc.run([uv_exe, "pip", "compile", str(reqs), "-o", str(pylock), "--format", "pylock.toml",
                   "--index-url", index, "--python-version", MM, "--no-config", "--quiet"],
                  timeout=60, env=env_)
    assert r.ok, r.stderr
    from builder.runtime.sync import sync_argv

    r = _proc.run(sync_argv(uv_exe, made.python, pylock, cache_dir=str(tmp_path / "uv-cache")), timeout=120, env=env_)
    assert r.ok, r.stderr
    smoke = _proc.run([str(made.python), "-c", "import filelock, sys, json; "
                       "print(json.dumps([filelock.__version__, filelock.__file__, sys.prefix]))"],
                      timeout=30, env=env_)
    assert smoke.ok, smoke.stderr
    version, where, prefix = json.loads(smoke.stdout)
    assert version == "3.20.0" and where.startswith(str(staging)) and os.path.realpath(prefix) == str(staging)
    assert tree_digest(env) == before  # QL_1 untouched


def test_refuses_a_prefix_inside_ql1(cproject: Path, tmp_path: Path, ql1: tuple[protect.Protected, Path],
                                     uv_exe: str) -> None:
    prot, env = ql1
    before = tree_digest(env)
    m = Project(cproject).matrix("c")
    for target in (env / "runtime", env):
        with pytest.raises(ProtectedEnvError, match="protected conda env QL_1"):
            CondaRuntimeBase().create(BaseRequest(staging=target, python=MM, matrix=m, uv=uv_exe,
                                                  env=_proc.clean_env(), protected=prot))
    # Not resolvable by conda (no conda here), but still refused by its envs/ entry name.
    elsewhere = tmp_path / "other" / "envs" / "QL_1"
    with pytest.raises(ProtectedEnvError, match="QL_1"):
        install(_clock(cproject), elsewhere, protected=prot)
    assert not elsewhere.exists() and not (env / "runtime").exists()
    assert tree_digest(env) == before


def test_altered_sha256_is_refused(cproject: Path, tmp_path: Path) -> None:
    path = _clock(cproject)
    m = Project(cproject).matrix("c")
    good = path.read_text()
    pkg = next(p for p in conda_lockfile.read(path).package if p.name == "libtiny")
    bad = good.replace(pkg.hash.sha256, "f" * 64)
    path.write_text(bad)
    with pytest.raises(LockFileError, match="modified: edited by hand"):
        create_prefix(m, MM, tmp_path / "p1", cache_dir=tmp_path / "pkgs")
    # Even with builder's body hash forged to match, the package bytes are checked.
    import yaml  # the conda extra (the module's fixtures skip without it)

    data = yaml.safe_load(bad)
    forged = conda_lockfile._body_hash(data)
    old = data["metadata"]["custom_metadata"][conda_lockfile.BODY_HASH_KEY]
    path.write_text(bad.replace(old, forged))
    assert conda_backend.conda_lock_state(cproject / "locks", m, MM).state == "fresh"
    with pytest.raises(BuildError, match=f"hash mismatch for libtiny-1.0-h0_0.conda: the lock says sha256 {'f' * 64}"):
        create_prefix(m, MM, tmp_path / "p2", cache_dir=tmp_path / "pkgs")
    assert not (tmp_path / "p2" / "lib").exists()


def test_altered_package_on_an_http_channel_is_refused(cproject: Path, channel: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(channel, mirror / "channel")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(mirror)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/channel"
        m = Project(cproject).matrix("c")
        conda_backend.lock(cproject / "locks", m, MM, overrides={"tiny": url}, solver="rattler")
        # Swap libtiny's archive for another real package under the same name.
        target = mirror / "channel" / "linux-64" / "libtiny-1.0-h0_0.conda"
        shutil.copy(mirror / "channel" / "linux-64" / "libtiny-2.0-h0_0.conda", target)
        with pytest.raises(BuildError, match="hash mismatch"):
            create_prefix(m, MM, tmp_path / "p", cache_dir=tmp_path / "pkgs")
    finally:
        srv.shutdown()
        srv.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_stale_or_missing_conda_lock_is_refused(cproject: Path, tmp_path: Path) -> None:
    spec = cproject / "envs" / "matrix-c.toml"
    spec.write_text(spec.read_text().replace('"cudart-lite"', '"cudart-lite >=12"'))
    with pytest.raises(StaleLock, match="spec changed"):
        create_prefix(Project(cproject).matrix("c"), MM, tmp_path / "p")
    _clock(cproject).unlink()
    with pytest.raises(StaleLock, match="missing"):
        create_prefix(Project(cproject).matrix("c"), MM, tmp_path / "p")


def test_relocate_scripts_rewrites_only_staging_shebangs(tmp_path: Path) -> None:
    staging, final = tmp_path / ".staging-x", tmp_path / "x"
    (staging / "bin").mkdir(parents=True)
    (staging / "bin" / "tool").write_text(f"#!{staging}/bin/python\nimport sys\n")
    os.chmod(staging / "bin" / "tool", 0o755)
    (staging / "bin" / "other").write_text("#!/usr/bin/env python\n")
    os.symlink("tool", staging / "bin" / "link")
    assert relocate_scripts(staging, final) == [staging / "bin" / "tool"]
    assert (staging / "bin" / "tool").read_text() == f"#!{final}/bin/python\nimport sys\n"
    assert os.access(staging / "bin" / "tool", os.X_OK)
    assert (staging / "bin" / "other").read_text() == "#!/usr/bin/env python\n"


def test_relocate_scripts_rewrites_the_sh_trampoline_of_a_long_prefix(tmp_path: Path) -> None:
    """Past the kernel's shebang limit uv writes a /bin/sh trampoline naming the interpreter on
    line two (seen on a runtimes root under pytest-xdist's longer temp path): it must move too."""
    staging = tmp_path / ("d" * 120) / ".staging-matrix-t-py312-conda-181fce33794c-1-ab"
    final = staging.with_name("matrix-t-py312-conda-181fce33794c")
    (staging / "bin").mkdir(parents=True)
    body = "' '''\nimport sys\nfrom vllm.entrypoints.cli.main import main\n"
    (staging / "bin" / "vllm").write_text(f"#!/bin/sh\n'''exec' '{staging}/bin/python' \"$0\" \"$@\"\n{body}")
    assert relocate_scripts(staging, final) == [staging / "bin" / "vllm"]
    text = (staging / "bin" / "vllm").read_text()
    assert text == f"#!/bin/sh\n'''exec' '{final}/bin/python' \"$0\" \"$@\"\n{body}" and ".staging-" not in text



@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``builder lock`` + ``builder build --base conda`` of a Python 3.12 matrix through the real CLI,
    over the runtime tests' fake torch/vLLM wheels.  Returns (project, runtimes root, runtime)."""
    from builder.runtime.interpreters import find
    from tests.helpers import httpserver
    from tests.helpers.runtimes import builder, make_wheelhouse
    from tests.helpers.runtimes import write_project as rt_project

    base = tmp_path_factory.mktemp("conda-e2e")
    try:
        py312 = find("3.12")
    except Exception as exc:  # noqa: BLE001 - report why, the test then fails loudly
        pytest.fail(f"no Python 3.12 for the end-to-end conda build: {exc}")
    ch = conda_channel.build_channel(base / "channel", pythons=((py312.path, py312.version),))
    whl = make_wheelhouse(base / "wheelhouse")
    httpserver.write_simple_index(base / "index", whl)
    with httpserver.serve(base / "index") as (url, _stats):
        proj = rt_project(base / "proj", f"{url}/simple", {"t": "0.13.0"})
        conda_channel.add_conda_base(proj / "envs" / "matrix-t.toml", str(ch))
        env = dict(os.environ, HOME=str(base / "home"), RATTLER_CACHE_DIR=str(base / "rattler"))
        env.pop("BUILDER_CONDA_EXE", None)
        r = builder("lock", cwd=proj, env=env)
        assert r.returncode == 0, r.stderr
        root = base / "runtimes"
        # No --base: a matrix that declares [conda] builds on its conda base (what the nox sessions rely on).
        r = builder("build", "--matrix", "t", "--python", "3.12", "--root", str(root),
                    "--cache-dir", str(base / "uv-cache"), "--no-gpu", "--json", cwd=proj, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    out = out[0] if isinstance(out, list) else out
    return proj, root, Path(out["path"])


def test_builder_build_base_conda_end_to_end(built: tuple[Path, Path, Path]) -> None:
    proj, root, path = built
    assert path.name.startswith("matrix-t-py312-conda-")
    man = json.loads((path / "runtime.json").read_text())
    assert man["base"] == "conda" and man["interpreter"]["source"] == "conda"
    assert man["interpreter"]["origin"].endswith("locks/matrix-t/conda-lock.py312.yml")
    steps = {s["step"]: s["status"] for s in man["smoke"]["steps"]}
    assert steps["import vllm"] == "pass" and steps["import AsyncLLMEngine"] == "pass", man["smoke"]
    metas = sorted(p.name for p in (path / "conda-meta").glob("*.json"))
    assert len(metas) == 4 and any(m.startswith("python-3.12.") for m in metas)
    assert (root / "matrix-t-py312-conda").resolve() == path
    r = _proc.run([str(path / "bin" / "python"), "-c", "import torch, vllm, sys; print(sys.prefix)"],
                  timeout=30, env=_proc.clean_env())
    assert r.ok and os.path.realpath(r.stdout.strip()) == str(path), r.stderr


def test_console_script_of_a_conda_runtime_survives_the_rename(built: tuple[Path, Path, Path]) -> None:
    _proj, _root, path = built
    assert ".staging-" not in (path / "bin" / "vllm").read_text()
