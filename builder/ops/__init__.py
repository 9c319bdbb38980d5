"""Orchestration above the runtimes and the checker: it wires the pure driver decisions
(:mod:`builder.driver`) to locks, the checker and the runtime layout for the CLI.

``driver`` loads or probes the host and runs preflight, verify-driver and the runbook;
``lockfloor`` asks the checker for the native driver floor of a matrix's lock.
"""
