"""Regenerate ``builder/data/kernels.toml``: the GPU code of the main CUDA extension of
every CUDA wheel of a package on PyPI (vLLM: ``vllm/_C.abi3.so``, from 0.24
``vllm/_C_stable_libtorch.abi3.so``), read by builder's own fatbin reader.

The wheels come from PyPI's simple index (PEP 691 JSON: filename, URL, sha256, size,
upload time, yanked): every manylinux wheel for x86_64 from vLLM 0.6.0 and for aarch64
(first published with 0.10.2), yanked files and pre-releases left out, build-tagged
re-uploads (``vllm-0.20.1-1-...``) kept as wheels of their own.  The member read is the
first of the package's ``[[main-extension]]`` members (builder/data/cuda.toml) that the
wheel has; it is streamed out of the wheel by HTTP Range requests and inflated on the fly
(:mod:`builder.check.deepread`), so no wheel is stored and memory stays small.  One row
per wheel sha256; the file is rewritten (atomically) after every wheel, so an
interrupted run loses nothing and the next run goes on where it stopped.

    python scripts/kernel_data.py --all            # add a row for every wheel that has none
    python scripts/kernel_data.py --all --summary kernel-data.json   # and say what was added (lock-refresh)
    python scripts/kernel_data.py --all --dry-run  # list the wheels that have no row
    python scripts/kernel_data.py vllm==0.13.0     # (re)read both wheels of one release
    python scripts/kernel_data.py --check          # re-read every row's wheel; exit 1 if one differs
    python scripts/kernel_data.py --data moe.toml --member vllm/_moe_C.abi3.so vllm==0.13.0   # a table of your own

Costs (2026-12-07): 35-190 MB transferred and 0.5-30 s per vLLM wheel; all 110 wheels 12.1 GB
in about 12 minutes; PyPI is the only host contacted.  The lock-refresh workflow (``nox -s lock-refresh``) runs
``--all --summary`` and adds the new rows to its pull request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from builder import data as datafiles
from builder.binaries import fatbin
from builder.check import deepread, kerneldata, knowledge
from builder.errors import BuilderError, Unavailable
from builder.files.fsio import atomic_write

INDEX = "https://pypi.org/simple"
#: The first release read per architecture (aarch64 wheels start at vLLM 0.10.2).
SINCE = {"x86_64": Version("0.6.0"), "aarch64": Version("0.10.2")}
HEADER = """\
GPU code in the main CUDA extension of every CUDA wheel of a package on PyPI: SASS (cubin)
and PTX targets, read from the fatbin container and entry headers by builder's own reader
(builder/binaries/fatbin.py), never from sm_NN strings; `nvcc` / `nvcc_release` are the nvcc
banners the member carries (the release alone where fatbin compression mangled the rest).
`groups` counts fatbin containers (one per compiled source file) by the targets they
carry: builder.binaries.archcompat.covers uses the largest group meant for a GPU as the build's
arch list.  The member is the first of builder/data/cuda.toml's [[main-extension]] that
the wheel has.  A row applies only to the wheel whose sha256 it names.
Regenerate (network, PyPI; restartable, adds rows for wheels that have none):
  python scripts/kernel_data.py --all      (see its docstring)
Read by builder/check/kerneldata.py; pinned in tests/test_kerneldata.py."""


@dataclass(frozen=True, kw_only=True)
class Wheel:
    package: str
    version: str
    arch: str
    filename: str
    url: str
    sha256: str
    size: int
    uploaded: str


def arch_of(filename: str) -> str | None:
    """x86_64 / aarch64 for a manylinux wheel, else None."""
    _n, _v, _b, tags = parse_wheel_filename(filename)
    for arch in SINCE:
        if any(t.platform.startswith("manylinux") and t.platform.endswith("_" + arch) for t in tags):
            return arch
    return None


def select(files: Iterable[Mapping[str, Any]], package: str, since: Mapping[str, Version],
           page: str = INDEX) -> list[Wheel]:
    """The wheels to read from a PEP 691 file list (pure): manylinux wheels of the
    architectures in ``since``, from that version on; no yanked files, no pre-releases.
    URLs are resolved against ``page``, the project's index page (PEP 691 allows relative ones)."""
    out = []
    for f in files:
        name = str(f["filename"])
        if not name.endswith(".whl") or f.get("yanked"):
            continue
        _n, version, _b, _t = parse_wheel_filename(name)
        arch = arch_of(name)
        if arch is None or arch not in since or version.is_prerelease or version < since[arch]:
            continue
        out.append(Wheel(package=package, version=str(version), arch=arch, filename=name,
                         url=urllib.parse.urljoin(page, str(f["url"])),
                         sha256=str(f["hashes"]["sha256"]), size=int(f["size"]),
                         uploaded=_iso(str(f["upload-time"]))))
    return sorted(out, key=lambda w: (Version(w.version), w.arch, w.filename))


def _iso(stamp: str) -> str:
    """PyPI's ``2025-07-08T04:49:01.722356Z`` to whole seconds."""
    return stamp.split(".")[0].rstrip("Z") + "Z"


def project_page(index: str, package: str) -> str:
    return f"{index.rstrip('/')}/{package}/"


def index_files(index: str, package: str) -> list[dict[str, Any]]:
    """A project's files from a PEP 691 simple index (PyPI unless ``--index``), through builder's
    one bounded reader: an index that cannot be read, or is not JSON, is Unavailable."""
    from builder import _http
    from builder.suggest.index import PAGE_MAX
    from builder.suggest.releases import ACCEPT

    url = project_page(index, package)
    with _http.open_url(url, what=f"{package} index page", max_bytes=PAGE_MAX, headers={"Accept": ACCEPT}) as r:
        raw = b"".join(r.chunks())
    try:
        files = json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError):
        raise Unavailable(f"{url}: not a PEP 691 JSON project page", "pass --index a PEP 691 simple index") from None
    if not isinstance(files, list):
        raise Unavailable(f"{url}: not a PEP 691 JSON project page", "pass --index a PEP 691 simple index")
    return list(files)


def guarded(main: Callable[[list[str] | None], int], prog: str) -> Callable[[list[str] | None], int]:
    """``main`` with builder's errors (an index that cannot be read, a file refused) as one line on
    stderr and their exit code, as the CLI gives them, instead of a traceback."""

    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except BuilderError as exc:
            from builder.cli.common import escape

            print(f"{prog}: error: {exc.line(escape)}", file=sys.stderr)
            return exc.exit_code

    return run


def read_row(w: Wheel, members: tuple[str, ...]) -> dict[str, Any]:
    """Stream the first of ``members`` the wheel has; its row."""
    for i, member in enumerate(members):
        ref = deepread.MemberRef(filename=w.filename, sha256=w.sha256, member=member, url=w.url, size=w.size)
        try:
            r = deepread.deep_read(ref, deadline_s=1800, max_bytes=1 << 30)
        except Unavailable as exc:
            if f": no member {member}" in exc.message and i + 1 < len(members):
                continue
            raise
        break
    print(f"{w.filename}: {member}: {r.bytes_transferred / 1e6:.1f} MB in {r.requests} requests, "
          f"{r.seconds:.1f} s; SASS {', '.join(r.archs.sass_names())}; PTX {', '.join(r.archs.ptx_names())}; "
          f"nvcc {r.nvcc or r.nvcc_release or 'no banner'}", file=sys.stderr)
    return {
        "package": w.package, "version": w.version, "arch": w.arch, "wheel": w.filename, "wheel_sha256": r.sha256,
        "wheel_size": w.size, "uploaded": w.uploaded, "member": member, "member_size": r.member_size,
        "member_crc32": r.crc32, **r.archs.to_dict(), "ptx_isa": r.ptx_isa, "nvcc": r.nvcc,
        "nvcc_release": r.nvcc_release, "nvcc_banners": r.nvcc_banners, "containers": r.containers,
        "entries": r.entries, "produced_by": fatbin.PRODUCED_BY, "reader_version": r.reader_version,
        "date": r.read_at, "source": w.url, "bytes_transferred": r.bytes_transferred,
    }


def render(rows: Iterable[dict[str, Any]]) -> str:
    doc = tomlkit.document()
    for line in HEADER.splitlines():
        doc.add(tomlkit.comment(line))
    doc.add("schema", kerneldata.SCHEMA)
    aot = tomlkit.aot()
    for row in sorted(rows, key=lambda r: (r["package"], Version(r["version"]), r["arch"], r["wheel"])):
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
    return datafiles.render(datafiles.KERNELS, doc, kerneldata.from_mapping)  # what we write must load


def load_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows by wheel sha256; rows of an older schema are dropped (they are read again)."""
    if not path.exists():
        return {}
    data = tomlkit.parse(path.read_text(encoding="utf-8")).unwrap()
    if data.get("schema") != kerneldata.SCHEMA:
        return {}
    return {r["wheel_sha256"]: dict(r) for r in data.get("kernels", [])}


def _spec_wheels(specs: list[str], default_member: str | None, ap: argparse.ArgumentParser,
                 since: Mapping[str, Version], index: str) -> list[tuple[Wheel, str | None]]:
    out: list[tuple[Wheel, str | None]] = []
    files: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        pin, _, member = spec.partition(":")
        name, _, version = pin.partition("==")
        if not version:
            ap.error(f"{spec}: expected NAME==VERSION[:MEMBER]")
        if name not in files:
            files[name] = index_files(index, name)
        hits = [w for w in select(files[name], name, {a: Version("0") for a in since}, project_page(index, name))
                if Version(w.version) == Version(version)]
        if not hits:
            ap.error(f"{spec}: no manylinux wheel on {index}")
        out += [(w, member or default_member) for w in hits]
    return out


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", help="NAME==VERSION[:MEMBER] to (re)read, every wheel of it")
    ap.add_argument("--all", action="store_true", help="every wheel of --package since --since that has no row")
    ap.add_argument("--package", default="vllm")
    ap.add_argument("--arch", choices=sorted(SINCE), action="append", help="only this architecture (repeatable)")
    ap.add_argument("--member", help="read this member instead of the [[main-extension]] list (with --data: "
                                     "the shipped table holds main extensions only)")
    ap.add_argument("--dry-run", action="store_true", help="list what would be read; read and write nothing")
    ap.add_argument("--data", type=Path, default=datafiles.KERNELS)
    ap.add_argument("--index", default=INDEX, help="a PEP 691 simple index (default: PyPI)")
    ap.add_argument("--check", action="store_true", help="re-read every row and compare; write nothing")
    ap.add_argument("--summary", type=Path, help="write what was added and what failed here (JSON)")
    args = ap.parse_args(argv)
    since = {a: v for a, v in SINCE.items() if not args.arch or a in args.arch}
    rows = load_rows(args.data)
    mains = knowledge.load().main_extensions
    if args.check:
        diffs = 0
        for row in rows.values():
            w = Wheel(package=row["package"], version=row["version"], arch=row["arch"], filename=row["wheel"],
                      url=row["source"], sha256=row["wheel_sha256"], size=row["wheel_size"],
                      uploaded=row["uploaded"])
            new = read_row(w, (row["member"],))
            keys = [k for k in new if k not in ("date", "bytes_transferred") and new[k] != row.get(k)]
            if keys:
                diffs += 1
                print(f"{row['wheel']}: {row['member']}: differs in {', '.join(keys)}", file=sys.stderr)
        return 1 if diffs else 0
    if args.all == bool(args.specs):
        ap.error("pass --all or NAME==VERSION specs (not both)")
    if args.member and args.data.resolve() == datafiles.KERNELS:
        ap.error("--member writes rows for another member than the main extension: pass --data FILE")
    todo: list[tuple[Wheel, str | None]]
    if args.all:
        page = project_page(args.index, args.package)
        todo = [(w, args.member) for w in select(index_files(args.index, args.package), args.package, since, page)
                if w.sha256 not in rows]
    else:
        todo = _spec_wheels(args.specs, args.member, ap, since, args.index)
    print(f"{len(todo)} wheel(s) to read; {len(rows)} row(s) kept", file=sys.stderr)
    if args.dry_run:
        for w, _m in todo:
            print(f"{w.filename} {w.uploaded}")
        return 0
    failed: list[dict[str, str]] = []
    added: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for n, (w, member) in enumerate(todo, 1):
        members = (member,) if member else mains.get(w.package)
        if not members:
            ap.error(f"{w.package}: no [[main-extension]] in builder/data/cuda.toml; pass --member")
        print(f"[{n}/{len(todo)}, {time.monotonic() - t0:.0f} s] {w.filename}", file=sys.stderr)
        try:
            rows[w.sha256] = read_row(w, members)
        except Unavailable as exc:
            failed.append({"wheel": w.filename, "why": exc.line()})
            print(f"{w.filename}: {exc.line()}", file=sys.stderr)
            continue
        added.append(rows[w.sha256])
        atomic_write(args.data, render(rows.values()))
    if not todo and not args.data.exists():
        atomic_write(args.data, render(rows.values()))
    if args.summary is not None:
        keep = ("version", "arch", "wheel", "member", "sass", "ptx", "ptx_isa", "nvcc", "nvcc_release", "source")
        atomic_write(args.summary, json.dumps({"data": str(args.data), "rows": len(rows), "failed": failed,
                                               "added": [{k: r.get(k) for k in keep} for r in added]}, indent=1))
    print(f"{args.data}: {len(rows)} rows; {len(added)} added; {len(failed)} wheel(s) failed", file=sys.stderr)
    return 1 if failed else 0


main = guarded(_main, "kernel_data.py")

if __name__ == "__main__":
    sys.exit(main())
