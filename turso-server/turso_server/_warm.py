"""Connections to one tursodb child, each opened one request ahead of need.

tursodb looks for a new connection only every ~10 ms, but serves one already waiting in its
accept queue at once: a request on a fresh connection took 10 ms, the same request on a
connection opened 20 ms earlier 0.05-0.4 ms (measured on tursodb 0.7.0). It also serves
connections strictly in accept order, blocking on the oldest one until it sends a request, and
drops a connection idle for somewhere between 30 and 70 s.

So every connection to a running child is opened here and handed out in the order it was opened,
with exactly one spare kept ahead: a request takes the oldest connection and leaves a new spare
queued behind it, connected before :meth:`take` returns (so it is in the child's accept queue
when the request finishes; else the child may sleep its poll first). A connection idle past
``max_idle`` or already closed by the child is closed and skipped (which also unblocks the
child). :meth:`close` drops the spare, so a child told to stop is not left waiting for a request
that never comes. Owned by the supervisor's record of one child process; used by ``_proxy`` and
``_backup`` through :meth:`take`.

On loopback the kernel completes the handshake inside ``connect()`` itself (the call still says
``EINPROGRESS``, the socket is writable at once), so a new connection is checked for that first
and only waited for on the loop when it is not done yet: the spare then costs a request a few
system calls instead of a task and two turns of the loop before the request can go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections import deque

from ._errors import UpstreamConnectError

DEFAULT_MAX_IDLE = 15.0
MAX_SKIPPED = 3  # stale connections skipped in one take before the child counts as unreachable


class WarmConnections:
    """Usage::

    warm = WarmConnections("127.0.0.1", port)
    sock = await warm.take()   # connected, never used; the caller sends one request, closes it
    warm.close()
    """

    def __init__(self, host: str, port: int, *, max_idle: float = DEFAULT_MAX_IDLE) -> None:
        self.host = host
        self.port = port
        self._max_idle = max_idle
        self._queue: deque[asyncio.Future[tuple[socket.socket, float]]] = deque()
        self._closed = False

    async def take(self) -> socket.socket:
        """The oldest unused connection (a new spare is opened behind it)."""
        for _ in range(MAX_SKIPPED + 1):
            if self._closed:
                raise UpstreamConnectError(f"tursodb on port {self.port} is stopping")
            if not self._queue:
                self._queue.append(self._open())
            opening = self._queue.popleft()
            spare = self._open()
            self._queue.append(spare)
            try:
                sock, opened_at = await opening
                # The spare must be in the child's accept queue before this request can finish:
                # a child that finds its queue empty sleeps its ~10 ms poll first (measured: a
                # SELECT 1 pipeline averaged 5.3 ms when the spare connected after the reply).
                if not spare.done():
                    await asyncio.wait((spare,))
            except asyncio.CancelledError:
                _discard(opening)  # connected but never handed out: the child must not wait on it
                raise
            if time.monotonic() - opened_at <= self._max_idle and _still_open(sock):
                return sock
            sock.close()  # stale: the child may have dropped it; closing it unblocks the child
        raise UpstreamConnectError(f"tursodb on port {self.port} keeps closing new connections")

    def close(self) -> None:
        """Close every unused connection (idempotent); later takes fail as unreachable."""
        self._closed = True
        while self._queue:
            _discard(self._queue.popleft())

    def _open(self) -> asyncio.Future[tuple[socket.socket, float]]:
        """A connection being opened: already done when the handshake finished in ``connect()``."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            done = _connect_now(sock, (self.host, self.port))
        except OSError as exc:
            sock.close()
            opening: asyncio.Future[tuple[socket.socket, float]] = asyncio.get_running_loop().create_future()
            opening.set_exception(self._unreachable(exc))
        except BaseException:
            sock.close()
            raise
        else:
            if done:
                opening = asyncio.get_running_loop().create_future()
                opening.set_result((sock, time.monotonic()))
                return opening
            opening = asyncio.ensure_future(self._finish_connect(sock))
        # A spare nobody awaits must not log "exception was never retrieved" when it fails.
        opening.add_done_callback(_consume_error)
        return opening

    async def _finish_connect(self, sock: socket.socket) -> tuple[socket.socket, float]:
        try:
            try:
                await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
            except OSError as exc:
                raise self._unreachable(exc) from exc
        except BaseException:
            sock.close()
            raise
        if self._closed:  # closed while connecting: nobody will use it
            sock.close()
            raise UpstreamConnectError(f"tursodb on port {self.port} is stopping")
        return sock, time.monotonic()

    def _unreachable(self, exc: OSError) -> UpstreamConnectError:
        return UpstreamConnectError(f"cannot connect to tursodb on {self.host}:{self.port}: {exc!r}")


def _connect_now(sock: socket.socket, address: tuple[str, int]) -> bool:
    """Start a non-blocking connect; ``True`` when it already completed (loopback), else pending.

    A refused or failed connect raises :class:`OSError` here, as the loop's own connect would.
    """
    code = sock.connect_ex(address)
    if code == 0:
        return True
    if code != errno.EINPROGRESS:
        raise OSError(code, os.strerror(code))
    if error := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        raise OSError(error, os.strerror(error))
    try:
        sock.getpeername()  # no select(): a server's descriptors can be past FD_SETSIZE
    except OSError:
        return False  # still connecting: the loop waits (asyncio's sock_connect takes EALREADY)
    return True


def _still_open(sock: socket.socket) -> bool:
    """``True`` while the peer has neither closed nor reset the connection (nothing is read)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True  # nothing to read: open and idle
    except OSError:
        return False
    return False  # closed (b"") or unsolicited bytes: not a clean connection


def _discard(opening: asyncio.Future[tuple[socket.socket, float]]) -> None:
    """Close the socket of a finished connect, or cancel one still connecting."""
    if not opening.done():
        opening.cancel()
    elif not opening.cancelled() and opening.exception() is None:
        opening.result()[0].close()


def _consume_error(task: asyncio.Future[tuple[socket.socket, float]]) -> None:
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()
