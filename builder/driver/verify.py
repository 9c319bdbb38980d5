"""Post-reboot verification of the driver step-up (pure decisions).

After the window's reboot the host must show: module and userspace versions
that agree, no version-mismatch state, a driver at or above the matrix floor,
every GPU of ``envs/host.toml`` with its compute capability, and, for each
runtime of the matrix under ``runtimes/``, a torch that sees every GPU.  The
verdict is ``verified`` only when all of that holds; a runtime that was not
found or not probed is ``unknown`` (never ``pass``) unless the operator skips
that check explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from builder.driver.facts import HostFacts
from builder.driver.preflight import (
    Check,
    Report,
    check_gpus,
    check_module,
    check_nvml,
    driver_target,
    host_summary,
    verdict,
)
from builder.report import Level
from builder.spec import Host, Matrix
from builder.versions import DriverVersion


def check_floor_met(f: HostFacts, matrix: Matrix) -> Check:
    drv = f.driver
    if drv is None:
        return Check("driver-floor", Level.UNKNOWN, f"driver version unknown; {matrix.name} needs >= "
                     f"{matrix.driver_floor}", "", f.raw.get("gpus", ""))
    if DriverVersion.parse(drv) >= DriverVersion.parse(matrix.driver_floor):
        return Check("driver-floor", Level.PASS,
                     f"driver {drv} meets {matrix.name}'s floor {matrix.driver_floor}")
    return Check("driver-floor", Level.FAIL, f"driver {drv} is below {matrix.name}'s floor {matrix.driver_floor}",
                 f"install {driver_target(matrix.driver_floor).package} (see `builder runbook --matrix "
                 f"{matrix.id}`) or roll back")


def check_torch(name: str, data: dict[str, Any], host: Host) -> Check:
    """One runtime's torch: CUDA available, every GPU visible with the right capability."""
    cid = f"torch:{name}"
    if "error" in data:
        err = str(data["error"])
        level = Level.UNKNOWN if "killed" in err or "not captured" in err else Level.FAIL
        return Check(cid, level, f"torch check failed: {err}",
                     f"run `{name}/bin/python -c 'import torch'` to see the error", str(data.get("raw", "")))
    if not data.get("available"):
        return Check(cid, Level.FAIL, f"torch {data.get('torch')} (CUDA {data.get('cuda')}): "
                     "torch.cuda.is_available() is False", "check the driver meets the runtime's CUDA; see "
                     "`builder check`")
    caps = sorted(str(d.get("capability")) for d in data.get("devices", []))
    want = sorted(g.compute_capability for g in host.gpus for _ in range(g.count))
    if data.get("count") != host.gpu_count or caps != want:
        return Check(cid, Level.FAIL, f"torch sees {data.get('count')} GPU(s) with capabilities {caps}; "
                     f"envs/host.toml has {host.gpu_count} with {want}",
                     "check CUDA_VISIBLE_DEVICES and `nvidia-smi`")
    return Check(cid, Level.PASS, f"torch {data.get('torch')} (CUDA {data.get('cuda')}) sees all "
                 f"{data.get('count')} GPU(s), capability {', '.join(sorted(set(caps)))}")


def evaluate(f: HostFacts, matrix: Matrix, host: Host, *, torch: Mapping[str, Mapping[str, Any]],
             skip_torch: bool = False, runtimes_found: int | None = None) -> Report:
    """Every post-reboot check for ``matrix``.

    ``torch`` holds the torch probe result of each of the matrix's runtimes, by
    runtime name (the caller selects them through the runtime layout).
    ``runtimes_found`` is how many runtimes of the matrix exist here (live
    runs); None when analysing a snapshot, whose torch probes say it all.
    """
    checks = [check_nvml(f), check_module(f), check_floor_met(f, matrix), check_gpus(f, host)]
    if skip_torch:
        checks.append(Check("torch", Level.WARN, "torch GPU visibility not checked (--skip-torch)"))
    elif not torch:
        where = (f"no runtime of {matrix.name} (any Python, any base) under the runtimes root"
                 if runtimes_found == 0 else "the snapshot has no torch probe for this matrix")
        checks.append(Check("torch", Level.UNKNOWN, f"torch GPU visibility not checked: {where}",
                            "build a runtime for the matrix (or pass --root where it lives), or pass "
                            "--skip-torch to verify the driver alone"))
    else:
        checks += [check_torch(name, dict(data), host) for name, data in sorted(torch.items())]
    return Report("verify-driver", matrix.name, verdict(checks, "verified", "not-verified"), checks,
                  host_summary(f))
