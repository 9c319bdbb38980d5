"""``builder runtime adopt``: an environment builder did not build becomes a runtime that says so.

The adopted environment is a real venv (uv) with a fake torch 2.11.0+cu130 (its ``torch.cuda``
answers from ``$FAKE_TORCH_DEVICES``) and a fake vLLM 0.26.0 whose only main extension is a real
``vllm/_C_stable_libtorch.abi3.so`` and whose ``vllm`` command is the stand-in server
(tests/helpers/fake_vllm.py).  Every command runs through the real CLI with a fake ``QL_1``
active (tests/helpers/serve.py); the adopted environment's tree must hash the same afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import EXIT_FAILED, EXIT_PROTECTED
from tests.conftest import tree_digest
from tests.helpers import fake_envs, wheels
from tests.helpers import serve as h
from tests.helpers.runtimes import PY312, World

CLI = f"""\
import runpy, sys
FAKE = {str(h.FAKE)!r}
def main():
    sys.argv = [FAKE, *sys.argv[1:]]
    runpy.run_path(FAKE, run_name="__main__")
"""


def _vllm(dest: Path, include: str, build: Path, *, broken: bool = False) -> Path:
    files: dict[str, str | bytes] = {
        "vllm/__init__.py": "from vllm._version import __version__\n",
        "vllm/_version.py": "__version__ = version = '0.26.0'\n",
        "vllm/engine/__init__.py": "",
        "vllm/engine/async_llm_engine.py": "raise ImportError('no engine')\n" if broken
        else "class AsyncLLMEngine:\n    pass\n",
        "vllm/entrypoints/__init__.py": "",
        "vllm/entrypoints/cli.py": CLI,
    }
    ext = fake_envs.python_extension(build / "_C_stable_libtorch.abi3.so", "_C_stable_libtorch", include)
    files["vllm/_C_stable_libtorch.abi3.so"] = ext.read_bytes()
    return wheels.make_wheel(dest, "vllm", "0.26.0", tag="cp38-abi3-manylinux_2_31_x86_64", requires=["torch"],
                             files=files, console_scripts={"vllm": "vllm.entrypoints.cli:main"})


class Envs:
    def __init__(self, good: Path, broken: Path, bare: Path) -> None:
        self.good, self.broken, self.bare = good, broken, bare


@pytest.fixture(scope="module")
def envs(w: World, tmp_path_factory: pytest.TempPathFactory) -> Envs:
    from builder import tools
    from builder.runtime import interpreters

    base = tmp_path_factory.mktemp("adoptable")
    uv = tools.uv_bin()
    py = interpreters.find(PY312, uv=uv).path
    include = fake_envs.include_dir(py)
    torch = fake_envs.torch_wheel(base / "torch")
    good = _vllm(base / "good", include, base / "build-good")
    broken = _vllm(base / "broken", include, base / "build-broken", broken=True)
    return Envs(fake_envs.make_env(base / "vllm-env", [torch, good], uv=uv, python=py, cache=w.cache),
                fake_envs.make_env(base / "broken-env", [torch, broken], uv=uv, python=py, cache=w.cache),
                fake_envs.make_env(base / "torch-only", [torch], uv=uv, python=py, cache=w.cache))


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[h.ServeProject]:
    s = h.make_serve_project(tmp_path)
    yield s
    h.no_stragglers(s)


def _adopt(sp: h.ServeProject, python: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return sp.run("runtime", "adopt", "--python", str(python), "--no-gpu", *extra, timeout=180)


def _adopted(sp: h.ServeProject, python: Path) -> dict[str, object]:
    r = _adopt(sp, python, "--json")
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout)
    return out


def test_adopting_writes_a_runtime_that_says_where_it_came_from_and_nothing_into_the_env(
        sp: h.ServeProject, envs: Envs) -> None:
    env_dir = envs.good.parent.parent
    before = tree_digest(env_dir)
    res = _adopted(sp, envs.good)
    assert res["status"] == "adopted"
    rid = str(res["name"])
    assert rid.startswith("adopted-py312-") and Path(str(res["path"])) == sp.root / rid
    m = json.loads((sp.root / rid / "runtime.json").read_text())
    assert (m["format"], m["origin"], m["python"]) == (3, "adopted", "3.12")
    assert "lock" not in m and "matrix" not in m  # nothing pretends it was built from a lock
    e = m["environment"]
    assert e["python"] == str(envs.good) and e["prefix"] == str(env_dir) and e["kind"] == "venv"
    assert e["torch"]["version"] == "2.11.0" and e["torch"]["__version__"] == "2.11.0+cu130"
    assert e["torch"]["cuda"] == "13.0" and e["vllm"]["version"] == "0.26.0"
    steps = {s["step"]: s for s in m["smoke"]["steps"]}
    assert m["smoke"]["ok"] and m["smoke"]["expected_from"] == "the environment's own files (adopted: no lock)"
    assert steps["torch.__version__"] == {"step": "torch.__version__", "status": "pass", "reason": "2.11.0+cu130"}
    assert steps["vllm --help"]["status"] == "pass"  # the stand-in prints its usage
    assert (sp.root / rid / "bin" / "python").read_text().endswith(f"exec {envs.good} \"$@\"\n")
    assert tree_digest(env_dir) == before
    # Again: found, nothing done; --force smokes again.
    again = _adopted(sp, envs.good)
    assert again["status"] == "exists" and again["manifest"] == res["manifest"]
    assert _adopted(sp, envs.good, )["status"] == "exists"
    r = _adopt(sp, envs.good, "--force", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "readopted", r.stderr
    assert sorted(p.name for p in sp.root.iterdir()) == sorted([h.RUNTIME_ID, rid, ".locks"])
    assert tree_digest(env_dir) == before


def test_every_command_works_on_an_adopted_runtime(sp: h.ServeProject, envs: Envs) -> None:
    env_dir = envs.good.parent.parent
    before, ql1 = tree_digest(env_dir), tree_digest(sp.ql1)
    rid = str(_adopted(sp, envs.good)["name"])

    r = sp.run("list")
    assert r.returncode == 0 and rid in r.stdout and "adopted" in r.stdout, r.stdout
    rows = json.loads(sp.run("runtime", "list", "--json").stdout)
    (row,) = [x for x in rows if x["id"] == rid]
    assert (row["origin"], row["lock"], row["torch"], row["vllm"], row["servable"]) == (
        "adopted", None, "2.11.0", "0.26.0", True)

    r = sp.run("smoke", "--runtime", rid, "--no-gpu", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    (rep,) = json.loads(r.stdout)
    assert rep["ok"] and rep["expected_from"] == "what adoption read of the environment"

    r = sp.run("verify-driver", "--matrix", "t", "--runtime", rid, "--json", timeout=120,
               FAKE_TORCH_DEVICES="8.9,8.9")
    assert r.stdout, r.stderr
    checks = {c["id"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks[f"torch:{rid}"]["level"] == "pass", checks
    assert "torch 2.11.0+cu130 (CUDA 13.0) sees all 2 GPU(s)" in checks[f"torch:{rid}"]["message"]

    prod = h.run_fake(sp.blue, sp.env)  # production's server: the route's starting point
    try:
        assert sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm").returncode == 0
        r = sp.run("serve", "start", "--runtime", rid, "--slot", "green", timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"runtime {rid} (adopted: no lock)" in r.stdout
        rec = json.loads((sp.state / "slots" / "green.json").read_text())
        assert (rec["runtime"], rec["origin"], rec["lock"]) == (rid, "adopted", None)
        status = json.loads(sp.run("serve", "status", "--json").stdout)
        green = next(s for s in status["slots"] if s["slot"] == "green")
        assert (green["runtime"], green["origin"], green["alive"], green["ready"]) == (rid, "adopted", True, True)
        assert "(adopted)" in sp.run("serve", "status").stdout

        r = sp.run("route", "set", "green")
        assert r.returncode == 0, r.stderr
        shown = json.loads(sp.run("route", "show", "--json").stdout)
        assert (shown["runtime"], shown["origin"], shown["lock"]) == (rid, "adopted", None)
        assert "lock none (adopted: no hash verification)" in sp.run("route", "show").stdout
        journal = [json.loads(x) for x in (sp.route_file.parent / "llm.env.journal").read_text().splitlines()]
        assert journal[-1]["to"]["origin"] == "adopted" and journal[-1]["origin"] == "adopted"
        assert journal[-1]["to"]["lock"] is None
        assert "# origin: adopted (no lock, no hash verification)\n" in sp.route_file.read_text()

        # Pinned by its id, which no build can give: a build never takes it for its own.
        from builder.project import Project
        from builder.runtime import layout
        from builder.serve.service import pinned_runtimes

        assert pinned_runtimes(Project(sp.project)) == {rid}
        parsed = layout.parse_name(rid)
        assert parsed is not None and parsed.origin == "adopted" and parsed.matrix_id is None

        assert sp.run("route", "rollback").returncode == 0
        assert json.loads(sp.run("route", "show", "--json").stdout)["origin"] is None  # production: outside
        r = sp.run("serve", "stop", "--slot", "green", "--json")
        assert r.returncode == 0, r.stderr
    finally:
        h.stop_fake(prod)
        sp.run("serve", "stop", "--slot", "green", "--force")
    assert tree_digest(env_dir) == before and tree_digest(sp.ql1) == ql1


def test_build_force_is_not_blocked_by_nor_replaces_an_adopted_runtime(w: World, envs: Envs, tmp_path: Path) -> None:
    """An adopted runtime pinned by the route shares the root with the matrix's built runtime; a
    forced rebuild of the matrix replaces its own runtime only and leaves the adopted one as it was."""
    from builder import protect
    from builder.project import Project
    from builder.runtime import adopt, build

    root = tmp_path / "rt"
    assert w.build(root=root).returncode == 0
    proj = Project(w.project)
    guard = protect.for_project(proj)
    got = adopt.adopt(proj, adopt.AdoptRequest(python=str(envs.good), root=str(root), gpu=False), guard)
    before = tree_digest(got.path)
    req = build.BuildRequest(matrix="t", python=PY312, root=str(root), force=True, gpu=False,
                             cache_dir=str(w.cache), pinned=frozenset({got.name}))
    res = build.build(proj, req, guard)
    assert res.status == "rebuilt" and res.name != got.name and res.manifest.origin == "lock"
    assert tree_digest(got.path) == before


@pytest.mark.parametrize("how", ["in QL_1", "a link into QL_1", "a venv inside QL_1", "the active env"])
def test_adopt_refuses_ql1_and_anything_inside_it(sp: h.ServeProject, envs: Envs, tmp_path: Path, how: str) -> None:
    from builder import tools

    real = os.path.realpath(envs.good)
    # QL_1's interpreter is a file of its own, as in every conda env (it is never run here).
    shutil.copy(real, sp.ql1 / "bin" / "python3.12")
    if how == "in QL_1":
        target, env = sp.ql1 / "bin" / "python3.12", sp.env
    elif how == "a link into QL_1":
        (tmp_path / "elsewhere").mkdir()
        target, env = tmp_path / "elsewhere" / "python", sp.env
        target.symlink_to(sp.ql1 / "bin" / "python3.12")
    elif how == "a venv inside QL_1":
        subprocess.run([tools.uv_bin(), "venv", str(sp.ql1 / "opt" / "venv"), "--python", real, "--no-config", "-q"],
                       check=True, timeout=120)
        target, env = sp.ql1 / "opt" / "venv" / "bin" / "python", sp.env
    else:  # the operator's own shell has the environment activated: builder never serves from it
        target = envs.good
        env = {**sp.env, "VIRTUAL_ENV": str(envs.good.parent.parent)}
    before, env_before = tree_digest(sp.ql1), tree_digest(envs.good.parent.parent)
    r = sp.run("runtime", "adopt", "--python", str(target), "--no-gpu", timeout=120,
               **{k: v for k, v in env.items() if k not in sp.env or sp.env[k] != v})
    assert r.returncode == EXIT_PROTECTED, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("builder: ")]
    assert f"refusing to adopt {target}" in line and "inside the protected" in line
    assert ("active env" if how == "the active env" else "QL_1") in line
    assert tree_digest(sp.ql1) == before and tree_digest(envs.good.parent.parent) == env_before
    assert not any(p.name.startswith(("adopted-", ".staging")) for p in sp.root.iterdir())


@pytest.mark.parametrize("which,words", [("broken", "smoke tests failed, nothing was adopted"),
                                         ("bare", "vLLM is not installed")])
def test_an_env_that_fails_smoke_or_has_no_vllm_adopts_nothing(sp: h.ServeProject, envs: Envs, which: str,
                                                               words: str) -> None:
    r = _adopt(sp, getattr(envs, which))
    assert r.returncode == EXIT_FAILED and words in r.stderr, r.stderr
    assert not any(p.name.startswith(("adopted-", ".staging")) for p in sp.root.iterdir())


def test_a_trampoline_passes_its_arguments_and_no_path_can_break_it(tmp_path: Path) -> None:
    from builder.runtime import adopt

    odd = tmp_path / "env $HOME `x`\nrm -rf x"
    odd.mkdir()
    (odd / "echo").write_text("#!/bin/sh\nprintf '%s|' \"$@\"\n")
    (odd / "echo").chmod(0o755)
    script = tmp_path / "bin-python"
    adopt._trampoline(script, [str(odd / "echo"), "first arg"], f"adopted from {odd}")
    lines = script.read_text().split("\n")
    assert lines[1].endswith("`x`?rm -rf x") and lines[2].startswith("exec '")  # the comment stayed one line
    out = subprocess.run([str(script), "a", "b c", "$HOME"], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "first arg|a|b c|$HOME|"
