"""builder's own file I/O primitives: ``fsio`` (atomic writes, the directory lock),
``inputs`` (bounded reads of builder's input files: a regular file or a pipe, size-capped) and
``tomlread`` (the one TOML reader).  Nothing here knows a file format of builder's own.
"""
