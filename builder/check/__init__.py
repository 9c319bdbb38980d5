"""The checker: is a lock's torch CUDA variant compatible with its vLLM wheel, the driver and the GPU?

Layers inside, top down: ``pipeline`` (``builder check``: lock -> wheel facts -> identities ->
rules -> report) and ``kernels`` / ``deepread`` (GPU code of the main extension); ``wheels``
(facts cached by wheel sha256) over ``wheelread`` (METADATA and binaries, local or by HTTP range
reads) and ``fetchplan`` (what a read needs); the pure part: ``rules`` (the verdicts), ``identity``,
``loaded``, ``floors``, ``components``, ``model`` (findings, reports), ``kerneldata``
(``data/kernels.toml``), ``toolkit`` and ``knowledge`` (``data/cuda.toml``), ``ziptail``.
See docs/check.md.
"""
