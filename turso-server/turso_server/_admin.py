"""The admin port: namespace lifecycle, backups, scoped tokens and ``/metrics``.

Routes (all but the probes need ``Authorization: Bearer $TURSO_ADMIN_TOKEN``)::

    GET    /v1/namespaces                     {"namespaces": [view, ...]} sorted by name
    GET    /v1/namespaces/{name}              view | 404
    DELETE /v1/namespaces/{name}              {"name","archivedTo","destroyedAt"} | 404
    POST   /v1/namespaces/{name}/create       {"owner":"team-a","adopt":false} (both optional)
                                              -> 201 view (new, owner recorded) | 200 (existing; auto ->
                                              explicit+locked) | 409 owner mismatch | 409 not owned | 429
    POST   /v1/namespaces/{name}/owner        {"owner":"team-a"}; "" / null / no body clears | 400 | 404
    POST   /v1/namespaces/{name}/lock         view | 404
    POST   /v1/namespaces/{name}/unlock       view | 404
    POST   /v1/namespaces/{name}/ttl          {"ttl":"30d"}; "" / null / no body clears | 400 | 404
    POST   /v1/namespaces/{name}/access       view with lastAccessAt bumped (persisted first) | 404
    GET    /v1/namespaces/{name}/backup       application/vnd.sqlite3 stream | 404 | 503 | 500
    POST   /v1/namespaces/{name}/tokens       {"access":"rw"|"ro","expiresIn":"24h","revokeOthers":true,
                                               "owner":"team-a","namespaceCreatedAt":"..."}
                                              -> 201 | 400 | 404 | 409 (bound to this namespace's
                                              createdAt and token generation: see _auth; owner
                                              mismatch / namespace changed: a precondition failed)
    POST   /v1/namespaces/{name}/tokens/revoke  {"namespace","namespaceCreatedAt","tokenGeneration"}
                                              | 404 | 409: every token of the namespace revoked
    POST   /v1/tokens                         {"namespaces":["app","team-*"],"access":"rw",
                                               "owner":"team-a"} -> 201 | 400 | 409
    GET    /metrics                           Prometheus text format (also TURSO_METRICS_TOKEN)

Differences from upstream, all deliberate: unknown names are 404 for delete, access and backup
(upstream: 200 with an empty archive, a crash, a 500); ``create`` distinguishes 201/200 and promotes
auto namespaces; the namespace limit is 429; the view reports the live ``running``/``port`` (not a
stale port), the size of every database file and the namespace's live write lease (``lease``:
holder, fence, ttl, seconds left, in use; ``null`` when none is held). ``/v1/tokens`` mints one
token for several namespaces and prefixes, which need not exist yet (a prefix names namespaces to
come); with an ``owner`` (validated as ``create``'s), the namespaces it auto-provisions are created
explicit, locked and that owner's, and an ownerless ``auto`` one it reaches is promoted so (see
``_auth``), so the GC never archives them for idling. A JSON body may hold only the fields its route
takes: an unknown one (a typo such as ``revokeOther``) is 400, never ignored. ``create`` with an
``owner`` is how a database gets one owner for good: the first create records it; a later create
with another owner is ``409 owner mismatch``, and one for a namespace that has no owner (made before
owners, by hand, or auto-provisioned) is ``409 not owned`` unless it sends ``"adopt": true``. A
create without an owner returns any namespace as before. Only the ``owner`` route changes an owner
afterwards.
Mounted by ``_app``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import hdrs, web

from ._auth import Access, Scope
from ._backup import BACKUP_CONTENT_TYPE, CHUNK_SIZE
from ._durations import parse_duration
from ._errors import (
    ConflictError,
    InvalidBodyError,
    InvalidTTLError,
    NamespaceChangedError,
    NamespaceNotFoundError,
    OwnerMismatchError,
)
from ._http import (
    ADMIN_AUTH,
    BACKUPS,
    CONFIG,
    LEASES,
    METRICS,
    PROBE_PATHS,
    SCOPED_TOKENS,
    STORE,
    SUPERVISOR,
    Handler,
    add_probe_routes,
    json_response,
    parse_json_object,
    read_body,
)
from ._logging import get_logger
from ._metrics import METRICS_CONTENT_TYPE
from ._names import MAX_OWNER_LENGTH, is_valid_owner, validate_name
from ._state import NamespaceRecord, Origin, format_timestamp, utcnow
from ._supervisor import ChildState, ChildStatus

NAMESPACES_PATH = "/v1/namespaces"
NAMESPACE_PATH = NAMESPACES_PATH + "/{name}"
TOKENS_PATH = "/v1/tokens"
#: The mint body's field that revokes every earlier token of the namespace.
REVOKE_OTHERS = "revokeOthers"
#: The mint body's preconditions: the namespace's owner and its ``createdAt`` (its incarnation).
MINT_OWNER = "owner"
MINT_CREATED_AT = "namespaceCreatedAt"
METRICS_PATH = "/metrics"
MAX_ADMIN_BODY = 64 * 1024
UNMATCHED_ROUTE = "unmatched"
EXPIRY_MARGIN = timedelta(days=1)  # between the check and minting, and for the clock

log = get_logger("admin")


def namespace_view(
    record: NamespaceRecord, status: ChildStatus, size: int, lease: dict[str, object] | None
) -> dict[str, Any]:
    """The JSON shape of one namespace (upstream's ``namespaceView`` plus live child and lease state)."""
    return {
        "name": record.name,
        "origin": record.origin.value,
        "locked": record.locked,
        "ttl": record.ttl,
        "createdAt": format_timestamp(record.created_at),
        "lastAccessAt": format_timestamp(record.last_access_at),
        "running": status.state is ChildState.RUNNING,
        "state": status.state.value,
        "port": status.port,
        "restarts": status.restarts,
        "sizeBytes": size,
        "lease": lease,
        "tokenGeneration": record.token_generation,
        "owner": record.owner,
    }


async def _view(request: web.Request, name: str) -> dict[str, Any]:
    record = request.app[STORE].get(name)
    if record is None:
        raise NamespaceNotFoundError(f"namespace not found: {name}")
    supervisor = request.app[SUPERVISOR]
    size = await asyncio.to_thread(supervisor.size_on_disk, name)
    return namespace_view(record, supervisor.status(name), size, request.app[LEASES].view(name))


def _name(request: web.Request) -> str:
    return validate_name(request.match_info["name"])


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body is ``{}``. One over ``MAX_ADMIN_BODY`` is ``400
    invalid body`` however it is framed: refused from its ``Content-Length``, or as soon as a
    chunked one passes the limit."""
    timeout = request.app[CONFIG].client_receive_timeout or None
    try:
        raw = await read_body(request, timeout=timeout, limit=MAX_ADMIN_BODY)
    except web.HTTPRequestEntityTooLarge:
        raise InvalidBodyError(f"body larger than {MAX_ADMIN_BODY} bytes") from None
    return parse_json_object(raw)


def _only_fields(payload: dict[str, Any], *allowed: str) -> dict[str, Any]:
    """``payload`` when every key is one of ``allowed``; :class:`InvalidBodyError` otherwise, so a
    misspelt field (``revokeOther``) is refused instead of silently meaning its default. The detail
    names the fields the route takes, never the caller's key."""
    if not set(payload) <= set(allowed):
        expected = ", ".join(repr(key) for key in allowed) or "no fields"
        raise InvalidBodyError(f"unknown field in the body; this route takes {expected}")
    return payload


def _optional_bool(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidBodyError(f"{key!r} must be true or false")
    return value


def _optional_string(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidBodyError(f"{key!r} must be a string")
    return value


def _optional_owner(payload: dict[str, Any]) -> str | None:
    owner = _optional_string(payload, "owner")
    if owner is not None and not is_valid_owner(owner):
        raise InvalidBodyError(f"'owner' must be 1-{MAX_OWNER_LENGTH} visible ASCII characters")
    return owner


# --- handlers ----------------------------------------------------------------------------------------


async def list_namespaces(request: web.Request) -> web.Response:
    store, supervisor, leases = request.app[STORE], request.app[SUPERVISOR], request.app[LEASES]
    records = store.records()
    sizes = await asyncio.to_thread(lambda: [supervisor.size_on_disk(r.name) for r in records])
    views = [
        namespace_view(r, supervisor.status(r.name), size, leases.view(r.name))
        for r, size in zip(records, sizes, strict=True)
    ]
    return json_response({"namespaces": views})


async def get_namespace(request: web.Request) -> web.Response:
    return json_response(await _view(request, _name(request)))


async def delete_namespace(request: web.Request) -> web.Response:
    name = _name(request)
    archive = await request.app[SUPERVISOR].destroy(name)
    return json_response(
        {"name": name, "archivedTo": str(archive), "destroyedAt": format_timestamp(utcnow())}
    )


async def create_namespace(request: web.Request) -> web.Response:
    name = _name(request)
    payload = _only_fields(await _json_body(request), "owner", "adopt")
    owner = _optional_owner(payload)
    adopt = _optional_bool(payload, "adopt")
    if adopt and owner is None:
        raise InvalidBodyError("'adopt' needs an 'owner' to record")
    created = await request.app[SUPERVISOR].ensure(
        name, Origin.EXPLICIT, promote=True, owner=owner, adopt=adopt
    )
    return json_response(await _view(request, name), status=201 if created else 200)


async def set_owner(request: web.Request) -> web.Response:
    """The explicit admin action that gives a namespace to another owner, or takes its owner away."""
    name = _name(request)
    if name not in request.app[STORE]:
        raise NamespaceNotFoundError(f"namespace not found: {name}")
    owner = _optional_owner(_only_fields(await _json_body(request), "owner"))

    def apply(record: NamespaceRecord) -> None:
        record.owner = owner

    await request.app[STORE].update(name, apply)
    log.info("namespace owner set", extra={"namespace": name, "owner": owner})
    return json_response(await _view(request, name))


async def lock_namespace(request: web.Request) -> web.Response:
    name = _name(request)
    await request.app[STORE].update(name, _set_locked(True))
    return json_response(await _view(request, name))


async def unlock_namespace(request: web.Request) -> web.Response:
    name = _name(request)
    await request.app[STORE].update(name, _set_locked(False))
    return json_response(await _view(request, name))


async def set_ttl(request: web.Request) -> web.Response:
    name = _name(request)
    if name not in request.app[STORE]:
        raise NamespaceNotFoundError(f"namespace not found: {name}")
    ttl = _optional_string(_only_fields(await _json_body(request), "ttl"), "ttl")
    if ttl is not None:
        try:
            seconds = parse_duration(ttl).total_seconds()
        except ValueError as exc:
            raise InvalidTTLError(str(exc)) from None
        if seconds <= 0:
            raise InvalidTTLError("ttl must be greater than zero; send an empty ttl to clear it")

    def apply(record: NamespaceRecord) -> None:
        record.ttl = ttl

    await request.app[STORE].update(name, apply)
    return json_response(await _view(request, name))


async def touch_namespace(request: web.Request) -> web.Response:
    """Bump ``lastAccessAt`` and persist it before answering, as every admin write is: a restart
    right after the reply must not let the GC idle out a namespace it was just told is in use."""
    name = _name(request)
    await request.app[STORE].update(name, _bump_last_access)
    return json_response(await _view(request, name))


def _bump_last_access(record: NamespaceRecord) -> None:
    record.last_access_at = max(record.last_access_at, utcnow())


async def backup_namespace(request: web.Request) -> web.StreamResponse:
    name = _name(request)
    backups, metrics = request.app[BACKUPS], request.app[METRICS]
    try:
        snapshot = await backups.snapshot(name)
    except Exception:
        metrics.backups.labels("error").inc()
        raise
    try:
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: BACKUP_CONTENT_TYPE,
                hdrs.CONTENT_DISPOSITION: f'attachment; filename="{snapshot.filename}"',
            }
        )
        response.content_length = snapshot.size
        await response.prepare(request)
        with snapshot.path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
                await response.write(chunk)
        await response.write_eof()
    finally:
        await backups.discard(snapshot)
    metrics.backups.labels("ok").inc()
    log.info("backup served", extra={"namespace": name, "bytes": snapshot.size})
    return response


async def mint_token(request: web.Request) -> web.Response:
    name = _name(request)
    tokens = request.app[SCOPED_TOKENS]
    if tokens is None:
        raise ConflictError("scoped tokens are disabled: set TURSO_TOKEN_SIGNING_KEY")
    if name not in request.app[STORE]:
        raise NamespaceNotFoundError(f"namespace not found: {name}")
    payload = _only_fields(
        await _json_body(request), "access", "expiresIn", REVOKE_OTHERS, MINT_OWNER, MINT_CREATED_AT
    )
    access = _access(payload)
    expires_in = parse_expires_in(_optional_string(payload, "expiresIn"))
    revoke = _optional_bool(payload, REVOKE_OTHERS)
    owner = _optional_owner(payload)
    created_at = _optional_string(payload, MINT_CREATED_AT)
    store = request.app[STORE]
    if revoke:
        # A revocation is persisted before the token goes out, so it survives a crash after the
        # reply; the preconditions are checked on the record it changes, under the state's write
        # lock, so the token is for the namespace they describe or for none.

        def revoke_others(current: NamespaceRecord) -> None:
            _check_mint_preconditions(current, owner, created_at)
            _next_token_generation(current)

        record = await store.update(name, revoke_others)
    else:
        # A change being written (a revocation, a delete) is on disk first: a token minted in a
        # generation that a kill then forgets would be refused after the restart. Looked up
        # again (the namespace may have gone while the body came), and nothing is awaited
        # between the preconditions and the mint.
        await store.settled()
        found = store.get(name)
        if found is None:
            raise NamespaceNotFoundError(f"namespace not found: {name}")
        _check_mint_preconditions(found, owner, created_at)
        record = found
    minted = tokens.mint(name, record.incarnation, record.token_generation, access, expires_in=expires_in)
    log.info(
        "scoped token minted",
        extra={
            "namespace": name,
            "access": access.value,
            "tokenGeneration": record.token_generation,
            "revokedOthers": revoke,
        },
    )
    return json_response(
        {
            "token": minted.token,
            "namespace": minted.namespace,
            "namespaceCreatedAt": record.incarnation,
            "tokenGeneration": record.token_generation,
            "access": minted.access.value,
            "expiresAt": format_timestamp(minted.expires_at) if minted.expires_at else None,
        },
        status=201,
    )


def _check_mint_preconditions(record: NamespaceRecord, owner: str | None, created_at: str | None) -> None:
    """A mint that names the namespace it expects (its ``owner``, its ``createdAt``) gets a token
    for that namespace or none: the caller may have checked the owner with a create just before,
    and a delete and a create for another owner in between must not hand it their database."""
    if owner is not None and record.owner != owner:
        raise OwnerMismatchError(f"namespace {record.name!r} is not owner {owner!r}'s: no token minted")
    if created_at is not None and record.incarnation != created_at:
        raise NamespaceChangedError(
            f"namespace {record.name!r} was created at {record.incarnation}, not {created_at}: "
            "no token minted"
        )


async def revoke_tokens(request: web.Request) -> web.Response:
    """Every single-namespace token of the namespace stops verifying; none is minted."""
    name = _name(request)
    if request.app[SCOPED_TOKENS] is None:
        raise ConflictError("scoped tokens are disabled: set TURSO_TOKEN_SIGNING_KEY")
    if name not in request.app[STORE]:
        raise NamespaceNotFoundError(f"namespace not found: {name}")
    _only_fields(await _json_body(request))
    record = await request.app[STORE].update(name, _next_token_generation)
    log.info("scoped tokens revoked", extra={"namespace": name, "tokenGeneration": record.token_generation})
    return json_response(
        {
            "namespace": name,
            "namespaceCreatedAt": record.incarnation,
            "tokenGeneration": record.token_generation,
        }
    )


def _next_token_generation(record: NamespaceRecord) -> None:
    """Revoke: tokens carry the generation they were minted in, and only the current one verifies."""
    record.token_generation += 1


async def mint_scope_token(request: web.Request) -> web.Response:
    tokens = request.app[SCOPED_TOKENS]
    if tokens is None:
        raise ConflictError("scoped tokens are disabled: set TURSO_TOKEN_SIGNING_KEY")
    payload = _only_fields(await _json_body(request), "namespaces", "access", "expiresIn", MINT_OWNER)
    entries = payload.get("namespaces")
    if not isinstance(entries, list):
        raise InvalidBodyError("'namespaces' must be a list of namespace names and prefixes (team-*)")
    scope = Scope.parse(entries)
    access = _access(payload)
    expires_in = parse_expires_in(_optional_string(payload, "expiresIn"))
    owner = _optional_owner(payload)
    minted = tokens.mint_scope(scope, access, expires_in=expires_in, owner=owner)
    log.info(
        "scoped token minted",
        extra={"namespaces": list(minted.namespaces), "access": access.value, "owner": owner},
    )
    return json_response(
        {
            "token": minted.token,
            "namespaces": list(minted.namespaces),
            "access": minted.access.value,
            "owner": minted.owner,
            "expiresAt": format_timestamp(minted.expires_at) if minted.expires_at else None,
        },
        status=201,
    )


def _access(payload: dict[str, Any]) -> Access:
    access_text = _optional_string(payload, "access") or Access.READ_WRITE.value
    try:
        return Access(access_text)
    except ValueError:
        raise InvalidBodyError("'access' must be 'rw' or 'ro'") from None


def parse_expires_in(text: str | None) -> timedelta | None:
    """A token lifetime: ``None`` (no expiry) or at least 1 s, ending before the year 10000.

    ``datetime`` stops at 9999-12-31, so a longer lifetime cannot become an ``exp`` claim.
    """
    if text is None:
        return None
    try:
        expires_in = parse_duration(text)
    except ValueError as exc:
        raise InvalidBodyError(f"'expiresIn': {exc}") from None
    if expires_in.total_seconds() < 1:
        raise InvalidBodyError("'expiresIn' must be at least 1s")
    if expires_in > datetime.max.replace(tzinfo=UTC) - utcnow() - EXPIRY_MARGIN:
        raise InvalidBodyError("'expiresIn' must end before the year 10000; omit it for no expiry")
    return expires_in


async def metrics_handler(request: web.Request) -> web.Response:
    metrics, supervisor = request.app[METRICS], request.app[SUPERVISOR]
    names = [record.name for record in request.app[STORE].records()]  # on the loop, like every reader
    metrics.namespace_bytes = await asyncio.to_thread(lambda: {n: supervisor.size_on_disk(n) for n in names})
    return web.Response(body=metrics.render(), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})


def _set_locked(locked: bool) -> Any:
    def apply(record: NamespaceRecord) -> None:
        record.locked = locked

    return apply


# --- middlewares -----------------------------------------------------------------------------------


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin token on everything but the exact probe paths, before routing (no 404 oracle).

    The metrics token passes for ``GET /metrics`` only (``_auth.AdminAuth``).
    """
    if request.path not in PROBE_PATHS:
        metrics = request.method == hdrs.METH_GET and request.path == METRICS_PATH
        request.app[ADMIN_AUTH].check(request.headers.get(hdrs.AUTHORIZATION), metrics=metrics)
    return await handler(request)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count admin requests by route template (never the raw path) and status."""
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED_ROUTE
        request.app[METRICS].admin_requests.labels(route, str(status)).inc()


def add_routes(app: web.Application) -> None:
    add_probe_routes(app)
    router = app.router
    router.add_get(METRICS_PATH, metrics_handler)
    router.add_get(NAMESPACES_PATH, list_namespaces)
    router.add_get(NAMESPACE_PATH, get_namespace)
    router.add_delete(NAMESPACE_PATH, delete_namespace)
    router.add_post(NAMESPACE_PATH + "/create", create_namespace)
    router.add_post(NAMESPACE_PATH + "/lock", lock_namespace)
    router.add_post(NAMESPACE_PATH + "/unlock", unlock_namespace)
    router.add_post(NAMESPACE_PATH + "/ttl", set_ttl)
    router.add_post(NAMESPACE_PATH + "/owner", set_owner)
    router.add_post(NAMESPACE_PATH + "/access", touch_namespace)
    router.add_get(NAMESPACE_PATH + "/backup", backup_namespace)
    router.add_post(NAMESPACE_PATH + "/tokens", mint_token)
    router.add_post(NAMESPACE_PATH + "/tokens/revoke", revoke_tokens)
    router.add_post(TOKENS_PATH, mint_scope_token)
