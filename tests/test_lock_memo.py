"""builder.memo: a warm read of a lock gives exactly the model a full validation gives, the
model always comes from the lock's bytes (the cache keeps packaging's verdict only, so an edited
entry changes nothing), and nothing but the same bytes, parser and packaging ever hits it (judged
on the committed locks: real uv output, 160+ packages each); the same for builder's parsed data
files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import packaging
import pytest

from builder import data as datafiles
from builder import memo as memo_mod
from builder import pylock
from builder.errors import LockFileError
from builder.files import tomlread

ROOT = Path(__file__).resolve().parent.parent
LOCKS = sorted((ROOT / "locks").glob("matrix-*/pylock.py3*.toml"))


def entries(memo: Path) -> list[Path]:
    return sorted((memo / "locks").glob("*.json")) if (memo / "locks").is_dir() else []


@pytest.mark.parametrize("path", LOCKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_memo_hit_is_the_validated_model(path: Path, tmp_path: Path) -> None:
    full = pylock.read(path)
    first = memo_mod.read_lock(path, tmp_path)  # a miss: validated, then kept
    assert len(entries(tmp_path)) == 1
    second = memo_mod.read_lock(path, tmp_path)  # a hit
    assert first == full and second == full
    assert second.packages == full.packages and second.content_hash == full.content_hash
    assert second.stamp == full.stamp and second.text == full.text
    env, tags = pylock.target_env("3.12", "x86_64"), pylock.target_tags("3.12", "x86_64", "2.35")
    assert [(p.name, p.pick_wheel(tags)) for p in second.applicable(env)] == \
        [(p.name, p.pick_wheel(tags)) for p in full.applicable(env)]


def test_a_warm_read_does_not_validate_again(tmp_path: Path) -> None:
    lock = LOCKS[0]
    code = ("import sys; from pathlib import Path; from builder import memo\n"
            f"memo.read_lock(Path({str(lock)!r}), Path({str(tmp_path)!r}))\n"
            "print(sorted(m for m in ('packaging.pylock', 'packaging.markers') if m in sys.modules))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                           check=True).stdout.strip() for _ in range(2)]
    assert runs[0] == "['packaging.markers', 'packaging.pylock']"  # the cold read validated
    assert runs[1] == "[]"


def test_a_model_this_process_made_is_taken_renamed_and_its_verdict_kept(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """uv's output is parsed (and validated) as it arrives (builder.lock.uv); the search's lock
    model is that parse, named for the search, not a second one; the verdict is kept all the same."""
    raw = LOCKS[0].read_bytes()
    made = pylock.parse(raw, "uv's output")
    calls = []
    real = pylock.parse
    monkeypatch.setattr(pylock, "parse", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    got = memo_mod.lock(raw, "suggest: vllm 0.19.1 py3.12", tmp_path, parsed=made)
    assert calls == [] and got.where == "suggest: vllm 0.19.1 py3.12" and got.packages == made.packages
    assert len(entries(tmp_path)) == 1  # the verdict on these bytes, kept
    again = memo_mod.lock(raw, "later", tmp_path)
    assert calls == [{"validated": True}] and again == replace(made, where="later")
    other = pylock.parse(LOCKS[1].read_bytes(), "another lock")  # not these bytes' model: not taken
    assert memo_mod.lock(raw, "x", tmp_path, parsed=other).sha256 == made.sha256


def test_one_changed_byte_misses(tmp_path: Path) -> None:
    text = LOCKS[0].read_text()
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(text)
    b.write_text(text.replace("size = ", "size = 1", 1))  # a wheel's size: still a valid lock
    memo = tmp_path / "memo"
    ma, mb = memo_mod.read_lock(a, memo), memo_mod.read_lock(b, memo)
    assert len(entries(memo)) == 2
    assert ma.content_hash != mb.content_hash and ma.packages != mb.packages
    assert memo_mod.read_lock(b, memo) == pylock.read(b)


def test_an_invalid_lock_is_never_kept(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(LOCKS[0].read_text().replace("[[packages]]", "[[packages]]\nname = 3", 1))
    memo = tmp_path / "memo"
    for _ in range(2):
        with pytest.raises(LockFileError, match="not"):
            memo_mod.read_lock(bad, memo)
    assert entries(memo) == []


@pytest.mark.parametrize("damage", ["truncated", "other-sha", "wrong-type", "not-json", "directory"])
def test_a_damaged_entry_is_ignored_and_rewritten(damage: str, tmp_path: Path) -> None:
    lock = LOCKS[0]
    full = pylock.read(lock)
    memo_mod.read_lock(lock, tmp_path)
    [entry] = entries(tmp_path)
    raw = entry.read_text()
    d = json.loads(raw)
    if damage == "truncated":
        entry.write_text(raw[: len(raw) // 2])
    elif damage == "other-sha":
        entry.write_text(json.dumps({**d, "value": {**d["value"], "sha256": "0" * 64}}))
    elif damage == "wrong-type":
        d["value"]["valid"] = "yes"
        entry.write_text(json.dumps(d))
    elif damage == "not-json":
        entry.write_bytes(b"\xff\xfe")
    else:
        entry.unlink()
        entry.mkdir()
    assert memo_mod.read_lock(lock, tmp_path) == full
    if damage != "directory":
        assert json.loads(entry.read_text()) == json.loads(raw)  # rewritten whole
        assert memo_mod.read_lock(lock, tmp_path) == full


def test_an_entry_edited_to_hold_other_packages_changes_nothing(tmp_path: Path) -> None:
    """The cache keeps packaging's verdict, never the model: an entry given packages (another
    lock's, or one more), another content hash, or copied from another lock's key, is either
    not believed or believed only as a verdict; the model is the lock's bytes' either way."""
    a = LOCKS[0]
    b = next(p for p in LOCKS if p.read_bytes() != a.read_bytes())
    memo_mod.read_lock(a, tmp_path)
    memo_mod.read_lock(b, tmp_path)
    ea, eb = entries(tmp_path)
    d = json.loads(ea.read_text())
    assert d["value"] == {"format": pylock.MEMO_FORMAT, "sha256": pylock.read(a).sha256, "valid": True}
    forged = {**d["value"], "packages": [["evil", "1.0", None, None, None, []]], "content-hash": "sha256:0"}
    ea.write_text(json.dumps({**d, "value": forged}))
    assert memo_mod.read_lock(a, tmp_path) == pylock.read(a)  # believed as a verdict, read from the bytes
    ea.write_text(eb.read_text())  # another lock's entry under this key: not believed
    assert memo_mod.read_lock(a, tmp_path) == pylock.read(a)
    assert memo_mod.read_lock(b, tmp_path) == pylock.read(b)


def test_a_forged_verdict_lets_no_unreadable_lock_through(tmp_path: Path) -> None:
    """A verdict forged for bytes packaging refuses spares only the validation: what builder
    cannot read itself is still one LockFileError, and the model is still the bytes'."""
    bad = tmp_path / "bad.toml"
    text = LOCKS[0].read_text()
    at = text.index("[[packages]]")
    bad.write_text(text[:at] + re.sub(r'name = "[^"]*"', "name = 3", text[at:], count=1))  # valid TOML
    with pytest.raises(LockFileError, match="not a valid PEP 751 lock"):
        pylock.read(bad)  # packaging refuses it
    raw = bad.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    key = pylock.memo_key(sha)
    assert key is not None
    memo_mod.keep_json(tmp_path, "locks", key, value={"format": pylock.MEMO_FORMAT, "sha256": sha, "valid": True})
    with pytest.raises(LockFileError, match="not a valid PEP 751 lock: AttributeError"):
        memo_mod.read_lock(bad, tmp_path)


def test_another_packaging_or_parser_is_another_key(monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "ab" * 32
    monkeypatch.setattr(pylock, "_code_id", None)
    here = pylock.memo_key(sha)
    monkeypatch.setattr(pylock, "_code_id", None)
    monkeypatch.setattr(packaging, "__version__", packaging.__version__ + ".post1")
    other = pylock.memo_key(sha)
    assert here is not None and other is not None and here != other
    monkeypatch.setattr(pylock, "_code_id", None)
    monkeypatch.setattr(packaging, "__version__", packaging.__version__.removesuffix(".post1"))
    monkeypatch.setattr(pylock, "MEMO_FORMAT", pylock.MEMO_FORMAT + 1)
    assert pylock.memo_key(sha) not in (here, other)
    monkeypatch.setattr(pylock, "_code_id", None)
    monkeypatch.setattr(pylock, "MEMO_FORMAT", pylock.MEMO_FORMAT - 1)
    assert pylock.memo_key(sha) == here and pylock.memo_key("cd" * 32) != here


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_an_unwritable_cache_only_costs_a_validation(tmp_path: Path) -> None:
    memo = tmp_path / "memo"
    memo.mkdir()
    memo.chmod(0o500)
    try:
        assert memo_mod.read_lock(LOCKS[0], memo) == pylock.read(LOCKS[0])
    finally:
        memo.chmod(0o700)
    assert entries(memo) == []


def test_a_file_where_the_cache_should_be_only_costs_a_validation(tmp_path: Path) -> None:
    memo = tmp_path / "memo"
    memo.write_text("not a directory")
    assert memo_mod.read_lock(LOCKS[0], memo) == pylock.read(LOCKS[0])
    assert memo.read_text() == "not a directory"


# --------------------------------------------------------------------------- data files


DATA_FILES = sorted(datafiles.HERE.glob("*.toml"))


@pytest.fixture
def data_memo(tmp_path: Path):
    memo_mod.use_for_data(tmp_path)
    try:
        yield tmp_path
    finally:
        memo_mod.use_for_data(None)


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.name)
def test_a_kept_data_file_reads_back_as_parsed(path: Path, data_memo: Path) -> None:
    import tomllib

    want = tomllib.loads(path.read_text())
    assert tomlread.load_data(path) == want  # a miss: parsed, then kept
    [entry] = sorted((data_memo / "toml").glob("*.json"))
    assert tomlread.load_data(path) == want  # a hit
    entry.write_text(entry.read_text()[:100])  # torn: ignored, parsed, rewritten
    assert tomlread.load_data(path) == want
    assert json.loads(entry.read_text())["value"] == want


def test_a_data_file_json_cannot_hold_is_parsed_every_time(data_memo: Path, tmp_path: Path) -> None:
    f = tmp_path / "dated.toml"
    f.write_text("when = 2026-11-30\nx = inf\n")
    for _ in range(2):
        assert str(tomlread.load_data(f)["when"]) == "2026-11-30"
    assert not (data_memo / "toml").exists()


def test_a_changed_data_file_misses(data_memo: Path, tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text("a = 1\n")
    assert tomlread.load_data(f) == {"a": 1}
    f.write_text("a = 2\n")
    assert tomlread.load_data(f) == {"a": 2}
    assert len(list((data_memo / "toml").glob("*.json"))) == 2


def test_without_a_cache_nothing_is_kept(tmp_path: Path) -> None:
    assert tomlread.data_hook is None
    f = tmp_path / "d.toml"
    f.write_text("a = 1\n")
    assert tomlread.load_data(f) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.toml"]


def test_the_target_environment_has_every_marker_variable_of_packaging() -> None:
    import platform

    from packaging.markers import Marker, default_environment

    env = pylock.target_env("3.12", "aarch64")
    here = default_environment()
    assert set(env) == set(here)
    assert env["python_version"] == "3.12" and env["implementation_version"] == "3.12.0"
    assert env["platform_machine"] == "aarch64" and env["sys_platform"] == "linux"
    assert env["platform_release"] == platform.release() and env["platform_version"] == platform.version()
    assert Marker("python_full_version >= '3.12' and implementation_name == 'cpython'").evaluate(env)
