"""Kept connections (HTTP/1.1 keep-alive in builder/_http.py): requests to one host share
a few HTTP/1.1 connections, and a connection is used again only after a clean, complete answer.
Against a REAL loopback server (tests/helpers/httpserver.py) that counts the TCP connections it
accepts, closes idle ones, drops requests unanswered, answers errors on a kept-open connection
and drip-feeds."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from builder import _http
from builder.errors import Unavailable
from tests.helpers import httpserver
from tests.helpers.httpserver import Misbehave

BODY = os.urandom(5000)


@pytest.fixture(autouse=True)
def _no_kept_connections() -> Iterator[None]:
    _http._POOL.clear()
    yield
    _http._POOL.clear()


def _site(tmp_path: Path, **kw: float | None) -> tuple[Path, object]:
    d = tmp_path / "www"
    d.mkdir()
    (d / "a.bin").write_bytes(BODY)
    (d / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    return d, httpserver.serve(d, **kw)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, httpserver.Stats]]:
    _d, server = _site(tmp_path)
    with server as (url, stats):  # type: ignore[attr-defined]
        yield url, stats


def _get(url: str, **kw: object) -> bytes:
    return _http.fetch(url, what="t", max_bytes=1 << 23, **kw).body  # type: ignore[arg-type]


def test_requests_to_one_host_share_one_connection(site) -> None:
    url, stats = site
    assert [_get(f"{url}/a.bin") for _ in range(20)] == [BODY] * 20
    assert _get(f"{url}/a.bin", rng="bytes=-100") == BODY[-100:]
    assert stats.requests == 21 and stats.connections == 1


def test_concurrent_requests_each_hold_their_own_connection(site) -> None:
    url, stats = site
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda i: _get(f"{url}/a.bin", rng=f"bytes={i}-{i + 99}"), range(200)))
    assert bodies == [BODY[i:i + 100] for i in range(200)]  # no answer went to the wrong request
    assert stats.requests == 200 and stats.connections <= 8


def test_at_most_pool_per_route_connections_are_kept(site, monkeypatch: pytest.MonkeyPatch) -> None:
    url, stats = site
    monkeypatch.setattr(_http, "POOL_PER_ROUTE", 3)
    stats.hold = threading.Event()  # every request waits: 6 connections at once
    with ThreadPoolExecutor(6) as pool:
        futs = [pool.submit(_get, f"{url}/a.bin") for _ in range(6)]
        while stats.requests < 6:
            time.sleep(0.01)
        stats.hold.set()
        assert [f.result() for f in futs] == [BODY] * 6
    assert stats.connections == 6 and len(_http._POOL._idle) == 3
    stats.hold = None
    [_get(f"{url}/a.bin") for _ in range(4)]
    assert stats.connections == 6  # the kept three served them


def test_a_connection_the_server_closed_while_idle_is_not_used(tmp_path: Path) -> None:
    _d, server = _site(tmp_path, idle=0.2)  # the server's keep-alive timeout
    with server as (url, stats):  # type: ignore[attr-defined]
        assert _get(f"{url}/a.bin") == BODY
        time.sleep(0.6)
        assert _get(f"{url}/a.bin") == BODY  # no error: the closed one was seen closed and dropped
        assert stats.requests == 2 and stats.connections == 2


def test_the_pool_gives_no_connection_that_reads_as_closed(tmp_path: Path) -> None:
    """Closed by the server while idle, or shut down (a watchdog or Cancel firing just as the
    request ended): dropped when taken, before any request is sent on it."""
    import socket

    _d, server = _site(tmp_path, idle=0.2)
    with server as (url, _stats):  # type: ignore[attr-defined]
        route = _http._route(url)
        conns = []
        for _ in range(2):
            c = _http._connection(route, 5.0)
            c.connect()
            conns.append(c)
        _http._POOL.give(route.key, conns[0])
        time.sleep(0.6)  # the server's keep-alive timeout passes
        assert _http._POOL.take(route.key) is None and conns[0].sock is None  # closed, not given
        assert conns[1].sock is not None
        conns[1].sock.shutdown(socket.SHUT_RDWR)
        _http._POOL.give(route.key, conns[1])
        assert _http._POOL.take(route.key) is None


def test_a_connection_idle_too_long_is_closed_instead_of_used(site, monkeypatch: pytest.MonkeyPatch) -> None:
    url, stats = site
    monkeypatch.setattr(_http, "POOL_IDLE", 0.1)
    _get(f"{url}/a.bin")
    time.sleep(0.2)
    _get(f"{url}/a.bin")
    assert stats.connections == 2


def test_a_kept_connection_closed_by_the_server_unanswered_is_retried_once_on_a_new_one(site) -> None:
    url, stats = site
    stats.misbehave["/late.bin"] = Misbehave(drop="kept")  # a keep-alive timeout that races the request
    assert _get(f"{url}/a.bin") == BODY  # connection 1, kept
    t = time.monotonic()
    assert _get(f"{url}/late.bin") == b"x" * 1000  # dropped on connection 1, answered on connection 2
    assert (stats.requests, stats.connections) == (3, 2) and time.monotonic() - t < 10  # no stall


def test_no_retry_on_a_new_connection_and_one_retry_only(site) -> None:
    url, stats = site
    stats.misbehave["/gone.bin"] = Misbehave(drop="always")
    t = time.monotonic()
    with pytest.raises(Unavailable, match=r"cannot reach 127\.0\.0\.1:\d+: Remote end closed connection"):
        _get(f"{url}/gone.bin")  # a new connection: the server's answer is the error, reported as it is
    assert (stats.requests, stats.connections) == (1, 1)
    _get(f"{url}/a.bin")  # connection 2, kept
    with pytest.raises(Unavailable, match="Remote end closed connection"):
        _get(f"{url}/gone.bin")  # on the kept one, then once more on a new one: two tries, no more
    assert (stats.requests, stats.connections) == (4, 3)
    assert time.monotonic() - t < 5


def test_no_reuse_after_an_http_error_an_overlong_body_or_a_partial_read(site) -> None:
    url, stats = site
    stats.misbehave["/err.bin"] = Misbehave(status=500)  # answered with a length, the connection kept open
    _get(f"{url}/a.bin")
    with pytest.raises(Unavailable, match="HTTP 500"):
        _get(f"{url}/err.bin")
    _get(f"{url}/a.bin")
    assert stats.connections == 2  # the connection that carried the error was closed
    with pytest.raises(Unavailable, match="cap for this read"):
        _http.fetch(f"{url}/big.bin", what="t", max_bytes=1000)
    _get(f"{url}/a.bin")
    assert stats.connections == 3
    with _http.open_url(f"{url}/big.bin", what="t", max_bytes=1 << 23) as r:
        next(r.chunks())  # a caller that stops reading: the rest of the body is still on the wire
    assert _get(f"{url}/a.bin") == BODY
    assert stats.connections == 4


def test_a_response_abandoned_mid_body_is_not_reused_even_when_nothing_more_has_arrived(site) -> None:
    url, stats = site
    stats.misbehave["/drip.bin"] = Misbehave(drip=0.5)  # the rest of the body is still to come
    _get(f"{url}/a.bin")
    with _http.open_url(f"{url}/drip.bin", what="t", max_bytes=10_000) as r:
        assert next(r.chunks()) == b"x"
    assert _get(f"{url}/a.bin") == BODY  # on connection 2: connection 1 still owes 999 bytes
    assert stats.connections == 2


def test_no_reuse_after_a_cancel(site) -> None:
    url, stats = site
    cancel = _http.Cancel()
    _get(f"{url}/a.bin")
    with _http.open_url(f"{url}/a.bin", what="t", max_bytes=1 << 20, cancel=cancel) as r:
        body = r.read()
        cancel.cancel()
    assert body == BODY
    _get(f"{url}/a.bin")
    assert stats.connections == 2


@pytest.mark.parametrize("path, misbehave", [("/drip.bin", Misbehave(drip=0.2)),
                                             ("/slow.bin", Misbehave(drip_headers=0.3))], ids=["body", "headers"])
def test_a_kept_connection_is_still_cut_at_the_deadline_and_not_kept(site, path: str, misbehave: Misbehave) -> None:
    """A body or headers dripped on a kept connection: cut at the deadline, and not kept."""
    url, stats = site
    stats.misbehave[path] = misbehave
    _get(f"{url}/a.bin")
    t = time.monotonic()
    with pytest.raises(Unavailable, match=r"no complete answer within 1s"):
        _http.fetch(f"{url}{path}", what="t", max_bytes=10_000, deadline=1.0)
    assert time.monotonic() - t < 5  # the match above says the 1 s deadline cut it
    assert stats.connections == 1  # the drip came on the kept connection
    _get(f"{url}/a.bin")
    assert stats.connections == 2  # which the watchdog shut down: a new one


def test_exchange_never_keeps_a_connection(site) -> None:
    url, stats = site
    for _ in range(3):
        assert _http.exchange(f"{url}/a.bin", what="t", deadline=5, max_bytes=1 << 20).body == BODY
    assert stats.connections == 3
    assert not _http._POOL._idle


def test_one_tls_context_for_the_process_even_when_eight_reads_start_together(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Building one loads the CA store (about 20 ms of CPU); eight reads starting at once built eight."""
    import ssl

    real, calls = ssl.create_default_context, []

    def counting(*a: object, **k: object) -> ssl.SSLContext:
        calls.append(1)
        time.sleep(0.05)
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    monkeypatch.setattr(_http, "_TLS", [])
    with ThreadPoolExecutor(8) as pool:
        ctxs = list(pool.map(lambda _i: _http._tls(), range(8)))
    assert len(calls) == 1 and all(c is ctxs[0] for c in ctxs)
