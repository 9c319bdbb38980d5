"""Benchmark `builder build` against plain `uv venv` + `uv pip sync` of the same lock.

In one run, for one (matrix, Python), with one uv cache:

1. warm-up: plain uv venv + sync (downloads everything if the cache is cold; its
   time is reported as "cold" when the cache started empty);
2. raw: plain ``uv venv`` + ``uv pip sync`` of the lock into a fresh dir (warm cache);
3. builder: ``builder build`` into a fresh root, twice (two roots); smoke time
   (from the manifest) is subtracted.  The second build is builder's warm
   install (the first fills uv's cache entries for direct wheel URLs, which uv
   keeps apart from pylock installs): target second <= 1.25x raw;
4. the second runtime of the same lock (another root on the same filesystem):
   the disk it adds, counting every inode once (st_nlink-aware, like ``du``
   over both trees), must be <= 1% of the first runtime's disk.

Needs PyPI and ~10 GB free for matrix B (``--matrix b``).  Run from the project:

    .venv/bin/python benchmarks/bench_build.py --matrix b --python 3.12 \\
        --cache-dir ~/.cache/builder-bench-uv --workdir /var/tmp/builder-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from builder import _proc, tools
from builder.project import Project, find_root, lock_path

RATIO, DISK = 1.25, 0.01


def inodes(tree: Path) -> dict[tuple[int, int], int]:
    """(st_dev, st_ino) -> bytes on disk, for every file and directory under ``tree``."""
    out: dict[tuple[int, int], int] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames, ""]:
            st = os.lstat(os.path.join(dirpath, name)) if name else os.lstat(dirpath)
            out[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return out


def timed(argv: list[str], env: dict[str, str], what: str) -> float:
    res = _proc.run(argv, timeout=3600, env=env, what=what, check=True)
    return res.duration


def raw_install(uv: str, py: str, lock: Path, dest: Path, cache: Path, env: dict[str, str]) -> float:
    t = timed([uv, "venv", str(dest), "--python", py, "--no-config", "-q"], env, "uv venv")
    t += timed([uv, "pip", "sync", str(lock), "--python", str(dest / "bin" / "python"), "--preview-features",
                "pylock", "--link-mode", "hardlink", "--cache-dir", str(cache), "--no-config", "-q"], env,
               "uv pip sync")
    return t


def build(project: Path, matrix: str, python: str, root: Path, cache: Path) -> tuple[float, dict[str, object]]:
    argv = [sys.executable, "-m", "builder", "--project", str(project), "-q", "build", "--matrix", matrix,
            "--python", python, "--root", str(root), "--cache-dir", str(cache), "--json"]
    t = time.monotonic()
    res = _proc.run(argv, timeout=3600, env=_proc.clean_env(), what="builder build", check=True)
    wall = time.monotonic() - t
    return wall, json.loads(res.stdout)[0]["manifest"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--matrix", default="b")
    ap.add_argument("--python", default="3.12")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "builder-bench-uv")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch dir (same filesystem as the cache)")
    ap.add_argument("--keep", action="store_true", help="keep the runtimes for inspection")
    args = ap.parse_args()
    proj = Project(find_root())
    m = proj.matrix(args.matrix)
    lock = lock_path(proj.locks, m, args.python)
    uv = tools.uv_bin()
    from builder.runtime import interpreters

    py = interpreters.find(args.python, uv=uv).path
    work = args.workdir or proj.root / ".bench-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cache = args.cache_dir.expanduser()
    cold_cache = not cache.exists() or not any(cache.iterdir())
    env = _proc.clean_env()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        growth: dict[str, int] = {}

        def grew(label: str, before: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
            after = inodes(cache)
            growth[label] = sum(b for k, b in after.items() if k not in before)
            return after

        c0 = inodes(cache)
        warmup = raw_install(uv, py, lock, work / "warmup", cache, env)
        c1 = grew("warmup", c0)
        raw = raw_install(uv, py, lock, work / "raw", cache, env)
        c2 = grew("raw", c1)
        wall, man = build(proj.root, args.matrix, args.python, work / "root1", cache)
        c3 = grew("builder_first", c2)
        timings = man["timings"]
        assert isinstance(timings, dict)
        builder_s = wall - float(timings["smoke"])
        first = inodes(work / "root1")
        wall2, man2 = build(proj.root, args.matrix, args.python, work / "root2", cache)
        t2 = man2["timings"]
        assert isinstance(t2, dict)
        builder2_s = wall2 - float(t2["smoke"])
        c4 = grew("builder_second", c3)
        second = inodes(work / "root2")
        first_bytes = sum(first.values())
        first_unique = sum(b for k, b in first.items() if k not in c3)
        # Everything the second build added to the disk: its own files and any
        # growth of the cache (a re-download would show up here, not as links).
        known = {**c3, **first}
        added = sum(b for k, b in {**c4, **second}.items() if k not in known)
        # builder's own warm install is the second build: the first one fills the
        # cache entries of direct wheel URLs, which uv keeps apart from pylock's.
        ratio = builder2_s / raw
        out = {
            "lock": str(lock.relative_to(proj.root)), "packages": man["lock"],
            "interpreter": man["interpreter"], "card": "none (no GPU needed)",
            "warmup_s": round(warmup, 2), "cache_was_cold": cold_cache,
            "raw_uv_s": round(raw, 2),  # uv 0.13.9 re-downloads pylock wheels: see cache_growth_bytes
            "builder_wall_s": round(wall, 2), "builder_smoke_s": timings["smoke"],
            "builder_excl_smoke_s": round(builder_s, 2), "ratio": round(ratio, 3),
            "second_build_wall_s": round(wall2, 2), "second_build_smoke_s": t2["smoke"],
            "second_build_excl_smoke_s": round(builder2_s, 2),
            "first_runtime_bytes": first_bytes, "first_runtime_bytes_not_in_cache": first_unique,
            "second_runtime_added_bytes": added, "disk_fraction": round(added / first_bytes, 5),
            "cache_growth_bytes": growth,
            "smoke": man["smoke"],
            "targets": {"ratio": RATIO, "disk_fraction": DISK},
        }
        ok = ratio <= RATIO and added <= DISK * first_bytes
        out["within_targets"] = ok
        print(json.dumps(out, indent=1))
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
