"""builder's own file I/O primitives: ``fsio`` (atomic writes, the directory lock),
``inputs`` (bounded reads of builder's input files: a regular file or a pipe, size-capped),
``tomlread`` (the one TOML reader) and ``tempdirs`` (temp dirs named after their owner and locked
while in use, so the next run sweeps those of a killed one).  Nothing here knows a file format of
builder's own.
"""
