"""The runtime manifest model: today's files load, every origin round-trips, bad ones name each problem."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from builder.errors import ManifestError
from builder.runtime import layout
from builder.runtime import manifest as manifests
from tests.helpers import manifests as fake

DATA = Path(__file__).parent / "data" / "manifests"
# Written by `builder build --matrix a --python 3.12` before manifest format 3 (a real build of
# the committed matrix-A lock; only the two machine paths were replaced by /srv and /home/operator).
FORMAT_2 = DATA / "format-2-matrix-a-py312.json"


def _real() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FORMAT_2.read_text())
    return data


def _adopted() -> dict[str, Any]:
    comp = {"version": "2.11.0", "__version__": "2.11.0+cu130", "cuda": "13.0",
            "cudart_soname": "libcudart.so.13", "toolkit": None}
    return {"format": 3, "name": "adopted-py312-0123456789ab", "origin": "adopted", "python": "3.12",
            "environment": {"python": "/opt/vllm/bin/python", "executable": "/usr/bin/python3.12",
                            "prefix": "/opt/vllm", "base_prefix": "/usr", "version": "3.12.3", "kind": "venv",
                            "packages": 180, "fingerprint": "sha256:" + "e" * 64, "torch": comp,
                            "vllm": {**comp, "version": "0.26.0", "__version__": "0.26.0", "cuda": None}},
            "adopted_at": "2026-12-07T10:00:00+00:00", "timings": {"smoke": 30.5, "total": 31.0},
            "smoke": {"python": "/srv/runtimes/adopted-py312-0123456789ab/bin/python", "gpu": True, "ok": True,
                      "seconds": 30.5, "expected_from": "the environment's own metadata (adopted: no lock)",
                      "steps": fake.SMOKE_OK}}


def test_a_real_format_2_manifest_loads_as_built_from_its_lock() -> None:
    m = manifests.from_mapping(_real(), str(FORMAT_2))
    assert (m.format, m.origin, m.matrix, m.python, m.base) == (2, "lock", "a", "3.12", "venv")
    assert m.lock is not None and m.lock.packages == 162 and m.lock.path == "locks/matrix-a/pylock.py312.toml"
    assert m.built_from(m.lock.content) and not m.built_from("sha256:" + "0" * 64) and not m.adopted
    assert m.interpreter is not None and m.interpreter.source == "pyenv" and len(m.interpreter.rejected) == 1
    assert m.smoke.problem() is None and m.smoke.skipped_gpu_steps() == 6 and m.created_at == _real()["built_at"]
    assert m.lock_sha256 == _real()["lock"]["sha256"]
    assert m.as_dict() == _real()  # a format-2 file renders as it was written, key for key


def test_a_format_2_runtime_directory_is_discovered(tmp_path: Path) -> None:
    d = tmp_path / _real()["name"]
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "python").write_text("")
    (d / manifests.FILE).write_bytes(FORMAT_2.read_bytes())
    (found,) = layout.discover(tmp_path, "a")
    assert found.manifest.format == 2 and found.manifest.origin == "lock"


@pytest.mark.parametrize("origin", ["lock", "adopted", "conda"])
def test_format_3_round_trips(origin: str, tmp_path: Path) -> None:
    if origin == "adopted":
        data = _adopted()
    else:
        data = {**_real(), "format": 3, "origin": "lock"}
        data = {k: data[k] for k in ("format", "name", "origin", *[k for k in _real() if k not in ("format", "name")])}
    if origin == "conda":  # the conda base records its conda lock instead of rejected candidates
        data["base"] = "conda"
        data["interpreter"] = {"version": "3.12.8", "source": "conda", "origin": "locks/matrix-a/conda-lock.py312.yml",
                               "reason": "from the conda lock", "conda_lock": "locks/matrix-a/conda-lock.py312.yml",
                               "packages": 31, "solver": "rattler 0.28.0"}
    m = manifests.from_mapping(data, "x")
    assert m.as_dict() == data
    manifests.write(tmp_path, m)
    assert manifests.load(tmp_path) == m and json.loads((tmp_path / manifests.FILE).read_text()) == data


def test_an_adopted_manifest_is_never_built_from_a_lock() -> None:
    m = manifests.from_mapping(_adopted(), "x")
    assert m.adopted and m.lock is None and m.lock_sha256 is None and m.matrix is None
    assert not m.built_from("sha256:" + "cd" * 32)
    assert m.environment is not None and m.environment.torch is not None
    assert m.environment.torch.cuda == "13.0" and m.environment.vllm is not None
    assert "no lock, no hash verification" in m.describe_origin()


def test_every_problem_is_named_with_its_path() -> None:
    bad = copy.deepcopy(_real())
    del bad["lock"]["sha256"]
    bad["smoke"]["steps"][2]["status"] = "ok"
    bad["smoke"]["gpu"] = "no"
    bad["timings"]["sync"] = "long"
    bad["interpreter"]["rejected"] = [["only one"]]
    bad["extra"] = 1
    with pytest.raises(ManifestError) as exc:
        manifests.from_mapping(bad, "rt/runtime.json")
    assert sorted(exc.value.problems) == sorted([
        "rt/runtime.json: extra: unknown key",
        "rt/runtime.json: lock.sha256: required key is missing",
        "rt/runtime.json: smoke.gpu: must be a boolean, got 'no'",
        "rt/runtime.json: smoke.steps[2].status: must be one of pass, fail, skipped, got 'ok'",
        "rt/runtime.json: timings.sync: must be a number, got 'long'",
        "rt/runtime.json: interpreter.rejected[0]: must be [candidate, reason], got ['only one']",
    ])
    assert exc.value.message.startswith("rt/runtime.json: 6 problem(s): ")


@pytest.mark.parametrize("change,words", [
    ({"format": 1}, "format 1 is not one this builder reads (2, 3); runtimes of format 1"),
    ({"format": 4}, "format 4 is not one this builder reads"),
    ({"format": "2"}, "format '2' is not"),
    ({"format": 3}, "origin: must be one of lock, adopted in format 3, got None"),
    ({"format": 2, "origin": "adopted"}, "origin: must be one of lock, adopted in format 2, got 'adopted'"),
    ({"format": 3, "origin": "borrowed"}, "got 'borrowed'"),
])
def test_other_formats_and_origins_are_refused(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ManifestError, match=words.replace("(", r"\(").replace(")", r"\)")):
        manifests.from_mapping({**_real(), **change}, "x")


def test_unreadable_files_are_not_runtimes(tmp_path: Path) -> None:
    assert manifests.read(tmp_path) is None
    (tmp_path / manifests.FILE).write_text("{" * 100_000)
    with pytest.raises(ManifestError, match="not JSON"):
        manifests.load(tmp_path)
    (tmp_path / manifests.FILE).write_text("[]")
    with pytest.raises(ManifestError, match="not a JSON object"):
        manifests.load(tmp_path)


def test_discovery_wants_the_manifest_to_agree_with_the_name(tmp_path: Path) -> None:
    """A manifest copied under another name, or an adopted manifest under a build's name (and the
    reverse), is not a runtime: a build never mistakes one for its own."""
    built_name, adopted_name = "matrix-a-py312-0123456789ab", "adopted-py312-0123456789ab"
    for name, data in ((built_name, _adopted() | {"name": built_name}),
                       (adopted_name, fake.built(adopted_name) | {"name": adopted_name}),
                       ("matrix-a-py312-aaaaaaaaaaaa", fake.built(built_name))):
        d = tmp_path / name
        (d / "bin").mkdir(parents=True)
        (d / "bin" / "python").write_text("")
        (d / manifests.FILE).write_text(json.dumps(data))
    assert layout.discover(tmp_path) == []
    assert layout.find(tmp_path, built_name) is None and layout.find(tmp_path, adopted_name) is None
