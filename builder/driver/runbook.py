"""The operator's driver-upgrade runbook, rendered from the spec and host facts.

Pure text: this module runs nothing and imports nothing that can.  The steps
follow sections 3 and 4 of the upgrade plan (record state, Secure Boot plan,
prerequisites, driver package, reboot, verification, rollback); the values
(current driver, target series, held packages, running GPU processes, the
exact package to roll back to) come from a snapshot when one is given, else
from ``envs/host.toml``.  The reboot is its own step, fenced as the
maintenance-window step, in both formats; the shell format refuses to reboot
unless ``MAINTENANCE_WINDOW=yes`` is set.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from builder.driver.branches import LockFloor
from builder.driver.facts import HostFacts
from builder.driver.preflight import NVIDIA_HOLD_PREFIXES, DriverTarget, driver_target
from builder.spec import Host, Matrix
from builder.versions import DriverVersion

#: Ubuntu's DKMS module-signing key (created by shim-signed's update-secureboot-policy).
MOK_DER = "/var/lib/shim-signed/mok/MOK.der"


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    text: list[str]
    commands: list[str] = field(default_factory=list)
    window: bool = False        # only inside the maintenance window
    privileged: bool = False    # changes the host (sudo)


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    current: str
    current_from: str
    target: DriverTarget
    rollback: str
    steps: list[Step]
    upgrade_needed: bool = True
    unsupported: str = ""  # why this runbook does not apply to the host (Jetson/Tegra, not x86_64)


def _rollback_package(f: HostFacts | None, current: str) -> str:
    """The exact package to go back to: dpkg's version when known, else the series."""
    pkg = f.installed_driver_package() if f else None
    if pkg is not None and pkg.version:
        return f"{pkg.name}={pkg.version}"
    dv = DriverVersion.maybe(current)
    return f"nvidia-driver-{dv.branch}" if dv else "nvidia-driver-550"


def _unsupported(f: HostFacts | None) -> str:
    if f is None:
        return ""
    tegra = f.tegra_evidence()
    if tegra:
        return "a Jetson/Tegra (L4T) host (" + "; ".join(tegra) + ")"
    if f.arch is not None and f.arch != "x86_64":
        return f"a {f.arch} host"
    return ""


def plan(matrix: Matrix, host: Host, f: HostFacts | None = None, *, source: str = "",
         lock_floor: LockFloor | None = None, today: _dt.date | None = None) -> Plan:
    """The runbook's steps for ``matrix`` (facts from a snapshot when given).

    ``lock_floor`` (the matrix lock's native floor, from the checker) and
    ``today`` (branch end of life) feed the driver-series note.  A host this
    runbook does not cover (Jetson/Tegra, not x86_64) gets one step saying so
    and no apt commands at all.
    """
    current = (f.driver if f else None) or host.driver
    current_from = source if f and f.driver else "envs/host.toml"
    target = driver_target(matrix.driver_floor, today=today, lock_floor=lock_floor, matrix=matrix.name)
    why_not = _unsupported(f)
    if why_not:
        step = Step("unsupported", "This runbook does not apply to this host", [
            f"The snapshot shows {why_not}. This runbook covers x86_64 Ubuntu hosts whose driver comes from "
            "nvidia-driver-NNN packages; a Jetson's driver ships with JetPack (L4T BSP) and is upgraded through "
            "JetPack / NVIDIA SDK Manager. Do not install desktop driver packages on it.",
        ])
        return Plan(matrix, current, current_from, target, "", [step], upgrade_needed=False,
                    unsupported=why_not)
    rollback = _rollback_package(f, current)
    rollback_series = rollback.split("=")[0]
    holds = [h for h in (f.holds or [] if f else []) if h.startswith(NVIDIA_HOLD_PREFIXES)]
    sb = f.secure_boot.state if f and f.secure_boot else "unknown"
    procs = f.apps if f and f.apps is not None else None
    pending_kernel = bool(f and any(p.startswith("linux-image") for p in f.reboot_pkgs))

    steps = [
        Step("record", "Record the current state", [
            "Keep these files: they are what the rollback returns to.",
        ], [
            "builder host snapshot before-upgrade.json",
            "nvidia-smi",
            "uname -r",
            "cat /proc/driver/nvidia/version || true",
            "dpkg-query -W -f='${Package} ${Version}\\n' 'nvidia-*' 'libnvidia-*'"
            " > nvidia-packages-before.txt",
            "apt-mark showhold",
        ]),
        _secure_boot_step(sb),
        Step("stop-workloads", "Stop your own GPU workloads", [
            "Stop only the GPU services you own; do not run `ray stop` (it stops other people's work).",
            *(["Running GPU processes in the snapshot: " + "; ".join(
                f"pid {p.pid} {p.name}" for p in procs) + "."] if procs else
              ["The snapshot shows no GPU processes."] if procs is not None else []),
        ], ["nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv"]),
        Step("prerequisites", "Install prerequisites", [
            "DKMS builds the new kernel module against the running kernel's headers.",
            *(["A kernel update is pending: install the generic headers too, so DKMS also builds for "
               "the kernel the reboot starts."] if pending_kernel else []),
        ], [
            "sudo apt-get update",
            'sudo apt-get install -y build-essential dkms "linux-headers-$(uname -r)" ubuntu-drivers-common'
            + (" linux-headers-generic" if pending_kernel else ""),
        ], privileged=True),
        Step("install-driver", f"Install the driver package ({target.package})", [
            f"{matrix.name} needs driver >= {matrix.driver_floor}: "
            f"current {current} -> target {target.label}.",
            *([target.note() + "."] if target.note() else []),
            "Check the package exists in your apt sources first; ubuntu-drivers lists what Ubuntu offers.",
            *(["Held NVIDIA packages block the change: unhold them here, hold the new series after "
               "verification."] if holds else []),
            "Until the reboot, nvidia-smi reports `Driver/library version mismatch`: that is expected.",
        ], [
            "ubuntu-drivers devices",
            f"apt-cache policy {target.package}",
            *([f"sudo apt-mark unhold {' '.join(holds)}"] if holds else []),
            f"sudo apt-get install -y {target.package}",
            "dkms status",
        ], privileged=True),
        Step("reboot", "Reboot", [
            "Only inside the scheduled maintenance window, with console access in case the display or "
            "network does not come back.",
            *(["Secure Boot is enabled: the MOK Manager (blue screen) appears on the console; choose "
               "Enroll MOK and enter the password set in the Secure Boot step."] if sb == "enabled" else []),
        ], ["sudo reboot"], window=True, privileged=True),
        Step("verify", "Verify after the reboot", [
            f"builder checks module/userspace agreement, the floor {matrix.driver_floor}, every GPU of "
            "envs/host.toml, and that each runtime's torch sees every GPU.",
        ], [
            "nvidia-smi",
            "cat /proc/driver/nvidia/version",
            f"builder verify-driver --matrix {matrix.id}",
            *([f"sudo apt-mark hold {target.package}"] if holds else []),
        ]),
        Step("rollback", f"Rollback to {rollback_series} (only if the new driver fails)", [
            "If the new driver does not load or causes regressions, return to the known-good series "
            f"({current}). If apt refuses because of the {target.branch.series} packages, remove them "
            f"first (`sudo apt-get remove --purge '^nvidia-.*-{target.branch.series}$'`).",
            "The reboot that completes the rollback is a maintenance-window step too.",
        ], [
            "sudo apt-get update",
            f"sudo apt-get install -y --allow-downgrades {rollback}",
            "sudo reboot",
        ], window=True, privileged=True),
    ]
    if not _below(current, matrix.driver_floor):
        # The driver already meets the floor: installing the floor's own series
        # would be a downgrade (e.g. 580 -> 575). Nothing to install, no reboot.
        keep = [st for st in steps if st.id in ("record", "verify")]
        native = (lock_floor is not None and target.native_above_floor and _below(current, lock_floor.driver))
        keep[-1:] = [Step("verify", "Verify the runtime on the current driver", [
            f"The current driver {current} already meets {matrix.name}'s floor {matrix.driver_floor}: "
            "no driver change and no reboot are needed. Do not install an older series.",
            *([f"{matrix.name}'s lock has {lock_floor.phrase()}: {current} runs it only under minor-version "
               f"compatibility. {target.note()}."] if native and lock_floor is not None else []),
        ], [f"builder verify-driver --matrix {matrix.id}"])]
        return Plan(matrix, current, current_from, target, rollback, keep, upgrade_needed=False)
    return Plan(matrix, current, current_from, target, rollback, steps)


def _below(current: str, floor: str) -> bool:
    """True when ``current`` is below ``floor``, or cannot be read (then plan the upgrade)."""
    cur = DriverVersion.maybe(current)
    return cur is None or cur < DriverVersion.parse(floor)


def _secure_boot_step(state: str) -> Step:
    title = "Secure Boot plan"
    if state in ("disabled", "unsupported"):
        return Step("secure-boot", title, [f"Secure Boot is {state} on this host: no MOK enrollment needed."],
                    ["mokutil --sb-state"])
    text = [
        "Secure Boot is enabled: the DKMS-built module is signed with Ubuntu's MOK key, which must be "
        "enrolled in firmware or the new module will not load." if state == "enabled" else
        "Secure Boot state unknown: check it; if enabled, enroll the MOK key as below.",
        "`mokutil --import` asks for a one-time password; you confirm it at the console on the next boot. "
        "If `--test-key` says the key is already enrolled, skip the import.",
    ]
    return Step("secure-boot", title, text, [
        "mokutil --sb-state",
        f"mokutil --test-key {MOK_DER} || true",
        f"sudo mokutil --import {MOK_DER}",
    ], privileged=True)


def render_markdown(p: Plan) -> str:
    """The runbook as Markdown."""
    m = p.matrix
    if p.unsupported:
        out = [f"# Driver upgrade runbook: {m.name}", "", f"**Unsupported host: {p.unsupported}.**", "",
               "builder runs none of these commands; this runbook has none for this host.", ""]
        for n, s in enumerate(p.steps, 1):
            out += [f"## {n}. {s.title}", "", *s.text, ""]
        return "\n".join(out).rstrip() + "\n"
    out = [
        f"# Driver upgrade runbook: {m.name}",
        "",
        (f"**current {p.current} -> target {p.target.label}** (`{p.target.package}`; {m.name} needs driver "
         f">= {m.driver_floor}).  " if p.upgrade_needed else
         f"**current {p.current} meets {m.name}'s floor {m.driver_floor}: no driver change needed.**  "),
        f"Values from: {p.current_from}.  ",
        f"Rollback: `{p.rollback}`.",
        "",
        "builder runs none of these commands: you do, in order.  Steps marked **MAINTENANCE WINDOW ONLY** "
        "reboot the host.",
        "",
    ]
    for n, s in enumerate(p.steps, 1):
        if s.window:
            out += ["---", "", f"## {n}. MAINTENANCE WINDOW ONLY: {s.title}", "",
                    "> **Do not run this outside the scheduled maintenance window.**", ""]
        else:
            out += [f"## {n}. {s.title}", ""]
        out += [*s.text, ""]
        if s.commands:
            out += ["```bash", *s.commands, "```", ""]
        if s.window:
            out += ["---", ""]
    return "\n".join(out).rstrip() + "\n"


def render_sh(p: Plan) -> str:
    """The runbook as a commented shell script: one function per step, run by name.

    Nothing runs without a step name; window steps refuse unless
    ``MAINTENANCE_WINDOW=yes``.
    """
    m = p.matrix
    if p.unsupported:
        return "\n".join(["#!/usr/bin/env bash", f"# Driver runbook for {m.name}: unsupported host: {p.unsupported}.",
                          *(f"# {line}" for s in p.steps for line in s.text),
                          "echo 'this runbook does not apply to this host (see the comments above)' >&2", "exit 2",
                          ""])
    out = [
        "#!/usr/bin/env bash",
        (f"# Driver upgrade runbook for {m.name}: current {p.current} -> target {p.target.label} "
         f"({p.target.package})." if p.upgrade_needed else
         f"# Driver runbook for {m.name}: current {p.current} meets the floor {m.driver_floor}; no change."),
        f"# Values from: {p.current_from}.  Rollback: {p.rollback}.",
        "# Generated by `builder runbook --format sh`; builder itself runs none of this.",
        "# Usage: bash THIS_FILE STEP   (steps run one at a time, in order)",
        "set -euo pipefail",
        "",
        "window_only() {",
        '  if [ "${MAINTENANCE_WINDOW:-}" != "yes" ]; then',
        '    echo "refusing: this step reboots the host; run it inside the maintenance window with '
        'MAINTENANCE_WINDOW=yes" >&2',
        "    exit 2",
        "  fi",
        "}",
        "",
    ]
    names = []
    for n, s in enumerate(p.steps, 1):
        fn = "step_" + s.id.replace("-", "_")
        names.append(s.id)
        if s.window:
            out += ["# " + "=" * 70, f"# {n}. MAINTENANCE WINDOW ONLY: {s.title}", "# " + "=" * 70]
        else:
            out.append(f"# {n}. {s.title}")
        out += [f"#   {line}" for line in s.text]
        out.append(f"{fn}() {{")
        if s.window:
            out.append("  window_only")
        out += [f"  {c}" for c in s.commands] or ["  :"]
        out += ["}", ""]
    out += [
        'case "${1:-}" in',
        *(f"  {sid}) step_{sid.replace('-', '_')} ;;" for sid in names),
        f"  *) echo \"usage: $0 {{{'|'.join(names)}}}\" >&2; exit 2 ;;",
        "esac",
    ]
    return "\n".join(out) + "\n"


def render(p: Plan, fmt: str) -> str:
    """``md`` or ``sh``."""
    return render_sh(p) if fmt == "sh" else render_markdown(p)

