"""Regenerate ``builder/data/kernels.toml``: the GPU architectures of a large CUDA
extension (vLLM's ``vllm/_C.abi3.so``) in PyPI wheels, read by builder's own
fatbin reader.

For each ``NAME==VERSION`` the x86_64 manylinux wheel is looked up in PyPI's
simple index (PEP 691 JSON gives filename, URL, sha256 and size); the member is
streamed out of the wheel by HTTP Range requests and inflated on the fly
(:mod:`builder.check.deepread`), so no wheel is stored and memory stays small.  Rows
already in the file for other wheels are kept; each row names the wheel, its
sha256, the member, the date read and the wheel URL.

    python scripts/kernel_data.py vllm==0.10.1.1 vllm==0.11.0 vllm==0.11.1 vllm==0.11.2 \\
        vllm==0.12.0 vllm==0.13.0                    # add or refresh these rows
    python scripts/kernel_data.py --check           # re-read every row's wheel; exit 1 if one differs
    python scripts/kernel_data.py --member vllm/_moe_C.abi3.so vllm==0.13.0
    python scripts/kernel_data.py vllm==0.33.0:vllm/_C_stable_libtorch.abi3.so   # one spec, its own member

Costs (2026-11-30): about 150-190 MB and 15 s per vLLM wheel (the compressed
``_C`` member); PyPI is the only host contacted.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import tomlkit
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from builder import data as datafiles
from builder.binaries import fatbin
from builder.check import deepread, kerneldata
from builder.errors import Unavailable
from builder.files.fsio import atomic_write

INDEX = "https://pypi.org/simple"
DEFAULT_MEMBER = "vllm/_C.abi3.so"
HEADER = """\
GPU code in large CUDA extensions of locked wheels: SASS (cubin) and PTX targets per
wheel, read from the fatbin container and entry headers by builder's own reader
(builder/binaries/fatbin.py), never from sm_NN strings.  `groups` counts fatbin containers
(one per compiled source file) by the targets they carry: builder.binaries.archcompat.covers
uses the largest group meant for a GPU as the build's arch list.
A row applies only to the wheel whose sha256 it names.  Regenerate (network, PyPI):
  python scripts/kernel_data.py vllm==VERSION ...      (see its docstring)
Read by builder/check/kerneldata.py; pinned in tests/test_kerneldata.py."""


def wheel_for(name: str, version: str) -> dict[str, Any]:
    """The one x86_64 manylinux wheel of NAME==VERSION on PyPI (simple API, PEP 691)."""
    req = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        files = json.load(resp)["files"]
    hits = []
    for f in files:
        if not f["filename"].endswith(".whl"):
            continue
        _n, v, build, tags = parse_wheel_filename(f["filename"])
        if v == Version(version) and any("manylinux" in t.platform and t.platform.endswith("x86_64") for t in tags):
            hits.append((build, f))
    if not hits:
        raise SystemExit(f"{name}=={version}: no x86_64 manylinux wheel on PyPI")
    return dict(max(hits, key=lambda h: h[0])[1])  # a re-upload with a build tag (0.20.1-1) wins, as in uv


def read_row(name: str, version: str, member: str) -> dict[str, Any]:
    w = wheel_for(name, version)
    ref = deepread.MemberRef(filename=w["filename"], sha256=w["hashes"]["sha256"], member=member,
                             url=w["url"], size=int(w["size"]))
    r = deepread.deep_read(ref, deadline_s=1800, max_bytes=1 << 30)
    print(f"{w['filename']}: {member}: {r.bytes_transferred / 1e6:.1f} MB in {r.requests} requests, "
          f"{r.seconds:.1f} s; SASS {', '.join(r.archs.sass_names())}; PTX {', '.join(r.archs.ptx_names())}",
          file=sys.stderr)
    return {
        "package": name, "version": version, "wheel": w["filename"], "wheel_sha256": r.sha256,
        "wheel_size": int(w["size"]), "member": member, "member_size": r.member_size,
        "member_crc32": r.crc32, **r.archs.to_dict(), "ptx_isa": r.ptx_isa, "containers": r.containers,
        "entries": r.entries, "produced_by": fatbin.PRODUCED_BY, "reader_version": r.reader_version,
        "date": r.read_at, "source": w["url"], "bytes_transferred": r.bytes_transferred,
    }


def render(rows: list[dict[str, Any]]) -> str:
    doc = tomlkit.document()
    for line in HEADER.splitlines():
        doc.add(tomlkit.comment(line))
    doc.add("schema", kerneldata.SCHEMA)
    aot = tomlkit.aot()
    for row in sorted(rows, key=lambda r: (r["package"], Version(r["version"]), r["member"])):
        t = tomlkit.table()
        for key, value in row.items():
            if key == "groups":
                arr = tomlkit.array()
                for g in value:
                    it = tomlkit.inline_table()
                    it.update(g)
                    arr.append(it)
                arr.multiline(True)
                t.add(key, arr)
            elif value is not None:
                t.add(key, value)
        aot.append(t)
    doc.add("kernels", aot)
    text = tomlkit.dumps(doc)
    kerneldata.from_mapping(tomlkit.parse(text).unwrap())  # what we write must load
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", help="NAME==VERSION[:MEMBER] to (re)read")
    ap.add_argument("--member", default=DEFAULT_MEMBER)
    ap.add_argument("--data", type=Path, default=datafiles.KERNELS)
    ap.add_argument("--check", action="store_true", help="re-read every row and compare; write nothing")
    args = ap.parse_args(argv)
    old: list[dict[str, Any]] = []
    if args.data.exists():
        old = [dict(r) for r in tomlkit.parse(args.data.read_text()).unwrap().get("kernels", [])]
    if args.check:
        diffs = 0
        for row in old:
            new = read_row(row["package"], row["version"], row["member"])
            keys = [k for k in new if k not in ("date", "bytes_transferred", "source") and new[k] != row.get(k)]
            if keys:
                diffs += 1
                print(f"{row['wheel']}: {row['member']}: differs in {', '.join(keys)}", file=sys.stderr)
        return 1 if diffs else 0
    rows = {(r["wheel_sha256"], r["member"]): r for r in old}
    failed = 0
    for spec in args.specs:
        pin, _, member = spec.partition(":")
        name, _, version = pin.partition("==")
        if not version:
            ap.error(f"{spec}: expected NAME==VERSION[:MEMBER]")
        member = member or args.member
        try:
            new = read_row(name, version, member)
        except Unavailable as exc:
            failed += 1
            print(f"{spec}: {exc.line()}", file=sys.stderr)
            continue
        rows = {k: v for k, v in rows.items()
                if not (v["package"] == name and v["version"] == version and v["member"] == member)}
        rows[(new["wheel_sha256"], new["member"])] = new
    atomic_write(args.data, render(list(rows.values())))
    print(f"wrote {args.data} ({len(rows)} rows)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
