"""Regenerate ``builder/data/requires.toml``: what ``builder suggest`` reads of the METADATA of
every CUDA vLLM wheel on PyPI and of every PyPI torch wheel those pin exactly.

The vLLM wheels are the ones ``scripts/kernel_data.py`` reads (manylinux x86_64 from 0.6.0,
aarch64 from 0.10.2, no yanked files, no pre-releases); the torch wheels are every manylinux
x86_64 and aarch64 wheel of a torch version some vLLM wheel pins with ``==`` (under any
marker).  Each wheel's METADATA is read with builder's own reader (HTTP range requests of the
zip's tail, :func:`builder.check.wheelread.fetch`, the search's own path), and of its
``Requires-Dist`` the entries the search reads are kept: those naming a package of
cuda.toml's ``[packages] gpu`` list, ``cuda-toolkit``, or a CUDA runtime package.  Wheels of
one release and architecture with the same entries share a row; a row lists each wheel as
``"<sha256> <file name>"``, and the search uses it only for a file whose index lists that
sha256.  Restartable: wheels already in the file are not read again (a file made with
another GPU list, or another schema, is read again whole).

    python scripts/requires_data.py --all                      # add rows for wheels that have none
    python scripts/requires_data.py --all --summary req.json   # and say what was added (lock-refresh)
    python scripts/requires_data.py --all --dry-run            # list the wheels that have no row

Costs (2026-12-07): two range requests per wheel; the 110 vLLM wheels and 152 torch wheels
(torch 2.4.0-2.14.0, the versions pinned) in 6 s; PyPI is the only host contacted.  The
lock-refresh workflow (``nox -s lock-refresh``) runs ``--all --summary`` and adds the new rows
to its pull request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tomlkit  # noqa: E402
from packaging.requirements import InvalidRequirement, Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import InvalidVersion, Version  # noqa: E402

from builder import data as datafiles  # noqa: E402
from builder.check import components, toolkit, wheelread  # noqa: E402
from builder.check import knowledge as cuda  # noqa: E402
from builder.check.identity import exact  # noqa: E402
from builder.check.model import WheelRef  # noqa: E402
from builder.errors import Unavailable  # noqa: E402
from builder.files.fsio import atomic_write  # noqa: E402
from builder.suggest import known  # noqa: E402
from scripts import kernel_data  # noqa: E402

HEADER = """\
What `builder suggest` reads of the METADATA of every CUDA vLLM wheel on PyPI (x86_64 from
0.6.0, aarch64 from 0.10.2) and of every PyPI torch wheel those pin exactly: the
Requires-Dist entries naming a package of `gpu` (builder/data/cuda.toml's [packages] gpu list
when this file was made), `cuda-toolkit`, or a CUDA runtime package (torch's CUDA line), in
METADATA's order, read from each wheel by builder's own reader (HTTP range requests).
A row holds the wheels of one release and architecture with the same entries, each as
"<sha256> <file name>": the search uses a row only for a file whose index page lists that
sha256, and reads METADATA as before for any other file.  `source` is the index page that
listed the wheels, `date` the day they were read.
Regenerate (network, PyPI; restartable, adds rows for wheels that have none):
  python scripts/requires_data.py --all      (see its docstring)
Read by builder/suggest/known.py; pinned in tests/test_suggest_known.py."""

Rows = dict[str, dict[str, Any]]  # sha256 -> {package, version, arch, wheel, requires, source, date}


def kept(name: str, *, gpu: frozenset[str], k: cuda.Knowledge, tk: toolkit.ToolkitKnowledge) -> bool:
    """Whether the search reads Requires-Dist entries naming ``name`` (canonical)."""
    if name in gpu or name == "cuda-toolkit":
        return True
    hit = components.component_of(k, tk, name)
    return hit is not None and hit[0] == "cudart"


def keep(requires: Iterable[str], **kw: Any) -> list[str]:
    out = []
    for r in requires:
        try:
            name = canonicalize_name(Requirement(r).name)
        except InvalidRequirement:
            continue  # the search's own parse (builder.check.identity.pins) skips it as well
        if kept(name, **kw):
            out.append(r)
    return out


def torch_pins(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every torch version a vLLM row pins with ``==``, under any marker."""
    out = set()
    for row in rows:
        for r in row["requires"]:
            try:
                req = Requirement(r)
            except InvalidRequirement:
                continue
            v = exact(req) if canonicalize_name(req.name) == "torch" else None
            try:
                if v is not None:
                    out.add(str(Version(v)))
            except InvalidVersion:
                continue  # ``torch===nightly``: no release of the index is that (the search skips it too)
    return out


def read(w: kernel_data.Wheel, page: str, **kw: Any) -> dict[str, Any]:
    ref = WheelRef(name=w.package, version=w.version, filename=w.filename, url=w.url, sha256=w.sha256, size=w.size,
                   platform=True)
    facts = wheelread.fetch(ref, want_binary=False)
    return {"package": w.package, "version": w.version, "arch": w.arch, "wheel": w.filename,
            "requires": keep(facts.requires_dist, **kw), "source": page,
            "date": dt.datetime.now(dt.UTC).date().isoformat()}


def render(rows: Rows, gpu: Iterable[str]) -> str:
    groups: dict[tuple[str, str, str, tuple[str, ...], str, str], list[str]] = {}
    for sha, r in rows.items():
        key = (r["package"], r["version"], r["arch"], tuple(r["requires"]), r["source"], r["date"])
        groups.setdefault(key, []).append(f"{sha} {r['wheel']}")
    doc = tomlkit.document()
    for line in HEADER.splitlines():
        doc.add(tomlkit.comment(line))
    doc.add("schema", known.SCHEMA)
    doc.add("gpu", sorted(gpu))
    aot = tomlkit.aot()
    for (package, version, arch, requires, source, date), wheels in sorted(
            groups.items(), key=lambda kv: (kv[0][0], Version(kv[0][1]), kv[0][2], kv[0][3])):
        t = tomlkit.table()
        t.add("package", package)
        t.add("version", version)
        t.add("arch", arch)
        arr = tomlkit.array()
        arr.extend(requires)
        arr.multiline(len(requires) > 1)
        t.add("requires", arr)
        ws = tomlkit.array()
        ws.extend(sorted(wheels, key=lambda e: e.split(" ", 1)[1]))
        ws.multiline(True)
        t.add("wheels", ws)
        t.add("source", source)
        t.add("date", date)
        aot.append(t)
    doc.add("release", aot)
    return datafiles.render(datafiles.REQUIRES, doc, known.from_mapping)  # what we write must load


def load_rows(path: Path, gpu: frozenset[str]) -> Rows:
    """Rows by wheel sha256; a file of another schema or GPU list, or one that is not a valid
    requires.toml (truncated, edited), is dropped: every wheel is read again."""
    if not path.exists():
        return {}
    try:
        data = tomlkit.parse(path.read_text(encoding="utf-8")).unwrap()
    except (tomlkit.exceptions.TOMLKitError, UnicodeDecodeError):
        return {}
    if datafiles.problems_of(datafiles.REQUIRES, data) or data.get("schema") != known.SCHEMA or \
            frozenset(data.get("gpu", ())) != gpu:
        return {}
    out: Rows = {}
    for row in data.get("release", []):
        for entry in row["wheels"]:
            sha, name = known.wheel_entry(entry) or ("", "")
            out[sha] = {"package": row["package"], "version": row["version"], "arch": row["arch"], "wheel": name,
                        "requires": list(row["requires"]), "source": row["source"], "date": row["date"]}
    return out


def _read_all(todo: list[tuple[kernel_data.Wheel, str]], rows: Rows, failed: list[dict[str, str]],
              **kw: Any) -> list[str]:
    added = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        futs = [(w, pool.submit(read, w, page, **kw)) for w, page in todo]
        for w, fut in futs:
            try:
                rows[w.sha256] = fut.result()
            except Unavailable as exc:
                failed.append({"wheel": w.filename, "why": exc.line()})
                print(f"{w.filename}: {exc.line()}", file=sys.stderr)
                continue
            added.append(w.filename)
    return added


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", required=True, help="every wheel that has no row")
    ap.add_argument("--dry-run", action="store_true", help="list what would be read; read and write nothing")
    ap.add_argument("--data", type=Path, default=datafiles.REQUIRES)
    ap.add_argument("--index", default=kernel_data.INDEX, help="a PEP 691 simple index (default: PyPI)")
    ap.add_argument("--summary", type=Path, help="write what was added and what failed here (JSON)")
    args = ap.parse_args(argv)
    k, tk = cuda.load(), toolkit.load()
    kw: dict[str, Any] = {"gpu": k.gpu, "k": k, "tk": tk}
    rows = load_rows(args.data, k.gpu)
    failed: list[dict[str, str]] = []
    added: list[str] = []
    vpage = kernel_data.project_page(args.index, "vllm")
    vllm = kernel_data.select(kernel_data.index_files(args.index, "vllm"), "vllm", kernel_data.SINCE, vpage)
    todo = [(w, vpage) for w in vllm if w.sha256 not in rows]
    print(f"vllm: {len(todo)} wheel(s) to read; {len(rows)} row(s) kept", file=sys.stderr)
    if not args.dry_run:
        added += _read_all(todo, rows, failed, **kw)
        if added:  # kept before torch's page is read: a stop or an error there loses no vLLM read
            atomic_write(args.data, render(rows, k.gpu))
    pinned = torch_pins(r for r in rows.values() if r["package"] == "vllm")
    tpage = kernel_data.project_page(args.index, "torch")
    torch = [w for w in kernel_data.select(kernel_data.index_files(args.index, "torch"), "torch",
                                           {a: Version("0") for a in kernel_data.SINCE}, tpage)
             if w.version in pinned]
    todo = [(w, tpage) for w in torch if w.sha256 not in rows]
    print(f"torch {', '.join(sorted(pinned, key=Version))}: {len(todo)} wheel(s) to read", file=sys.stderr)
    if args.dry_run:
        for w, _p in todo:
            print(w.filename)
        return 0
    added += _read_all(todo, rows, failed, **kw)
    if added or not args.data.exists():
        atomic_write(args.data, render(rows, k.gpu))
    if args.summary is not None:
        atomic_write(args.summary, json.dumps({"data": str(args.data), "wheels": len(rows), "failed": failed,
                                               "added": added}, indent=1))
    print(f"{args.data}: {len(rows)} wheels; {len(added)} added; {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


main = kernel_data.guarded(_main, "requires_data.py")

if __name__ == "__main__":
    sys.exit(main())
