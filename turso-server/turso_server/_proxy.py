"""The data port: ``/<ns>/<rest>`` is forwarded to that namespace's tursodb as ``/<rest>``.

tursodb's sync server is single-threaded, handles one request per connection, needs
``Content-Length`` and rejects chunked bodies, so the request body is buffered first and sent in one
go on a fresh connection, with hop-by-hop headers (and ``Expect``, ``Host`` and the caller's
``Authorization``, which tursodb ignores) dropped and ``X-Forwarded-For/-Host/-Proto/-Prefix`` added.
The response keeps tursodb's status and headers. It is read whole into a spool (``_spool``: memory,
then a temporary file, both bounded) before the client gets a byte, and the child's connection and
lease are released at once, so a client that reads slowly or not at all (a bootstrap is the whole
database) never keeps tursodb, which serves one connection at a time, from anyone else. The child
exchange is bounded by ``TURSO_UPSTREAM_TIMEOUT`` (a child that outlives it is restarted: it
would serve nobody else meanwhile); the client's side by
``TURSO_CLIENT_RECEIVE_TIMEOUT`` (its whole body, else 408) and ``TURSO_CLIENT_SEND_TIMEOUT``
(taking the whole reply, else the connection is cut), so a stalled writer or reader costs only its
own request. The order of checks is: auth (401), namespace syntax on the
*raw* path (400), token scope (403, also for a reserved ``/-/`` path), the route (only ``POST
/v2/pipeline`` and ``POST /pull-updates`` without a query string are forwarded, anything else is
``404 unknown route``), the SQL guard on the body
(``_sqlguard``: 403 or 400, nothing forwarded), then existence: a missing namespace is created
(``TURSO_ALLOW_AUTO_PROVISION``) only for a credential that may write and is bound to no
namespace incarnation, else 404 (401 for a namespace token: see ``_forward``). A token with an owner
(``_auth``) creates it explicit + locked with that owner, and promotes an ownerless ``auto`` one it
reaches the same way (``Supervisor.claim``) once tursodb accepted the request (a read-write token
only; a refused request claims nothing); its scope and access are what they were. A refused connection
means the child just died: the request waits for the supervisor's restart and is retried (nothing
was sent), up to ``TURSO_STARTUP_TIMEOUT``, then 503 with ``Retry-After``. A request that was sent
but got no byte back (the child died while it sat in the accept queue, or while running it) is
resent the same way only when it is read-only (``/pull-updates``): a
``/v2/pipeline`` push replayed by hand runs twice and duplicates its rows (measured against tursodb
0.7.0), so it gets 502 and the sync client, which reads its last change id first, retries safely.
Every forwarded pipeline carries a hidden last request that rolls back a transaction its own
requests left open (``_txreset``: tursodb's one connection is shared by every client), and its
answer is cut out of the reply.
Mounted by ``_app``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass

from aiohttp import hdrs, web
from multidict import CIMultiDict

from ._auth import READ_ONLY_METHODS, Access, DataAuth, Principal
from ._config import LEASE_TTL_MAX, LEASE_WAIT_MAX
from ._cursors import CursorRead, CursorWrite, all_steps_ran, classify, read_reply, read_rows
from ._cursors import Kind as CursorKind
from ._errors import (
    ClientClosedError,
    ForbiddenError,
    InvalidBodyError,
    InvalidPipelineError,
    LeaseLostError,
    MissingNamespaceError,
    NamespaceNotFoundError,
    UnauthorizedError,
    UnavailableError,
    UnknownRouteError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamNoReplyError,
    UpstreamTimeoutError,
)
from ._http import (
    CONFIG,
    CURSORS,
    DATA_AUTH,
    LEASES,
    METRICS,
    SPOOL,
    STORE,
    SUPERVISOR,
    add_probe_routes,
    json_response,
    loggable_path,
    parse_json_object,
    read_body,
)
from ._leases import HOLDER_MAX_LENGTH, Lease
from ._logging import get_logger
from ._metrics import UNKNOWN_NAMESPACE
from ._names import validate_name
from ._spool import Spool, SpoolBudget
from ._sqlguard import check_request
from ._state import Origin
from ._txreset import RESET, reset_ran, strip, with_reset
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
PIPELINE_ROUTE = "/v2/pipeline"
PULL_ROUTE = "/pull-updates"
ROUTE_LABELS = {PULL_ROUTE: "pull-updates", PIPELINE_ROUTE: "pipeline"}
# What tursodb's sync server dispatches on (besides OPTIONS): the only requests worth forwarding.
FORWARDED_ROUTES = frozenset({(hdrs.METH_POST, PIPELINE_ROUTE), (hdrs.METH_POST, PULL_ROUTE)})
UNKNOWN_ROUTE_DETAIL = "the data port forwards only POST /v2/pipeline and POST /pull-updates"
QUERY_DETAIL = "POST /v2/pipeline and POST /pull-updates take no query string"
LEASE_PREFIX = "/-/lease"
LEASE_ROUTE = "lease"
LEASE_BODY_LIMIT = 4096
HOLDER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
READ_ONLY_ROUTES = frozenset({PULL_ROUTE})
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


# tursodb 0.7.0's 500s for a body it refused before doing anything with it, per route: a pipeline
# its parser refused (the guard checks the SQL, not every field type, e.g. ``{"baton": 5}``), a
# pull whose protobuf does not decode, whose page selector does not parse or that asks for zstd.
UNPARSED_PREFIXES = {
    PIPELINE_ROUTE: (b"Internal Server Error: Failed to parse pipeline request",),
    PULL_ROUTE: (
        b"Internal Server Error: Failed to decode PullUpdatesRequest",
        b"Internal Server Error: Failed to parse server_pages_selector",
        b"Internal Server Error: Zstd encoding is not supported",
    ),
}
UNPARSED_DETAILS = {
    PIPELINE_ROUTE: "tursodb could not parse this pipeline request (nothing ran)",
    PULL_ROUTE: "tursodb could not decode this pull-updates request (nothing ran)",
}
# Its 500s for a pull whose ``server_revision`` (a WAL frame number: only tursodb knows the last
# one) lies past the end of its WAL: it reads that frame and finds none, or, for a number whose
# frame offset passes 2**63, cannot even ask. A pull naming no revision reads only frames the WAL
# has, so for it these stay the server faults they are.
PAST_WAL_PREFIXES = (
    b"Internal Server Error: I/O error: short read on WAL frame",
    b"Internal Server Error: I/O error (pread): invalid input parameter",
)
PAST_WAL_DETAIL = "server_revision is past this namespace's latest revision (nothing ran)"
SERVER_REVISION_KEY = 2 << 3 | 2  # PullUpdatesReqProtoBody.server_revision: field 2, length-delimited
VARINT_MAX_BYTES = 10


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for index in range(VARINT_MAX_BYTES):
        if at + index >= len(data):
            break
        byte = data[at + index]
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return value, at + index + 1
    raise ValueError("truncated or overlong varint")


def server_revision(body: bytes) -> bytes:
    """The ``server_revision`` a pull-updates protobuf names (the last one, as prost keeps; ``b""``
    for none). Fields inside groups are skipped, as prost does; :class:`ValueError` when the
    framing does not hold (then tursodb refused the body itself)."""
    revision, depth, at = b"", 0, 0
    while at < len(body):
        key, at = _varint(body, at)
        wire = key & 7
        if wire == 0:
            at = _varint(body, at)[1]
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        elif wire == 2:
            size, at = _varint(body, at)
            if key == SERVER_REVISION_KEY and depth == 0:
                revision = body[at : at + size]
            at += size
        elif wire in (3, 4):
            depth += 1 if wire == 3 else -1
        else:
            raise ValueError(f"wire type {wire}")
        if at > len(body) or depth < 0:
            raise ValueError("field past the end of the body")
    return revision


def _refused(reply: SpooledReply, route: str, body: bytes) -> str | None:
    """Why tursodb's 500 for a ``route`` ``body`` is the client's fault, nothing having run or
    changed, so a 400 (``invalid pipeline`` or ``invalid body``); ``None`` for any other reply."""
    if reply.status != 500 or not reply.body.in_memory:
        return None
    answer = reply.body.body()
    if answer.startswith(UNPARSED_PREFIXES.get(route, ())):
        return UNPARSED_DETAILS[route]
    if route == PULL_ROUTE and answer.startswith(PAST_WAL_PREFIXES):
        try:
            named = server_revision(body) != b""
        except ValueError:
            named = False
        if named:
            return PAST_WAL_DETAIL
    return None


def split_lease(rest: str) -> tuple[str | None, str]:
    """Take a write lease off the front of ``rest``.

    ``/-/lease/<token>/v2/pipeline`` gives ``(token, "/v2/pipeline")`` (a request fenced by that
    lease); ``/-/lease`` and ``/-/lease/<token>`` give ``("", rest)`` (the lease API itself);
    anything else is ``(None, rest)``. Other ``/-/`` paths are reserved: 404.
    """
    if not rest.startswith("/-/"):
        return None, rest
    if rest != LEASE_PREFIX and not rest.startswith(LEASE_PREFIX + "/"):
        raise UnknownRouteError("only /-/lease is served under /-/")
    token, _, inner = rest[len(LEASE_PREFIX) + 1 :].partition("/")
    if not inner:
        return "", rest
    if not token:
        raise UnknownRouteError("a request under a lease is /-/lease/<token>/<rest>")
    return token, "/" + inner


def _check_owner(app: web.Application, principal: Principal, name: str) -> None:
    """:class:`ForbiddenError` when an owned token (a list or prefix token minted with an
    ``owner``) reaches a namespace another owner holds: its scope may match a tenant's database
    made later under a matching name (``worker-*`` and a TursoNamespace's ``worker-x``), and an
    owner keeps its databases to itself. Ownerless namespaces stay open to the scope, as before."""
    if principal.owner is None:
        return
    record = app[STORE].get(name)
    if record is not None and record.owner is not None and record.owner != principal.owner:
        raise ForbiddenError("this namespace belongs to another owner than the token's")


def _number(body: dict[str, object], key: str, default: float, ceiling: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= ceiling:
        raise InvalidBodyError(f"{key!r} must be a number of seconds from 0 to {ceiling:g}")
    return float(value)


async def _lease_call(request: web.Request, name: str, rest: str, principal: Principal) -> web.Response:
    """``POST /-/lease`` grants, ``PUT /-/lease/<token>`` renews, ``DELETE`` releases.

    The caller may write (authorised as a push). A grant on a namespace that does not exist creates
    it, as a push would, or is refused as a push would be (``TURSO_ALLOW_AUTO_PROVISION`` off: 404,
    the limit: 429), after the body was validated. A token bound to a namespace's incarnation
    creates nothing, and its binding is checked again once the body is in and once the lease is
    granted (a revoked token's 401, the grant given back): the namespace may have been deleted, or
    created again for another owner, meanwhile.
    """
    app = request.app
    leases, auth = app[LEASES], app[DATA_AUTH]
    token = rest[len(LEASE_PREFIX) + 1 :]
    if rest == LEASE_PREFIX:
        if request.method != hdrs.METH_POST:
            raise web.HTTPMethodNotAllowed(request.method, [hdrs.METH_POST])
        timeout = app[CONFIG].client_receive_timeout or None
        body = parse_json_object(await read_body(request, timeout=timeout, limit=LEASE_BODY_LIMIT))
        holder = body.get("holder")
        if (
            not isinstance(holder, str)
            or not 0 < len(holder) <= HOLDER_MAX_LENGTH
            or not HOLDER_CHARS.issuperset(holder)
        ):
            raise InvalidBodyError(f"'holder' must be 1-{HOLDER_MAX_LENGTH} characters of [A-Za-z0-9._:-]")
        ttl = _number(body, "ttl", app[CONFIG].lease_ttl, LEASE_TTL_MAX)
        wait = _number(body, "wait", app[CONFIG].lease_wait, LEASE_WAIT_MAX)
        auth.check_binding(principal)
        if name not in app[STORE]:
            # A lease is only worth having on a namespace there is: create it as a push would
            # (the caller may write), or refuse as one would (404, 429); nothing is kept for it.
            create = app[CONFIG].allow_auto_provision and principal.incarnation is None
            await app[SUPERVISOR].ensure(name, Origin.AUTO, create=create, token_owner=principal.owner)
        grant = await leases.acquire(name, holder, ttl=ttl, wait=wait)
        lease = grant.lease
        if request.transport is None or request.transport.is_closing():
            # The client gave up while it waited (its request timed out, its write was
            # cancelled): nobody would ever use or release this lease, and every other writer
            # of the namespace would wait out its TTL. Given back at once.
            await leases.release(name, lease.token)
            log.info("lease granted after its client went away, released", extra={"namespace": name})
            raise ClientClosedError("the client closed the connection while it waited for the lease")
        try:
            auth.check_binding(principal)
        except UnauthorizedError:
            await leases.release(name, lease.token)
            raise
        if principal.owner is not None:
            await app[SUPERVISOR].claim(name, principal.owner)  # granted: the token may write here
        return json_response(
            {"token": lease.token, "fence": lease.fence, "ttl": lease.ttl, "fresh": grant.fresh}
        )
    if request.method == hdrs.METH_PUT:
        lease = leases.renew(name, token)
        return json_response({"fence": lease.fence, "ttl": lease.ttl})
    if request.method == hdrs.METH_DELETE:
        await leases.release(name, token)
        return web.Response(status=204)
    raise web.HTTPMethodNotAllowed(request.method, [hdrs.METH_PUT, hdrs.METH_DELETE])


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
        try:
            token, rest = split_lease(rest)
        except UnknownRouteError:
            DataAuth.authorize(principal, name, request.method, rest)  # scope (403) before route (404)
            raise
        if token == "":
            route = LEASE_ROUTE
            if request.method in READ_ONLY_METHODS:  # answered 405, changes nothing: a read's rights
                DataAuth.authorize(principal, name, request.method, rest)  # (a runtime's health probe)
            else:  # a grant, renewal or release: a writer's
                DataAuth.authorize(principal, name, hdrs.METH_POST, PIPELINE_ROUTE)
            _check_owner(app, principal, name)
            answer = await _lease_call(request, name, rest, principal)
            status = answer.status
            return answer
        route = ROUTE_LABELS.get(rest, OTHER_ROUTE)
        DataAuth.authorize(principal, name, request.method, rest)
        _check_owner(app, principal, name)
        if (request.method, rest) not in FORWARDED_ROUTES:
            raise UnknownRouteError(UNKNOWN_ROUTE_DETAIL)  # tursodb would 404 it: no child for it
        if query:
            # tursodb matches the raw target, so it would 404 this too: refused before existence,
            # it creates nothing.
            raise UnknownRouteError(QUERY_DETAIL)
        body = await read_body(request, timeout=app[CONFIG].client_receive_timeout or None)
        checked = check_request(rest, body)  # the SQL guard: refuses before anything is forwarded
        cursor = None
        if checked is not None and app[CURSORS].enabled:
            cursor = classify(checked.document, checked.texts)
        target = rest
        reset = checked is not None  # a pipeline: it must not leave a transaction open
        if checked is not None:
            body = with_reset(body, checked.document)
        resendable = rest in READ_ONLY_ROUTES
        leases, writes = app[LEASES], rest == PIPELINE_ROUTE
        # Only a credential that may write creates a missing namespace: an ro one gets a 404. A
        # token bound to an incarnation never does: its namespace existed when it authenticated,
        # so a missing one was deleted since (the token is revoked, see _forward).
        may_create = (
            app[CONFIG].allow_auto_provision
            and principal.access is Access.READ_WRITE
            and principal.incarnation is None
        )
        provision = Origin.AUTO if may_create else None
        forward = functools.partial(
            _forward,
            request,
            name,
            target,
            body,
            principal=principal,
            provision=provision,
            resendable=resendable,
            cursor=cursor,
            reset=reset,
        )
        # The lease is pinned for the exchange with the child only; the spooled reply goes to
        # the client after it is released, so a slow client never holds the namespace's lease.
        if token is not None:
            async with leases.use(name, token, write=writes) as lease:
                reply = await forward(lease=lease)
        elif writes or (provision is not None and name not in app[STORE]):
            # A push, or a pull that may create its namespace: held like a push, so that nothing
            # can land in a namespace created for a request tursodb then refuses (undone below).
            async with leases.implicit(name, wait=app[CONFIG].lease_wait) as lease:
                created = name not in app[STORE]  # by this request: no write can land while we hold it
                reply = await forward(lease=lease)
                if created and _refused(reply, rest, body) is not None:
                    await app[SUPERVISOR].undo_create(name)  # a 400 leaves nothing behind
        else:
            reply = await forward()  # a pull of a namespace there is: nothing classified, no lease
        if (refused := _refused(reply, rest, body)) is not None:
            await reply.body.aclose()
            raise InvalidPipelineError(refused) if writes else InvalidBodyError(refused)
        if reply.status == 200 and principal.owner is not None and principal.access is Access.READ_WRITE:
            # An ownerless auto namespace is promoted only by a request tursodb accepted, from a
            # token that may write: a refused one (400, 409, 5xx) or a read-only one claims nothing.
            await app[SUPERVISOR].claim(name, principal.owner)
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
    request: web.Request,
    name: str,
    target: str,
    body: bytes,
    *,
    principal: Principal,
    provision: Origin | None,
    resendable: bool,
    cursor: CursorKind = None,
    lease: Lease | None = None,
    reset: bool = False,
) -> SpooledReply:
    """Lease the child and exchange; resend while the child is down and resending is safe.

    A missing namespace is created with origin ``provision``, or is a 404 when it is ``None``.

    Once the child is there, and with nothing awaited before the exchange starts, ``principal``'s
    binding is checked again (``DataAuth.check_binding``): a token whose namespace was deleted, or
    created again (for another owner, perhaps), or whose tokens were revoked while its body came
    or the request waited is refused as at the start (``401``, nothing sent), so it never reaches
    the child of an incarnation it was not minted for. A namespace missing by then is that same
    401 for such a token. ``lease``, the write lease the request runs under, is checked next: a
    namespace archived while the request waited for it (and re-created for it) revoked the lease,
    and nothing may go out under it any more (``409 lease lost``).
    """
    app = request.app
    config, supervisor, store, auth = app[CONFIG], app[SUPERVISOR], app[STORE], app[DATA_AUTH]
    deadline = time.monotonic() + config.startup_timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            async with supervisor.lease(
                name, provision=provision, timeout=remaining, owner=principal.owner
            ) as warm:
                auth.check_binding(principal)  # this child is the incarnation the check just saw
                if lease is not None and lease.revoked:
                    raise LeaseLostError("this write lease ended with its archived namespace")
                store.touch(name)
                try:
                    if cursor is None:
                        return await _exchange(request, warm, name, target, body, reset=reset)
                    return await _cursor_exchange(
                        request, warm, name, target, body, cursor=cursor, reset=reset
                    )
                except UpstreamConnectError as exc:
                    # Nothing reached the child (it just died); wait for its restart and resend.
                    reason = exc.detail
                except UpstreamNoReplyError as exc:
                    if not resendable:
                        raise
                    reason = exc.detail
        except NamespaceNotFoundError:
            auth.check_binding(principal)  # a bound token's namespace went away meanwhile: its 401
            raise
        if time.monotonic() >= deadline:
            raise UnavailableError(f"namespace {name!r} is not accepting connections ({reason})")
        await asyncio.sleep(RECONNECT_DELAY)


async def _cursor_exchange(
    request: web.Request,
    warm: WarmConnections,
    name: str,
    target: str,
    body: bytes,
    *,
    cursor: CursorKind,
    reset: bool = False,
) -> SpooledReply:
    """An exchange that reads or may write a sync client's cursor row (``_cursors``)."""
    cursors, metrics = request.app[CURSORS], request.app[METRICS]
    if isinstance(cursor, CursorRead):
        rows = cursors.lookup(name, warm, cursor.client)
        if rows is not None:
            metrics.cursor_reads.labels("hit").inc()
            return await _memory_reply(request.app[SPOOL], read_reply(rows))
        metrics.cursor_reads.labels("miss").inc()
        generation = cursors.generation(name, warm)
        reply = await _exchange(request, warm, name, target, body, reset=reset)
        learned = read_rows(reply.body.body()) if reply.status == 200 and reply.body.in_memory else None
        if learned is not None:
            cursors.learned(name, warm, cursor.client, learned, generation)
        return reply
    client = cursor.client if isinstance(cursor, CursorWrite) else None
    cursors.change_started(name, warm, client)
    row = None
    try:
        reply = await _exchange(request, warm, name, target, body, reset=reset)
        if (
            isinstance(cursor, CursorWrite)
            and reply.status == 200
            and reply.body.in_memory
            and all_steps_ran(reply.body.body(), cursor.steps)
        ):
            row = cursor.row
        return reply
    finally:
        cursors.change_finished(name, warm, client, row)


async def _memory_reply(budget: SpoolBudget, payload: bytes) -> SpooledReply:
    spool = budget.spool(expected=len(payload))
    try:
        await spool.write(payload)
        await spool.finish()
    except BaseException:
        await spool.aclose()
        raise
    headers = CIMultiDict({hdrs.CONTENT_TYPE: "application/json"})
    return SpooledReply(200, "OK", headers, spool)


@dataclass
class SpooledReply:
    """A child's reply, read whole off its connection; ``body`` holds a spool share until sent."""

    status: int
    reason: str
    headers: CIMultiDict[str]
    body: Spool


async def _exchange(
    request: web.Request, warm: WarmConnections, name: str, target: str, body: bytes, *, reset: bool = False
) -> SpooledReply:
    """One exchange with the child. ``reset``: ``body`` ends with ``_txreset``'s hidden request,
    whose answer is cut from the reply; when the reply does not show it ran, it is sent alone."""
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
                reply = await _spool_reply(request.app[SPOOL], upstream)
            finally:
                upstream.close()  # the child is free from here on, whatever the client does
            if reset and not (reply.status == 200 and await strip(reply.body)):
                if reply.status == 200:  # tursodb 0.7.0 always ends a 200 with the reset's answer
                    log.warning("reply without the transaction reset's answer", extra={"namespace": name})
                try:
                    await _reset_alone(warm, name, headers)
                except BaseException:
                    await reply.body.aclose()
                    raise
            return reply
    except UpstreamConnectError:
        raise
    except (UpstreamError, TimeoutError) as exc:
        log.warning("upstream error", extra={"namespace": name, "path": target, "error": repr(exc)})
        if isinstance(exc, UpstreamError):
            raise
        # tursodb is still busy with this exchange (or one ahead of it), and serves nobody else of
        # the namespace until it is done: restarted, the requests queued behind it fail (502, or
        # a pull is resent) and later ones wait for the fresh child as after a crash.
        restarted = request.app[SUPERVISOR].restart_hung(name, warm, waited=ceiling or 0.0)
        raise UpstreamTimeoutError(
            f"tursodb for {name!r} did not answer within the upstream timeout"
            + ("; it is being restarted" if restarted else "")
        ) from exc


async def _reset_alone(warm: WarmConnections, name: str, headers: list[tuple[str, str]]) -> None:
    """Send ``_txreset.RESET`` on its own; :class:`UpstreamError` unless tursodb says it ran.

    Never :class:`UpstreamConnectError`, which would have the pipeline, already sent, sent again.
    """
    try:
        upstream = await exchange(
            warm.host,
            warm.port,
            method=hdrs.METH_POST,
            target=PIPELINE_ROUTE,
            headers=headers,
            body=RESET,
            sock=await warm.take(),
        )
    except UpstreamConnectError as exc:
        raise UpstreamError(f"tursodb for {name!r} went away after a pipeline ({exc.detail})") from exc
    try:
        answer = await upstream.read()
    finally:
        upstream.close()
    if upstream.status != 200 or not reset_ran(answer):
        log.error("transaction reset failed", extra={"namespace": name, "status": upstream.status})
        raise UpstreamError(f"tursodb for {name!r} did not confirm that no transaction is left open")


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
                extra={
                    "path": loggable_path(request.path),
                    "bytes": spool.size,
                    "timeout": timeout if slow else None,
                },
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
