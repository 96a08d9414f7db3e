"""A small HTTP/1.1 client for the one upstream we ever talk to: our own tursodb children.

tursodb's sync server reads a request up to the blank line plus exactly ``Content-Length`` bytes,
answers with ``Content-Length`` and ``Connection: close``, and handles one request per connection.
So each exchange is: connect, one send of head and buffered body, read the status line and
headers, then the body by length (or to EOF, decoding chunks if ever sent). It works on the raw
non-blocking socket through the loop's ``sock_*`` calls: on the 2-core target that costs far less
CPU per request than aiohttp's general client or asyncio streams, and the proxy's throughput
depends on it. It also gives exact control over framing: no chunked uploads, no ``Expect``, no
added headers. A failure to *connect* is :class:`UpstreamConnectError` (nothing was sent, so the
proxy may retry); anything later is :class:`UpstreamError`. Used by ``_proxy`` and ``_backup``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable

from ._errors import UpstreamConnectError, UpstreamError, UpstreamNoReplyError

HEAD_LIMIT = 64 * 1024
RECV_SIZE = 256 * 1024
HEAD_END = b"\r\n\r\n"
CRLF = b"\r\n"
NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamResponse:
    """Status and headers of a reply whose body is still on the connection.

    Read the body with :meth:`read` or :meth:`iter_chunks`, then :meth:`close`.
    """

    def __init__(
        self,
        sock: socket.socket,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        buffered: bytes,
        *,
        has_body: bool = True,
    ) -> None:
        self._sock = sock
        self._buffered = buffered
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length: int | None = None
        self.chunked = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    raise UpstreamError(f"bad Content-Length from tursodb: {value!r}") from None
            elif lowered == "transfer-encoding" and "chunked" in value.lower():
                self.chunked = True
        # Replies to HEAD, 1xx, 204 and 304 never carry a body, whatever Content-Length says.
        self.has_body = has_body and status >= 200 and status not in NO_BODY_STATUSES

    async def read(self) -> bytes:
        """The whole body."""
        if not self.has_body:
            return b""
        if self.chunked:
            return _dechunk(b"".join([chunk async for chunk in self._raw_chunks(None)]))
        return b"".join([chunk async for chunk in self._raw_chunks(self.content_length)])

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked replies are decoded first, in memory)."""
        if not self.has_body:
            return
        if self.chunked:
            yield await self.read()
            return
        async for chunk in self._raw_chunks(self.content_length):
            yield chunk

    async def _raw_chunks(self, length: int | None) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        remaining = length
        if self._buffered:
            chunk = self._buffered if remaining is None else self._buffered[:remaining]
            self._buffered = b""
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
        while remaining is None or remaining > 0:
            try:
                chunk = await loop.sock_recv(
                    self._sock, RECV_SIZE if remaining is None else min(RECV_SIZE, remaining)
                )
            except OSError as exc:
                raise UpstreamError(f"reading the tursodb reply failed: {exc!r}") from exc
            if not chunk:
                if remaining is None:
                    return
                raise UpstreamError(f"tursodb closed the connection {remaining} bytes early")
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk

    def close(self) -> None:
        self._sock.close()


async def exchange(
    host: str,
    port: int,
    *,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    sock: socket.socket | None = None,
) -> UpstreamResponse:
    """Send one request and return the reply once its head has arrived (caller closes it).

    ``sock`` is a connection already open to ``host:port`` (see ``_warm``); without it one is
    opened here. Either way the exchange owns and closes it. Bound the whole exchange with
    ``asyncio.timeout`` at the call site.
    """
    loop = asyncio.get_running_loop()
    connected = sock is not None
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if not connected:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await loop.sock_connect(sock, (host, port))
            except OSError as exc:
                raise UpstreamConnectError(f"cannot connect to tursodb on {host}:{port}: {exc!r}") from exc
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
        head += [f"{name}: {value}" for name, value in headers]
        head.append(f"Content-Length: {len(body)}")
        received = bytearray()
        try:
            await loop.sock_sendall(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            while (end := received.find(HEAD_END)) < 0:
                if len(received) > HEAD_LIMIT:
                    raise UpstreamError("tursodb reply head is too large")
                chunk = await loop.sock_recv(sock, RECV_SIZE)
                if not chunk:
                    if received:
                        raise UpstreamError(f"tursodb on port {port} closed the connection mid-reply")
                    raise UpstreamNoReplyError(
                        f"tursodb on port {port} closed the connection without replying"
                    )
                received += chunk
        except UpstreamError:
            raise  # a ConnectionError (so an OSError) itself: not to be wrapped again
        except OSError as exc:
            if received:
                raise UpstreamError(f"tursodb on port {port} failed mid-reply: {exc!r}") from exc
            raise UpstreamNoReplyError(f"tursodb on port {port} failed before replying: {exc!r}") from exc
        head_only = method == "HEAD"
        return _parse_head(sock, bytes(received[:end]), bytes(received[end + len(HEAD_END) :]), head_only)
    except BaseException:
        sock.close()
        raise


def _parse_head(sock: socket.socket, raw_head: bytes, rest: bytes, head_only: bool) -> UpstreamResponse:
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    version, _, remainder = status_line.partition(" ")
    code, _, reason = remainder.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise UpstreamError(f"not an HTTP reply from tursodb: {status_line[:80]!r}")
    headers = []
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return UpstreamResponse(sock, int(code), reason, headers, rest, has_body=not head_only)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    position = 0
    while True:
        line_end = data.find(CRLF, position)
        if line_end < 0:
            raise UpstreamError("truncated chunked reply from tursodb")
        size = int(data[position:line_end].split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        start = line_end + len(CRLF)
        out += data[start : start + size]
        position = start + size + len(CRLF)
