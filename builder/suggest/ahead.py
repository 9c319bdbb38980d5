"""What the checker will read of a candidate, read while uv resolves it.

uv takes a second or more per candidate, and then the checker reads the lock's GPU wheels:
vLLM's CUDA binaries, and the METADATA or binaries of the GPU packages beside it (torchaudio,
torchvision, xformers, flashinfer).  Those reads start before uv ends: vLLM's wheel, and the
wheels of the GPU packages that vLLM's METADATA pins exactly (``torchaudio==2.10.0``), taken
from their index pages for the target as the checker will take them from the lock, and torch's
wheel when the search took its facts from builder's shipped data instead of reading it.

Everything read is kept by the wheel's sha256 (the checker's own cache), so a guess the lock
does not confirm costs only its requests, and the checker reads, and reports, whatever it
still needs itself: an error here is left to it.  An interrupt or an error of the search
cancels every read at once; when uv is done, reads not yet started are dropped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from builder.check import knowledge as cuda
from builder.check import toolkit
from builder.check.fetchplan import FetchStats, NeedBinary
from builder.check.identity import exact, is_platform, needs_binary, pins
from builder.check.model import WheelFacts, WheelRef
from builder.check.pipeline import combined
from builder.suggest import index, releases

if TYPE_CHECKING:
    from builder import _http

Pick = Callable[[releases.Release, str], releases.IndexFile | None]


def pinned(vllm: Mapping[str, WheelFacts], *, envs: Mapping[str, dict[str, str]], k: cuda.Knowledge,
           skip: Sequence[str] = ("torch", "vllm")) -> dict[str, dict[str, str]]:
    """Per Python, the GPU packages (the checker's table) vLLM's METADATA pins exactly: name -> version."""
    out: dict[str, dict[str, str]] = {}
    for py, f in vllm.items():
        for name, req in pins(f.requires_dist, envs[py]).items():
            version = exact(req)
            if version is not None and name in k.gpu and name not in skip:
                out.setdefault(py, {})[name] = version
    return out


def _jobs(want: Mapping[str, Mapping[str, str]], *, pick: Pick, envs: Mapping[str, dict[str, str]],
          index_urls: Sequence[str], until: dt.datetime, cache: Path, k: cuda.Knowledge,
          tk: toolkit.ToolkitKnowledge, cancel: _http.Cancel) -> list[tuple[WheelRef, NeedBinary]]:
    """The wheel reads the checker will make for ``want``, as :func:`builder.check.pipeline.wheel_jobs` makes them."""
    jobs: list[tuple[WheelRef, NeedBinary]] = []
    for name in sorted({n for per in want.values() for n in per}):
        files = [f for u in index_urls
                 for f in index.read_page(u, name, cache=cache, until=until, offline=False, cancel=cancel).files
                 if releases.visible(f, until)]
        rels = releases.group(files, name)
        for py, per in want.items():
            rel = next((r for r in rels if name in per and r.key == Version(per[name])), None)
            w = pick(rel, py) if rel is not None else None
            if rel is not None and w is not None:
                ref = index.ref(w, name, rel.version)
                jobs.append((ref, needs_binary(k, tk, name, env=envs[py]) if is_platform(ref) else False))
    return combined(jobs)


@contextlib.contextmanager
def reading(vllm_refs: Sequence[WheelRef], vllm: Mapping[str, WheelFacts], *, pick: Pick,
            envs: Mapping[str, dict[str, str]], index_urls: Sequence[str], until: dt.datetime, cache: Path,
            stats: FetchStats, k: cuda.Knowledge, tk: toolkit.ToolkitKnowledge, workers: int = 8,
            torch: Mapping[str, WheelRef] | None = None) -> Iterator[None]:
    """Within the block (uv resolving), read into the wheel cache what the checker will ask of
    the candidate: ``vllm_refs`` with their binaries, the wheels of what ``vllm`` (its
    METADATA per Python) pins exactly among the checker's GPU packages, and ``torch``'s wheel
    per Python where the search knew its facts from shipped data (so never read it)."""
    from builder import _http
    from builder.check import wheels

    cancel = _http.Cancel()
    wc = wheels.WheelCache(cache)
    pool = ThreadPoolExecutor(max_workers=len(vllm_refs) + workers)

    def read(ref: WheelRef, need: NeedBinary) -> None:
        wheels.read_wheel(ref, want_binary=need, cache=wc, stats=stats, cancel=cancel)

    def guess() -> None:
        want = pinned(vllm, envs=envs, k=k)
        for ref, need in _jobs(want, pick=pick, envs=envs, index_urls=index_urls, until=until, cache=cache, k=k,
                               tk=tk, cancel=cancel):
            try:
                pool.submit(read, ref, need)
            except RuntimeError:  # the block ended: the checker reads the rest itself
                return

    for ref in vllm_refs:
        pool.submit(read, ref, True)
    for py, ref in (torch or {}).items():
        pool.submit(read, ref, needs_binary(k, tk, "torch", env=envs[py]))
    pool.submit(guess)
    try:
        yield
    except BaseException:
        cancel.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # errors are the checker's to meet and report
