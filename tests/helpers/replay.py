"""Offline replay of captured HTTP range reads (shared by tests).

``tests/data/locks/capture.py`` records, as a proxy in front of
files.pythonhosted.org, every byte range ``builder check`` reads from each wheel
(plus each GPU wheel's zip central directory) and writes them here as:

    replay/index.json        {"schema": 1, "origin": URL, "captured": DATE,
                              "files": {URL path: {"size": N, "blob": NAME,
                                                   "segments": [[start, length], ...]}
                                                                      "dropped": [[start, length], ...]}
                                                  | {"status": 404}}}
    replay/NAME              gzip of the segments' bytes, concatenated in order

``dropped`` (optional) lists reads the capture saw but did not keep because they
would not fit the committed test data (a wheel read over the checker's budget).

:func:`serve` answers GET/HEAD from those segments only.  A request the capture
does not cover is answered 416 (a range) or 500 (a path or a whole file) and
recorded in :attr:`Replay.errors`, so a test fails loudly and names what to
re-capture instead of reading a made-up byte.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SCHEMA = 1
ORIGIN = "https://files.pythonhosted.org"


def merge(segments: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Coalesce overlapping or adjacent (start, data) segments, sorted by start."""
    out: list[tuple[int, bytearray]] = []
    for start, data in sorted(segments, key=lambda s: s[0]):
        if out and start <= out[-1][0] + len(out[-1][1]):
            s0, buf = out[-1]
            end = start + len(data)
            if end > s0 + len(buf):
                buf += data[s0 + len(buf) - start:]
        else:
            out.append((start, bytearray(data)))
    return [(s, bytes(b)) for s, b in out]


def write(root: Path, files: dict[str, dict[str, object]], blobs: dict[str, bytes], *,
          captured: str) -> None:
    """Write index.json and the blobs (gzip, mtime 0 so re-captures diff cleanly)."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.seg.gz"):
        if old.name not in blobs:
            old.unlink()
    for name, data in blobs.items():
        (root / name).write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    doc = {"schema": SCHEMA, "origin": ORIGIN, "captured": captured,
           "files": dict(sorted(files.items()))}
    (root / "index.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


@dataclass
class Entry:
    size: int
    segments: list[tuple[int, bytes]]  # merged, sorted
    dropped: list[tuple[int, int]] = field(default_factory=list)  # (start, length) left out at capture

    def slice(self, start: int, end: int) -> bytes | None:
        """Bytes [start, end] (inclusive) if one captured segment covers them."""
        for s, d in self.segments:
            if s <= start and end < s + len(d):
                return d[start - s: end - s + 1]
        return None


@dataclass
class Replay:
    """Captured files and what the server was asked (thread-safe lists)."""

    root: Path
    files: dict[str, Entry | int] = field(default_factory=dict)  # int: a captured HTTP status
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, root: Path) -> Replay:
        doc = json.loads((root / "index.json").read_text(encoding="utf-8"))
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"{root}/index.json: schema {doc.get('schema')!r}, expected {SCHEMA}")
        r = cls(root)
        for path, e in doc["files"].items():
            if "status" in e:
                r.files[path] = int(e["status"])
                continue
            data = gzip.decompress((root / e["blob"]).read_bytes())
            segs, pos = [], 0
            for start, length in e["segments"]:
                segs.append((int(start), data[pos: pos + length]))
                pos += length
            if pos != len(data):
                raise ValueError(f"{root / e['blob']}: {len(data)} bytes, index says {pos}")
            r.files[path] = Entry(int(e["size"]), segs,
                                  [(int(a), int(n)) for a, n in e.get("dropped", [])])
        return r

    def error(self, msg: str) -> None:
        with self.lock:
            self.errors.append(msg)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    replay: Replay

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _fail(self, code: int, msg: str, size: int | None = None) -> None:
        self.replay.error(f"{self.command} {self.path} {self.headers.get('Range') or ''}: {msg}".strip())
        self.send_response(code)
        if size is not None:
            self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, head: bool) -> None:
        r = self.replay
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        with r.lock:
            r.requests.append(f"{path} {rng or 'whole'}")
        entry = r.files.get(path)
        if entry is None:
            return self._fail(500, "path not captured (re-run tests/data/locks/capture.py)")
        if isinstance(entry, int):
            self.send_error(entry)
            return None
        if rng is None:
            start, end, status = 0, entry.size - 1, 200
        else:
            m = _RANGE.match(rng.strip())
            if not m or m.groups() == ("", ""):
                return self._fail(416, "unsupported Range header", entry.size)
            a, b = m.groups()
            if a == "":
                start, end = max(0, entry.size - int(b)), entry.size - 1
            else:
                start, end = int(a), min(int(b) if b else entry.size - 1, entry.size - 1)
            status = 206
            if start > end:
                return self._fail(416, "empty range", entry.size)
        data = entry.slice(start, end)
        if data is None:
            what = "whole file" if rng is None else f"bytes {start}-{end}"
            why = "not captured (re-run tests/data/locks/capture.py)"
            if any(a <= end and start < a + n for a, n in entry.dropped):
                why = ("dropped at capture: a read this large does not fit the committed test data "
                       "(the checker is over its read budget)")
            return self._fail(500 if rng is None else 416, f"{what} {why}", entry.size)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.end_headers()
        if not head:
            self.wfile.write(data)
        return None


@contextmanager
def serve(root: Path) -> Iterator[tuple[str, Replay]]:
    """Serve the capture under ``root`` on 127.0.0.1; yields (base URL, replay)."""
    replay = Replay.load(root)
    handler = type("Handler", (_Handler,), {"replay": replay})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", replay
    finally:
        httpd.shutdown()
        httpd.server_close()


def rewrite_lock(text: str, base_url: str) -> str:
    """A lock's PyPI file URLs pointed at the replay server."""
    return text.replace(ORIGIN + "/", base_url.rstrip("/") + "/")
