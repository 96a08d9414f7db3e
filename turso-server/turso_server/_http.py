"""HTTP plumbing shared by both listeners: typed app keys, JSON errors, probes.

Both ``web.Application`` objects (data and admin) carry the same server objects under the typed
:class:`web.AppKey` constants below; ``_app`` sets them and registers the lifecycles. Every error
leaves as ``{"code", "detail"}`` JSON through :func:`error_middleware`, including aiohttp's own
404/405/413, so clients never have to parse text bodies. ``/healthz`` (alive) and ``/readyz``
(state restored and both listeners up) need no token. Imported by ``_proxy``, ``_admin``, ``_app``.

Hostile heads are refused here, once for both ports, before any handler sees them:

* a head aiohttp's parser refuses (a control character in a header, a line too long, a bad
  request line) never reaches a middleware, so :class:`AppRunner` swaps in a protocol whose
  :meth:`~JsonErrorProtocol.handle_error` answers ``400 {"code": "malformed request"}`` and logs
  the error class only: aiohttp's own reply and log line quote the offending header line, which
  may be an ``Authorization`` header;
* :func:`head_middleware` refuses a request target or header value with a byte outside visible
  ASCII (what tursodb's head would carry, and what the upstream client cannot encode), naming a
  standard header (any other by position) but never a value; ``Authorization`` is left to
  ``_auth``, which answers 401;
* a body that breaks its framing (bad chunked encoding) is a 400, not an "unhandled error".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ._auth import AdminAuth, DataAuth, ScopedTokens
from ._backup import Backups
from ._config import ServerConfig
from ._cursors import PushCursors
from ._errors import (
    ApiError,
    ClientClosedError,
    InvalidBodyError,
    MalformedRequestError,
    RequestTimeoutError,
    UnknownRouteError,
)
from ._gc import GarbageCollector
from ._leases import LeaseTable
from ._logging import get_logger
from ._metrics import Metrics
from ._spool import SpoolBudget
from ._state import StateStore
from ._supervisor import Supervisor

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
PROBE_PATHS = frozenset({HEALTHZ_PATH, READYZ_PATH})
OK_BODY = "ok"
NOT_READY_BODY = "not ready"
JSON_CONTENT_TYPE = "application/json"
_AIOHTTP_CODES = {
    404: UnknownRouteError.code,
    405: "method not allowed",
    413: "payload too large",
}

# Tab and visible ASCII: what a header value or target may carry (aiohttp already refuses CR, LF, NUL).
_UNSAFE_HEAD_CHAR = re.compile(r"[^\t\x20-\x7e]")
_STANDARD_HEADERS = frozenset(
    value.lower() for key, value in vars(hdrs).items() if key.isupper() and isinstance(value, str)
)
_REASON_END = re.compile(r"[:'\"\n]")
# A write-lease token in a data-port path (``/<ns>/-/lease/<token>/...``): a fencing secret.
_LEASE_TOKEN = re.compile(r"(/-/+lease/+)[^/]+")
REDACTED = "***"
MAX_REASON_LENGTH = 60

log = get_logger("http")


class Readiness:
    """``/readyz`` turns true once the restore finished and both listeners are up."""

    def __init__(self) -> None:
        self.restored = False
        self.listening = False
        self.stopping = False

    @property
    def ready(self) -> bool:
        return self.restored and self.listening and not self.stopping


CONFIG = web.AppKey("config", ServerConfig)
STORE = web.AppKey("store", StateStore)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)
GC = web.AppKey("gc", GarbageCollector)
LEASES = web.AppKey("leases", LeaseTable)
CURSORS = web.AppKey("cursors", PushCursors)
BACKUPS = web.AppKey("backups", Backups)
DATA_AUTH = web.AppKey("data_auth", DataAuth)
ADMIN_AUTH = web.AppKey("admin_auth", AdminAuth)
SCOPED_TOKENS: web.AppKey[ScopedTokens | None] = web.AppKey("scoped_tokens")
SPOOL = web.AppKey("spool", SpoolBudget)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers, dumps=_dumps)


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"code": code, "detail": detail}, status=status, headers=headers)


def _dumps(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False) + "\n"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render :class:`ApiError` and aiohttp's HTTP errors as JSON; log anything unexpected."""
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.detail, exc.headers())
        if exc.closes_connection:
            return await _send_and_close(request, response)
        return response
    except RequestPayloadError as exc:
        # The body's framing broke (chunk sizes, length): the connection cannot carry another request.
        log.info("malformed request body", extra={"method": request.method, "error": type(exc).__name__})
        response = error_response(400, MalformedRequestError.code, "request body framing is malformed")
        return await _send_and_close(request, response)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _AIOHTTP_CODES.get(exc.status, (exc.reason or "error").lower())
        headers = {str(hdrs.ALLOW): exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        return error_response(exc.status, code, f"{request.method} {loggable_path(request.path)}", headers)
    except Exception:
        log.exception(
            "unhandled error", extra={"method": request.method, "path": loggable_path(request.path)}
        )
        return error_response(500, "internal error", "unexpected server error; see the server log")


def loggable_path(path: str) -> str:
    """``path`` as a log line or a reply may carry it: a write-lease token is ``***``.

    ``/tenant/-/lease/<token>/v2/pipeline`` gives ``/tenant/-/lease/***/v2/pipeline``. Whoever
    read the token could push under another replica's lease, so every path logged or echoed
    goes through here.
    """
    return _LEASE_TOKEN.sub(rf"\g<1>{REDACTED}", path)


async def _send_and_close(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Send ``response``, then close the connection at once.

    Left to itself, aiohttp keeps reading (and dropping) an unread body for up to 10 s after the
    reply, so a client that stalled mid-body would keep its connection that much longer.
    """
    response.force_close()
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()  # the reply is buffered: the transport flushes it, then closes
    return response


async def read_body(request: web.Request, *, timeout: float | None, limit: int | None = None) -> bytes:
    """The whole request body within ``timeout`` seconds (``None``: no limit).

    A client that trickles or stops sending its body gets :class:`RequestTimeoutError` (408, and
    the connection is closed); one that disconnects is :class:`ClientClosedError`. A body longer
    than the app's ``client_max_size``, or than ``limit`` bytes when given, is aiohttp's 413
    (``payload too large``): refused from its ``Content-Length`` before a byte is read, else as
    soon as the bytes read pass it.
    """
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        async with asyncio.timeout(timeout):
            if limit is None:
                return await request.read()
            chunks: list[bytes] = []
            size = 0
            while chunk := await request.content.read(limit + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            return b"".join(chunks)
    except TimeoutError:
        raise RequestTimeoutError(f"the request body did not arrive within {timeout:g}s") from None
    except ConnectionResetError:
        raise ClientClosedError("the client closed the connection while sending its body") from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object (empty is ``{}``), or :class:`InvalidBodyError`; nothing else escapes.

    The bytes are decoded here as strict UTF-8 whatever the ``Content-Type`` says (aiohttp's
    ``request.text()`` raised ``UnicodeDecodeError``). ``json`` raises ``RecursionError`` for deep
    nesting and a plain ``ValueError`` for an integer past Python's digit limit, so both are
    caught besides ``JSONDecodeError``; the message never quotes the body.
    """
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise InvalidBodyError(f"body is not UTF-8 (byte {exc.start})") from None
    if not text:
        return {}
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidBodyError(f"body is not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise InvalidBodyError("body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidBodyError(f"body is not usable JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidBodyError("body must be a JSON object")
    return payload


@web.middleware
async def head_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """:class:`MalformedRequestError` for a target or header value outside visible ASCII."""
    check_head(request)
    return await handler(request)


def check_head(request: web.BaseRequest) -> None:
    """Refuse bytes a request head may not carry; ``Authorization`` is checked by ``_auth``."""
    if _UNSAFE_HEAD_CHAR.search(request.raw_path):
        raise MalformedRequestError("request target must be visible ASCII (percent-encode the rest)")
    for index, (name, value) in enumerate(request.headers.items()):
        if _UNSAFE_HEAD_CHAR.search(value) and name.lower() != "authorization":
            raise MalformedRequestError(f"header {_header_label(index, name)} must be visible ASCII")


def _header_label(index: int, name: str) -> str:
    """A standard header by name, any other by position: a made-up name may carry a secret too
    (the fuzzer sent a token as a header name)."""
    return repr(str(name)) if name.lower() in _STANDARD_HEADERS else f"#{index + 1} (by position)"


class JsonErrorProtocol(web.RequestHandler):
    """aiohttp's per-connection protocol, with parser errors answered as JSON and never echoed."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = parse_error_reason(exc)
        log.info("malformed request head", extra={"remote": request.remote, "error": reason})
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        response = error_response(
            status if 400 <= status < 500 else 400,
            MalformedRequestError.code,
            f"the request head cannot be parsed ({reason})",
        )
        response.force_close()
        return response


def parse_error_reason(exc: HttpProcessingError) -> str:
    """The parser's reason without the quoted input: ``Invalid header value char``.

    aiohttp's messages quote the offending line after a colon or in quotes
    (``Invalid header value char:\n\n  b'Authorization: Bearer ...'``), so only the text before
    the first of those is kept, and only when it is plain ASCII.
    """
    text = _REASON_END.split(exc.message or "", maxsplit=1)[0].strip()
    if not text or not text.isascii() or not text.isprintable():
        return type(exc).__name__
    return text[:MAX_REASON_LENGTH]


class _JsonErrorServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return JsonErrorProtocol(self, loop=asyncio.get_running_loop(), **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use :class:`JsonErrorProtocol`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,
        )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text=OK_BODY)


async def readyz(request: web.Request) -> web.Response:
    if request.app[READINESS].ready:
        return web.Response(text=OK_BODY)
    return web.Response(status=503, text=NOT_READY_BODY)


def add_probe_routes(app: web.Application) -> None:
    app.router.add_get(HEALTHZ_PATH, healthz)
    app.router.add_get(READYZ_PATH, readyz)
