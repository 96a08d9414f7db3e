"""JSON errors for plugin admin APIs: one middleware and one body reader for :class:`ApiError`.

Every built-in admin API answers errors as ``{"error": <message>, "code": <CODE>}`` so clients
key on a stable code, never on wording. :class:`ApiError` (``_errors``) is the branch of the
runtime's error tree these answers come from; the proxy's ``RuleError`` and keyval's
``KeyValError`` are under it. Storage failures become 503 with the Turso error code
(the database is the dependency that is down, not the request that is wrong), except a write
whose outcome is unknown (``TursoCommitUnknownError``: it may have landed), which is a 504, so
that nothing reads it as "not applied, retry". aiohttp's own refusals (404 no such route, 405
with its ``Allow``, 413 a body over ``client_max_size``) are JSON with a code too
(:func:`http_error_response`, which keyval's middleware uses as well).

Admin APIs that take a key (the gateway's, the proxy's) read it from :data:`API_KEY_HEADER` and
compare it with :func:`api_key_matches`, so both guards treat a key the same way.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..turso import TursoCommitUnknownError, TursoError
from ._errors import ApiError, InvalidTextError
from ._json import client_json

log = logging.getLogger("buntime.plugins")

INVALID_JSON = "INVALID_JSON"
#: Codes of aiohttp's own refusals; any other status ``s`` is ``HTTP_<s>``.
HTTP_ERROR_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}
#: The header an admin API key travels in (gateway and proxy, as upstream's gateway).
API_KEY_HEADER = "X-API-Key"
#: An HTTP header name (RFC 9110 ``token``); use ``fullmatch`` (``$`` would let a final newline in).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def first_non_token(names: Iterable[object]) -> object | None:
    """The first of ``names`` that is not an HTTP token (a header name or a method), else ``None``.

    For values a response header will carry as they are: aiohttp refuses to send a response
    with a control character in a header, after the handler has run.
    """
    return next((n for n in names if not isinstance(n, str) or not HEADER_NAME.fullmatch(n)), None)


def api_key_matches(presented: str | None, expected: str) -> bool:
    """Whether ``presented`` (the header's value, ``None`` when absent) is ``expected``, in constant time.

    surrogateescape: aiohttp decodes header bytes that are not UTF-8 as lone surrogates; this gives
    back the bytes that were sent, so such a key is simply wrong (401), never a 500.
    """
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


#: A run of consecutive percent escapes: one character's bytes are always in one run.
_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def require_utf8_url(request: web.Request) -> None:
    """Refuse a path or query whose percent escapes are not UTF-8 (``%FF``, an encoded surrogate
    ``%ED%A0%80``, an overlong ``%C0%80``) with :class:`InvalidTextError`: yarl decodes them to
    U+FFFD, so distinct keys (``a/%FF``, ``a/%FE``) became one and overwrote each other."""
    url = request.rel_url
    for part in (url.raw_path, url.raw_query_string):
        for run in _PERCENT_RUN.findall(part):
            try:
                bytes.fromhex(run.replace("%", "")).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidTextError(
                    "the URL's percent-encoding is not UTF-8 (every escaped byte sequence must be UTF-8 text)"
                ) from None


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": message, "code": code}


def http_error_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's refusal ``exc`` (a 4xx or 5xx) as ``{"error", "code"}`` JSON, ``Allow`` kept."""
    code = HTTP_ERROR_CODES.get(exc.status, f"HTTP_{exc.status}")
    response = web.json_response(error_body(code, exc.reason), status=exc.status)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`ApiError`, aiohttp's refusals and Turso errors raised by a handler into JSON;
    a URL whose percent-encoding is not UTF-8 is refused first (:func:`require_utf8_url`)."""
    try:
        require_utf8_url(request)
        return await handler(request)
    except ApiError as exc:
        return web.json_response(error_body(exc.code, exc.message), status=exc.status)
    except web.HTTPException as exc:  # no such route, method not allowed, body too large
        if exc.status < 400:
            raise
        return http_error_response(exc)
    except TursoCommitUnknownError as exc:  # the Turso text names paths and URLs: the log has it
        log.info("%s %s: storage write outcome unknown: %s", request.method, request.path, exc)
        message = "storage write outcome unknown (read before writing again)"
        return web.json_response(error_body(exc.code, message), status=504)
    except TursoError as exc:
        log.info("%s %s: storage unavailable: %s", request.method, request.path, exc)
        return web.json_response(error_body(exc.code, "storage unavailable"), status=503)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, else 400 ``INVALID_JSON`` (``INVALID_UNICODE``: see _json)."""
    try:
        body = client_json(await request.read())
    except InvalidTextError:  # its own code, the same on every route
        raise
    except ValueError as exc:
        raise ApiError(f"request body must be JSON: {exc}", code=INVALID_JSON, status=400) from exc
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object", code=INVALID_JSON, status=400)
    return body
