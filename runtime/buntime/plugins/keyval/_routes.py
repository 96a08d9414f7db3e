"""The HTTP API: an aiohttp sub-application the runtime mounts under the manifest base (``/keyval``).

Every route lives under ``/api``. Keys travel three ways:

* in the URL path of ``/api/keys/<a>/<b>``: segments are percent-decoded and numeric segments
  (``42``, ``-1``, ``2.5``) become numbers — use a JSON route for the string ``"42"``;
* in query parameters (``prefix``, ``start``, ``end``): a path (``users/42``) or a JSON array
  (``["users",42]``); empty or absent means the empty prefix (every key);
* in JSON bodies: arrays whose parts are strings, numbers, booleans or ``{"$bytes": base64}``.

Errors are ``{"code", "error"}`` with stable codes: 400 for malformed keys, values, JSON and
parameters, 413 for a body over aiohttp's limit (``PAYLOAD_TOO_LARGE``) or a value that would be
over 64 KiB (``VALUE_TOO_LARGE``), 404 for a missing key/index/message, 409 ``LEASE_LOST`` for
a queue ack/nack whose ``attempts`` is no longer the message's (its lease ended and the message
was leased again), 503 ``KEYVAL_UNAVAILABLE`` while storage is closed or unreachable. An atomic
whose check failed is an answer, not an error: 200 ``{"ok": false, "code": "CHECK_FAILED", ...}``,
as upstream. Called by the plugin's ``routes()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...turso import TursoError
from .._errors import ApiError, InvalidTextError
from .._http import http_error_response, require_utf8_url
from .._json import client_json
from ._atomic import make_mutation, mutation_key_from_json
from ._errors import (
    InvalidKeyError,
    InvalidRequestError,
    KeyValError,
    KeyValNotFoundError,
    translate_storage_error,
)
from ._keys import (
    Key,
    decode_key,
    encode_key,
    key_from_json,
    key_from_path,
    key_from_query,
    key_from_token,
    key_to_json,
    key_to_token,
)
from ._kv import Kv
from ._queue import QueueMessage
from ._search import DEFAULT_TOKENIZE
from ._storage import entries_json
from ._watch import DEFAULT_PREFIX_LIMIT, Watcher, WatchEvent, distinct_prefixes, read_prefixes

log = logging.getLogger("buntime.plugin.keyval")

KV_KEY = web.AppKey("keyval_kv", Kv)
API = "/api"
MAX_HTTP_LIMIT = 1000
MAX_MUTATIONS = 1000
CHECK_FAILED = "CHECK_FAILED"
_KEYS_PATH = f"{API}/keys/"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str) -> web.Response:
    response = web.json_response({"code": code, "error": message}, status=status)
    if status == 503:
        response.headers["Retry-After"] = "1"
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes ``{"code", "error"}`` JSON with the error's status; a URL whose
    percent-encoding is not UTF-8 is refused first (``_http.require_utf8_url``)."""
    try:
        try:
            require_utf8_url(request)
            return await handler(request)
        except TursoError as exc:  # storage_errors(), minus a context manager per request
            mapped = translate_storage_error(exc)
            assert mapped is not None
            raise mapped from exc
    except ApiError as exc:  # KeyValError, and InvalidTextError from the shared JSON parser
        if exc.status >= 500:
            log.warning("KeyVal %s %s failed: %s", request.method, request.path, exc)
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:  # as the gateway's and the proxy's admin APIs answer them
        if exc.status < 400:
            raise
        return http_error_response(exc)
    except Exception:
        log.exception("KeyVal %s %s failed", request.method, request.path)
        return error_response(500, "INTERNAL_ERROR", "internal error")


# -- request parsing -------------------------------------------------------------------------
async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise InvalidRequestError("a JSON body is required", code="INVALID_JSON")
    try:
        return client_json(raw)
    except InvalidTextError:  # INVALID_UNICODE, the same for every plugin
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"invalid JSON body: {exc}", code="INVALID_JSON") from exc


async def _object(request: web.Request) -> dict[str, Any]:
    body = await _body(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("the JSON body must be an object", code="INVALID_REQUEST")
    return body


def _int(raw: object, name: str, default: int, *, low: int = 1, high: int = MAX_HTTP_LIMIT) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise InvalidRequestError(f"{name} must be an integer", code="INVALID_PARAMETER") from exc
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequestError(f"{name} must be an integer from {low} to {high}", code="INVALID_PARAMETER")
    return value


def _bool(raw: object, name: str) -> bool:
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidRequestError(f"{name} must be true or false", code="INVALID_PARAMETER")


def _number(raw: str | None, name: str) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise InvalidRequestError(
            f"{name} must be a number of milliseconds", code="INVALID_PARAMETER"
        ) from exc


def _path_key(request: web.Request) -> Key:
    # match_info is already percent-decoded, which would split "a%2Fb" in two: use the raw path.
    raw = request.rel_url.raw_path.split(_KEYS_PATH, 1)[-1]
    key = key_from_path(raw)
    if not key:
        raise InvalidKeyError("the key must have at least one part")
    return key


def _body_key(body: dict[str, Any], name: str, *, default: Key | None = None) -> Key:
    if name not in body or body[name] is None:
        if default is None:
            raise InvalidKeyError(f"'{name}' is required")
        return default
    return key_from_json(body[name])


def _body_keys(body: dict[str, Any]) -> list[Key]:
    keys = body.get("keys")
    if not isinstance(keys, list):
        raise InvalidKeyError("'keys' must be a list of keys")
    return [key_from_json(k) for k in keys]


def _kv(request: web.Request) -> Kv:
    return request.app[KV_KEY]


def _query_prefix(request: web.Request, name: str = "prefix") -> Key:
    return key_from_query(request.query.get(name)) or ()


def _query_where(request: web.Request) -> Any:
    """The ``where`` query parameter: a JSON filter object, or absent."""
    raw = request.query.get("where")
    if raw is None or raw == "":
        return None
    try:
        return client_json(raw)
    except InvalidTextError:
        raise
    except ValueError as exc:
        raise InvalidRequestError(f"where must be a JSON object: {exc}", code="INVALID_FILTER") from exc


# -- keys ------------------------------------------------------------------------------------
def _json_bytes(body: bytes) -> web.Response:
    """A JSON response of already-encoded bytes (the headers of ``web.json_response``)."""
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def get_key(request: web.Request) -> web.Response:
    key = _path_key(request)
    entry = await _kv(request).get_raw(key)
    if entry is None:
        raise KeyValNotFoundError("Key not found", code="KEY_NOT_FOUND")
    return _json_bytes(entry.as_json_bytes())


async def put_key(request: web.Request) -> web.Response:
    key = _path_key(request)
    value = await _body(request)
    expire_in = _number(request.query.get("expireIn", request.query.get("expiresIn")), "expireIn")
    result = await _kv(request).set(key, value, expire_in=expire_in)
    return web.json_response(result.as_json())


async def delete_key(request: web.Request) -> web.Response:
    """``exact`` and ``where`` from the query, or from a JSON body ``{exact?, where?}`` (what the
    upstream client sends); a body that is not a JSON object is ignored, as upstream."""
    key = _path_key(request)
    exact, where = request.query.get("exact"), _query_where(request)
    if request.content_type == "application/json" and request.can_read_body:
        with contextlib.suppress(InvalidRequestError):
            body = await _object(request)
            exact = body.get("exact", exact)
            where = body.get("where", where)
    deleted = await _kv(request).delete(key, exact=_bool(exact, "exact"), where=where)
    return web.json_response({"deletedCount": deleted})


async def get_batch(request: web.Request) -> web.Response:
    body = await _object(request)
    entries = await _kv(request).get_many(_body_keys(body))
    return web.json_response([e.as_json() for e in entries])


async def delete_batch(request: web.Request) -> web.Response:
    body = await _object(request)
    deleted = await _kv(request).delete_many(
        _body_keys(body), exact=_bool(body.get("exact"), "exact"), where=body.get("where")
    )
    return web.json_response({"deletedCount": deleted})


async def list_keys(request: web.Request) -> web.Response:
    q = request.query
    entries = await _kv(request).list_raw(
        _query_prefix(request),
        start=key_from_query(q.get("start")) or None,
        end=key_from_query(q.get("end")) or None,
        limit=_int(q.get("limit"), "limit", 100),
        reverse=_bool(q.get("reverse"), "reverse"),
        where=_query_where(request),
    )
    return _json_bytes(entries_json(entries))


async def list_keys_post(request: web.Request) -> web.Response:
    body = await _object(request)
    start = body.get("start")
    end = body.get("end")
    entries = await _kv(request).list_raw(
        _body_key(body, "prefix", default=()),
        start=None if start is None else key_from_json(start),
        end=None if end is None else key_from_json(end),
        limit=_int(body.get("limit"), "limit", 100),
        reverse=_bool(body.get("reverse"), "reverse"),
        where=body.get("where"),
    )
    return _json_bytes(entries_json(entries))


async def count_keys(request: web.Request) -> web.Response:
    count = await _kv(request).count(_query_prefix(request), where=_query_where(request))
    return web.json_response({"count": count})


async def paginate_keys(request: web.Request) -> web.Response:
    q = request.query
    page = await _kv(request).paginate(
        _query_prefix(request),
        cursor=q.get("cursor") or None,
        limit=_int(q.get("limit"), "limit", 100),
        reverse=_bool(q.get("reverse"), "reverse"),
        where=_query_where(request),
    )
    return web.json_response(page.as_json())


async def atomic(request: web.Request) -> web.Response:
    body = await _object(request)
    checks, mutations = body.get("checks") or [], body.get("mutations") or []
    if not isinstance(checks, list) or not isinstance(mutations, list):
        raise InvalidRequestError("'checks' and 'mutations' must be lists", code="INVALID_REQUEST")
    if len(checks) + len(mutations) > MAX_MUTATIONS:
        raise InvalidRequestError(f"at most {MAX_MUTATIONS} checks and mutations", code="INVALID_REQUEST")
    op = _kv(request).atomic()
    for check in checks:
        if not isinstance(check, dict):
            raise InvalidRequestError(
                "each check must be an object {key, versionstamp}", code="INVALID_CHECK"
            )
        op.check(_body_key(check, "key"), check.get("versionstamp"))
    for m in mutations:
        if not isinstance(m, dict):
            raise InvalidRequestError(
                "each mutation must be an object {type, key, ...}", code="INVALID_MUTATION"
            )
        if m.get("key") is None:
            raise InvalidKeyError("'key' is required")
        op.mutate(
            make_mutation(
                str(m.get("type")),
                mutation_key_from_json(m["key"]),  # parts may be {"$uuidv7": true}
                m.get("value"),
                m.get("expireIn", m.get("expiresIn")),
            )
        )
    result = await op.commit()
    if not result.ok:  # 200 with ok false, as upstream: a failed check is an answer, not an error
        return web.json_response(
            {
                **result.as_json(),
                "code": CHECK_FAILED,
                "error": "a versionstamp check failed; nothing was written",
            }
        )
    return web.json_response(result.as_json())


# -- queue -----------------------------------------------------------------------------------
async def enqueue(request: web.Request) -> web.Response:
    body = await _object(request)
    if "value" not in body:
        raise InvalidRequestError("'value' is required", code="INVALID_REQUEST")
    # The upstream client sends {value, options: {...}}; older callers put the options beside value.
    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidRequestError("'options' must be an object", code="INVALID_REQUEST")

    def option(name: str, default: Any = None) -> Any:
        return options.get(name, body.get(name, default))

    undelivered = option("keysIfUndelivered")
    if undelivered is not None and not isinstance(undelivered, list):
        raise InvalidKeyError("'keysIfUndelivered' must be a list of keys")
    message_id = await _kv(request).queue.enqueue(
        body["value"],
        delay=option("delay", 0) or 0,
        backoff_schedule=option("backoffSchedule"),
        keys_if_undelivered=None if undelivered is None else [key_from_json(k) for k in undelivered],
        max_attempts=option("maxAttempts"),
    )
    return web.json_response({"ok": True, "id": message_id})


async def poll(request: web.Request) -> web.Response:
    message = await _kv(request).queue.dequeue()
    return web.json_response({"message": message.as_json() if message else None})


def _message_id(body: dict[str, Any]) -> str:
    message_id = body.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise InvalidRequestError("'id' is required", code="INVALID_MESSAGE_ID")
    return message_id


async def ack(request: web.Request) -> web.Response:
    body = await _object(request)
    if not await _kv(request).queue.ack(_message_id(body), attempts=body.get("attempts")):
        raise KeyValNotFoundError("Message not found", code="MESSAGE_NOT_FOUND")
    return web.json_response({"ok": True})


async def nack(request: web.Request) -> web.Response:
    body = await _object(request)
    error = body.get("error")
    outcome = await _kv(request).queue.nack(
        _message_id(body), error=None if error is None else str(error), attempts=body.get("attempts")
    )
    if outcome is None:
        raise KeyValNotFoundError("Message not found", code="MESSAGE_NOT_FOUND")
    return web.json_response({"ok": True, "result": outcome})


async def queue_stats(request: web.Request) -> web.Response:
    return web.json_response((await _kv(request).queue.stats()).as_json())


async def dlq_list(request: web.Request) -> web.Response:
    q = request.query
    messages = await _kv(request).queue.list_dlq(
        limit=_int(q.get("limit"), "limit", 100), offset=_int(q.get("offset"), "offset", 0, low=0, high=2**31)
    )
    return web.json_response([m.as_json() for m in messages])


async def dlq_get(request: web.Request) -> web.Response:
    message = await _kv(request).queue.get_dlq(request.match_info["id"])
    if message is None:
        raise KeyValNotFoundError("Dead letter not found", code="MESSAGE_NOT_FOUND")
    return web.json_response(message.as_json())


async def dlq_requeue(request: web.Request) -> web.Response:
    new_id = await _kv(request).queue.requeue_dlq(request.match_info["id"])
    if new_id is None:
        raise KeyValNotFoundError("Dead letter not found", code="MESSAGE_NOT_FOUND")
    return web.json_response({"ok": True, "id": new_id})


async def dlq_delete(request: web.Request) -> web.Response:
    if not await _kv(request).queue.delete_dlq(request.match_info["id"]):
        raise KeyValNotFoundError("Dead letter not found", code="MESSAGE_NOT_FOUND")
    return web.json_response({"ok": True})


async def dlq_purge(request: web.Request) -> web.Response:
    return web.json_response({"deletedCount": await _kv(request).queue.purge_dlq()})


# -- watch (SSE) ------------------------------------------------------------------------------
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",  # nginx and friends: do not buffer the stream
}
#: How long an idle queue listener waits before re-reading at most (a delayed message becoming
#: ready is no write, nor is a lease running out: nothing else wakes the listener for them).
LISTEN_MAX_IDLE = 5.0


def _keys_param(raw: str | None, name: str) -> list[Key]:
    """``a/b,c/d`` or a JSON list of keys."""
    if raw is None or not raw.strip():
        raise InvalidKeyError(f"'{name}' is required")
    text = raw.strip()
    if text.startswith("["):
        try:
            parsed = client_json(text)
        except InvalidTextError:
            raise
        except ValueError as exc:
            raise InvalidKeyError(f"'{name}' is not a JSON list of keys: {exc}") from exc
        if not isinstance(parsed, list) or not all(isinstance(k, list) for k in parsed):
            raise InvalidKeyError(f"'{name}' must be a list of keys")
        return [key_from_json(k) for k in parsed]
    return [key_from_query(part) or () for part in text.split(",")]


def _watch_prefixes(request: web.Request) -> list[Key]:
    """Distinct prefixes, none under another (see :func:`distinct_prefixes`; at most 32)."""
    # Upstream's client sends ``prefix``, its server read ``prefixes``: take either or both.
    raws = [request.query.get("prefix"), request.query.get("prefixes")]
    found = [k for raw in raws if raw is not None and raw.strip() for k in _keys_param(raw, "prefix")]
    return distinct_prefixes(found or [()])


def _sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    await response.write(b"retry: 1000\n\n")
    return response


async def _stream_watcher(request: web.Request, watcher: Watcher) -> web.StreamResponse:
    kv = _kv(request)
    hub = kv.watch
    response = await _open_stream(request)
    try:
        while True:
            try:
                event: WatchEvent | None = await watcher.next(hub.ping_interval)
            except TimeoutError:
                await asyncio.wait_for(response.write(_sse("ping", {"t": kv.now_ms()})), hub.write_timeout)
                continue
            if event is None:
                break
            await asyncio.wait_for(
                response.write(_sse("change", event.entries, event.id or None)), hub.write_timeout
            )
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        hub.unsubscribe(watcher)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


#: A versionstamp as every stream sends it in ``id:`` (20 lowercase hex digits), matched whole.
_VERSIONSTAMP = re.compile(r"[0-9a-f]{20}")


def _last_event_id(request: web.Request) -> str:
    """The ``Last-Event-ID`` a reconnecting client sends back: one of our event ids or nothing.
    Anything else is 400: it was echoed as the next event's id (bytes that are not UTF-8 broke
    the stream after its 200) and compared with versionstamps (``zzz`` hid every change)."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    if raw and not _VERSIONSTAMP.fullmatch(raw):
        raise InvalidRequestError(
            "Last-Event-ID must be an event id this server sent (a versionstamp)", code="INVALID_PARAMETER"
        )
    return raw


def _initial(request: web.Request, default: bool) -> bool:
    return _bool(request.query.get("initial"), "initial") if "initial" in request.query else default


async def watch_keys(request: web.Request) -> web.StreamResponse:
    keys = _keys_param(request.query.get("keys", request.query.get("key")), "keys")
    if not keys or len(keys) > MAX_HTTP_LIMIT:
        raise InvalidRequestError(f"watch 1 to {MAX_HTTP_LIMIT} keys", code="INVALID_PARAMETER")
    watcher = _kv(request).watch.watch_keys(
        keys, initial=_initial(request, True), last_id=_last_event_id(request)
    )
    return await _stream_watcher(request, watcher)


async def watch_prefix(request: web.Request) -> web.StreamResponse:
    watcher = _kv(request).watch.watch_prefixes(
        _watch_prefixes(request),
        limit=_int(request.query.get("limit"), "limit", DEFAULT_PREFIX_LIMIT),
        initial=_initial(request, False),
        last_id=_last_event_id(request),
    )
    return await _stream_watcher(request, watcher)


def _versionstamps(raw: str | None) -> list[str]:
    return [] if not raw else [v.strip() for v in raw.split(",")]


async def watch_poll(request: web.Request) -> web.Response:
    """Upstream's ``{entries, versionstamps}``: the entries of ``keys`` whose versionstamp differs
    from the client's ``versionstamps`` (same order; empty or ``null`` for an absent key), and
    every key's current versionstamp (``""`` when absent) to send next time; plus ``changed``."""
    keys = _keys_param(request.query.get("keys", request.query.get("key")), "keys")
    known = _versionstamps(request.query.get("versionstamps"))
    entries = await _kv(request).get_many(keys)
    now = [e.versionstamp or "" for e in entries]
    was = [("" if v in ("", "null") else v) for v in known] + [""] * (len(now) - len(known))
    changed = [e.as_json() for e, current, old in zip(entries, now, was, strict=False) if current != old]
    return web.json_response({"entries": changed, "versionstamps": now, "changed": bool(changed)})


async def watch_prefix_poll(request: web.Request) -> web.Response:
    """Upstream's ``{entries, versionstamps}``: the entries under ``prefix`` whose versionstamp
    differs from the client's ``versionstamps=<key path>:<vs>,...``, the keys it knew that are
    gone (value and versionstamp ``null``), and the current ``<key path>:<vs>,...`` to send next
    time; plus ``changed``. ``limit`` bounds the entries of all the prefixes together."""
    kv = _kv(request)
    known: dict[bytes, str] = {}
    for item in _versionstamps(request.query.get("versionstamps")):
        path, sep, versionstamp = item.rpartition(":")
        if not sep:
            raise InvalidRequestError(
                "versionstamps must be <key>:<versionstamp>,...", code="INVALID_PARAMETER"
            )
        known[encode_key(key_from_token(path))] = versionstamp
    limit = _int(request.query.get("limit"), "limit", DEFAULT_PREFIX_LIMIT)
    entries = await read_prefixes(lambda prefix, n: kv.list(prefix, limit=n), _watch_prefixes(request), limit)
    current = {encode_key(e.key): e for e in entries}
    changed = [e.as_json() for k, e in current.items() if known.get(k) != e.versionstamp]
    gone = [
        {"key": key_to_json(decode_key(k)), "value": None, "versionstamp": None}
        for k in known
        if k not in current
    ]
    current_stamps = ",".join(f"{key_to_token(e.key)}:{e.versionstamp}" for e in current.values())
    return web.json_response(
        {"entries": changed + gone, "versionstamps": current_stamps, "changed": bool(changed or gone)}
    )


async def queue_listen(request: web.Request) -> web.StreamResponse:
    """SSE ``message`` events: each one a leased message (ack or nack it by id), ``ping`` while idle.

    A listener holds at most one lease at a time: it leases the next message only once the
    previous one's lease is over, acked or nacked (through any pod) or run out, so a slow or
    stuck client never takes messages from other consumers; it is one consumer, as upstream's
    ``listen()`` with its default concurrency of 1. Woken by every write and pull (an ack or an
    enqueue here or on another pod), when its lease ends, and when the next delayed message is due."""
    kv = _kv(request)
    hub = kv.watch
    response = await _open_stream(request)
    last_ping = time.monotonic()
    held: QueueMessage | None = None  # the message whose lease this listener holds
    try:
        while not hub.closed:
            mark = hub.queue_mark()
            if held is not None:
                left = await kv.queue.lease_left(held)
                if left is None:
                    held = None
                    continue
                due: int | None = left
            else:
                held = await kv.queue.dequeue()
                if held is not None:
                    await asyncio.wait_for(
                        response.write(_sse("message", held.as_json(), held.id)), hub.write_timeout
                    )
                    continue
                due = await kv.queue.next_ready_in()
            idle = hub.ping_interval - (time.monotonic() - last_ping)
            if idle <= 0:
                await asyncio.wait_for(response.write(_sse("ping", {"t": kv.now_ms()})), hub.write_timeout)
                last_ping = time.monotonic()
                continue
            wait = min(idle, LISTEN_MAX_IDLE, (due / 1000) if due is not None else LISTEN_MAX_IDLE)
            await hub.wait_queue(max(wait, 0.001), mark)
    except (ConnectionResetError, TimeoutError):
        pass
    except KeyValError as exc:
        log.warning("KeyVal queue listener stopped: %s", exc)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


# -- search ----------------------------------------------------------------------------------
async def create_index(request: web.Request) -> web.Response:
    body = await _object(request)
    # Upstream's client sends {prefix, options: {fields, tokenize}}, its docs {prefix, fields}: take both.
    raw_options = body.get("options")
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    fields = options.get("fields", body.get("fields"))
    if not isinstance(fields, list):
        raise InvalidRequestError("'fields' must be a list of dot paths", code="INVALID_INDEX")
    tokenize = options.get("tokenize", body.get("tokenize")) or DEFAULT_TOKENIZE
    info = await _kv(request).create_index(_body_key(body, "prefix"), fields, tokenize=tokenize)
    return web.json_response({"ok": True, "index": info.as_json()})


async def list_indexes(request: web.Request) -> web.Response:
    return web.json_response([i.as_json() for i in await _kv(request).list_indexes()])


async def remove_index(request: web.Request) -> web.Response:
    if "prefix" in request.query:
        prefix = _query_prefix(request)
    else:
        prefix = _body_key(await _object(request), "prefix")
    if not await _kv(request).remove_index(prefix):
        raise KeyValNotFoundError("Index not found", code="INDEX_NOT_FOUND")
    return web.json_response({"ok": True})


async def search_get(request: web.Request) -> web.Response:
    q = request.query
    entries = await _kv(request).search(
        _query_prefix(request),
        q.get("query", ""),
        limit=_int(q.get("limit"), "limit", 100),
        where=_query_where(request),
    )
    return web.json_response([e.as_json() for e in entries])


async def search_post(request: web.Request) -> web.Response:
    body = await _object(request)
    # The upstream client sends {prefix, query, options: {limit, where}}: take those or top-level ones.
    raw_options = body.get("options")
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    entries = await _kv(request).search(
        _body_key(body, "prefix", default=()),
        body.get("query", ""),
        limit=_int(options.get("limit", body.get("limit")), "limit", 100),
        where=options.get("where", body.get("where")),
    )
    return web.json_response([e.as_json() for e in entries])


# -- metrics ---------------------------------------------------------------------------------
async def metrics_json(request: web.Request) -> web.Response:
    """This process's operations since start, the queue, storage size, and the ``kv_metrics``
    totals every pod flushed (``persisted``; empty unless ``metrics.persistent``)."""
    kv = _kv(request)
    return web.json_response(
        {
            "operations": kv.metrics.snapshot(),
            "queue": (await kv.queue.stats()).as_json(),
            "storage": await kv.storage_stats(),
            "persisted": await kv.persisted_metrics(),
        }
    )


async def metrics_prometheus(request: web.Request) -> web.Response:
    kv = _kv(request)
    await kv.storage_stats()  # refreshes the entries and storage-bytes gauges
    await kv.queue.stats()  # and the queue's
    body = generate_latest(kv.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(kv: Kv) -> web.Application:
    """The sub-application for ``kv``; mount it with ``app.add_subapp("/keyval", create_app(kv))``."""
    app = web.Application(middlewares=[error_middleware])
    app[KV_KEY] = kv

    async def close_streams(_: web.Application) -> None:
        # Graceful shutdown waits for open handlers: end the SSE streams first.
        await kv.watch.aclose()

    app.on_shutdown.append(close_streams)
    add = app.router.add_route
    # Fixed /keys/... routes first: they win over the /keys/{path} catch-all.
    add("POST", f"{API}/keys/batch", get_batch)
    add("POST", f"{API}/keys/delete-batch", delete_batch)
    add("POST", f"{API}/keys/list", list_keys_post)
    add("GET", f"{API}/keys/count", count_keys)
    add("GET", f"{API}/keys/paginate", paginate_keys)
    add("GET", f"{API}/keys", list_keys)
    add("GET", f"{API}/keys/{{path:.+}}", get_key)
    add("PUT", f"{API}/keys/{{path:.+}}", put_key)
    add("DELETE", f"{API}/keys/{{path:.+}}", delete_key)
    add("POST", f"{API}/atomic", atomic)
    add("POST", f"{API}/queue/enqueue", enqueue)
    add("GET", f"{API}/queue/poll", poll)
    add("POST", f"{API}/queue/poll", poll)
    add("POST", f"{API}/queue/ack", ack)
    add("POST", f"{API}/queue/nack", nack)
    add("GET", f"{API}/queue/stats", queue_stats)
    add("GET", f"{API}/queue/dlq", dlq_list)
    add("DELETE", f"{API}/queue/dlq", dlq_purge)
    add("GET", f"{API}/queue/dlq/{{id}}", dlq_get)
    add("DELETE", f"{API}/queue/dlq/{{id}}", dlq_delete)
    add("POST", f"{API}/queue/dlq/{{id}}/requeue", dlq_requeue)
    add("POST", f"{API}/indexes", create_index)
    add("GET", f"{API}/indexes", list_indexes)
    add("DELETE", f"{API}/indexes", remove_index)
    add("GET", f"{API}/search", search_get)
    add("POST", f"{API}/search", search_post)
    add("GET", f"{API}/watch", watch_keys)
    add("GET", f"{API}/watch/poll", watch_poll)
    add("GET", f"{API}/watch/prefix", watch_prefix)
    add("GET", f"{API}/watch/prefix/poll", watch_prefix_poll)
    add("GET", f"{API}/queue/listen", queue_listen)
    add("GET", f"{API}/metrics", metrics_json)
    add("GET", f"{API}/metrics/prometheus", metrics_prometheus)
    return app
