"""Conda locks for a matrix's interpreter base: ``backend`` solves (py-rattler, offline against a
channel) and writes ``conda-lock.py<XY>.yml``; ``lockfile`` reads and writes those files through
conda-lock's own models.  The runtime base that installs such a lock is
:mod:`builder.runtime.condabase`.  See docs/conda.md.
"""
