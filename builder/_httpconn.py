"""Connections for the one bounded reader (:mod:`builder._http`): where a request goes (proxies
as urllib finds them), the process's one TLS context, DNS answers kept per host, and idle
keep-alive connections kept per route.  Only :mod:`builder._http` imports this module; the
bounds (deadline, watchdog, byte caps, Cancel) are enforced there, on every request, whether its
connection is new or kept.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import http.client
    import ssl


def proxy_for(url: str) -> tuple[str, str | None] | None:
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


def tls() -> ssl.SSLContext:
    """The one TLS context of the process (certificate checks on, the system's CA store).

    Building a context loads the CA store: about 20 ms of CPU each time, as much as the rest
    of a range request; a search or check makes dozens of requests.  Built once, under a lock:
    eight reads starting together would otherwise build eight.  An SSLContext may be shared by
    threads.
    """
    with _TLS_LOCK:
        if not _TLS:
            import ssl

            _TLS.append(ssl.create_default_context())
        return _TLS[0]


@dataclass(frozen=True)
class Route:
    """Where one request goes: ``key`` names the connection it needs (scheme, host, port, and the
    proxy and its credentials, if any), ``target`` and ``extra`` what it sends on it."""

    key: tuple[str, str, int | None, str | None, str | None]
    target: str
    extra: Mapping[str, str]


def route(url: str, *, use_proxy: bool = True) -> Route:
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    extra: dict[str, str] = {}
    scheme = parts.scheme.lower()
    where, auth = (proxy_for(url) if use_proxy else None) or (None, None)
    if where is not None and scheme == "http":  # a plain proxy takes the absolute URL
        target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
        if auth:
            extra["Proxy-Authorization"] = auth
    return Route((scheme, parts.hostname or "", parts.port, where, auth), target, extra)


def connection(route: Route, timeout: float) -> http.client.HTTPConnection:
    """A new, unconnected connection for ``route`` (an https one through a proxy tunnels with CONNECT)."""
    import http.client

    scheme, host, port, where, auth = route.key
    conn: http.client.HTTPConnection
    if where is not None and scheme == "https":
        conn = http.client.HTTPSConnection(where, timeout=timeout, context=tls())
        conn.set_tunnel(host, port, headers={"Proxy-Authorization": auth} if auth else None)
    elif where is not None:
        conn = http.client.HTTPConnection(where, timeout=timeout)
    elif scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn._create_connection = create_connection  # type: ignore[attr-defined]  # http.client's own hook
    return conn


# --------------------------------------------------------------------------- keep-alive
#: Idle connections kept per route and in all, and how long one may stay idle before it is closed.
POOL_PER_ROUTE = 16
POOL_TOTAL = 64
POOL_IDLE = 15.0


def readable(sock: socket.socket) -> bool:
    """True when an idle connection has something to read: the server closed it (EOF) or sent
    bytes nobody asked for.  Either way it is not used again."""
    import select

    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted
    try:
        if pending is not None and pending():
            return True
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        return bool(poll.poll(0))
    except (OSError, ValueError):
        return True


class Pool:
    """Idle keep-alive connections by route (thread-safe): a search or check makes dozens of
    range requests to one host, and a new connection costs a TCP and TLS handshake each.

    A connection enters only after a request on it ended cleanly (no error, its body read to the
    end, the server keeping it open: :func:`builder._http.open_url` decides); while idle, no
    request, watchdog or Cancel holds its socket.  Taken newest first; one idle longer than
    :data:`POOL_IDLE`, or whose socket is readable (closed by the server, or shut down by a
    watchdog or Cancel just as its request ended), is closed instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[Any, ...], list[tuple[float, http.client.HTTPConnection]]] = {}

    def take(self, key: tuple[Any, ...]) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                stack = self._idle.get(key)
                if not stack:
                    return None
                since, conn = stack.pop()
            if time.monotonic() - since < POOL_IDLE and conn.sock is not None and not readable(conn.sock):
                return conn
            conn.close()

    def give(self, key: tuple[Any, ...], conn: http.client.HTTPConnection) -> None:
        out = []
        with self._lock:
            stack = self._idle.setdefault(key, [])
            stack.append((time.monotonic(), conn))
            if len(stack) > POOL_PER_ROUTE:
                out.append(stack.pop(0)[1])
            while sum(map(len, self._idle.values())) > POOL_TOTAL:
                oldest = min((k for k, v in self._idle.items() if v), key=lambda k: self._idle[k][0][0])
                out.append(self._idle[oldest].pop(0)[1])
            self._idle = {k: v for k, v in self._idle.items() if v}
        for c in out:
            c.close()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for stack in idle.values():
            for _since, c in stack:
                c.close()


POOL = Pool()


def stale(exc: BaseException) -> bool:
    """An error a kept connection gives when the server closed it while idle (a keep-alive
    timeout): nothing of an answer came back, so the GET may be sent again."""
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


def create_connection(address: tuple[str, int], timeout: Any = None,
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
