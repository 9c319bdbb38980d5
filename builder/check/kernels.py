"""GPU code of a package's main extension (``vllm/_C.abi3.so``), for ``gpu-arch``.

Two sources, both read by builder's own fatbin reader from the CUDA fatbin entry headers
(never from ``sm_NN`` strings): the shipped table ``builder/data/kernels.toml`` (a row
applies only to the wheel whose sha256 it names; a default ``check`` reads nothing more),
or ``check --deep``, which streams the member by HTTP ranges
(:mod:`builder.check.deepread`, bytes counted, result cached by wheel sha256).
The evidence says which.
"""

from __future__ import annotations

import functools
from pathlib import Path

from builder import data as datafiles
from builder.check import kerneldata
from builder.check.fetchplan import FetchStats
from builder.check.model import Facts, KernelEvidence, Pkg
from builder.errors import Unavailable


@functools.cache
def rows() -> tuple[kerneldata.KernelRow, ...]:
    """The shipped rows, loaded once per process (a search loads them ahead, while it waits)."""
    return kerneldata.load()


def _members(p: Pkg, candidates: tuple[str, ...]) -> tuple[str, ...]:
    """The candidates the wheel has (from the extension list its binary scan saw); all of
    them, in order, when that list is not known."""
    have = {n for n, _size in p.facts.ext_sizes} if p.facts else set()
    return tuple(m for m in candidates if m in have) if have else candidates


def shipped(p: Pkg, candidates: tuple[str, ...]) -> KernelEvidence | None:
    """The kernels.toml row for exactly this wheel (by sha256), if builder ships one."""
    sha = p.wheel.sha256 if p.wheel else None
    if not sha:
        return None
    for member in candidates:
        row = kerneldata.find(rows(), sha256=sha, member=member)
        if row is not None:
            return KernelEvidence(member, row.archs, row.ptx_isa, "shipped data",
                                  f"{datafiles.display(datafiles.KERNELS)}, read {row.date} by the {row.produced_by} "
                                  f"from {row.wheel} (sha256 {sha[:12]}...)", row.nvcc, row.nvcc_release)
    return None


def deep_evidence(p: Pkg, candidates: tuple[str, ...], *, cache_dir: Path, offline: bool,
                  stats: FetchStats) -> KernelEvidence | None:
    """Read the member itself (``check --deep``); raises Unavailable when it cannot."""
    if p.wheel is None or not p.wheel.sha256:
        return None
    from builder.check import deepread  # --deep only: a default check loads no fatbin reader

    members = _members(p, candidates)
    for i, member in enumerate(members):
        ref = deepread.MemberRef(filename=p.wheel.filename, sha256=p.wheel.sha256, member=member,
                                 url=p.wheel.url, size=p.wheel.size, path=p.wheel.path)
        try:
            res = deepread.deep_read(ref, cache=deepread.DeepCache(cache_dir), offline=offline)
        except Unavailable as exc:
            if f": no member {member}" in exc.message and i + 1 < len(members):
                continue  # the extension list was not known: try the next name
            raise
        where = f"{cache_dir}/kernels/{p.wheel.sha256}.json"
        if res.origin == "cache":
            return KernelEvidence(member, res.archs, res.ptx_isa, "deep read (cached)",
                                  f"from {where}: {res.bytes_transferred / 1e6:.1f} MB read on {res.read_at}",
                                  res.nvcc, res.nvcc_release)
        stats.add_deep(res.requests, res.bytes_transferred)
        return KernelEvidence(member, res.archs, res.ptx_isa, "deep read",
                              f"{res.bytes_transferred / 1e6:.1f} MB in {res.requests} range requests, "
                              f"{res.seconds:.0f} s ({res.member_size / 1e6:.0f} MB member); cached as {where}",
                              res.nvcc, res.nvcc_release)
    return None


def attach_kernels(f: Facts, *, cache_dir: Path, deep: bool, offline: bool,
                   stats: FetchStats) -> list[tuple[Pkg, KernelEvidence]]:
    """Kernel evidence for every package with a main extension in builder/data/cuda.toml."""
    out: list[tuple[Pkg, KernelEvidence]] = []
    for name, candidates in sorted(f.k.main_extensions.items()):
        p = f.packages.get(name)
        if p is None or p.identity is None or p.wheel is None:
            continue
        ev = (deep_evidence(p, candidates, cache_dir=cache_dir, offline=offline, stats=stats) if deep
              else shipped(p, candidates))
        if ev is not None:
            out.append((p, ev))
    return out
