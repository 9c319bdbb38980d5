"""``builder suggest``: the newest torch + vLLM stack a host (or every host of a fleet) can run,
found by resolving real candidates with uv and judging each lock with builder's own checker.

Orchestration above locking and the checker, on the floor of ``ops`` and ``serve``.  Pure
modules (direct tests, no I/O): ``releases`` (the PEP 691 simple API: files, yanked files,
pre-releases, the cut-off date, newest first), ``cudaline`` (a torch wheel's CUDA line from its
pins), ``skips`` (the candidates data already rules out, one rule per function), ``policy``
(default / native / strict acceptance and the declared floor), ``fleet`` (answers per host and
the newest stack every host runs) and ``model`` (the frozen results and their ``as_dict``).
The I/O: ``index`` (simple pages and wheel METADATA through ``builder._http`` and the wheel
cache), ``resolve`` (uv through ``builder.lock.uv``, kept by content), ``judge`` (the checker,
verdicts kept by content), ``search`` (the loop) and ``write`` (the matrix spec, tomlkit).
See docs/suggest.md.
"""
