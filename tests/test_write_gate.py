"""One write gate: no command, option or environment variable writes into QL_1.

Everything here is derived from the click tree (``builder.cli.main``, groups
walked), so a command added later (``serve``, ``route`` ...) is covered
without editing this file:

* every leaf command runs once with its required arguments and every path
  environment variable pointed at a scratch directory, in one process with an
  audit hook (tests/helpers/gate_driver.py): each path builder itself writes
  must lie inside something :func:`builder.paths.gate` approved;
* each path-like parameter (a ``click.Path`` option or argument) and each
  path environment variable is pointed at a scratch location first (the
  control): if the gate approves a path there, the command writes there, and
  pointed into QL_1 it must exit 6; if not, it is an input, and QL_1 must
  still be untouched;
* the project itself: stored inside QL_1, or with ``locks/``, ``envs/`` or
  ``runtimes/`` a symlink into QL_1;
* the disguises: direct, a symlink, ``link/..``, and a bind mount (in a
  private mount namespace, when this machine allows it), with a ``conda`` on
  PATH that does not list QL_1 and QL_1 not active.

QL_1 is a fake conda env under a fake HOME; its whole tree (paths, modes,
contents, mtimes) must hash the same after every run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from builder.cli import main as cli_main
from builder.errors import EXIT_INTERNAL, EXIT_PROTECTED
from tests.conftest import ROOT, tree_digest
from tests.helpers.runtimes import PY312, World
from tests.helpers.serve import account

DRIVER = ROOT / "tests" / "helpers" / "gate_driver.py"

#: Environment variables naming a place builder (or the uv/rattler it runs) writes.
OUTPUT_VARS = ("BUILDER_CACHE_DIR", "BUILDER_RUNTIMES", "UV_CACHE_DIR", "XDG_CACHE_HOME", "RATTLER_CACHE_DIR",
               "TMPDIR", "HOME")
#: Variables builder reads that name no output (executables, where conda keeps envs, the project).
NOT_OUTPUT_VARS = {"BUILDER_CONDA_EXE", "BUILDER_UV", "CONDA_EXE", "MAMBA_EXE", "CONDA_ENVS_DIRS",
                   "CONDA_ENVS_PATH", "CONDA_ROOT", "MAMBA_ROOT_PREFIX", "PATH",
                   "BUILDER_PROJECT"}  # the project: covered by the project disguises below

#: Options to pass to commands we know, instead of only the required ones (optional).
EXAMPLES: dict[str, list[str]] = {
    "build": ["-m", "t", "-p", PY312, "--no-gpu"],
    "smoke": ["-m", "t", "-p", PY312, "--no-gpu"],
    "lock": ["-m", "t"],
    "verify-driver": ["-m", "t", "--skip-torch"],
    # serve/route run against the shipped envs/service.toml (slots blue and green) and the fake
    # runtime, whose vllm exits at once ("Failed to infer device type"): nothing keeps running.
    "serve start": ["--slot", "green", "-m", "t", "-p", PY312, "--skip-gpu-check"],
    "serve unit": ["--slot", "green", "-m", "t", "-p", PY312],
    "serve stop": ["--slot", "green"],
    "route init": ["--url", "http://127.0.0.1:9/v1", "--model", "m"],
}


# --------------------------------------------------------------------------- the click tree


def leaves(group: click.Group = cli_main, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    """Every command that runs something: leaf commands, and groups that run without a subcommand
    (``builder lock`` with its ``lock diff``)."""
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            if cmd.invoke_without_command:
                yield " ".join((*prefix, name)), cmd
            yield from leaves(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), cmd


#: Flags that change only how results are shown, not what a command does.
COSMETIC = {"as_json", "json", "quiet", "verbose", "strict", "gpu", "all_", "help"}


def modes() -> Iterator[tuple[str, click.Command]]:
    """Every command, and every command with each of its behaviour flags (``lock --verify``,
    ``lock --refresh``, ``build --force`` ...): the words to run and the command."""
    for name, cmd in leaves():
        yield name, cmd
        for p in cmd.params:
            if isinstance(p, click.Option) and p.is_flag and p.name not in COSMETIC and not p.secondary_opts:
                yield f"{name} {p.opts[-1]}", cmd


def is_path(p: click.Parameter) -> bool:
    return isinstance(p.type, (click.Path, click.File))


def guess(p: click.Parameter) -> str:
    """A plausible value for a required parameter of a command this file does not know."""
    name = (p.name or "").lower()
    if isinstance(p.type, click.Choice):
        return str(p.type.choices[0])
    if name == "slot":
        return "green"
    if "matrix" in name or name in ("name", "runtime", "service"):
        return "t"
    if "python" in name and not is_path(p):
        return PY312
    if name == "key":
        return "torch.version"
    if name == "value":
        return "2.9.0"
    if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
        return "1"
    return "x"


def invocation(name: str, cmd: click.Command, set_param: click.Parameter | None = None,
               value: str = "") -> list[str]:
    """``name``'s words and arguments: the required ones (or EXAMPLES), ``set_param`` set to ``value``."""
    example = EXAMPLES.get(name, EXAMPLES.get(" ".join(w for w in name.split() if w[0] != "-")))
    opts: list[str] = list(example or [])
    pos: list[str] = []
    for p in cmd.params:
        if isinstance(p, click.Argument):
            if p is set_param:
                pos.append(value)
            elif p.required:
                pos.append(guess(p))
        elif p is set_param:
            for o in p.opts:  # drop a value EXAMPLES gives for the same option
                while o in opts:
                    i = opts.index(o)
                    del opts[i:i + 2]
            opts += [p.opts[0], value]
        elif p.required and example is None:
            opts += [p.opts[0], guess(p)]
    return [*name.split(), *opts, *pos]


# --------------------------------------------------------------------------- the fake host


@dataclass
class Host:
    home: Path
    ql1: Path
    scratch: Path
    project: Path  # a copy of the world project, outside QL_1
    env: dict[str, str]
    digest: str = ""
    ran: list[dict[str, object]] = field(default_factory=list)


@pytest.fixture(scope="module")
def host(w: World, tmp_path_factory: pytest.TempPathFactory) -> Host:
    return make_host(w, tmp_path_factory.mktemp("gate"))


def _service_spec(project: Path) -> None:
    """The shipped envs/service.toml, naming the account the tests run as (``serve unit`` renders a
    unit only for the spec's user)."""
    text = (ROOT / "envs" / "service.toml").read_text()
    (project / "envs" / "service.toml").write_text(account() + text)


def make_host(w: World, base: Path) -> Host:
    """A fake HOME with QL_1 in it, and a copy of the world project with envs/service.toml, in ``base``
    (also used by tests/test_special_files.py)."""
    home = base / "home"
    ql1 = home / "miniconda3" / "envs" / "QL_1"
    (ql1 / "bin").mkdir(parents=True)
    (ql1 / "lib" / "python3.12" / "site-packages").mkdir(parents=True)
    (ql1 / "lib" / "python3.12" / "site-packages" / "prod.py").write_text("SERVING = True\n")
    (ql1 / "bin" / "python").symlink_to(sys.executable)
    (ql1 / "conda-meta").mkdir()
    (ql1 / "conda-meta" / "history").write_text("==> 2025-01-01 <==\n# production\n")
    # What the project disguises need inside QL_1: a whole project, and targets
    # for a project's locks/, envs/ and runtimes/ symlinked into it.
    shutil.copytree(w.project, ql1 / "proj", symlinks=True)
    _service_spec(ql1 / "proj")
    shutil.copytree(w.project / "locks", ql1 / "locks-of-a-project")
    shutil.copytree(w.project / "envs", ql1 / "envs-of-a-project")
    (ql1 / "runtimes-of-a-project").mkdir()
    # A conda on PATH that lists another env but not QL_1 (found by scanning ~/miniconda3/envs).
    fakebin = base / "fakebin"
    fakebin.mkdir()
    (fakebin / "conda").write_text("#!/bin/sh\necho '" + json.dumps({"envs": [str(home / "miniconda3")]}) + "'\n")
    (fakebin / "conda").chmod(0o755)
    # apt-mark showhold costs ~1 s a run here; what it says does not matter to these tests.
    (fakebin / "apt-mark").write_text("#!/bin/sh\nexit 0\n")
    (fakebin / "apt-mark").chmod(0o755)
    project = base / "proj"
    shutil.copytree(w.project, project, symlinks=True)
    _service_spec(project)
    scratch = base / "scratch"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONDA", "VIRTUAL_ENV", "BUILDER_", "UV_", "XDG_", "RATTLER"))}
    env.update(HOME=str(home), PATH=f"{fakebin}{os.pathsep}{env['PATH']}", UV_CACHE_DIR=str(w.cache),
               BUILDER_CACHE_DIR=str(base / "check-cache"), PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1")
    # pyenv's interpreters are found through $HOME: keep the real one reachable.
    if "PYENV_ROOT" not in env:
        env["PYENV_ROOT"] = os.path.expanduser("~/.pyenv")
    h = Host(home, ql1, scratch, project, env)
    h.digest = tree_digest(ql1)
    # suggest searches the world's local index (its vLLM and torch), never PyPI.
    EXAMPLES["suggest"] = ["--index-url", w.index, "--python", PY312, "--exclude-newer", "2025-12-30"]
    return h


def drive(host: Host, cases: list[dict[str, object]], wrap: list[str] | None = None,
          timeout: float = 600) -> dict[str, dict[str, object]]:
    """Run ``cases`` in one driver process; return results by case id."""
    spec = host.scratch / f"cases-{len(host.ran)}.json"
    out = host.scratch / f"results-{len(host.ran)}.json"
    spec.write_text(json.dumps(cases))
    argv = [*(wrap or []), sys.executable, str(DRIVER), str(spec), str(out)]
    r = subprocess.run(argv, cwd=host.scratch, env=host.env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    results = {x["id"]: x for x in json.loads(out.read_text())}
    host.ran.extend(results.values())
    return results


def project_args(project: Path) -> list[str]:
    return ["--project", str(project)]


def assert_clean(host: Host, results: dict[str, dict[str, object]]) -> None:
    """No run wrote outside what the gate approved, none was a bug, QL_1 is untouched."""
    problems = [f"{k}: writes not approved by the gate: {v['violations']}" for k, v in results.items()
                if v["violations"]]
    problems += [f"{k}: internal error: {v['stderr']}" for k, v in results.items() if v["rc"] == EXIT_INTERNAL]
    assert not problems, "\n".join(problems)
    assert tree_digest(host.ql1) == host.digest, "QL_1 changed"


# --------------------------------------------------------------------------- the tests


def test_the_tree_has_the_commands_we_know() -> None:
    """A sanity floor for the derivation (new commands only add to it)."""
    names = {n for n, _c in leaves()}
    assert {"lock", "list", "spec set", "spec validate", "check", "build", "smoke", "doctor", "host snapshot",
            "preflight", "runbook", "verify-driver"} <= names
    paths = {(n, p.name) for n, c in leaves() for p in c.params if is_path(p)}
    assert {("check", "cache_dir"), ("build", "root"), ("build", "cache_dir"), ("host snapshot", "file"),
            ("runbook", "output")} <= paths


def test_every_path_environment_variable_is_classified() -> None:
    """A new ``os.environ.get("X")`` in builder/ must say whether X names an output."""
    found: set[str] = set()
    for f in (ROOT / "builder").rglob("*.py"):
        found |= set(re.findall(r'(?:environ\.get|environ\[|getenv)\(?\s*"([A-Z][A-Z0-9_]*)"', f.read_text()))
    unknown = found - set(OUTPUT_VARS) - NOT_OUTPUT_VARS
    assert not unknown, f"classify these in tests/test_write_gate.py: {sorted(unknown)}"


#: Pointing a general variable somewhere only matters when the specific ones are unset.
SHADOWED_BY = {"XDG_CACHE_HOME": ("UV_CACHE_DIR", "BUILDER_CACHE_DIR", "RATTLER_CACHE_DIR"),
               "HOME": ("XDG_CACHE_HOME", "UV_CACHE_DIR", "BUILDER_CACHE_DIR", "RATTLER_CACHE_DIR")}


def var_env(var: str, value: str) -> dict[str, str | None]:
    return {var: value, **{v: None for v in SHADOWED_BY.get(var, ())}}


def case(cid: str, project: Path, argv: list[str], env: dict[str, str | None] | None = None,
         abort_under: Path | None = None) -> dict[str, object]:
    return {"id": cid, "argv": [*project_args(project), *argv], "env": env or {},
            "abort_under": str(abort_under) if abort_under else None}


@pytest.fixture(scope="module")
def baseline(host: Host) -> dict[str, dict[str, object]]:
    """Each command (and mode) once, with its (example) arguments, caches and temp dirs at scratch places."""
    cases = []
    for name, cmd in modes():
        scratch = host.scratch / "baseline" / name.replace(" ", "_")
        (scratch / "tmp").mkdir(parents=True)
        env: dict[str, str | None] = {"TMPDIR": str(scratch / "tmp"), "BUILDER_CACHE_DIR": str(scratch / "cache"),
                                      "RATTLER_CACHE_DIR": str(scratch / "rattler")}
        argv = invocation(name, cmd)
        if name == "host snapshot":
            argv = [*name.split(), str(scratch / "snap.json")]
        cases.append(case(name, host.project, argv, env))
        if name == "build":  # and a build that really builds, into an empty root
            cases.append(case("build (new root)", host.project, argv, {**env, "BUILDER_RUNTIMES": str(scratch / "rt")}))
    return drive(host, cases)


def read_only(baseline: dict[str, dict[str, object]]) -> set[str]:
    """Commands whose baseline run passed nothing through the gate: they write nothing, so
    pointing their output variables or project elsewhere needs no control run (their path
    options are still tried)."""
    return {k for k, r in baseline.items() if not r["approved"] and not r["violations"]}


def test_every_write_of_every_command_goes_through_the_gate(host: Host, baseline: dict[str, dict[str, object]]
                                                            ) -> None:
    """The audit hook sees every file builder itself creates, replaces or removes in the
    baseline runs; each must lie inside a path the gate approved first."""
    results = baseline
    assert_clean(host, results)
    assert {"list", "lock --check", "spec validate", "doctor"} <= read_only(results)
    # The writers we know did write (so the audit above audited something).
    fresh = results["build (new root)"]
    assert fresh["rc"] == 0 and any("/rt/matrix-t-py312-" in a for a in fresh["approved"]), fresh
    assert results["check"]["rc"] in (0, 1) and any("/cache" in a for a in results["check"]["approved"])
    assert results["smoke"]["rc"] == 0, results["smoke"]
    assert results["lock"]["rc"] == 0 and results["spec set"]["rc"] == 0


def _disguises(host: Host, inside: Path, name: str) -> dict[str, str]:
    """``inside`` (a path in QL_1) reached directly, through a symlink and through ``link/..``."""
    d = host.scratch / "disguise" / name
    d.mkdir(parents=True)
    rel = inside.relative_to(host.ql1)
    (d / "link").symlink_to(host.ql1)
    (d / "lib").symlink_to(host.ql1 / "lib")
    return {"direct": str(inside), "symlink": str(d / "link" / rel),
            "dotdot": f"{d}/lib/../{rel}"}  # lexically d/<rel>; for the kernel QL_1/<rel>


KNOWN_WRITERS = ("check cache_dir", "build root", "build cache_dir", "host snapshot file", "runbook output",
                 "check $BUILDER_CACHE_DIR", "check $XDG_CACHE_HOME", "check $HOME", "build $UV_CACHE_DIR",
                 "build $BUILDER_RUNTIMES", "build $TMPDIR", "lock $UV_CACHE_DIR", "lock $TMPDIR", "lock $HOME")


def _var_controls(host: Host, name: str, cmd: click.Command) -> tuple[list[dict[str, object]], dict[str, Path]]:
    """Three runs of a command that put every output variable at its own scratch directory:
    the specific ones together, then $XDG_CACHE_HOME and $HOME alone (they count only
    when the specific ones are unset)."""
    runs, where = [], {}
    groups = [[v for v in OUTPUT_VARS if v not in SHADOWED_BY], ["XDG_CACHE_HOME"], ["HOME"]]
    for group in groups:
        env: dict[str, str | None] = {}
        for v in group:
            d = host.scratch / "ctl" / f"{name.replace(' ', '_')}-{v}"
            d.mkdir(parents=True)
            where[v] = d
            env.update(var_env(v, str(d)))
        runs.append(case(f"{name} vars {group[0]}", host.project, invocation(name, cmd), env))
    return runs, where


def test_path_options_and_variables_into_ql1_are_refused(host: Host, baseline: dict[str, dict[str, object]]) -> None:
    """Controls first (scratch targets), then QL_1 through each disguise for what is written.

    A parameter or variable is an output of a command when, pointed at a scratch
    place, the gate approved a path there, or anything there changed (a child
    writing where builder did not look).
    """
    controls, targets, var_dirs = [], {}, {}
    for name, cmd in leaves():
        for p in (p for p in cmd.params if is_path(p)):
            where = host.scratch / "ctl" / f"{name.replace(' ', '-')}-{p.name}"
            where.mkdir(parents=True)
            cid = f"{name} {p.name}"
            targets[cid] = (name, cmd, p, where)
            controls.append(case(cid, host.project, invocation(name, cmd, p, str(where / "new")), abort_under=where))
    quiet = read_only(baseline)
    for name, cmd in modes():
        if name in quiet:
            continue
        runs, dirs = _var_controls(host, name, cmd)
        controls += runs
        for v, d in dirs.items():
            targets[f"{name} ${v}"] = (name, cmd, v, d)
            var_dirs[f"{name} ${v}"] = tree_digest(d)
    ctl = drive(host, controls)
    assert_clean(host, ctl)
    ctl_env = {str(c["id"]): dict(c["env"]) for c in controls}  # type: ignore[call-overload]
    writers = {k for k, r in ctl.items() if r["aborted"]}
    for cid, (name, _cmd, v, d) in targets.items():
        if isinstance(v, str):
            run = ctl[f"{name} vars {v if v in SHADOWED_BY else OUTPUT_VARS[0]}"]
            real = Path(os.path.realpath(d))
            if any(Path(a) == real or real in Path(a).parents for a in run["approved"]) \
                    or tree_digest(d) != var_dirs[cid]:
                writers.add(cid)
    missing = [k for k in KNOWN_WRITERS if k not in writers]
    assert not missing, missing  # the derivation is not vacuous
    cases = []
    for cid, (name, cmd, p, _d) in targets.items():
        n = len(cases)
        if isinstance(p, str):  # a variable: an existing QL_1 directory, for the outputs only
            if cid in writers:  # the control's conditions, with this one variable moved into QL_1
                group = ctl_env[f"{name} vars {p if p in SHADOWED_BY else OUTPUT_VARS[0]}"]
                for how, value in _disguises(host, host.ql1 / "lib", f"v{n}").items():
                    fresh = host.scratch / "fresh" / f"{n}-{how}"  # the control's starting point, again
                    env = {k: (str(fresh / k) if v else v) for k, v in group.items()}
                    for d in filter(None, env.values()):
                        Path(d).mkdir(parents=True)
                    cases.append(case(f"{cid} {how}", host.project, invocation(name, cmd), {**env, p: value}))
        else:  # inputs are read from QL_1 (which must stay untouched), outputs are refused
            inside = host.ql1 / "lib" / f"w-{n}"
            ways = _disguises(host, inside, f"p{n}") if cid in writers else {"direct": str(inside)}
            cases += [case(f"{cid} {how}", host.project, invocation(name, cmd, p, value))
                      for how, value in ways.items()]
    res = drive(host, cases)
    assert_clean(host, res)
    refused = {k: r for k, r in res.items() if k.rsplit(" ", 1)[0] in writers}
    wrong = {k: (r["rc"], r["stderr"]) for k, r in refused.items()
             if r["rc"] != EXIT_PROTECTED or not any("protected" in ln for ln in r["stderr"])}
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in sorted(wrong.items()))
    assert len(refused) >= 3 * len(KNOWN_WRITERS)


def _project_copies(host: Host) -> dict[str, Path]:
    """The project inside QL_1, and copies whose locks/, envs/ or runtimes/ link into QL_1."""
    out = {"inside": host.ql1 / "proj"}
    for part, target in (("locks", "locks-of-a-project"), ("envs", "envs-of-a-project"),
                         ("runtimes", "runtimes-of-a-project")):
        p = host.scratch / f"proj-{part}-link"
        shutil.copytree(host.project, p, symlinks=True, ignore=shutil.ignore_patterns(part))
        (p / part).symlink_to(host.ql1 / target)
        out[part] = p
    return out


def test_a_project_in_ql1_or_linking_into_it_is_refused(host: Host, baseline: dict[str, dict[str, object]]) -> None:
    """Commands that write into their project (control: the gate approves a path in it) are refused."""
    # The project's own runtimes/ is the default root here (not $BUILDER_RUNTIMES).
    own_root: dict[str, str | None] = {"BUILDER_RUNTIMES": None}
    quiet = read_only(baseline)
    ctl = drive(host, [case(name, host.project, invocation(name, cmd), own_root, host.project)
                       for name, cmd in modes() if name not in quiet])
    assert_clean(host, ctl)
    writers = {k for k, r in ctl.items() if r["aborted"]}
    assert {"lock", "spec set", "build", "route init", "serve unit"} <= writers, writers
    cases = [case(f"{name} {how}", proj, invocation(name, cmd), own_root)
             for how, proj in _project_copies(host).items() for name, cmd in modes()
             if name not in quiet or how == "inside"]  # read-only commands: still run inside QL_1
    res = drive(host, cases)
    assert_clean(host, res)
    # Inside QL_1, the writers whose writes do not depend on what earlier runs left in the
    # project (a runtime to serve ...) must be refused; for every command QL_1 stays untouched.
    core = {"lock", "lock --refresh", "spec set", "build", "build --force", "route init"}
    expect = {"inside": writers & core, "locks": {"lock", "lock --refresh"}, "envs": {"spec set", "lock --refresh"},
              "runtimes": {"build", "build --force"}}
    assert {"lock --refresh", "build --force"} <= writers, writers
    wrong = {k: (r["rc"], r["stderr"]) for k, r in res.items()
             if k.rsplit(" ", 1)[0] in expect[k.rsplit(" ", 1)[1]] and r["rc"] != EXIT_PROTECTED}
    assert not wrong, wrong


def _can_bind_mount() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'd=$(mktemp -d) && mount --bind "$d" "$d" && umount "$d"; rmdir "$d"'],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"no private mount namespace with bind mounts here: {r.stderr.strip()}"


def test_a_bind_mount_of_ql1_is_refused_though_conda_does_not_list_it(host: Host,
                                                                      baseline: dict[str, dict[str, object]]) -> None:
    """Only (st_dev, st_ino) tells the alias is QL_1: its path has no envs/QL_1 in it."""
    why = _can_bind_mount()
    if why:
        pytest.skip(why)
    alias = host.scratch / "alias"
    alias.mkdir()
    cases = []
    quiet = read_only(baseline)
    for name, cmd in leaves():
        for p in (p for p in cmd.params if is_path(p)):
            cases.append(case(f"{name} {p.name}", host.project,
                              invocation(name, cmd, p, str(alias / "lib" / f"b-{len(cases)}"))))
        if name in quiet:
            continue
        cases.append(case(f"{name} project", alias / "proj", invocation(name, cmd), {"BUILDER_RUNTIMES": None}))
        for v in ("UV_CACHE_DIR", "BUILDER_CACHE_DIR", "BUILDER_RUNTIMES", "TMPDIR"):
            cases.append(case(f"{name} ${v}", host.project, invocation(name, cmd), var_env(v, str(alias / "lib"))))
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount --bind "{host.ql1}" "{alias}" && exec "$@"', "sh"]
    res = drive(host, cases, wrap=wrap)
    assert_clean(host, res)
    must = ["check cache_dir", "build root", "build cache_dir", "host snapshot file", "runbook output",
            "lock project", "spec set project", "build project", "lock $UV_CACHE_DIR", "build $BUILDER_RUNTIMES",
            "check $BUILDER_CACHE_DIR", "build $TMPDIR"]
    wrong = {k: (res[k]["rc"], res[k]["stderr"]) for k in must if res[k]["rc"] != EXIT_PROTECTED}
    assert not wrong, wrong
    assert not any(alias.iterdir()), "the bind mount leaked out of its namespace"



def test_the_protected_set_costs_one_conda_call_and_only_when_writing(host: Host, tmp_path: Path) -> None:
    """`conda env list` runs at most once per process: never for --help, list or lock --check, nor for
    writes that no conda env could hold (builder.protect.in_some_conda_env), once for writes that one could."""
    calls = tmp_path / "conda-calls"
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "conda").write_text(f'#!/bin/sh\necho called >> "{calls}"\necho \'{{"envs": []}}\'\n')
    (fakebin / "conda").chmod(0o755)
    env = {**host.env, "PATH": f"{fakebin}{os.pathsep}{host.env['PATH']}"}
    proj = tmp_path / "proj"
    shutil.copytree(host.project, proj, symlinks=True)

    def run(*args: str) -> int:
        calls.unlink(missing_ok=True)
        r = subprocess.run([sys.executable, "-m", "builder", "--project", str(proj), *args], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    assert run("--help") == run("list") == run("lock", "--check") == 0
    assert run("spec", "set", "t", "torch.version", "2.9.0") == 0  # envs/ is in no conda env
    assert run("lock", "-m", "t") == 0
    scratch = tmp_path / "scratch-env"  # a conda env, not a protected one
    (scratch / "conda-meta").mkdir(parents=True)
    env["UV_CACHE_DIR"] = str(scratch / "uv-cache")
    # lock passes the gate for locks/, each lock and its directory, uv's cache, $TMPDIR, each temp dir;
    # uv's cache could be in a conda env: one conda call.
    assert run("lock", "-m", "t") == 1

