"""Capture what ``builder check`` reads from PyPI for the real-lock corpus (network).

    .venv/bin/python tests/data/locks/capture.py            # all cases of expected.toml
    .venv/bin/python tests/data/locks/capture.py --dry-run  # only report sizes

A recording proxy in front of https://files.pythonhosted.org forwards every
request (Range header included) and keeps each answer as a byte segment of its
file.  Through it the script runs the real CLI, ``builder check --lock COPY --json``
with each case's host and a fresh cache, on a copy of each lock whose file URLs
point at the proxy.  Only what the checker reads is kept (its own reads include the
file lists its rules need).  The segments are written to ``replay/`` (format:
tests/helpers/replay.py), which tests serve offline.

Re-capture after changing what the checker reads, and after re-locking
(relock.py).  Keep the capture small: it is committed (total about 8 MB at most,
no file over 2 MB; the script refuses more).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import subprocess
import sys
import tempfile
import threading
import tomllib
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from tests.helpers import replay  # noqa: E402

MAX_FILE = 2 * 1024 * 1024
MAX_TOTAL = 8 * 1024 * 1024


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.segments: dict[str, list[tuple[int, bytes]]] = {}
        self.sizes: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.log: list[str] = []

    def add(self, path: str, start: int, data: bytes, size: int) -> None:
        with self.lock:
            self.segments.setdefault(path, []).append((start, data))
            old = self.sizes.setdefault(path, size)
            if old != size:
                raise RuntimeError(f"{path}: size changed from {old} to {size} during the capture")


def _proxy(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            req = urllib.request.Request(replay.ORIGIN + self.path,
                                         headers={"User-Agent": "builder-corpus-capture/1",
                                                  **({"Range": rng} if rng else {})})
            with rec.lock:
                rec.log.append(f"{self.path} {rng or 'whole'}")
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 (fixed https origin)
                    body, status, headers = resp.read(), resp.status, resp.headers
            except urllib.error.HTTPError as exc:
                with rec.lock:
                    rec.status[self.path] = exc.code
                self.send_error(exc.code)
                exc.close()
                return
            if status == 206:
                cr = headers["Content-Range"]  # bytes A-B/TOTAL
                span, total = cr.split()[1].split("/")
                start = int(span.split("-")[0])
                rec.add(self.path, start, body, int(total))
            else:
                rec.add(self.path, 0, body, len(body))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", headers["Content-Range"])
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _gz(segments: list[tuple[int, bytes]]) -> int:
    return len(gzip.compress(b"".join(d for _s, d in segments), compresslevel=9, mtime=0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="capture, report sizes, write nothing")
    ap.add_argument("--keep-going", action="store_true",
                    help="record the reads of a case whose check fails (exit 3) instead of stopping")
    args = ap.parse_args()
    cases = tomllib.loads((HERE / "expected.toml").read_text(encoding="utf-8"))["case"]
    rec = Recorder()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _proxy(rec))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with tempfile.TemporaryDirectory(prefix="corpus-capture-") as tmp:
            for case in cases:
                src = HERE / case["lock"]
                copy = Path(tmp) / src.name
                copy.write_text(replay.rewrite_lock(src.read_text(encoding="utf-8"), base), encoding="utf-8")
                h = case["host"]
                argv = [sys.executable, "-m", "builder", "check", "--lock", str(copy), "--json",
                        "--cache-dir", str(Path(tmp) / f"cache-{case['id']}"), "--driver", h["driver"],
                        "--glibc", h["glibc"]]
                for cc in h["gpu-cc"]:
                    argv += ["--gpu-cc", cc]
                res = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=600)
                print(f"{case['id']}: builder check exit {res.returncode}", file=sys.stderr)
                if res.returncode not in (0, 1):
                    print(res.stderr, file=sys.stderr)
                    if not args.keep_going:
                        return 1
    finally:
        httpd.shutdown()
        httpd.server_close()
    files: dict[str, dict[str, object]] = {p: {"status": s} for p, s in rec.status.items()}
    blobs: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    for path, segs in sorted(rec.segments.items()):
        merged = replay.merge(segs)
        dropped: list[tuple[int, bytes]] = []
        # A wheel whose reads exceed the per-file cap keeps its small segments (zip
        # directory, METADATA); the big ones are dropped and listed, so a replayed
        # read of them fails naming the cause (a checker over its read budget).
        over = _gz(merged) > MAX_FILE
        while over and merged and _gz(merged) > MAX_FILE // 4:
            big = max(merged, key=lambda sd: len(sd[1]))
            merged.remove(big)
            dropped.append(big)
        name = path.rsplit("/", 1)[-1] + ".seg.gz"
        blobs[name] = b"".join(d for _s, d in merged)
        sizes[name] = _gz(merged)
        files[path] = {"size": rec.sizes[path], "blob": name,
                       "segments": [[s, len(d)] for s, d in merged]}
        if dropped:
            files[path]["dropped"] = [[s, len(d)] for s, d in sorted(dropped, key=lambda sd: sd[0])]
            print(f"dropped {sum(len(d) for _s, d in dropped)} bytes of {name}: over the {MAX_FILE} cap",
                  file=sys.stderr)
    total = sum(sizes.values())
    for n, s in sorted(sizes.items(), key=lambda x: -x[1])[:None if args.dry_run else 15]:
        print(f"{s:>10}  {n}", file=sys.stderr)
    print(f"{len(blobs)} files, {total} bytes compressed ({sum(map(len, blobs.values()))} raw), "
          f"{len(rec.log)} requests", file=sys.stderr)
    big = [n for n, s in sizes.items() if s > MAX_FILE]
    if big or total > MAX_TOTAL:
        print(f"too large: total {total} (max {MAX_TOTAL}), files over {MAX_FILE}: {big}", file=sys.stderr)
        return 1
    if not args.dry_run:
        replay.write(HERE / "replay", files, blobs,
                     captured=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
