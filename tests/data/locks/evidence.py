"""Print the artifact facts quoted in expected.toml, read with tools other than builder
(network; run by hand, not by tests).

    .venv/bin/python tests/data/locks/evidence.py LOCK PACKAGE [--member PATH]... [--cuobjdump EXE]
    .venv/bin/python tests/data/locks/evidence.py pylock.vllm013.toml vllm \\
        --member vllm/_C.abi3.so --cuobjdump /tmp/cuobj/nvidia/cu13/bin/cuobjdump

For the x86_64 CPython 3.12 wheel of PACKAGE in LOCK it prints the METADATA lines
that matter (Name, Version, Requires-Dist), and for each --member (an extension
module, fetched by one HTTP range request and inflated in a temp dir): its
DT_NEEDED entries (binutils ``readelf -d``), the nvcc banner strings it embeds
(``strings``) and, with --cuobjdump (NVIDIA's tool, PyPI ``nvidia-cuda-cuobjdump``),
the SASS and PTX architectures of its fatbin (``cuobjdump --list-elf --list-ptx``).
Expected values are derived from this output, never from builder's.
"""

from __future__ import annotations

import argparse
import collections
import re
import struct
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _get(url: str, rng: str) -> bytes:
    req = urllib.request.Request(url, headers={"Range": rng, "User-Agent": "builder-corpus-evidence/1"})
    with urllib.request.urlopen(req, timeout=600) as resp:  # noqa: S310 (PyPI)
        return bytes(resp.read())


class _Remote:
    """Just enough of a seekable file for zipfile to list a remote wheel."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.pos = url, size, 0
        self.cache: dict[int, bytes] = {}

    def seekable(self) -> bool:
        return True

    def seek(self, off: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + off
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        data = _get(self.url, f"bytes={self.pos}-{end - 1}") if end > self.pos else b""
        self.pos = end
        return data


def wheel_of(lock: str, package: str) -> tuple[str, int]:
    data = tomllib.loads((HERE / lock).read_text(encoding="utf-8"))
    for p in data["packages"]:
        if p["name"] == package:
            for w in p.get("wheels", []):
                fn = w["url"].rsplit("/", 1)[-1]
                if "x86_64" in fn and ("abi3" in fn or "cp312" in fn or "py3-none" in fn):
                    return w["url"], int(w["size"])
            for w in p.get("wheels", []):
                if w["url"].endswith("-any.whl"):
                    return w["url"], int(w["size"])
    raise SystemExit(f"{lock}: no x86_64 wheel for {package}")


def inflate_member(url: str, info: zipfile.ZipInfo, dest: Path) -> None:
    head = _get(url, f"bytes={info.header_offset}-{info.header_offset + 29}")
    nlen, xlen = struct.unpack_from("<HH", head, 26)
    start = info.header_offset + 30 + nlen + xlen
    comp = _get(url, f"bytes={start}-{start + info.compress_size - 1}")
    data = zlib.decompress(comp, -15) if info.compress_type == zipfile.ZIP_DEFLATED else comp
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        raise SystemExit(f"{info.filename}: size/CRC mismatch after inflating")
    dest.write_bytes(data)


def arch_summary(text: str) -> str:
    """Group cuobjdump's listing: architecture -> number of entries."""
    elf = collections.Counter(re.findall(r"ELF file\s+\d+:.*?\.(sm_\d+[a-z]?)\.cubin", text))
    ptx = collections.Counter(re.findall(r"PTX file\s+\d+:.*?\.(sm_\d+[a-z]?)\.ptx", text))
    fmt = lambda c: ", ".join(f"{a} x{n}" for a, n in sorted(c.items(), key=lambda x: (len(x[0]), x[0])))  # noqa: E731
    return f"SASS (ELF) entries: {fmt(elf) or 'none'}\n  PTX entries: {fmt(ptx) or 'none'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lock")
    ap.add_argument("package")
    ap.add_argument("--member", action="append", default=[])
    ap.add_argument("--cuobjdump")
    args = ap.parse_args()
    url, size = wheel_of(args.lock, args.package)
    print(f"wheel: {url} ({size} bytes)")
    zf = zipfile.ZipFile(_Remote(url, size))  # type: ignore[arg-type]
    meta = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
    for line in zf.read(meta).decode("utf-8", "replace").splitlines():
        if not line.strip():
            break
        if line.startswith(("Name:", "Version:", "Requires-Dist:")):
            print(f"  METADATA {line}")
    with tempfile.TemporaryDirectory(prefix="corpus-evidence-") as tmp:
        for m in args.member:
            info = zf.getinfo(m)
            dest = Path(tmp) / Path(m).name
            inflate_member(url, info, dest)
            print(f"member {m} ({info.file_size} bytes, {info.compress_size} compressed)")
            dyn = subprocess.run(["readelf", "-d", str(dest)], capture_output=True, text=True, check=True).stdout
            for n in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn):
                print(f"  readelf -d: (NEEDED) Shared library: [{n}]")
            strings = subprocess.run(["strings", "-a", str(dest)], capture_output=True, text=True,
                                     check=True).stdout
            banners = collections.Counter(s for s in strings.splitlines() if "Cuda compilation tools" in s)
            for b, n in banners.items():
                print(f"  strings: {b!r} (x{n})")
            if not banners:
                print("  strings: no 'Cuda compilation tools' banner")
            if args.cuobjdump:
                res = subprocess.run([args.cuobjdump, "--list-elf", "--list-ptx", str(dest)],
                                     capture_output=True, text=True)
                print(f"  cuobjdump --list-elf --list-ptx (exit {res.returncode}):\n  {arch_summary(res.stdout)}")
                if res.returncode:
                    print("  " + res.stderr.strip()[:300])
            dest.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
