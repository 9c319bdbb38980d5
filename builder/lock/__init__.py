"""Locking with uv: ``resolve`` (every selected matrix and Python, in parallel, atomically)
over ``uv`` (one ``uv pip compile --format pylock.toml``), ``state`` (the stamp and freshness),
``verify`` (the committed lock is what uv produces), ``refresh`` (move ``exclude-newer`` and
re-lock as one transaction), ``diff`` and ``diff_render`` (what changed, in CUDA terms).
See docs/locks.md.
"""
