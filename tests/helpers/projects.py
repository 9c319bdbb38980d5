"""Test projects on disk, for every test world: ``envs/host.toml``, one
``envs/matrix-<id>.toml`` per matrix and an empty ``locks/``.

One template for the matrices of all worlds (conftest's, runtimes', the check
world's and the refresh world's), so a change of the matrix format is one edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
#: The operator host of the repository (driver 550, 2x RTX 6000 Ada).
REPO_HOST = (ROOT / "envs" / "host.toml").read_text()
#: A fixed host for worlds whose results must not follow edits of envs/host.toml.
TEST_HOST = """\
name = "test-host"
os = "Ubuntu 22.04"
glibc = "2.35"
driver = "550.107.02"

[[gpus]]
name = "NVIDIA RTX 6000 Ada Generation"
compute-capability = "8.9"
count = 2

[protected]
conda-envs = ["QL_1"]
"""

LINUX = 'platform_system == "Linux" and platform_machine == "x86_64"'
#: torch 2.9.0's requirements in the tiny worlds: cudart and cuBLAS pins (Linux only), filelock.
TORCH_REQUIRES = [f"nvidia-cuda-runtime-cu12==12.8.90; {LINUX}", f"nvidia-cublas-cu12==12.8.4.1; {LINUX}",
                  "filelock"]

_MATRIX = """\
{comment}id = "{id}"
title = "{title}"
driver-floor = "{floor}"
cuda-track = "{track}"
pythons = {pythons}
platform = "x86_64-manylinux_2_35"
exclude-newer = {exclude_newer}

[torch]
version = "2.9.0"
cuda = "12.8"
{source}
[vllm]
version = "{vllm}"
cuda = "{vllm_cuda}"
{source}{packages}
[index]
url = "{index}"
"""


def matrix_toml(mid: str, index: str, *, title: str, floor: str = "570.26", track: str = "12.8",
                pythons: str = '["3.12"]', exclude_newer: str = '"2025-12-30"', vllm: str = "0.13.0",
                vllm_cuda: str = "12.9", packages: Mapping[str, str] | None = None, comment: str = "",
                source: str | None = None) -> str:
    """A matrix spec (torch 2.9.0 cu128 + vLLM ``vllm``) resolving from ``index``.

    ``pythons``, ``exclude_newer`` and the ``packages`` values are TOML as written;
    ``source`` adds ``source = "..."`` to [torch] and [vllm]; ``comment`` is the
    file's first line(s).
    """
    return _MATRIX.format(
        comment=comment, id=mid, title=title, floor=floor, track=track, pythons=pythons,
        exclude_newer=exclude_newer, vllm=vllm, vllm_cuda=vllm_cuda, index=index,
        source=f'source = "{source}"\n' if source else "",
        packages="\n[packages]\n" + "".join(f"{k} = {v}\n" for k, v in packages.items()) if packages else "")


def write_project(root: Path, matrices: Mapping[str, str], host: str = REPO_HOST) -> Path:
    """``root`` as a project: ``host`` as envs/host.toml, each ``{id: matrix text}``
    as envs/matrix-<id>.toml, an empty locks/."""
    envs = root / "envs"
    envs.mkdir(parents=True, exist_ok=True)
    (root / "locks").mkdir(exist_ok=True)
    (envs / "host.toml").write_text(host)
    for mid, text in matrices.items():
        (envs / f"matrix-{mid}.toml").write_text(text)
    return root
