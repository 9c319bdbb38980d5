"""The one bounded HTTP/file reader.  Every network or file read of a wheel goes
through here (``builder.check.wheels``, PEP 658 metadata, the deep fatbin read).

Every read has two bounds, both enforced here and not left to the server:

* **time**: a total ``deadline`` per request (connect, TLS, headers, redirects
  and body together), not only a per-read timeout.  A watchdog shuts the
  socket down when the deadline passes, so a server that drips one byte every
  few seconds, or stalls in the TLS handshake, cannot hold builder longer than
  the deadline.  A :class:`Cancel` token shuts down every socket registered
  with it at once (Ctrl-C while worker threads are reading).
* **bytes**: ``max_bytes`` per request.  A ``Content-Length`` above the cap is
  refused before any body byte is read; a body without one (chunked, or
  close-delimited and endless) is cut at ``max_bytes + 1``.  Memory use is
  bounded by the cap, never by what the server claims or sends.

Only ``https``, ``http`` and ``file`` URLs are read; a redirect may only go to
``https``/``http`` and never from ``https`` down to ``http``.  Local paths
must be regular files (``/dev/zero``, a FIFO or a directory is refused before
anything is read: a FIFO is opened non-blocking so the open cannot hang).

**Connections are kept** (HTTP/1.1 keep-alive): a search or check makes dozens of range
requests to one host, and a new connection costs a TCP and a TLS handshake.  One is kept only
after a clean, complete answer (no error, the body read to its end, the server keeping it
open), serves one request at a time under that request's deadline, watchdog, cap and Cancel,
and is dropped when it reads as closed; one the server closes unanswered gets the GET once more
on a new connection, within the same deadline.  :func:`exchange` (any method) never keeps one.

Every failure is :class:`~builder.errors.Unavailable` (exit 3) with one line.
Why ``http.client`` and not ``urllib.request``: urllib hides the socket (no
total deadline can be enforced on a drip-feed), follows redirects to ``ftp:``
and reads ``data:``/``ftp:``/``file:`` URLs through default handlers.
DNS resolution is bounded by the system resolver's own timeouts, not by the
deadline (no socket exists yet to shut down).
"""

from __future__ import annotations

import base64
import os
import socket
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from builder.errors import Unavailable

if TYPE_CHECKING:
    import http.client
    import ssl

# http.client, ssl and urllib.request are imported by the functions that go to the
# network: together they cost a warm `builder check` (cache only) about 20 ms.

#: Total seconds one request may take (connect + headers + redirects + body).
DEADLINE = 60.0
#: Seconds one socket read may stall before the request fails (a dead server).
READ_TIMEOUT = 30.0
CHUNK = 64 * 1024
MAX_REDIRECTS = 5
SCHEMES = ("https", "http", "file")
USER_AGENT = "builder-check/0.1"


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url`` ('' for a bare path)."""
    return urllib.parse.urlsplit(url).scheme.lower()


def host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def supported(url: str) -> bool:
    """True for https, http and file URLs, the only ones builder reads."""
    return scheme_of(url) in SCHEMES


class Cancel:
    """Shuts down the sockets of every request registered with it (thread-safe).

    Worker threads blocked in a read wake up at once with an error; a request
    started after :meth:`cancel` fails before connecting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            socks = list(self._socks)
        for s in socks:
            _shutdown(s)

    def _add(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.add(s)
            if self.cancelled:
                _shutdown(s)

    def _remove(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.discard(s)


def _shutdown(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Budget:
    """A deadline and a byte cap shared by several requests (thread-safe).

    One wheel's reads, or one large member streamed in windows of range
    requests: each request still has its own deadline and cap, and all of them
    together stop at ``seconds`` and ``max_bytes``.
    """

    def __init__(self, seconds: float, max_bytes: int, what: str = "the read") -> None:
        self.seconds, self.max_bytes, self.what = seconds, max_bytes, what
        self.until = time.monotonic() + seconds
        self.spent = 0
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.until - time.monotonic()

    def deadline(self, per_request: float) -> float:
        """The deadline one more request may have; Unavailable once the budget's time is spent."""
        left = self.remaining()
        if left <= 0:
            raise self.late()
        return min(per_request, left)

    def spend(self, n: int) -> None:
        with self._lock:
            self.spent += n
            over = self.spent > self.max_bytes
        if over:
            raise self.over()

    # The two errors, as methods: a reader whose bounds the operator sets words them its own way.
    def late(self) -> Unavailable:
        return Unavailable(f"{self.what}: took longer than {self.seconds:g}s in total",
                           "the server is too slow; retry, or check the network")

    def over(self) -> Unavailable:
        return Unavailable(f"{self.what}: more than {_size(self.max_bytes)} read in total",
                           "the file is not what the lock describes; check its source")


@dataclass
class _Guard:
    """The deadline watchdog of one request: shuts its live socket down when time is up."""

    what: str
    deadline: float
    cancel: Cancel | None
    budget: Budget | None = None  # the shared bound that may have cut this request's deadline
    expired: bool = False
    sock: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _timer: threading.Timer | None = None

    def start(self) -> None:
        self._timer = threading.Timer(max(0.0, self.remaining()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.attach(None)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            if self.sock is not None:
                _shutdown(self.sock)

    def attach(self, s: socket.socket | None) -> None:
        with self._lock:
            old, self.sock = self.sock, s
            if s is not None and self.expired:
                _shutdown(s)
        if self.cancel is not None:
            if old is not None:
                self.cancel._remove(old)
            if s is not None:
                self.cancel._add(s)

    def check(self, seconds: float) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            raise Unavailable(f"{self.what}: cancelled", "the read was interrupted")
        if self.expired or self.remaining() <= 0:
            if self.budget is not None and self.budget.remaining() <= 0:
                raise self.budget.late()  # the shared time ran out, not this request's own
            raise Unavailable(f"{self.what}: no complete answer within {seconds:g}s",
                              "the server is too slow or stalled; retry, or check the network")


@dataclass(frozen=True)
class Reply:
    """A finished request: status, headers (lower-cased names), body, final URL."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


class Response:
    """An open response whose body is read in chunks within the request's bounds."""

    def __init__(self, resp: http.client.HTTPResponse, url: str, guard: _Guard, *, max_bytes: int,
                 budget: float, shared: Budget | None = None) -> None:
        self._resp, self.url, self._guard, self.max_bytes, self._budget = resp, url, guard, max_bytes, budget
        self._shared = shared
        self.complete = False  # the body was read to its end, and nothing was wrong with it
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}

    @property
    def what(self) -> str:
        return self._guard.what

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body, chunk by chunk; Unavailable past ``max_bytes`` or the deadline."""
        import http.client

        total = 0
        while True:
            self._guard.check(self._budget)
            try:
                data = self._resp.read1(size)
            except (OSError, http.client.HTTPException) as exc:
                self._guard.check(self._budget)  # a shutdown by the watchdog reads as an error
                raise Unavailable(f"{self.what}: connection to {host_of(self.url)} failed while reading: "
                                  f"{_reason(exc)}", "check the network and retry") from None
            if not data:
                self._guard.check(self._budget)
                expected = self._resp.length
                if expected:  # the server closed before sending what it announced
                    raise Unavailable(f"{self.what}: {host_of(self.url)} closed the connection "
                                      f"{expected} bytes early", "retry, or check the index")
                self.complete = True
                return
            total += len(data)
            if total > self.max_bytes:
                raise Unavailable(f"{self.what}: {host_of(self.url)} sent more than the {_size(self.max_bytes)} "
                                  "cap for this read", "the file is not what the lock describes; check the index")
            if self._shared is not None:
                self._shared.spend(len(data))
            yield data

    def read(self) -> bytes:
        return b"".join(self.chunks())


def _reason(exc: BaseException) -> str:
    r = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(r)


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} bytes"


def _proxy_for(url: str) -> tuple[str, str | None] | None:
    """(host:port, Proxy-Authorization) of the proxy urllib would use for ``url``, or None."""
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    auth = None
    if p.username is not None:
        token = f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}"
        auth = "Basic " + base64.b64encode(token.encode()).decode()
    return f"{p.hostname}:{p.port or 8080}", auth


_TLS: list[ssl.SSLContext] = []
_TLS_LOCK = threading.Lock()


def _tls() -> ssl.SSLContext:
    """The one TLS context of the process (certificate checks on, the system's CA store): building
    one loads the CA store, about 20 ms of CPU, as much as a range request.  Built under a lock
    (eight reads starting together would build eight); an SSLContext may be shared by threads."""
    with _TLS_LOCK:
        if not _TLS:
            import ssl

            _TLS.append(ssl.create_default_context())
        return _TLS[0]


class _Route(NamedTuple):
    key: tuple[str, str, int | None, str | None, str | None]  # scheme, host, port, proxy, proxy auth
    target: str  # what the request line names
    extra: Mapping[str, str]  # headers for a plain proxy


def _route(url: str, *, use_proxy: bool = True) -> _Route:
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    scheme = parts.scheme.lower()
    where, auth = (_proxy_for(url) if use_proxy else None) or (None, None)
    plain = where is not None and scheme == "http"  # a plain proxy takes the absolute URL, and the credentials
    if plain:
        target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    return _Route((scheme, parts.hostname or "", parts.port, where, auth), target,
                  {"Proxy-Authorization": auth} if plain and auth else {})


def _connection(route: _Route, timeout: float) -> http.client.HTTPConnection:
    """A new, unconnected connection for ``route`` (an https one through a proxy tunnels with CONNECT)."""
    import http.client

    scheme, host, port, where, auth = route.key
    conn: http.client.HTTPConnection
    if where is not None and scheme == "https":
        conn = http.client.HTTPSConnection(where, timeout=timeout, context=_tls())
        conn.set_tunnel(host, port, headers={"Proxy-Authorization": auth} if auth else None)
    elif where is not None:
        conn = http.client.HTTPConnection(where, timeout=timeout)
    elif scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn._create_connection = _create_connection  # type: ignore[attr-defined]  # http.client's own hook
    return conn


# --------------------------------------------------------------------------- kept connections
#: Idle connections kept per route and in all, and how long one may stay idle before it is closed.
POOL_PER_ROUTE, POOL_TOTAL, POOL_IDLE = 16, 64, 15.0


def _readable(sock: socket.socket) -> bool:
    """An idle connection with something to read: closed (EOF), or bytes nobody asked for."""
    import select

    try:
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        return bool(getattr(sock, "pending", int)()) or bool(poll.poll(0))  # TLS: bytes already decrypted
    except (OSError, ValueError):
        return True


class _Pool:
    """Idle connections, oldest first (thread-safe): at most POOL_PER_ROUTE per route and POOL_TOTAL
    in all.  Only :func:`open_url` gives one, after a clean, complete answer; one idle past
    POOL_IDLE, or whose socket reads as closed (the server's keep-alive timeout, or a watchdog or
    Cancel firing just as its request ended), is closed when met instead of used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[float, tuple[Any, ...], http.client.HTTPConnection]] = []

    def take(self, key: tuple[Any, ...]) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                mine = [i for i, x in enumerate(self._idle) if x[1] == key]
                if not mine:
                    return None
                since, _key, conn = self._idle.pop(mine[-1])  # the newest
            if time.monotonic() - since < POOL_IDLE and conn.sock is not None and not _readable(conn.sock):
                return conn
            conn.close()

    def give(self, key: tuple[Any, ...], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((time.monotonic(), key, conn))
            drop = [x for x in self._idle if x[1] == key][:-POOL_PER_ROUTE]
            keep = [x for x in self._idle if x not in drop]
            drop += keep[:-POOL_TOTAL]
            self._idle = keep[-POOL_TOTAL:]
        for _since, _key, c in drop:
            c.close()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _since, _key, c in idle:
            c.close()


_POOL = _Pool()


def _stale(exc: BaseException) -> bool:
    """What a kept connection the server closed while idle raises: no answer came, so a GET may be sent again."""
    import http.client
    import ssl

    return isinstance(exc, (ConnectionError, http.client.RemoteDisconnected, ssl.SSLEOFError))


_DNS: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
_DNS_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_DNS_GUARD = threading.Lock()


def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` for a TCP connection, once per (host, port) for the process, one lookup in
    flight per host.  Concurrent lookups of one name race in some resolvers (the A and AAAA
    queries of several threads share a conntrack entry; the lost answer costs the resolver's
    5-second retry): eight range reads of one host could stall 5 s together.  A failure is not kept."""
    key = (host, port)
    with _DNS_GUARD:
        lock = _DNS_LOCKS.setdefault(key, threading.Lock())
    with lock:
        hit = _DNS.get(key)
        if hit is None:
            hit = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            _DNS[key] = hit
    return hit


def _create_connection(address: tuple[str, int], timeout: Any = None,
                      source_address: tuple[str, int] | None = None) -> socket.socket:
    """``socket.create_connection`` with the address from :func:`resolve`."""
    host, port = address
    err: OSError | None = None
    for family, kind, proto, _name, addr in resolve(host, port):
        sock = None
        try:
            sock = socket.socket(family, kind, proto)
            if isinstance(timeout, (int, float)):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(addr)
            return sock
        except OSError as exc:
            err = exc
            if sock is not None:
                sock.close()
    raise err if err is not None else OSError(f"no address for {host}")


def _ask(route: _Route, guard: _Guard, *, what: str, url: str, deadline: float, read_timeout: float,
         headers: Mapping[str, str]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """(connection, response once its headers are in) of a GET on a kept connection of ``route``,
    else a new one; one the server closed unanswered is tried once more on a new connection."""
    import http.client

    conn = _POOL.take(route.key)
    while True:
        timeout = min(read_timeout, max(guard.remaining(), 0.001))
        kept, conn = conn is not None, conn or _connection(route, timeout)
        try:
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            else:
                conn.connect()
            guard.attach(conn.sock)
            guard.check(deadline)
            conn.request("GET", route.target, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                                       **route.extra, **headers})
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            guard.check(deadline)
            if kept and _stale(exc):
                conn = None
                continue
            raise Unavailable(f"{what}: cannot reach {host_of(url)}: {_reason(exc)}",
                              "check the network and retry") from None
        except BaseException:
            conn.close()
            raise


@contextmanager
def open_url(url: str, *, what: str, max_bytes: int, headers: Mapping[str, str] | None = None,
             deadline: float = DEADLINE, read_timeout: float = READ_TIMEOUT,
             cancel: Cancel | None = None, budget: Budget | None = None) -> Iterator[Response]:
    """GET ``url`` (https/http) following redirects, within ``deadline`` seconds in total.

    Yields the response once its headers are in; the caller reads the body with
    :meth:`Response.chunks` (bounded by ``max_bytes`` and the same deadline).
    A ``Content-Length`` above ``max_bytes`` is refused here.  HTTP errors are
    raised as Unavailable naming the status (``HTTP 404``).  With ``budget``
    the request also counts against a shared deadline and byte cap.
    """
    if scheme_of(url) not in ("https", "http"):
        raise Unavailable(f"{what}: cannot read {url!r}: only https, http and file URLs are supported",
                          "fix the URL in the lock (re-lock from an https index)")
    if budget is not None:
        deadline = budget.deadline(deadline)

    guard = _Guard(what, time.monotonic() + deadline, cancel, budget)
    guard.start()
    conn: http.client.HTTPConnection | None = None
    out: Response | None = None
    route: _Route | None = None
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            guard.check(deadline)
            route = _route(url)
            conn, resp = _ask(route, guard, what=what, url=url, deadline=deadline, read_timeout=read_timeout,
                              headers=headers or {})
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                new = urllib.parse.urljoin(url, resp.getheader("Location", ""))
                old_scheme, new_scheme = scheme_of(url), scheme_of(new)
                if new_scheme not in ("https", "http") or (old_scheme == "https" and new_scheme == "http"):
                    raise Unavailable(f"{what}: {host_of(url)} redirected to {new[:120]!r}; builder follows "
                                      "redirects to https (or http from http) only", "check the index URL")
                conn.close()
                guard.attach(None)
                url = new
                continue
            if resp.status >= 400 or resp.status < 200:
                raise Unavailable(f"{what}: HTTP {resp.status} from {host_of(url)}",
                                  "check the network or the index")
            length = resp.getheader("Content-Length")
            if length is not None:
                if not length.strip().isdigit():
                    raise Unavailable(f"{what}: {host_of(url)} sent an invalid Content-Length {length[:40]!r}",
                                      "check the index")
                if int(length) > max_bytes:
                    raise Unavailable(f"{what}: {host_of(url)} announces {int(length)} bytes, more than the "
                                      f"{_size(max_bytes)} cap for this read", "the file is not what the lock "
                                      "describes; check the index")
            out = Response(resp, url, guard, max_bytes=max_bytes, budget=deadline, shared=budget)
            yield out
            return
        raise Unavailable(f"{what}: more than {MAX_REDIRECTS} redirects from {host_of(url)}", "check the index URL")
    finally:
        guard.stop()  # from here on neither the watchdog nor a Cancel touches the socket
        if conn is not None:  # kept only after a complete answer (the pool drops it if it reads closed)
            if (route is not None and out is not None and out.complete and not out._resp.will_close
                    and conn.sock is not None):
                out._resp.close()  # http.client sends the next request only once this one is closed
                _POOL.give(route.key, conn)
            else:
                conn.close()


def fetch(url: str, *, what: str, max_bytes: int, rng: str | None = None, deadline: float = DEADLINE,
          read_timeout: float = READ_TIMEOUT, cancel: Cancel | None = None, budget: Budget | None = None) -> Reply:
    """The whole (bounded) body of one GET, optionally with a ``Range`` header."""
    headers = {"Range": rng} if rng else None
    with open_url(url, what=what, max_bytes=max_bytes, headers=headers, deadline=deadline,
                  read_timeout=read_timeout, cancel=cancel, budget=budget) as r:
        return Reply(r.status, r.headers, r.read(), r.url)


# --------------------------------------------------------------------------- one exchange, any status
class NoConnection(Unavailable):
    """Nothing accepted the connection: refused, unresolvable, no route, or no connect in time."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}", "check that the server runs and the URL")
        self.reason = reason


class Incomplete(Unavailable):
    """Connected, but no complete answer: the deadline passed (headers or body), the
    connection broke, or the body is over the cap.  ``reason`` says which, in words."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}", "the server is too slow or stalled; retry, or check it")
        self.reason = reason


def _connect_reason(exc: BaseException, seconds: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return f"no connection within {seconds:.1f}s"
    return f"cannot connect: {getattr(exc, 'strerror', None) or exc}"


def exchange(url: str, *, method: str = "GET", what: str, deadline: float, max_bytes: int,
             body: bytes | None = None, headers: Mapping[str, str] | None = None,
             cancel: Cancel | None = None) -> Reply:
    """One request to an http(s) endpoint, whatever its status, ended by ``deadline`` seconds.

    For the service endpoints builder talks to (a vLLM server's ``/health``,
    ``/v1/*``, ``/metrics``): no redirects followed, no proxy (they are the
    host's own or its LAN's), any status returned as data.  The same watchdog
    as :func:`open_url` shuts the socket down when the deadline passes, so a
    server that drips its status line, its headers or its body one byte at a
    time cannot hold the caller past it.  :class:`NoConnection` when nothing
    accepted the connection, :class:`Incomplete` when the answer did not
    complete (or its body is over ``max_bytes``).  Always a new connection:
    a POST must not be sent twice, and a probed server restarts between probes.
    """
    import http.client

    if scheme_of(url) not in ("https", "http"):
        raise Unavailable(f"{what}: cannot read {url[:120]!r}: only http and https URLs are supported",
                          "give an http:// or https:// URL")
    t0 = time.monotonic()
    guard = _Guard(what, t0 + deadline, cancel)
    guard.start()
    conn: http.client.HTTPConnection | None = None
    resp: http.client.HTTPResponse | None = None
    got = 0
    try:
        conn = _connection(route := _route(url, use_proxy=False), max(deadline, 0.001))
        try:
            guard.check(deadline)
            conn.connect()
        except (OSError, Unavailable) as exc:
            if guard.expired or guard.remaining() <= 0:
                raise NoConnection(what, f"no connection within {deadline:.1f}s") from None
            if isinstance(exc, Unavailable):
                raise
            raise NoConnection(what, _connect_reason(exc, deadline)) from None
        guard.attach(conn.sock)
        chunks: list[bytes] = []
        try:
            guard.check(deadline)
            conn.request(method, route.target, body=body,
                         headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})})
            resp = conn.getresponse()
            if resp.length is not None and resp.length > max_bytes:
                raise Incomplete(what, f"HTTP {resp.status} announces {resp.length} bytes, more than the "
                                       f"{_size(max_bytes)} cap")
            while True:
                guard.check(deadline)
                chunk = resp.read1(CHUNK)
                if not chunk:
                    guard.check(deadline)  # a shutdown by the watchdog reads as the end
                    break
                chunks.append(chunk)
                got += len(chunk)
                if got > max_bytes:
                    raise Incomplete(what, f"HTTP {resp.status} but the body is larger than the "
                                           f"{_size(max_bytes)} cap")
        except Incomplete:
            raise
        except (OSError, http.client.HTTPException, Unavailable) as exc:
            spent = time.monotonic() - t0
            if not (guard.expired or guard.remaining() <= 0):
                if isinstance(exc, Unavailable):
                    raise  # cancelled
                raise Incomplete(what, f"connection failed mid-exchange: {type(exc).__name__}: "
                                       f"{_reason(exc)}") from None
            if resp is None:
                raise Incomplete(what, f"no response within {spent:.1f}s") from None
            size = f" of {resp.length + got} bytes" if resp.length is not None else " bytes"
            raise Incomplete(what, f"HTTP {resp.status} but the body stalled after {got}{size} "
                                   f"({spent:.1f}s)") from None
        if resp.length:  # closed before sending what it announced
            raise Incomplete(what, f"HTTP {resp.status} but the connection closed {resp.length} bytes early")
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks), url)
    finally:
        guard.stop()
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------- local files
def local_path(url_or_path: str) -> Path:
    """A filesystem path from a ``file:`` URL or a plain path."""
    if scheme_of(url_or_path) == "file":
        from urllib.request import url2pathname

        return Path(url2pathname(urllib.parse.urlsplit(url_or_path).path))
    return Path(url_or_path)


def open_regular(path: Path, *, what: str) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file.

    Opened with ``O_NONBLOCK`` first, so a FIFO cannot block the open; the
    descriptor is checked with ``fstat`` (no race with a swap after a ``stat``).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise Unavailable(f"{what}: cannot read {path}: {exc.strerror or exc}",
                          "restore the file or re-lock") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise Unavailable(f"{what}: {path} is {kind}, not a regular file", "point the lock at a wheel file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def iter_range(source: str | Path, start: int, end: int, *, what: str, max_bytes: int,
               deadline: float = DEADLINE, read_timeout: float = READ_TIMEOUT, chunk: int = CHUNK,
               expect_total: int | None = None, cancel: Cancel | None = None,
               budget: Budget | None = None) -> Iterator[bytes]:
    """Stream bytes ``[start, end)`` of a file or https/http URL, chunk by chunk.

    The streaming API for large members (a fatbin of hundreds of MB, read in
    windows): the caller never holds more than one chunk.  ``end - start`` must
    not exceed ``max_bytes``; the whole range must arrive within ``deadline``
    seconds; with ``budget`` every window also counts against one shared
    deadline and byte cap.  Over HTTP the server must answer 206 with a
    ``Content-Range`` covering exactly the range (and, with ``expect_total``,
    that total file size).
    """
    if end < start or start < 0:
        raise Unavailable(f"{what}: invalid byte range {start}-{end}", "this is a bug in the caller")
    if end - start > max_bytes:
        raise Unavailable(f"{what}: {end - start} bytes requested, more than the {_size(max_bytes)} cap",
                          "raise the cap only for a read that needs it")
    if end == start:
        return
    src = str(source)
    if budget is not None:
        deadline = budget.deadline(deadline)
    if scheme_of(src) in ("https", "http"):
        yield from _iter_http_range(src, start, end, what=what, deadline=deadline, read_timeout=read_timeout,
                                    chunk=chunk, expect_total=expect_total, cancel=cancel, budget=budget)
        return
    if scheme_of(src) not in ("file", "") and not (len(scheme_of(src)) == 1 and os.name == "nt"):
        raise Unavailable(f"{what}: cannot read {src[:120]!r}: only https, http and file URLs are supported",
                          "fix the URL in the lock")
    path = local_path(src)
    t_end = time.monotonic() + deadline
    with open_regular(path, what=what) as f:
        size = os.fstat(f.fileno()).st_size
        if expect_total is not None and size != expect_total:
            raise Unavailable(f"{what}: {path} has {size} bytes, expected {expect_total}",
                              "the file changed since it was locked; re-lock or restore it")
        if end > size:
            raise Unavailable(f"{what}: byte range {start}-{end} is past the end of {path} ({size} bytes)",
                              "the file is truncated or not what the lock describes")
        f.seek(start)
        left = end - start
        while left:
            if time.monotonic() > t_end:
                if budget is not None and budget.remaining() <= 0:
                    raise budget.late()
                raise Unavailable(f"{what}: reading {path} took longer than {deadline:g}s", "check the disk")
            if cancel is not None and cancel.cancelled:
                raise Unavailable(f"{what}: cancelled", "the read was interrupted")
            data = f.read(min(chunk, left))
            if not data:
                raise Unavailable(f"{what}: {path} ended early", "the file is truncated")
            left -= len(data)
            if budget is not None:
                budget.spend(len(data))
            yield data


def _iter_http_range(url: str, start: int, end: int, *, what: str, deadline: float, read_timeout: float,
                     chunk: int, expect_total: int | None, cancel: Cancel | None,
                     budget: Budget | None) -> Iterator[bytes]:
    want = end - start
    with open_url(url, what=what, max_bytes=want, headers={"Range": f"bytes={start}-{end - 1}"},
                  deadline=deadline, read_timeout=read_timeout, cancel=cancel, budget=budget) as r:
        cr = r.headers.get("content-range", "")
        head = f"bytes {start}-{end - 1}/"
        if r.status != 206 or not cr.startswith(head):
            raise Unavailable(f"{what}: {host_of(url)} did not answer the range request for bytes {start}-{end - 1} "
                              f"(HTTP {r.status}, Content-Range {cr[:60]!r})", "the index must honour HTTP Range "
                              "requests")
        total = cr[len(head):]
        if expect_total is not None and total != str(expect_total):
            raise Unavailable(f"{what}: server has {total} bytes, expected {expect_total}",
                              "the file changed since it was locked; re-lock or check the index")
        got = 0
        for data in r.chunks(chunk):
            got += len(data)
            yield data
        if got != want:
            raise Unavailable(f"{what}: {host_of(url)} sent {got} of {want} bytes", "retry, or check the index")
