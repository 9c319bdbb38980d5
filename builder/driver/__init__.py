"""The host and its NVIDIA driver, in three layers (probe -> parse -> decide).

``probe`` runs the read-only host probes through the one subprocess wrapper and ``snapshot``
keeps their raw output in a versioned file; ``parse`` (pure) turns the text into records, ``gpu``
and ``facts`` build the one :class:`~builder.driver.facts.HostFacts`; the decisions are pure:
``preflight`` (is the host ready for the driver step-up), ``verify`` (after the reboot),
``runbook`` (the maintenance-window text), ``reboot`` and ``branches`` (driver series advice).
What wires them to locks and runtimes for the CLI lives above, in :mod:`builder.ops`.
See docs/driver.md.
"""
