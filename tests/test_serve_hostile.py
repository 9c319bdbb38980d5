"""Issue 20 on serve and route: what a hostile server, a hostile file or a copied project must not
do.  Real CLI, real loopback servers (one drips its status line and headers one byte every 0.5 s),
real processes and signals."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import EXIT_FAILED, EXIT_USAGE
from tests.helpers import serve as h

#: What a CLI run may take beyond its --timeout: interpreter start, imports, the spec, the lock.
SLACK = 4.0


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[h.ServeProject]:
    s = h.make_serve_project(tmp_path)
    yield s
    h.no_stragglers(s)


def _timed(sp: h.ServeProject, *args: str) -> tuple[float, object]:
    t = time.monotonic()
    r = sp.run(*args, timeout=90)
    return time.monotonic() - t, r


def test_every_timeout_bounds_wall_time_against_a_server_dripping_its_headers(sp: h.ServeProject) -> None:
    """A server that sends its status line and headers one byte every 0.5 s: each read arrives in
    time, so only a total deadline (connect and headers included) ends it.  Before the fix
    `serve probe --timeout 3` ran past 30 s and `route set --timeout 5`, `serve status --timeout 3`
    past 60 s."""
    assert sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm").returncode == 0
    before = sp.route_file.read_bytes()
    with h.drip_server(sp.green) as conns, h.drip_server(sp.blue):
        took, r = _timed(sp, "serve", "probe", "--url", f"http://127.0.0.1:{sp.green}", "--model", "m",
                         "--timeout", "3")
        assert r.returncode == EXIT_FAILED, r.stderr  # type: ignore[attr-defined]
        assert "no response within 3.0s" in r.stdout  # type: ignore[attr-defined]
        assert took < 3 + SLACK, took

        took, r = _timed(sp, "serve", "probe", "--slot", "green", "--timeout", "3")
        assert r.returncode == EXIT_FAILED and took < 3 + SLACK, took  # type: ignore[attr-defined]

        took, r = _timed(sp, "route", "set", "green", "--timeout", "5")
        assert r.returncode == EXIT_FAILED and took < 5 + SLACK, took  # type: ignore[attr-defined]
        assert "route unchanged" in r.stderr  # type: ignore[attr-defined]
        assert sp.route_file.read_bytes() == before

        took, r = _timed(sp, "serve", "status", "--timeout", "3", "--json")
        assert took < 3 + SLACK, took
        assert conns  # the server was really asked


INJECTED = "\nLD_PRELOAD=/tmp/evil.so"


def _one_line(r: object) -> str:
    err = r.stderr  # type: ignore[attr-defined]
    lines = [x for x in err.splitlines() if x.startswith("builder: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--model", "querylake-llm" + INJECTED, "--model contains a line break"),
    ("--model", "querylake-llm\u2028LD_PRELOAD=/tmp/evil.so", "--model contains a line break"),
    ("--model", 'm"; touch /tmp/x; "', "--model contains '\"'"),
    ("--url", "http://127.0.0.1:8000/v1" + INJECTED, "--url: the URL contains a line break"),
    ("--url", "http://127.0.0.1:8000/v1\x1b]0;T\x07", "--url: the URL contains a control character"),
    ("--url", "file:///etc/passwd", "--url: only http:// and https:// URLs are supported"),
    ("--url", "http://user:pw@127.0.0.1:8000/v1", "--url: the URL carries credentials"),
    ("--url", "http://127.0.0.1:8000/$(id)/v1", "--url: the URL contains '$'"),
])
def test_route_init_refuses_values_that_would_not_stay_one_line(sp: h.ServeProject, option: str, value: str,
                                                                 why: str) -> None:
    """Before the fix a newline in --model or --url wrote an extra LD_PRELOAD line into the file
    QueryLake reads (exit 0)."""
    args = {"--url": sp.url(sp.blue), "--model": "querylake-llm", option: value}
    r = sp.run("route", "init", "--url", args["--url"], "--model", args["--model"])
    assert r.returncode == EXIT_USAGE
    assert why in _one_line(r)
    assert not sp.route_file.exists() and not sp.route_file.with_name("llm.env.journal").exists()


@pytest.mark.parametrize(("field", "value"), [
    ("url", "file:///etc/passwd"),
    ("url", "http://127.0.0.1:8000/v1" + INJECTED),
    ("model", "querylake-llm" + INJECTED),
    ("runtime", "matrix-a" + INJECTED),
])
def test_rollback_force_never_writes_a_hand_edited_journal_entry(sp: h.ServeProject, field: str,
                                                                 value: str) -> None:
    """`route rollback --force` skips the probe, so before the fix it wrote whatever the journal
    entry said, including what `route init` refuses."""
    assert sp.run("route", "init", "--url", sp.url(sp.blue), "--model", "querylake-llm").returncode == 0
    assert sp.run("route", "set", "green", "--force").returncode == 0
    journal = sp.route_file.with_name("llm.env.journal")
    entries = [json.loads(x) for x in journal.read_text().splitlines()]
    entries[0]["to"][field] = value  # the entry rollback returns to
    journal.write_text("".join(json.dumps(e) + "\n" for e in entries))
    before = sp.route_file.read_bytes()
    r = sp.run("route", "rollback", "--force")
    assert r.returncode == EXIT_USAGE
    line = _one_line(r)
    assert f"llm.env.journal: entry '{entries[0]['id']}': {field}: " in line and "not writing it" in line
    assert sp.route_file.read_bytes() == before and b"LD_PRELOAD" not in sp.route_file.read_bytes()


@pytest.mark.parametrize(("key", "toml_value", "why"), [
    ("served-model-name", '"querylake-llm\\nLD_PRELOAD=/tmp/evil.so"', "served-model-name: contains a control"),
    ("host", '"127.0.0.1\\nLD_PRELOAD=/tmp/evil.so"', "host: contains a control character"),
    ("host", '"127.0.0.1/x"', "host: is not a hostname or an IP address"),
    ("served-model-name", '"a b"', "served-model-name: contains ' '"),
])
def test_the_service_spec_cannot_inject_the_route_file(sp: h.ServeProject, key: str, toml_value: str,
                                                       why: str) -> None:
    spec = sp.project / "envs" / "service.toml"
    text = spec.read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"{key} = "))
    spec.write_text(text.replace(line, f"{key} = {toml_value}"))
    for args in (("route", "set", "green", "--force"), ("serve", "unit", "--runtime", h.RUNTIME_ID, "--slot", "green")):
        r = sp.run(*args)
        assert r.returncode == EXIT_USAGE, r.stderr
        assert why in r.stderr, r.stderr
    assert not sp.route_file.exists()


def test_a_copied_project_cannot_stop_the_originals_server(sp: h.ServeProject, tmp_path: Path) -> None:
    """Before the fix `builder --project COPY serve stop --slot green`, in a copy of the project made
    with its serve-state/, stopped the original project's server (bypassing its route guard and
    journal).  The record names the state directory that wrote it, the server carries that identity:
    the copy finds nothing of its own to stop.  The original's stop reports the pids it signalled."""
    assert sp.run("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green").returncode == 0
    token, pids = h.token_pids(sp.project, "green")
    assert len(pids) == 3  # API server, resource tracker, engine core
    copy = tmp_path / "copy"
    shutil.copytree(sp.project, copy, symlinks=True)
    for args in (("serve", "stop", "--slot", "green"), ("serve", "stop", "--slot", "green", "--force"),
                 ("serve", "start", "--runtime", h.RUNTIME_ID, "--slot", "green")):
        shutil.copy2(sp.state / "slots" / "green.json", copy / "serve-state" / "slots" / "green.json")
        r = h.builder("--project", str(copy), *args, cwd=tmp_path, env=sp.env)
        assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == pids, (args, r.stderr)
    r = h.builder("--project", str(copy), "serve", "stop", "--slot", "green", cwd=tmp_path, env=sp.env)
    assert "not running" in r.stdout  # the start above failed on the busy port: nothing of the copy's runs
    shutil.copy2(sp.state / "slots" / "green.json", copy / "serve-state" / "slots" / "green.json")
    st = json.loads(h.builder("--project", str(copy), "serve", "status", "--json", "--timeout", "3", cwd=tmp_path,
                              env=sp.env).stdout)
    green = next(s for s in st["slots"] if s["slot"] == "green")
    assert (green["record"], green["alive"]) == ("foreign", False)
    r = h.builder("--project", str(copy), "serve", "stop", "--slot", "green", cwd=tmp_path, env=sp.env)
    assert r.returncode == 0 and "written by another state directory" in r.stderr

    r = sp.run("serve", "stop", "--slot", "green", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["signalled"] == pids and res["pids"] == pids
    assert h.with_env(f"BUILDER_SERVE_TOKEN={token}") == []
