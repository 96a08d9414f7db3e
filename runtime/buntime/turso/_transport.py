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

A push is two ``/v2/pipeline`` requests: pyturso first reads its cursor (``SELECT pull_gen,
change_id FROM turso_sync_last_change_id WHERE client_id = ?``: what the server last applied from
this replica), then sends one batch ``BEGIN IMMEDIATE`` … its changes … an upsert of that row …
``COMMIT``. Under one write lease nobody but this replica can change that row, so the upsert of a
batch the server answered with every step run *is* the server's row until the lease ends:
:class:`_Cursors` keeps it per fenced URL (the lease token is in the path) and answers the next
read of a push under the same lease itself, in tursodb's reply shape, without a round trip.
Anything that could make it wrong drops it first: a batch of that client on its way (set again
only from a reply whose every step ran), a new lease (a new URL: the read goes to the server), an
engine thread's reset (:func:`forget_cursors`). Unfenced requests (offline mode, plain pushes)
are never answered here.

pyturso also rewrites the replica's metadata file (``<file>-info``, ~640 bytes of JSON: its client
id and hints) after every push and pull, through a new temporary file renamed over the old one:
0.12-0.15 ms here (ext4 frees the old file's blocks), 1-1.5 ms on a busy machine. For the files
registered with :func:`write_in_place` — serializable replicas that record the boot, whose file
is reset after an OS crash anyway — :func:`_full_write` writes the new content over the old one
in one ``pwrite`` of at most a page (padded with spaces, which JSON ignores, when it shrank): a
process killed at any point leaves the old or the new content, never a mix. Every other file
keeps pyturso's way.

A request waits for the server at most ``TIMEOUT`` (the socket timeout), or less inside
:func:`deadline`: ``_backends`` bounds each push, pull and reset by ``TURSO_WRITE_TIMEOUT`` that way,
so a server that accepts connections and never answers holds a write or a read for that long, not
a minute. A request that starts after its deadline (behind a long transfer that kept streaming)
still waits :data:`MIN_TIMEOUT`, so a big pull or bootstrap is never cut off for being long, only
a server that stops answering. Every request that times out is a ``URLError`` (``timed out``),
which the caller treats as a push that may have landed.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import io
import json
import os
import select
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import turso.lib_sync

MAX_IDLE = 20.0
TIMEOUT = 60.0  # a request's socket timeout outside a deadline, and its ceiling inside one
MIN_TIMEOUT = 2.0  # a request's socket timeout when its deadline has passed (see the module doc)

_local = threading.local()


class _Stats:
    opened = 0  # connections made (for tests: reuse means this grows slower than requests)
    requests = 0  # requests sent to the server
    cursor_reads = 0  # push cursor reads answered here instead (see _Cursors)


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
    (a restart, its idle timeout): never send on it (what urllib3 checks too). ``poll``, not
    ``select``: a process with many files open has sockets past ``FD_SETSIZE``, which
    ``select`` refuses, and every request would have opened a new connection."""
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class _Reply:
    """What ``urlopen`` returns: a context manager over the response body; ``release(clean)`` on
    exit (a kept-alive connection goes back to the pool after a clean read)."""

    def __init__(
        self,
        body: http.client.HTTPResponse | io.BytesIO,
        status: int,
        release: Callable[[bool], None] | None = None,
    ) -> None:
        self._body = body
        self._release = release
        self.status = status

    def getcode(self) -> int:
        return self.status

    def read(self, amount: int | None = None) -> bytes:
        return self._body.read(amount)

    def __enter__(self) -> _Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._release is not None:
            self._release(exc[0] is None)


def _answer(body: bytes) -> _Reply:
    """A reply already read in full (a cursor read answered here, an inspected batch reply)."""
    return _Reply(io.BytesIO(body), 200)


CURSOR_TABLE = b"turso_sync_last_change_id"
READ_SQL = "SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?"
CREATE_SQL = (
    "CREATE TABLE IF NOT EXISTS turso_sync_last_change_id "
    "(client_id TEXT PRIMARY KEY, pull_gen INTEGER, change_id INTEGER)"
)
UPSERT_SQL = (
    "INSERT INTO turso_sync_last_change_id(client_id, pull_gen, change_id) VALUES (?, ?, ?) "
    "ON CONFLICT(client_id) DO UPDATE SET pull_gen=excluded.pull_gen, change_id=excluded.change_id"
)
FENCED = "/-/lease/"  # turso-server's fenced push path: /<ns>/-/lease/<token>/<rest>
_COLUMNS = [{"name": "pull_gen", "decltype": "INTEGER"}, {"name": "change_id", "decltype": "INTEGER"}]
_KEPT = 16  # fenced URLs x clients remembered per thread (one replica: one or two)


def _steps(body: bytes) -> list[dict[str, Any]] | None:
    """The statements of a pipeline that is exactly one batch on a new stream, else ``None``."""
    try:
        document = json.loads(body)
        (request,) = document["requests"]
        if document.get("baton") is not None or request.get("type") != "batch":
            return None
        stmts = [step["stmt"] for step in request["batch"]["steps"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not stmts or not all(isinstance(stmt, dict) for stmt in stmts):
        return None
    return stmts


def _args(stmt: dict[str, Any], kinds: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """Positional Hrana values of exactly ``kinds``, nothing stored or named; else ``None``."""
    args = stmt.get("args")
    if stmt.get("sql_id") is not None or stmt.get("named_args") or not isinstance(args, list):
        return None
    if len(args) != len(kinds):
        return None
    for arg, kind in zip(args, kinds, strict=True):
        if not (isinstance(arg, dict) and arg.get("type") == kind and isinstance(arg.get("value"), str)):
            return None
    return args


def _all_steps_ran(reply: bytes, steps: int) -> bool:
    try:
        result = json.loads(reply)["results"][0]
        outcome = result["response"]["result"]
        if result["type"] != "ok" or result["response"]["type"] != "batch":
            return False
        done, errors = outcome["step_results"], outcome["step_errors"]
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    return (
        isinstance(done, list)
        and isinstance(errors, list)
        and len(done) == len(errors) == steps
        and all(r is not None for r in done)
        and all(e is None for e in errors)
    )


def _read_reply(row: list[dict[str, Any]]) -> bytes:
    """tursodb 0.7.0's reply to a cursor read that found ``row``."""
    step = {
        "cols": _COLUMNS,
        "rows": [row],
        "affected_row_count": 0,
        "last_insert_rowid": None,
        "replication_index": None,
        "rows_read": 0,
        "rows_written": 0,
        "query_duration_ms": 0.0,
    }
    result = {"step_results": [step], "step_errors": [None], "replication_index": None}
    document = {
        "baton": None,
        "base_url": None,
        "results": [{"type": "ok", "response": {"type": "batch", "result": result}}],
    }
    return json.dumps(document, separators=(",", ":")).encode()


class _Cursors:
    """This thread's push cursors: ``(fenced URL, client id)`` -> the row its last batch upserted."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def answer(self, url: str, body: bytes) -> bytes | None:
        """The reply to a cursor read we know the answer to, else ``None`` (send it)."""
        if not self.rows or len(body) > 1024 or CURSOR_TABLE not in body:
            return None
        stmts = _steps(body)
        if stmts is None or len(stmts) != 1 or stmts[0].get("sql") != READ_SQL:
            return None
        args = _args(stmts[0], ("text",))
        if args is None or stmts[0].get("want_rows") is not True:
            return None
        row = self.rows.get((url, args[0]["value"]))
        return None if row is None else _read_reply(row)

    def batch(self, url: str, body: bytes) -> tuple[str, list[dict[str, Any]], int] | None:
        """Before a request goes out: a push batch's ``(client, upserted row, steps)``, else ``None``.

        Whatever the request, an entry it might change is dropped here first.
        """
        if CURSOR_TABLE not in body:
            return None
        stmts = _steps(body)
        upserts = [] if stmts is None else [s for s in stmts if s.get("sql") == UPSERT_SQL]
        args = _args(upserts[0], ("text", "integer", "integer")) if len(upserts) == 1 else None
        if stmts is None or args is None:
            self.rows.clear()  # something else that names the table: trust nothing
            return None
        client = args[0]["value"]
        for key in [key for key in self.rows if key[1] == client]:
            del self.rows[key]
        others = (str(s.get("sql", "")) for s in stmts if s.get("sql") not in (UPSERT_SQL, CREATE_SQL))
        if (
            url.find(FENCED) < 0
            or stmts[0].get("sql") != "BEGIN IMMEDIATE"
            or stmts[-1].get("sql") != "COMMIT"
            or any(CURSOR_TABLE.decode() in sql.lower() for sql in others)
        ):
            return None
        return client, [dict(args[1]), dict(args[2])], len(stmts)

    def landed(self, url: str, client: str, row: list[dict[str, Any]]) -> None:
        if len(self.rows) >= _KEPT:
            self.rows.clear()
        self.rows[(url, client)] = row


def _cursors() -> _Cursors:
    cursors: _Cursors | None = getattr(_local, "cursors", None)
    if cursors is None:
        cursors = _local.cursors = _Cursors()
    return cursors


def forget_cursors() -> None:
    """Drop the calling thread's push cursors (a replica reset, an engine thread that stops)."""
    _local.cursors = None


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Bound the calling thread's sync requests by the ``time.monotonic()`` time ``at``: each one
    waits at most what is left of it (nested, the earlier deadline holds)."""
    outer: float | None = getattr(_local, "deadline", None)
    _local.deadline = at if outer is None else min(outer, at)
    try:
        yield
    finally:
        _local.deadline = outer


def _timeout() -> float:
    """The socket timeout of the next request: what is left of the deadline (at least
    :data:`MIN_TIMEOUT`, at most :data:`TIMEOUT`)."""
    at: float | None = getattr(_local, "deadline", None)
    if at is None:
        return TIMEOUT
    return min(TIMEOUT, max(MIN_TIMEOUT, at - time.monotonic()))


def urlopen(request: urllib.request.Request, *_: Any, **__: Any) -> _Reply:
    body: bytes | None = request.data if isinstance(request.data, bytes) else None
    url = request.full_url
    if body is None or not url.endswith("/v2/pipeline"):
        return _send(request)
    cursors = _cursors()
    if url.find(FENCED) >= 0 and (answer := cursors.answer(url, body)) is not None:
        stats.cursor_reads += 1
        return _answer(answer)
    push = cursors.batch(url, body)
    reply = _send(request)
    if push is None:
        return reply
    with reply:
        data = reply.read()
    client, row, steps = push
    if _all_steps_ran(data, steps):
        cursors.landed(url, client, row)
    return _answer(data)


def _send(request: urllib.request.Request) -> _Reply:
    parts = urllib.parse.urlsplit(request.full_url)
    scheme, host = parts.scheme, parts.hostname
    if scheme not in ("http", "https") or not host or "@" in parts.netloc:
        # Never a guessed scheme or host: the request carries the bearer token (resolve_config
        # normalises every URL it hands out, so this is only reached by a URL from elsewhere).
        raise urllib.error.URLError(
            f"refusing to send to a {scheme or 'scheme-less'} URL: use http(s)://host"
        )
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise urllib.error.URLError(f"bad port in the sync URL: {exc}") from None
    key = (scheme, host, port)
    timeout = _timeout()
    pool = _pool()
    conn: http.client.HTTPConnection | None = None
    cached = pool.pop(key, None)
    if cached is not None and time.monotonic() - cached[1] < MAX_IDLE and not _dropped(cached[0]):
        conn = cached[0]
    elif cached is not None:
        cached[0].close()
    if conn is None:
        factory = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = factory(host, port, timeout=timeout)
        stats.opened += 1
    else:
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
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

    def release(clean: bool) -> None:
        if clean and not response.will_close and response.isclosed():
            pool[key] = (conn, time.monotonic())
        else:
            conn.close()

    if response.status >= 400:
        body = response.read()
        release(True)
        raise urllib.error.HTTPError(
            request.full_url, response.status, response.reason, response.headers, io.BytesIO(body)
        )
    return _Reply(response, response.status, release)


_SHIM = types.SimpleNamespace(
    request=types.SimpleNamespace(Request=urllib.request.Request, urlopen=urlopen),
    error=urllib.error,
    parse=urllib.parse,
)


def close_connections() -> None:
    """Close the calling thread's kept-alive connections (an engine thread that stops)."""
    forget_cursors()
    pool = _pool()
    for conn, _ in list(pool.values()):
        conn.close()
    pool.clear()
    with _pools_lock:
        _pools[:] = [other for other in _pools if other is not pool]
    _local.pool = None


IN_PLACE_LIMIT = 4096  # one page: a pwrite this size is whole or not done when the process dies
_in_place: set[str] = set()
_pyturso_full_write = turso.lib_sync._process_full_write_item


def write_in_place(path: str, enabled: bool = True) -> None:
    """Let pyturso's rewrites of the file at ``path`` happen in place (see the module doc)."""
    if enabled:
        _in_place.add(path)
    else:
        _in_place.discard(path)


def _full_write(io_item: Any, req_kind: Any) -> None:
    path = req_kind.path
    content = bytes(req_kind.content) if req_kind.content is not None else b""
    if path in _in_place and len(content) <= IN_PLACE_LIMIT:
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            fd = -1  # not there yet (a new replica): written pyturso's way
        if fd >= 0:
            try:
                size = os.fstat(fd).st_size
                if size <= IN_PLACE_LIMIT:
                    data = content.ljust(size, b" ")
                    if os.pwrite(fd, data, 0) == len(data):
                        io_item.done()
                        return
            except OSError:
                pass  # pyturso's way below, which reports its own failure
            finally:
                os.close(fd)
    _pyturso_full_write(io_item, req_kind)


def install() -> None:
    """Make pyturso's sync requests use :func:`urlopen`, its metadata writes :func:`_full_write`
    (idempotent)."""
    turso.lib_sync.urllib = _SHIM  # type: ignore[attr-defined,assignment]
    turso.lib_sync._process_full_write_item = _full_write


def installed() -> bool:
    shim = getattr(turso.lib_sync, "urllib", None)
    return shim is _SHIM and turso.lib_sync._process_full_write_item is _full_write
