"""The hosts a search judges for: ``envs/host.toml``, this machine's nvidia-smi (``--probe``) or
snapshots (``--from-snapshot``, repeatable: a fleet), with the operator's options on top
(``--driver``, ``--gpu-cc``, ``--glibc``, ``--arch``), validated as ``builder check`` does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from builder.check.pipeline import CheckRequest, host_from_snapshot, probe_host, resolve_host, validate_overrides
from builder.driver.facts import HostFacts
from builder.errors import UsageError
from builder.suggest.model import HostView

ARCHS = ("x86_64", "aarch64")


def arch_of(h: HostFacts) -> str:
    """The host's architecture: ``uname -m`` of a snapshot, else x86_64 (``envs/host.toml`` has none)."""
    return h.arch if h.arch in ARCHS else "x86_64"


def load(project: Any, *, snapshots: tuple[Path, ...], probe: bool, driver: str | None, ccs: tuple[str, ...],
         glibc: str | None, arch: str | None) -> list[HostFacts]:
    """Every host of the search, options applied to each."""
    if snapshots and probe:
        raise UsageError("--probe and --from-snapshot are exclusive", "pass one or the other")
    if arch is not None and arch not in ARCHS:
        raise UsageError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}", "e.g. --arch x86_64")
    req = CheckRequest(driver=driver, ccs=ccs, glibc=glibc)
    validate_overrides(req)  # a usage error before the probe or a snapshot is read
    declared = HostFacts.declared(project.host() if project is not None else None,
                                  origin="envs/host.toml" if project is not None else "options")
    bases: list[HostFacts]
    if snapshots:
        from builder.driver import snapshot

        bases = []
        for p in snapshots:
            bases.append(host_from_snapshot(snapshot.load(p)).overridden(origin=f"snapshot {p.name}"))
    elif probe:
        h = probe_host()
        bases = [h.overridden(glibc=h.glibc or declared.glibc)]
    else:
        bases = [declared]
    out = []
    for h in bases:
        h = resolve_host(h, req)
        if arch is not None:
            h = replace(h, machine=arch, origin=h.origin + " + --arch")
        out.append(h)
    return out


def view(h: HostFacts) -> HostView:
    return HostView(origin=h.origin, driver=h.driver, ccs=h.ccs, glibc=h.glibc, arch=arch_of(h))
