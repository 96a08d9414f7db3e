"""Kept-alive HTTP for pyturso's sync requests (part of the engine adapter).

pyturso 0.8.3 sends every sync request (two per push, one per pull) through ``urllib``, which
opens a new TCP connection each time; through turso-server that was ~1.5 ms of a 2.4 ms request
here. :func:`install` swaps the ``urllib`` that ``turso.lib_sync`` sees for one whose ``urlopen``
keeps one connection per (thread, host) alive, so a replica's engine thread talks to turso-server
over one connection. Everything else — ``Request``, ``HTTPError`` for 4xx/5xx with its body,
``URLError`` for network failures, ``status``/``read()`` on the reply — behaves as pyturso
expects. A request that fails is never resent here: a push's batch must not run twice, and the
caller (``_backends``) decides what a failure means. A connection idle longer than
``MAX_IDLE`` is not reused, well inside aiohttp's 75 s keep-alive, and neither is one the server
has closed meanwhile (it reads as EOF before we send: a restart, an idle timeout).
"""

from __future__ import annotations

import atexit
import http.client
import io
import select
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import turso.lib_sync

MAX_IDLE = 20.0
TIMEOUT = 60.0

_local = threading.local()


class _Stats:
    opened = 0  # connections made (for tests: reuse means this grows slower than requests)
    requests = 0


stats = _Stats()


_Pool = dict[tuple[str, str, int], tuple[http.client.HTTPConnection, float]]
_pools: list[_Pool] = []  # every thread's pool, so that exit can close what threads left open
_pools_lock = threading.Lock()


def _pool() -> _Pool:
    pool: _Pool | None = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
        with _pools_lock:
            _pools.append(pool)
    return pool


@atexit.register
def _close_all() -> None:
    with _pools_lock:
        for pool in _pools:
            for conn, _ in list(pool.values()):
                conn.close()
            pool.clear()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection with something to read has been closed by the server
    (a restart, its idle timeout): never send on it (what urllib3 checks too)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _Reply:
    """What ``urlopen`` returns: a context manager over the response; reuse on a clean exit."""

    def __init__(self, response: http.client.HTTPResponse, release: Any) -> None:
        self._response = response
        self._release = release
        self.status = response.status

    def getcode(self) -> int:
        return self.status

    def read(self, amount: int | None = None) -> bytes:
        return self._response.read(amount)

    def __enter__(self) -> _Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release(self._response, clean=exc[0] is None)


def urlopen(request: urllib.request.Request, *_: Any, **__: Any) -> _Reply:
    parts = urllib.parse.urlsplit(request.full_url)
    scheme = parts.scheme or "http"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if scheme == "https" else 80)
    key = (scheme, host, port)
    pool = _pool()
    conn: http.client.HTTPConnection | None = None
    cached = pool.pop(key, None)
    if cached is not None and time.monotonic() - cached[1] < MAX_IDLE and not _dropped(cached[0]):
        conn = cached[0]
    elif cached is not None:
        cached[0].close()
    if conn is None:
        factory = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = factory(host, port, timeout=TIMEOUT)
        stats.opened += 1
    stats.requests += 1
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    headers = dict(request.header_items())
    try:
        conn.request(request.get_method(), target, body=request.data, headers=headers)
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise urllib.error.URLError(exc) from exc

    def release(done: http.client.HTTPResponse, *, clean: bool) -> None:
        if clean and not done.will_close and done.isclosed():
            pool[key] = (conn, time.monotonic())
        else:
            conn.close()

    if response.status >= 400:
        body = response.read()
        release(response, clean=True)
        raise urllib.error.HTTPError(
            request.full_url, response.status, response.reason, response.headers, io.BytesIO(body)
        )
    return _Reply(response, release)


_SHIM = types.SimpleNamespace(
    request=types.SimpleNamespace(Request=urllib.request.Request, urlopen=urlopen),
    error=urllib.error,
    parse=urllib.parse,
)


def close_connections() -> None:
    """Close the calling thread's kept-alive connections (an engine thread that stops)."""
    pool = _pool()
    for conn, _ in list(pool.values()):
        conn.close()
    pool.clear()
    with _pools_lock:
        _pools[:] = [other for other in _pools if other is not pool]
    _local.pool = None


def install() -> None:
    """Make pyturso's sync requests use :func:`urlopen` (idempotent)."""
    turso.lib_sync.urllib = _SHIM  # type: ignore[attr-defined,assignment]


def installed() -> bool:
    return getattr(turso.lib_sync, "urllib", None) is _SHIM
