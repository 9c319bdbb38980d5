"""Serving a runtime that builder really built (the shared tiny torch + vLLM world).

``--matrix/--python`` resolves the runtime of the current lock, the nox
``serve-matrix-a`` session starts, probes and stops it, and a routed runtime is
pinned: ``build --force`` refuses to replace it.  The world's vLLM console
script only says "Failed to infer device type" (a host without a GPU), so the
test puts the stand-in server in its place, in a copy of the runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from builder.errors import EXIT_BUSY
from tests.conftest import ROOT, tree_digest
from tests.helpers import needs
from tests.helpers import serve as h
from tests.helpers.runtimes import PY312, World, builder


def _served_project(w: World, tmp_path: Path) -> tuple[Path, int, int]:
    """A copy of the world's project whose matrix t is also matrix a, with a service spec whose
    blue and green slots listen on free ports: (project, blue port, green port)."""
    proj = tmp_path / "proj"
    shutil.copytree(w.project, proj)
    (proj / "envs" / "matrix-a.toml").write_text((proj / "envs" / "matrix-t.toml").read_text()
                                                 .replace('id = "t"', 'id = "a"'))
    blue, green = h.free_port(), h.free_port()
    h.write_service(proj, blue=blue, green=green, extra=h.account())
    return proj, blue, green


def _env(w: World, proj: Path, rt: Path, marker: str, **extra: str) -> dict[str, str]:
    """The environment builder and nox run in: no conda or venv of the caller, this project and
    runtimes root, the world's uv cache, the stand-in server's marker, this Python first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV", "FAKE_"))}
    env.update(BUILDER_PROJECT=str(proj), BUILDER_RUNTIMES=str(rt), UV_CACHE_DIR=str(w.cache),
               **{h.MARKER: marker}, **extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    return env


def _lock_build_serveable(proj: Path, env: dict[str, str]) -> Path:
    """Lock and build matrix a (3.12), give the runtime the stand-in `vllm`; its path."""
    r = None
    for args in (("lock", "--matrix", "a"), ("build", "-m", "a", "-p", PY312, "--no-gpu", "--json")):
        r = builder(*args, cwd=proj, env=env)
        assert r.returncode == 0, r.stderr
    assert r is not None
    path = Path(json.loads(r.stdout)[0]["path"])
    h.install_fake(path / "bin" / "vllm")
    return path


def test_matrix_runtime_serves_through_nox_and_a_routed_runtime_is_pinned(w: World, tmp_path: Path) -> None:
    needs.nox()
    proj, blue, green = _served_project(w, tmp_path)
    rt = tmp_path / "rt"
    home = tmp_path / "home"
    ql1 = home / "miniconda3" / "envs" / "QL_1"
    (ql1 / "conda-meta").mkdir(parents=True)
    (ql1 / "conda-meta" / "history").write_text("# production\n")
    marker = f"{tmp_path.name}-{os.getpid()}"
    env = _env(w, proj, rt, marker, HOME=str(home), CONDA_PREFIX=str(ql1), CONDA_DEFAULT_ENV="QL_1")
    before = tree_digest(ql1)
    try:
        path = _lock_build_serveable(proj, env)
        assert (rt / "matrix-a-py312").is_symlink()

        r = subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--no-venv",
                            "-s", "serve-matrix-a"], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "slot green: ready at" in r.stdout + r.stderr and "Session serve-matrix-a was successful" in r.stderr
        assert h.stragglers(marker) == []

        r = builder("serve", "start", "--matrix", "a", "--slot", "green", "--json", cwd=proj, env=env)
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout)["record"]
        assert rec["runtime"] == path.name and rec["runtime_path"] == str(path)  # content-addressed, not the pointer
        r = builder("serve", "unit", "--matrix", "a", "--python", PY312, "--slot", "green", cwd=proj, env=env)
        assert f"ExecStart={path}/bin/vllm serve " in r.stdout and "matrix-a-py312 " not in r.stdout
        assert builder("route", "set", "green", cwd=proj, env=env).returncode == 0
        assert builder("serve", "stop", "--slot", "green", "--force", cwd=proj, env=env).returncode == 0
        journal = (proj / "deploy" / "llm.env.journal").read_text().splitlines()
        assert json.loads(journal[-1])["action"] == "stop-forced"

        # Still the route (and so the first rollback target after a switch): never replaced.
        r = builder("build", "-m", "a", "-p", PY312, "--no-gpu", "--force", cwd=proj, env=env)
        assert r.returncode == EXIT_BUSY
        assert f"{path.name} is pinned by the serve route" in r.stderr and r.stderr.count("\n") == 1
        assert str(h.FAKE) in (path / "bin" / "vllm").read_text()  # untouched
    finally:
        left = h.stragglers(marker)
        h.kill_all(left)
    assert not left
    assert tree_digest(ql1) == before


def test_no_venv_serve_session_serves_each_python_of_a_two_python_matrix(w: World, tmp_path: Path) -> None:
    """The shipped matrices declare two Pythons: under ``nox --no-venv`` (no parametrization) the
    session serves each in turn instead of failing on ``serve start`` without ``--python``.

    The second Python is whichever of 3.11 and 3.13 this host has (skipped, with the reason, on
    a host with 3.12 alone): the session's logic does not depend on which."""
    import zipfile

    from tests.helpers import httpserver, projects, wheels

    needs.nox()
    other, _ = needs.python("3.11", "3.13")
    pys = sorted([other, PY312], key=lambda v: int(v.split(".")[1]))
    # The world's wheels plus a torch for the other Python (same files), so its runtime can be built too.
    whl = tmp_path / "wheels"
    shutil.copytree(w.base / "wheelhouse" / "wheels", whl)
    (torch312,) = whl.glob("torch-2.9.0-cp312-*.whl")
    with zipfile.ZipFile(torch312) as z:
        files = {n: z.read(n) for n in z.namelist() if ".dist-info/" not in n}
    cp = "cp" + other.replace(".", "")
    wheels.make_wheel(whl, "torch", "2.9.0", tag=f"{cp}-{cp}-manylinux_2_28_x86_64",
                      requires=["nvidia-cuda-runtime-cu12==12.8.90"], files=files)
    httpserver.write_simple_index(tmp_path / "index", whl)
    rt = tmp_path / "rt"
    marker = f"{tmp_path.name}-{os.getpid()}"
    with httpserver.serve(tmp_path / "index") as (url, _stats):
        proj = projects.write_project(tmp_path / "proj", {"a": projects.matrix_toml(
            "a", f"{url}/simple", title="two Pythons", pythons=json.dumps(pys))})
        h.write_service(proj, blue=h.free_port(), green=h.free_port())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV", "FAKE_"))}
        env.update(BUILDER_PROJECT=str(proj), BUILDER_RUNTIMES=str(rt), UV_CACHE_DIR=str(w.cache),
                   **{h.MARKER: marker})
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
        try:
            assert (r := builder("lock", "--matrix", "a", cwd=proj, env=env)).returncode == 0, r.stderr
            built = []
            for py in pys:
                r = builder("build", "-m", "a", "-p", py, "--no-gpu", "--json", cwd=proj, env=env)
                assert r.returncode == 0, r.stderr
                built.append(Path(json.loads(r.stdout)[0]["path"]))
                h.install_fake(built[-1] / "bin" / "vllm")

            r = subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--no-venv",
                                "-s", "serve-matrix-a"], env=env, capture_output=True, text=True, timeout=300)
            out = r.stdout + r.stderr
            assert r.returncode == 0, out
            assert f"serving each of {pys[0]}, {pys[1]} in turn" in out
            assert out.count("slot green: ready at") == 2 and "Session serve-matrix-a was successful" in out
            assert out.index(f"Python {pys[0]}") < out.index(f"Python {pys[1]}")
            assert h.stragglers(marker) == []

            # `-- --python 3.12` narrows to one round.
            r = subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--no-venv",
                                "-s", "serve-matrix-a", "--", "--python", "3.12"], env=env,
                               capture_output=True, text=True, timeout=300)
            out = r.stdout + r.stderr
            assert r.returncode == 0, out
            assert out.count("slot green: ready at") == 1 and "in turn" not in out
        finally:
            left = h.stragglers(marker)
            h.kill_all(left)
        assert not left


def test_build_force_keeps_the_runtime_of_a_running_slot_and_of_the_rollback_target(w: World,
                                                                                     tmp_path: Path) -> None:
    """pinned_runtimes pins three things; the route's own runtime is tested above, these are the
    other two: a running slot's runtime, and the journal's rollback target's after a switch away."""
    proj, blue, green = _served_project(w, tmp_path)
    rt = tmp_path / "rt"
    other = h.make_runtime(rt)  # a second runtime for slot blue (h.RUNTIME_ID)
    marker = f"{tmp_path.name}-{os.getpid()}"
    env = _env(w, proj, rt, marker)

    def force_build() -> subprocess.CompletedProcess[str]:
        return builder("build", "-m", "a", "-p", PY312, "--no-gpu", "--force", cwd=proj, env=env)

    try:
        path = _lock_build_serveable(proj, env)
        pinned = f"{path.name} is pinned by the serve route, its rollback target or a running slot"

        # 1. A running slot, no route at all.
        r = builder("serve", "start", "--matrix", "a", "--slot", "green", cwd=proj, env=env)
        assert r.returncode == 0, r.stderr
        assert not (proj / "deploy" / "llm.env").exists()
        r = force_build()
        assert r.returncode == EXIT_BUSY and pinned in r.stderr and r.stderr.count("\n") == 1

        # 2. The rollback target only: route green -> blue (the other runtime), then green stopped.
        for args in (("route", "init", "--url", f"http://127.0.0.1:{blue}/v1", "--model", "querylake-llm"),
                     ("route", "set", "green"), ("serve", "start", "--runtime", other.name, "--slot", "blue"),
                     ("route", "set", "blue"), ("serve", "stop", "--slot", "green")):
            r = builder(*args, cwd=proj, env=env)
            assert r.returncode == 0, (args, r.stderr)
        assert not (proj / "serve-state" / "slots" / "green.json").exists()
        shown = json.loads(builder("route", "show", "--json", cwd=proj, env=env).stdout)
        assert shown["runtime"] == other.name and shown["rollback_to"]["runtime"] == path.name
        r = force_build()
        assert r.returncode == EXIT_BUSY and pinned in r.stderr
        assert str(h.FAKE) in (path / "bin" / "vllm").read_text()  # untouched
        assert builder("serve", "stop", "--slot", "blue", "--force", cwd=proj, env=env).returncode == 0
    finally:
        left = h.stragglers(marker)
        h.kill_all(left)
    assert not left
