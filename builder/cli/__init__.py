"""The click layer: the only package that imports click.

Commands build a request, call one core function and render the result (human or
``--json``).  ``app`` holds the root group and the one error mapping; each command
family has its module (``lock_cmds``, ``check_cmds``, ``runtime_cmds``, ``host_cmds``,
``serve_cmds``, ``suggest_cmds``), which adds its commands to :func:`~builder.cli.app.main`;
``options`` defines the options they share (each once), ``common`` the typed context
(:class:`~builder.cli.common.AppContext`) and the helpers they share.
"""

from __future__ import annotations

from builder.cli import (  # noqa: F401  (they register commands)
    check_cmds,
    host_cmds,
    lock_cmds,
    runtime_cmds,
    serve_cmds,
    suggest_cmds,
)
from builder.cli.app import BuilderGroup, main

__all__ = ["BuilderGroup", "main"]
