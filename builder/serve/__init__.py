"""vLLM as an HTTP service: spec, process control, probe, route (see docs/serve.md).

``spec`` (service.toml model), ``runtimes`` (the one adapter to the runtime
layout), ``state`` (state dir, lock, write gate), ``process`` (detached start,
ownership, stop), ``probe`` (readiness verdict), ``route`` (route file and
journal), ``unit`` (systemd/sh rendering), ``service`` (serve commands and
:func:`~builder.serve.service.pinned_runtimes`), ``cutover`` (route commands).
"""
