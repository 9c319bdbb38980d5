"""Build tiny but real wheels inside the test session (shared by all tests).

A wheel is a zip with ``NAME.dist-info/{METADATA,WHEEL,RECORD}``; building it by
hand keeps tests fast and offline (no build backend, no network), and lets
tests put real ELF shared objects inside.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.helpers import needs


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_wheel(
    dest: Path,
    name: str,
    version: str,
    *,
    files: Mapping[str, bytes | str] | None = None,
    requires: Sequence[str] = (),
    console_scripts: Mapping[str, str] | None = None,
    tag: str = "py3-none-any",
    requires_python: str | None = None,
    compress: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Write ``dest/NAME-VERSION-TAG.whl`` and return its path.

    ``files`` maps archive paths to contents; by default a package
    ``<name>/__init__.py`` defining ``__version__`` is added.
    """
    dest.mkdir(parents=True, exist_ok=True)
    dist = canonicalize_name(name).replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    content: dict[str, bytes] = {}
    for k, v in (files or {f"{dist}/__init__.py": f'__version__ = "{version}"\n'}).items():
        content[k] = v.encode() if isinstance(v, str) else v
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    meta += [f"Requires-Dist: {r}" for r in requires]
    content[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    content[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: builder-tests\nRoot-Is-Purelib: {'true' if tag.endswith('any') else 'false'}\n"
        + "".join(f"Tag: {t}\n" for t in _expand(tag))
    ).encode()
    if console_scripts:
        eps = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in console_scripts.items())
        content[f"{info}/entry_points.txt"] = eps.encode()
    record = "".join(f"{k},{_record_hash(v)},{len(v)}\n" for k, v in content.items())
    record += f"{info}/RECORD,,\n"
    content[f"{info}/RECORD"] = record.encode()
    path = dest / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for k, v in content.items():
            zi = zipfile.ZipInfo(k, date_time=(2025, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = compress
            zf.writestr(zi, v)
    return path


def _expand(tag: str) -> list[str]:
    py, abi, plats = tag.split("-")
    return [f"{p}-{a}-{pl}" for p in py.split(".") for a in abi.split(".") for pl in plats.split(".")]


def make_sdist(dest: Path, name: str, version: str) -> Path:
    """A minimal sdist (tar.gz with PKG-INFO) with static metadata."""
    import io
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    dist = canonicalize_name(name).replace("-", "_")
    base = f"{dist}-{version}"
    path = dest / f"{base}.tar.gz"
    pkg_info = f"Metadata-Version: 2.2\nName: {name}\nVersion: {version}\n".encode()
    pyproject = (
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    ).encode()
    with tarfile.open(path, "w:gz") as tf:
        for fname, data in (("PKG-INFO", pkg_info), ("pyproject.toml", pyproject)):
            ti = tarfile.TarInfo(f"{base}/{fname}")
            ti.size = len(data)
            ti.mtime = 1735689600
            tf.addfile(ti, io.BytesIO(data))
    return path


def compile_shared_object(
    out: Path, *, c_source: str, link: Sequence[Path] = (), soname: str | None = None
) -> Path:
    """Compile a real ELF shared object with gcc (``link``: .so files to link against)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text(c_source)
    argv = [needs.gcc(), "-shared", "-fPIC", "-Wl,--no-as-needed", "-o", str(out), str(src)]
    if soname:
        argv.insert(1, f"-Wl,-soname,{soname}")
    for lib in link:
        argv += [str(lib)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    src.unlink()
    return out


def stub_cudart(dest: Path, major: int) -> Path:
    """A stub ``libcudart.so.<major>`` (real ELF, soname set) to link test extensions against."""
    return compile_shared_object(
        dest / f"libcudart.so.{major}",
        c_source="int cudaRuntimeGetVersion(int *v) { *v = 0; return 0; }\n",
        soname=f"libcudart.so.{major}",
    )


def cuda_extension(dest: Path, name: str, cudart: Path, toolkit: str, archs: Sequence[str] = ("sm_89",)) -> Path:
    """A real ELF extension that links ``cudart`` and embeds nvcc's toolkit banner.

    ``toolkit`` is the full version, e.g. "12.9.86".
    """
    rel = ".".join(toolkit.split(".")[:2])
    banner = f"Cuda compilation tools, release {rel}, V{toolkit}"
    arch = " ".join(archs)
    src = (
        f'const char builder_banner[] = "{banner}";\n'
        f'const char builder_archs[] = "{arch}";\n'
        "extern int cudaRuntimeGetVersion(int *v);\n"
        "int probe(void) { int v; return cudaRuntimeGetVersion(&v); }\n"
    )
    return compile_shared_object(dest / name, c_source=src, link=[cudart])


def fatbin_container(targets: Sequence[str], isa: tuple[int, int] = (8, 8)) -> bytes:
    """One CUDA fatbin container in the layout the driver and ``cuobjdump`` read: a 16-byte
    header, then per target a 64-byte entry header and a payload.  ``targets``: ``sm_89``
    (SASS, kind 2) or ``compute_89`` (PTX of ISA ``isa``, kind 1); ``a``/``f`` suffixes set the
    arch- and family-specific flags (as builder/binaries/fatbin.py reads them)."""
    import struct

    body = b""
    for t in targets:
        kind = 1 if t.startswith("compute_") else 2
        num = t.split("_", 1)[1]
        flags = 0x11 | (0x100000 if num.endswith("a") else 0x200000 if num.endswith("f") else 0)
        arch = int(num.rstrip("af"))
        payload = bytes(64)
        major, minor = isa if kind == 1 else (1, 8)
        body += struct.pack("<HHIQIIHHIIIQ", kind, 0x101, 64, len(payload), 0, 0, minor, major, arch, 0, 0, flags)
        body += bytes(64 - 48) + payload
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def fatbin_extension(dest: Path, name: str, cudart: Path, containers: Sequence[bytes], filler: bytes = b"") -> Path:
    """A real ELF extension that links ``cudart`` and carries ``containers`` in its
    ``.nv_fatbin`` section (where nvcc puts device code), plus ``filler`` bytes elsewhere."""
    dest.mkdir(parents=True, exist_ok=True)
    fb = dest / f"{name}.fatbin"
    fb.write_bytes(b"".join(c + bytes(-len(c) % 8) for c in containers))
    fill = dest / f"{name}.filler"
    fill.write_bytes(filler)
    src = (
        f'__asm__(".section .nv_fatbin, \\"a\\"\\n.balign 8\\n.incbin \\"{fb}\\"\\n.previous\\n");\n'
        f'__asm__(".section .rodata\\n.incbin \\"{fill}\\"\\n.previous\\n");\n'
        "extern int cudaRuntimeGetVersion(int *v);\n"
        "int probe(void) { int v; return cudaRuntimeGetVersion(&v); }\n"
    )
    out = compile_shared_object(dest / name, c_source=src, link=[cudart])
    fb.unlink()
    fill.unlink()
    return out
