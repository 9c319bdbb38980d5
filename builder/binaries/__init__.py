"""Readers of CUDA binaries (pure: bytes in, facts out): ``elf`` (DT_NEEDED, sonames, the nvcc
banner of a shared object), ``fatbin`` (the SASS and PTX targets a fatbin carries) and
``archcompat`` (NVIDIA's binary-compatibility rule: does SASS/PTX for sm_X run on cc Y).
"""
