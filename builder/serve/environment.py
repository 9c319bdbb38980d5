"""The environment and the account a slot's server runs with: one for ``serve start``, one for its unit.

``serve start`` tests a server in the operator's (scrubbed) environment; the
unit ``serve unit`` renders must run the same server, so both take their
variables from here: the runtime's ``bin`` first on the caller's scrubbed
``PATH``; the caller's variables that decide where the model, its caches and
libraries come from (:data:`CARRIED`: ``HOME``, ``HF_HOME``,
``HF_HUB_OFFLINE``, ...); the slot's ``[env]``; and builder's own (no usage
reports, no user site-packages, GPU indices as nvidia-smi numbers them, and
what the server is: its state directory's identity, the runtime's id, lock and
origin, so that ``route set`` can record what a unit runs).  Secrets are never
written into a unit (``HF_TOKEN`` and the like stay out; the API key comes from
``api-key-file``).

The account: a unit names the spec's ``user`` (``User=``), which must be the
account rendering it (the environment above is that account's), and never
root unless the spec says ``allow-root = true``.  ``serve start`` run by
another account than the spec's ``user`` is refused too: what it tested would
not be what the unit runs.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping

from builder import _proc
from builder.errors import UsageError
from builder.serve import process
from builder.serve.spec import Service, Slot

#: Variables of the caller's environment carried into the unit as ``serve start`` passes them:
#: they decide where the model and its caches are (``HOME``: ~/.cache/huggingface, ~/.cache/vllm,
#: ~/.triton), whether the hub may be reached, and which GPUs and libraries are used.
CARRIED = ("HOME", "XDG_CACHE_HOME", "LD_LIBRARY_PATH", "LANG", "LC_ALL")
CARRIED_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "VLLM_", "TORCH_", "TRITON_", "CUDA_", "NCCL_", "OMP_")
#: Names that hold secrets: never written into a unit file (the spec refuses them in [env] too).
_SECRET = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


def carried(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` a unit carries (:data:`CARRIED`, :data:`CARRIED_PREFIXES`), secrets left out."""
    return {k: v for k, v in env.items()
            if (k in CARRIED or k.startswith(CARRIED_PREFIXES)) and not _SECRET.search(k)
            and not k.startswith("BUILDER_")}


def slot_vars(slot: Slot, runs: process.Served, home: process.Home) -> dict[str, str]:
    """builder's variables and the spec's [env] for ``slot`` running ``runs`` (CUDA's default
    device order is fastest-first; the spec may not set CUDA_DEVICE_ORDER)."""
    out = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "PYTHONNOUSERSITE": "1", **slot.env,
           "CUDA_DEVICE_ORDER": "PCI_BUS_ID", process.STATE_VAR: home.identity}
    for var, value in ((process.RUNTIME_VAR, runs.runtime), (process.LOCK_VAR, runs.lock),
                       (process.ORIGIN_VAR, runs.origin)):
        if value:
            out[var] = value
    return out


def _path(bin_dir: str, env: Mapping[str, str]) -> str:
    return os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])


def server_env(slot: Slot, runs: process.Served, bin_dir: str, *, home: process.Home,
               key: str | None) -> dict[str, str]:
    """What ``serve start`` gives the server: the caller's environment scrubbed like ``build``'s,
    the runtime's ``bin`` first, the slot's and builder's variables, the API key."""
    env = _proc.clean_env()
    env.pop("VLLM_API_KEY", None)  # an operator's shell must not decide the server's key
    env["PATH"] = _path(bin_dir, env)
    env.update(slot_vars(slot, runs, home))
    if key:
        env["VLLM_API_KEY"] = key
    return env


def unit_env(slot: Slot, runs: process.Served, bin_dir: str, *, home: process.Home) -> dict[str, str]:
    """What the unit gives the server: the same values as :func:`server_env` for every variable
    it sets (the API key comes from the unit's ``EnvironmentFile``)."""
    env = _proc.clean_env()
    env.pop("VLLM_API_KEY", None)
    return {"PATH": _path(bin_dir, env), **carried(env), **slot_vars(slot, runs, home)}


def _me() -> pwd.struct_passwd:
    return pwd.getpwuid(os.geteuid())


def check_account(svc: Service, *, doing: str) -> None:
    """Refuse (exit 2) when the spec names a ``user`` other than the one running builder."""
    me = _me()
    if svc.user is not None and svc.user != me.pw_name:
        raise UsageError(f"the service runs as {svc.user} (user in {svc.path}) but this is {me.pw_name}: "
                         f"{doing} as {svc.user}, so its environment is the one the server gets",
                         f"log in as {svc.user}, or run builder through sudo -u {svc.user} -H")


def unit_user(svc: Service) -> str:
    """The unit's ``User=``: the spec's ``user``, which renders the unit; root only with ``allow-root``."""
    check_account(svc, doing="render the unit")
    if svc.user is None:
        raise UsageError(f"the unit needs the account that runs vLLM: {svc.path} names no user",
                         'add user = "NAME" to the service spec (the account serve start runs as) and render the '
                         "unit as that account")
    if _me().pw_uid == 0 and not svc.allow_root:
        raise UsageError(f"the unit would run vLLM as root (user = {svc.user!r} in {svc.path})",
                         "name an unprivileged account in user = ..., or set allow-root = true if it must be root")
    return svc.user
