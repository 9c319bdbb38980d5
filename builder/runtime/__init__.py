"""Runtimes: isolated environments built from a lock and smoke-tested.

``layout`` is the one place that knows names, roots and discovery; ``build`` orchestrates
``base`` (a bare venv) or ``condabase`` (a conda prefix from the conda lock) -> ``sync``
(``uv pip sync`` of the validated lock) -> ``smoke`` -> ``swap`` (rename into place);
``interpreters`` finds a Python X.Y, ``doctor`` reads any environment read-only,
``installprogress`` parses uv's progress lines.  See docs/runtimes.md.
"""
