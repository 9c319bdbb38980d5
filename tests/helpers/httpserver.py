"""A local HTTP server for tests: serves a directory, honours Range requests,
counts requests, connections and bytes, and can be told to fail (shared by all tests).
It speaks HTTP/1.1 and keeps connections open between requests, as PyPI does.

It can also misbehave on chosen paths (:class:`Misbehave`), as a slow, huge or
lying server would: drip-feed the headers or the body one byte at a time,
announce a huge Content-Length, send an endless body, or redirect elsewhere
(``ftp:`` ...).  Those are real sockets and real bytes, for the bounded reader's
tests (builder/_http.py)."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Misbehave:
    """How the server misbehaves on one path (all optional, combined in this order)."""

    drip_headers: float | None = None  # seconds between bytes of the status line and headers
    redirect: str | None = None  # answer 302 with this Location
    content_length: int | None = None  # announce this Content-Length instead of the real one
    endless: bool = False  # no Content-Length, then zero bytes until the client hangs up
    drip: float | None = None  # seconds between bytes of the body
    content_type: str = "application/octet-stream"  # what the 200 answer says it is
    status: int | None = None  # answer this status (a short body, the connection kept open)
    drop: str | None = None  # close without answering: "always", or "kept" (on a connection that answered before)


@dataclass
class Stats:
    requests: int = 0
    connections: int = 0  # TCP connections accepted
    bytes_sent: int = 0
    ranges: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    fail_with: int | None = None  # set to e.g. 404/503 to make every request fail
    misbehave: dict[str, Misbehave] = field(default_factory=dict)  # URL path -> behaviour
    stopped: threading.Event = field(default_factory=threading.Event)
    hold: threading.Event | None = None  # while set to an unset Event, every request waits (a stalled index)
    lock: threading.Lock = field(default_factory=threading.Lock)
    socks: list[object] = field(default_factory=list)  # the accepted sockets, shut down when the server stops


class _Handler(SimpleHTTPRequestHandler):
    stats: Stats
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    answered = 0  # requests answered on this connection

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.stats.lock:
            self.stats.connections += 1
            self.stats.socks.append(self.connection)

    def end_headers(self) -> None:
        self.answered += 1
        super().end_headers()

    def _count(self, n: int) -> None:
        with self.stats.lock:
            self.stats.bytes_sent += n

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        st = self.stats
        with st.lock:
            st.requests += 1
            st.paths.append(self.path)
        if st.hold is not None:
            st.hold.wait(120)
        if st.fail_with:
            self.send_error(st.fail_with)
            return
        bad = st.misbehave.get(self.path.split("?")[0])
        if bad is not None:
            try:
                self._misbehave(bad, head)
            except OSError:  # the client hung up: that is what a bounded client does
                pass
            return
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            if not self.path.endswith("/"):
                self.send_response(301)
                self.send_header("Location", self.path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            index = path / "index.json"
            if not index.exists():
                index = path / "index.html"
            if not index.exists():
                return super().do_GET() if not head else super().do_HEAD()
            path = index
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        rng = self.headers.get("Range")
        start, end = 0, size - 1
        status = 200
        if rng:
            with st.lock:
                st.ranges.append(rng)
            m = re.match(r"bytes=(\d*)-(\d*)$", rng.strip())
            if not m:
                self.send_error(416)
                return
            a, b = m.groups()
            if a == "":
                start, end = max(0, size - int(b)), size - 1
            else:
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
            if start > end or start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        ctype = {".html": "text/html", ".json": "application/vnd.pypi.simple.v1+json"}.get(
            path.suffix, "application/octet-stream")
        self.send_header("Content-Type", ctype)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(length)
        self._count(len(data))
        self.wfile.write(data)


    def _write_slowly(self, data: bytes, delay: float | None) -> None:
        if not delay:
            self.wfile.write(data)
            self._count(len(data))
            return
        for i in range(len(data)):
            if self.stats.stopped.wait(delay):
                return
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            self._count(1)

    def _misbehave(self, bad: Misbehave, head: bool) -> None:
        path = Path(self.translate_path(self.path))
        body = path.read_bytes() if path.is_file() else b"x" * 1000
        if bad.drop == "always" or (bad.drop == "kept" and self.answered):
            self.close_connection = True  # as a server whose keep-alive timeout passed: no answer at all
            return
        if bad.status is not None:
            text = f"status {bad.status}".encode()
            self.send_response(bad.status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        if bad.redirect:
            lines = ["HTTP/1.1 302 Found", f"Location: {bad.redirect}", "Content-Length: 0"]
        else:
            length = bad.content_length if bad.content_length is not None else len(body)
            lines = ["HTTP/1.1 200 OK", f"Content-Type: {bad.content_type}"]
            lines += ["Connection: close"] if bad.endless else [f"Content-Length: {length}"]
        self._write_slowly(("\r\n".join(lines) + "\r\n\r\n").encode(), bad.drip_headers)
        self.close_connection = True
        if head or bad.redirect:
            return
        if bad.endless:
            block = bytes(64 * 1024)
            while not self.stats.stopped.is_set():
                self.wfile.write(block)
                self._count(len(block))
            return
        if bad.content_length is not None and bad.content_length > len(body):
            body = body + bytes(min(bad.content_length - len(body), 8 * 1024 * 1024))
        self._write_slowly(body, bad.drip)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a read it cancelled) is no error of the server's:
        not printed (the tests read the command's stderr)."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


@contextmanager
def serve(directory: Path, *, idle: float | None = 30.0) -> Iterator[tuple[str, Stats]]:
    """Serve ``directory`` on 127.0.0.1; yields (base URL, stats).  A connection idle for
    ``idle`` seconds is closed by the server (its keep-alive timeout)."""
    stats = Stats()
    handler = type("Handler", (_Handler,), {"stats": stats, "timeout": idle})
    httpd = _Server(("127.0.0.1", 0), partial(handler, directory=os.fspath(directory)))
    httpd.block_on_close = False  # a kept connection's thread waits for a next request that may never come
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", stats
    finally:
        stats.stopped.set()
        if t.is_alive():  # shutdown() waits for serve_forever: never on a thread that is gone or frozen
            httpd.shutdown()
        httpd.server_close()
        with stats.lock:
            socks = list(stats.socks)
        for s in socks:  # the kept connections end with the server, as they would with a real one
            try:
                s.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
            except OSError:
                pass


def write_simple_index(root: Path, wheels_dir: Path, upload_time: str = "2025-06-01T00:00:00Z",
                       upload_times: Mapping[str, str] | None = None,
                       yanked: Mapping[str, str | bool] | None = None,
                       requires_python: Mapping[str, str] | None = None) -> Path:
    """Write a PEP 503 simple index under ``root/simple`` for the files in ``wheels_dir``.

    Files are linked relatively as ``../../files/NAME`` with their sha256 as a
    URL fragment, so uv records real hashes.  ``upload_times`` (file name ->
    RFC 3339 time) overrides ``upload_time`` per file, for ``--exclude-newer``
    tests.  ``yanked`` (file name -> True or a reason, PEP 592) and
    ``requires_python`` (file name -> specifier) go into both forms of the page.
    Rewriting an index over an existing ``root`` replaces changed files
    (a re-upload).  Returns the ``simple`` directory.
    """
    import hashlib
    import html
    import json

    from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    by_project: dict[str, list[Path]] = {}
    for f in sorted(wheels_dir.iterdir()):
        if f.suffix == ".whl":
            name = str(parse_wheel_filename(f.name)[0])
        elif f.name.endswith(".tar.gz"):
            name = str(parse_sdist_filename(f.name)[0])
        else:
            continue
        target = files / f.name
        if not target.exists() or target.read_bytes() != f.read_bytes():
            target.write_bytes(f.read_bytes())
        by_project.setdefault(canonicalize_name(name), []).append(target)
    simple = root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    links = []
    for proj, fs in sorted(by_project.items()):
        d = simple / proj
        d.mkdir(exist_ok=True)
        # PEP 691 JSON with PEP 700 upload-time, so --exclude-newer keeps the files.
        doc = {
            "meta": {"api-version": "1.1"},
            "name": proj,
            "files": [
                {
                    "filename": f.name,
                    "url": f"../../files/{f.name}",
                    "hashes": {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()},
                    "upload-time": (upload_times or {}).get(f.name, upload_time),
                    "size": f.stat().st_size,
                    "yanked": (yanked or {}).get(f.name, False),
                    **({"requires-python": requires_python[f.name]} if f.name in (requires_python or {}) else {}),
                }
                for f in fs
            ],
        }
        (d / "index.json").write_text(json.dumps(doc, indent=1))

        def attrs(name: str) -> str:
            y = (yanked or {}).get(name, False)
            rp = (requires_python or {}).get(name)
            return ((f' data-yanked="{html.escape(y if isinstance(y, str) else "")}"' if y else "")
                    + (f' data-requires-python="{html.escape(rp)}"' if rp else ""))

        rows = "".join(
            f'<a href="../../files/{f.name}#sha256={hashlib.sha256(f.read_bytes()).hexdigest()}"{attrs(f.name)}>'
            f"{f.name}</a><br>\n"
            for f in fs
        )
        (d / "index.html").write_text(f"<html><body>\n{rows}</body></html>\n")
        links.append(f'<a href="{proj}/">{proj}</a><br>')
    (simple / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    return simple
