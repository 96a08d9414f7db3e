"""The data port: ``/<ns>/<rest>`` is forwarded to that namespace's tursodb as ``/<rest>``.

tursodb's sync server is single-threaded, handles one request per connection, needs
``Content-Length`` and rejects chunked bodies, so the request body is buffered first and sent in one
go on a fresh connection, with hop-by-hop headers (and ``Expect``, ``Host`` and the caller's
``Authorization``, which tursodb ignores) dropped and ``X-Forwarded-For/-Host/-Proto/-Prefix`` added.
The response keeps tursodb's status and headers. It is read whole into a spool (``_spool``: memory,
then a temporary file, both bounded) before the client gets a byte, and the child's connection and
lease are released at once, so a client that reads slowly or not at all (a bootstrap is the whole
database) never keeps tursodb, which serves one connection at a time, from anyone else. The child
exchange is bounded by ``TURSO_UPSTREAM_TIMEOUT``; the client's side by
``TURSO_CLIENT_RECEIVE_TIMEOUT`` (its whole body, else 408) and ``TURSO_CLIENT_SEND_TIMEOUT``
(taking the whole reply, else the connection is cut), so a stalled writer or reader costs only its
own request. The order of checks is: auth (401), namespace syntax on the
*raw* path (400), token scope (403), then existence (auto-provision, or 404). A refused connection
means the child just died: the request waits for the supervisor's restart and is retried (nothing
was sent), up to ``TURSO_STARTUP_TIMEOUT``, then 503 with ``Retry-After``. A request that was sent
but got no byte back (the child died while it sat in the accept queue, or while running it) is
resent the same way only when it is read-only (``/pull-updates``, GET, HEAD, OPTIONS): a
``/v2/pipeline`` push replayed by hand runs twice and duplicates its rows (measured against tursodb
0.7.0), so it gets 502 and the sync client, which reads its last change id first, retries safely.
Mounted by ``_app``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import hdrs, web
from multidict import CIMultiDict

from ._auth import DataAuth
from ._errors import (
    MissingNamespaceError,
    UnavailableError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamNoReplyError,
    UpstreamTimeoutError,
)
from ._http import CONFIG, DATA_AUTH, METRICS, SPOOL, STORE, SUPERVISOR, add_probe_routes, read_body
from ._logging import get_logger
from ._metrics import UNKNOWN_NAMESPACE
from ._names import validate_name
from ._spool import Spool, SpoolBudget
from ._state import Origin
from ._upstream import UpstreamResponse, exchange
from ._warm import WarmConnections

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect", "authorization"}
NOT_RETURNED = HOP_BY_HOP | {"content-length"}
ROUTE_LABELS = {"/pull-updates": "pull-updates", "/v2/pipeline": "pipeline"}
READ_ONLY_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})
READ_ONLY_ROUTES = frozenset({"/pull-updates"})
OTHER_ROUTE = "other"
CLIENT_CLOSED_REQUEST = 499  # the client went away before the answer (nginx's convention)
RECONNECT_DELAY = 0.05
FORWARDED_PREFIX = "x-forwarded-"
X_FORWARDED_PREFIX = "X-Forwarded-Prefix"
MISSING_NAMESPACE_DETAIL = "request path must start with /<namespace>/"

log = get_logger("proxy")


def split_target(raw_target: str) -> tuple[str, str, str]:
    """Split a raw request target into ``(namespace segment, rest, query)``.

    ``/ns/pull-updates?x=1`` gives ``("ns", "/pull-updates", "x=1")``; ``/ns`` and ``/ns/`` give
    ``rest="/"``; repeated slashes after the namespace collapse (a client base URL with a trailing
    slash). Nothing is percent-decoded: the segment is validated as sent.
    """
    path, _, query = raw_target.partition("?")
    trimmed = path[1:] if path.startswith("/") else path
    segment, _, remainder = trimmed.partition("/")
    if not segment:
        raise MissingNamespaceError(MISSING_NAMESPACE_DETAIL)
    return segment, "/" + remainder.lstrip("/"), query


def upstream_headers(request: web.Request, namespace: str) -> list[tuple[str, str]]:
    """The headers sent to tursodb (``Host`` and ``Content-Length`` are added by the client)."""
    listed = {
        token.strip().lower()
        for value in request.headers.getall(hdrs.CONNECTION, [])
        for token in value.split(",")
    }
    headers = [
        (key, value)
        for key, value in request.headers.items()
        if (lowered := key.lower()) not in NOT_FORWARDED
        and lowered not in listed
        and not lowered.startswith(FORWARDED_PREFIX)
    ]
    forwarded_for = request.headers.get(hdrs.X_FORWARDED_FOR)
    remote = request.remote or ""
    headers += [
        (hdrs.X_FORWARDED_FOR, f"{forwarded_for}, {remote}" if forwarded_for else remote),
        (hdrs.X_FORWARDED_HOST, request.headers.get(hdrs.X_FORWARDED_HOST) or request.host),
        (hdrs.X_FORWARDED_PROTO, request.headers.get(hdrs.X_FORWARDED_PROTO) or request.scheme),
        (X_FORWARDED_PREFIX, f"/{namespace}"),
    ]
    return headers


def response_headers(upstream: UpstreamResponse) -> CIMultiDict[str]:
    return CIMultiDict((key, value) for key, value in upstream.headers if key.lower() not in NOT_RETURNED)


async def proxy(request: web.Request) -> web.StreamResponse:
    """Authenticate, validate, find or start the namespace's child, and forward."""
    app = request.app
    started = time.perf_counter()
    route, status = OTHER_ROUTE, 500
    name: str | None = None
    try:
        principal = app[DATA_AUTH].authenticate(request.headers.get(hdrs.AUTHORIZATION))
        segment, rest, query = split_target(request.raw_path)
        name = validate_name(segment)
        route = ROUTE_LABELS.get(rest, OTHER_ROUTE)
        DataAuth.authorize(principal, name, request.method, rest)
        body = await read_body(request, timeout=app[CONFIG].client_receive_timeout or None)
        target = f"{rest}?{query}" if query else rest
        resendable = request.method in READ_ONLY_METHODS or rest in READ_ONLY_ROUTES
        reply = await _forward(request, name, target, body, resendable=resendable)
        status = reply.status
        return await _send_reply(request, reply)
    except asyncio.CancelledError:
        status = CLIENT_CLOSED_REQUEST
        raise
    except Exception as exc:
        status = getattr(exc, "status", 500)
        raise
    finally:
        elapsed = time.perf_counter() - started
        # Only stored namespaces become label values, so stray names cannot grow the series.
        namespace = name if name is not None and name in app[STORE] else UNKNOWN_NAMESPACE
        metrics = app[METRICS]
        metrics.data_requests.labels(namespace, route, str(status)).inc()
        metrics.proxy_latency.labels(route).observe(elapsed)
        log.debug(
            "proxied",
            extra={"method": request.method, "namespace": namespace, "route": route, "status": status},
        )


async def _forward(
    request: web.Request, name: str, target: str, body: bytes, *, resendable: bool
) -> SpooledReply:
    """Lease the child and exchange; resend while the child is down and resending is safe."""
    app = request.app
    config, supervisor, store = app[CONFIG], app[SUPERVISOR], app[STORE]
    provision = Origin.AUTO if config.allow_auto_provision else None
    deadline = time.monotonic() + config.startup_timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        async with supervisor.lease(name, provision=provision, timeout=remaining) as warm:
            store.touch(name)
            try:
                return await _exchange(request, warm, name, target, body)
            except UpstreamConnectError as exc:
                # Nothing reached the child (it just died); wait for its restart and resend.
                reason = exc.detail
            except UpstreamNoReplyError as exc:
                if not resendable:
                    raise
                reason = exc.detail
        if time.monotonic() >= deadline:
            raise UnavailableError(f"namespace {name!r} is not accepting connections ({reason})")
        await asyncio.sleep(RECONNECT_DELAY)


@dataclass
class SpooledReply:
    """A child's reply, read whole off its connection; ``body`` holds a spool share until sent."""

    status: int
    reason: str
    headers: CIMultiDict[str]
    body: Spool


async def _exchange(
    request: web.Request, warm: WarmConnections, name: str, target: str, body: bytes
) -> SpooledReply:
    ceiling = request.app[CONFIG].upstream_timeout or None
    headers = upstream_headers(request, name)
    try:
        async with asyncio.timeout(ceiling):
            upstream = await exchange(
                warm.host,
                warm.port,
                method=request.method,
                target=target,
                headers=headers,
                body=body,
                sock=await warm.take(),
            )
            try:
                return await _spool_reply(request.app[SPOOL], upstream)
            finally:
                upstream.close()  # the child is free from here on, whatever the client does
    except UpstreamConnectError:
        raise
    except (UpstreamError, TimeoutError) as exc:
        log.warning("upstream error", extra={"namespace": name, "path": target, "error": repr(exc)})
        if isinstance(exc, UpstreamError):
            raise
        raise UpstreamTimeoutError(
            f"tursodb for {name!r} did not answer within the upstream timeout"
        ) from exc


async def _spool_reply(budget: SpoolBudget, upstream: UpstreamResponse) -> SpooledReply:
    """Read ``upstream``'s whole body into a spool (:class:`SpoolFullError` when it cannot fit)."""
    expected = upstream.content_length if upstream.has_body and not upstream.chunked else None
    spool = budget.spool(expected=expected)
    try:
        async for chunk in upstream.iter_chunks():
            await spool.write(chunk)
        await spool.finish()
    except BaseException:
        await spool.aclose()
        raise
    return SpooledReply(upstream.status, upstream.reason, response_headers(upstream), spool)


async def _send_reply(request: web.Request, reply: SpooledReply) -> web.StreamResponse:
    """Send a spooled reply at the client's pace, within ``TURSO_CLIENT_SEND_TIMEOUT``.

    No child is involved any more: a client that stops reading only loses its own reply (the
    connection is cut when the timeout passes) and gives its spool share back.
    """
    timeout = request.app[CONFIG].client_send_timeout or None
    spool = reply.body
    response: web.StreamResponse
    try:
        if spool.in_memory:
            # One write for head and body, as aiohttp does for a plain Response.
            response = web.Response(
                status=reply.status, reason=reply.reason, body=spool.body(), headers=reply.headers
            )
        else:
            response = web.StreamResponse(status=reply.status, reason=reply.reason, headers=reply.headers)
            response.content_length = spool.size
        try:
            async with asyncio.timeout(timeout):
                await response.prepare(request)
                if not spool.in_memory:
                    async for chunk in spool.chunks():
                        await response.write(chunk)
                await response.write_eof()
        except (TimeoutError, ConnectionResetError) as exc:
            slow = isinstance(exc, TimeoutError)
            log.info(
                "client did not take its reply" if slow else "client went away before its reply",
                extra={"path": request.path, "bytes": spool.size, "timeout": timeout if slow else None},
            )
            if request.transport is not None:
                request.transport.close()
        return response
    finally:
        await spool.aclose()


def add_routes(app: web.Application) -> None:
    """Probes first (exact paths), then everything else to the proxy."""
    add_probe_routes(app)
    app.router.add_route(hdrs.METH_ANY, "/{target:.*}", proxy)
