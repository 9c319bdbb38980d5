"""GPU memory as nvidia-smi reports it: free memory before a start, memory held by a server's processes.

Both go through the one subprocess wrapper (the host probe's allowed read-only
``nvidia-smi --query-*`` commands), bounded.  No nvidia-smi on the host, a
failing one or one that does not answer in time is said so: ``None``
(unknown), never a number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from builder import _proc
from builder.errors import NotReady, Unavailable
from builder.serve.spec import Service, Slot

#: vLLM's default --gpu-memory-utilization.
DEFAULT_UTILIZATION = 0.9
SMI_TIMEOUT = 20.0
APPS = ("pid", "used_memory")


@dataclass(frozen=True)
class GpuMemory:
    index: str
    uuid: str
    name: str
    total_mib: int | None  # None: nvidia-smi says [N/A] (e.g. unified-memory GB10)
    free_mib: int | None


def gpu_memory() -> list[GpuMemory] | None:
    """Free and total memory per GPU from nvidia-smi; None when there is no nvidia-smi."""
    from builder.driver import parse as hostparse
    from builder.driver import probe as host

    fields = ["index", "uuid", "name", "memory.total", "memory.free"]
    rec = host.run_argv("nvidia-smi-memory", ("nvidia-smi", f"--query-gpu={','.join(fields)}",
                                              "--format=csv,noheader,nounits"),
                        SMI_TIMEOUT, env=_proc.clean_env(extra={"LC_ALL": "C"}))
    if rec.exit == "missing":
        return None
    if rec.exit != 0 or rec.timed_out:
        lines = (rec.stderr or rec.stdout).strip().splitlines()
        why = f"timed out after {SMI_TIMEOUT:g}s" if rec.timed_out else (lines[-1] if lines else f"exit {rec.exit}")
        raise Unavailable(f"cannot read GPU memory with nvidia-smi: {why}",
                          "fix nvidia-smi, or pass --skip-gpu-check to start without the check")
    try:
        rows = hostparse.parse_query_csv(rec.stdout, fields)
        return [GpuMemory(str(r["index"]), str(r["uuid"]), str(r["name"]), hostparse.mib(r["memory.total"]),
                          hostparse.mib(r["memory.free"])) for r in rows]
    except hostparse.ParseError as exc:
        raise Unavailable(f"cannot read GPU memory: {exc}", "pass --skip-gpu-check to start anyway") from None


def check_gpu_memory(svc: Service, slot: Slot, gpus: list[GpuMemory]) -> str:
    """Raise NotReady with the numbers when a target GPU lacks ``utilization x total`` free memory."""
    tp = slot.vllm.tensor_parallel_size or 1
    targets = slot.target_devices() or [str(i) for i in range(tp)]
    util = slot.vllm.gpu_memory_utilization or DEFAULT_UTILIZATION
    found: list[GpuMemory] = []
    for t in targets:
        # CUDA_VISIBLE_DEVICES takes indices, full UUIDs or unique UUID prefixes ("GPU-8932f937").
        g = next((g for g in gpus if t == g.index or (t.startswith(("GPU-", "MIG-")) and g.uuid.startswith(t))),
                 None)
        if g is None:
            raise NotReady(f"slot {slot.name} wants GPU {t} but nvidia-smi shows "
                           f"{', '.join(g.index for g in gpus) or 'no GPU'}",
                           f"fix CUDA_VISIBLE_DEVICES in [slots.{slot.name}.env] of {svc.path}")
        found.append(g)
    blind = [g.index for g in found if not g.total_mib or g.free_mib is None]
    if blind:
        return f"GPU {', '.join(blind)}: nvidia-smi reports no memory figures ([N/A]); free memory not checked"
    mem = [(g, g.free_mib or 0, g.total_mib or 1) for g in found]
    short = [(g, free, total) for g, free, total in mem if free < util * total]
    summary = "; ".join(f"GPU {g.index}: {free} of {total} MiB free" for g, free, total in mem)
    if not short:
        return summary
    fits = math.floor(min(free / total for _g, free, total in mem) * 100) / 100
    detail = "; ".join(f"GPU {g.index} ({g.name}) has {free} MiB free of {total} MiB, "
                       f"needs {util:g} x {total} = {math.ceil(util * total)} MiB" for g, free, total in short)
    raise NotReady(
        f"slot {slot.name} would not fit: {detail}; vLLM would fail minutes into loading (\"Free memory on "
        "device ... is less than desired GPU memory utilization\")",
        f"options: another GPU (CUDA_VISIBLE_DEVICES in [slots.{slot.name}.env]); a lower "
        f"gpu-memory-utilization (at most {fits:.2f} fits now, if the model and its KV cache fit in it); "
        "or a planned stop of the old slot in the window (builder serve stop --slot OTHER; production's "
        "server is stopped by the operator)")


def used_by_pid(*, timeout: float = SMI_TIMEOUT) -> dict[int, int | None] | None:
    """MiB of GPU memory per process using a GPU (``nvidia-smi --query-compute-apps``; a
    process on several GPUs is summed; None for ``[N/A]``), or None (unknown): no nvidia-smi,
    it failed, did not answer within ``timeout``, or printed what builder cannot read."""
    from builder.driver import parse as hostparse
    from builder.driver import probe as host

    rec = host.run_argv("nvidia-smi-apps", ("nvidia-smi", f"--query-compute-apps={','.join(APPS)}",
                                            "--format=csv,noheader,nounits"),
                        max(timeout, 0.1), env=_proc.clean_env(extra={"LC_ALL": "C"}))
    if rec.exit != 0 or rec.timed_out or rec.capped:
        return None
    out: dict[int, int | None] = {}
    try:
        for r in hostparse.parse_query_csv(rec.stdout, list(APPS)):
            pid, mib = int(str(r["pid"])), hostparse.mib(r["used_memory"])
            before = out.get(pid, 0)
            out[pid] = None if mib is None or before is None else before + mib
    except (hostparse.ParseError, ValueError):
        return None
    return out


def held(pids: Iterable[int], usage: Mapping[int, int | None] | None) -> int | None:
    """MiB of GPU memory ``pids`` hold by ``usage`` (:func:`used_by_pid`): 0 when nvidia-smi
    lists none of them; None when it is unknown."""
    if usage is None:
        return None
    got = [usage[p] for p in pids if p in usage]
    if any(m is None for m in got):
        return None
    return sum(m for m in got if m is not None)
