"""A candidate as a matrix, and the keys its resolution and verdicts are kept under (pure).

A candidate *is* a matrix spec: ``vllm==X`` and the ``torch==Y`` it pins, the target platform,
Pythons, ``exclude-newer`` and indexes.  The search resolves it with the same uv command
``builder lock`` builds from a spec (:func:`builder.lock.uv.compile_argv`), so the matrix
``--write`` records locks to exactly what was judged.

Keys hash every input that can change a result: uv's version and the whole resolution input
(requirements, Python, platform, date, indexes, overrides, constraints) plus the sha256 of the
vLLM and torch wheels the search read (an index that re-uploads a file under the same name
changes the key); a verdict adds the checker's code and data, the lock's bytes, the host facts
and the policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from builder.spec import PYPI_SIMPLE, Component, Matrix

KEY_FORMAT = 1
#: The id and driver floor of a candidate before it is written (the floor is the policy's,
#: set once the checker has the lock's floors: :func:`builder.suggest.policy.declared_floor`).
CANDIDATE_ID = "suggest"
PLACEHOLDER_FLOOR = "525.60.13"


def candidate_matrix(*, vllm: str, torch: str, torch_cuda: str, vllm_cuda: str | None = None,
                     pythons: Sequence[str], platform: str, exclude_newer: str, index_url: str = PYPI_SIMPLE,
                     extra_index_urls: Sequence[str] = (), driver_floor: str = PLACEHOLDER_FLOOR,
                     mid: str = CANDIDATE_ID, title: str = "") -> Matrix:
    """The matrix of one candidate (PyPI-style pins: ``torch==Y``, ``vllm==X``)."""
    return Matrix(id=mid, title=title or f"vLLM {vllm} + torch {torch}", driver_floor=driver_floor,
                  cuda_track=torch_cuda, pythons=tuple(pythons), platform=platform, exclude_newer=exclude_newer,
                  torch=Component(name="torch", version=torch, cuda=torch_cuda),
                  vllm=Component(name="vllm", version=vllm, cuda=vllm_cuda or torch_cuda),
                  index_url=index_url, extra_index_urls=tuple(extra_index_urls))


def _key(d: Mapping[str, Any]) -> str:
    return json.dumps({"format": KEY_FORMAT, **d}, sort_keys=True, separators=(",", ":"))


def resolution_inputs(m: Matrix, python: str) -> dict[str, Any]:
    """What uv's answer for ``m`` on ``python`` depends on (besides uv and the index content)."""
    return {"requirements": m.requirements(), "python": python, "platform": m.platform,
            "exclude_newer": m.exclude_newer, "index_url": m.index_url, "extra_index_urls": m.index_urls(),
            "find_links": list(m.find_links), "overrides": list(m.overrides), "constraints": list(m.constraints)}


def resolution_key(m: Matrix, python: str, *, uv_version: str, wheels: Mapping[str, str | None]) -> str:
    """The key of one resolution; ``wheels``: the sha256 of each wheel the search read (name -> sha)."""
    return _key({"kind": "resolution", "uv": uv_version, **resolution_inputs(m, python),
                 "wheels": dict(sorted(wheels.items()))})


def host_digest(*, driver: str | None, ccs: Sequence[str], unreadable: int, glibc: str | None,
                arch: str) -> dict[str, Any]:
    """The host facts a verdict depends on."""
    return {"driver": driver, "ccs": sorted(ccs), "unreadable_gpus": unreadable, "glibc": glibc, "arch": arch}


def verdict_key(*, checker: str, policy: str, locks: Mapping[str, str], matrix: Matrix,
                host: Mapping[str, Any], deep: bool) -> str:
    """The key of a candidate's judgements on one host: ``locks`` maps each Python to the
    sha256 of its lock bytes."""
    return _key({"kind": "verdict", "checker": checker, "policy": policy, "locks": dict(sorted(locks.items())),
                 "id": matrix.id, "platform": matrix.platform, "torch": matrix.torch.requirement(),
                 "vllm": matrix.vllm.requirement(), "host": dict(host), "deep": deep})


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
