"""A poisoned cache does not change what is installed (issue 20 item 1), through the real CLI.

builder keeps derived data in its cache directory (``$BUILDER_CACHE_DIR``, builder/memo.py).
An attacker (or an accident) that edits the entry kept for a lock, adding a package to
``value.packages`` and keeping ``value.sha256``, must not make ``build`` install that package
or give the runtime another address: the lock's content is read from the lock's bytes on every
read, and only packaging's verdict on those bytes is kept.  The poisoned package is a real,
hashed wheel on disk, so a build that believed the entry would install it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from builder import pylock
from tests.helpers import wheels
from tests.helpers.runtimes import PY312, World, builder


def _installed(runtime: Path) -> set[str]:
    site = next(runtime.glob("lib/python3.*/site-packages"))
    return {p.name.split("-")[0].lower().replace("_", "-") for p in site.glob("*.dist-info")}


def _poison(cache: Path, evil: Path) -> int:
    """Add the ``evil`` wheel as a package to every kept lock entry (whatever its format), keeping
    its sha256; return how many entries were poisoned."""
    sha = wheels.sha256_file(evil)
    row = ["evil", "1.0", None, None, None,
           [[evil.name, evil.as_uri(), None, evil.stat().st_size, {"sha256": sha}]]]
    n = 0
    for entry in sorted((cache / "locks").glob("*.json")):
        d = json.loads(entry.read_text())
        d["value"].setdefault("packages", []).append(row)
        entry.write_text(json.dumps(d))
        n += 1
    return n


def test_a_poisoned_lock_entry_changes_nothing_build_installs(w: World, tmp_path: Path) -> None:
    cache, root = tmp_path / "builder-cache", tmp_path / "rt"
    env = {**os.environ, "BUILDER_CACHE_DIR": str(cache)}
    evil = wheels.make_wheel(tmp_path / "evil", "evil", "1.0", tag="py3-none-any")
    r = w.build("--json", root=root, env=env)  # warm: the lock's entry is kept now
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)[0]
    runtime = Path(first["path"])
    assert "evil" not in _installed(runtime)
    assert _poison(cache, evil) >= 1

    assert builder("lock", "--check", "--matrix", "t", cwd=w.project, env=env).returncode == 0  # the lock is fine
    r = builder("lock", "--verify", "--matrix", "t", "--python", PY312, cwd=w.project, env=env, timeout=300)
    assert r.returncode == 0, r.stderr  # and uv's resolution: its bytes were never the problem
    r = w.build("--force", "--json", root=root, env=env)
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)[0]
    assert again["name"] == first["name"]  # the address comes from the lock's bytes
    lock = pylock.read(w.project / "locks" / "matrix-t" / "pylock.py312.toml")
    assert again["manifest"]["lock"]["content"] == lock.content_hash
    assert _installed(runtime) == {p.name for p in lock.packages}  # exactly the lock: no evil
    r = builder("check", "--matrix", "t", "--json", cwd=w.project, env=env)
    assert "evil" not in r.stdout, r.stdout


def test_an_edited_wheel_fact_may_change_a_verdict_never_what_is_installed(w: World, tmp_path: Path) -> None:
    """What docs/reliability.md (1d) says of cached wheel facts: believed by the wheel's sha256, so
    an edited one changes what `check` predicts; the build then installs the lock's wheels all the
    same (uv checks their hashes), and its smoke test, comparing the installed binaries with that
    prediction, fails instead of passing: nothing is switched in."""
    cache, root = tmp_path / "builder-cache", tmp_path / "rt"
    env = {**os.environ, "BUILDER_CACHE_DIR": str(cache)}
    r = w.build("--json", root=root, env=env)
    assert r.returncode == 0, r.stderr
    before = builder("check", "--matrix", "t", "--json", cwd=w.project, env=env)
    facts = [p for p in (cache / "wheels").glob("*.json") if json.loads(p.read_text())["name"] == "vllm"
             and json.loads(p.read_text())["version"] == "0.13.0"]
    assert len(facts) == 1
    d = json.loads(facts[0].read_text())
    assert "libcudart.so.12" in d["binary"]["needed"]
    d["binary"]["needed"] = ["libcudart.so.13" if n == "libcudart.so.12" else n for n in d["binary"]["needed"]]
    facts[0].write_text(json.dumps(d))
    after = builder("check", "--matrix", "t", "--json", cwd=w.project, env=env)
    assert "libcudart.so.13" in after.stdout and after.stdout != before.stdout  # the verdict's input changed
    built = root / json.loads(r.stdout)[0]["name"] / "runtime.json"
    manifest = built.read_bytes()
    r = w.build("--force", root=root, env=env)
    assert r.returncode == 1 and "vllm cudart: libcudart.so.12, expected libcudart.so.13" in r.stderr, r.stderr
    assert built.read_bytes() == manifest  # nothing switched in
