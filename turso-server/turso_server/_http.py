"""HTTP plumbing shared by both listeners: typed app keys, JSON errors, probes.

Both ``web.Application`` objects (data and admin) carry the same server objects under the typed
:class:`web.AppKey` constants below; ``_app`` sets them and registers the lifecycles. Every error
leaves as ``{"code", "detail"}`` JSON through :func:`error_middleware`, including aiohttp's own
404/405/413, so clients never have to parse text bodies. ``/healthz`` (alive) and ``/readyz``
(state restored and both listeners up) need no token. Imported by ``_proxy``, ``_admin``, ``_app``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from ._auth import AdminAuth, DataAuth, ScopedTokens
from ._backup import Backups
from ._config import ServerConfig
from ._errors import ApiError
from ._gc import GarbageCollector
from ._leases import LeaseTable
from ._logging import get_logger
from ._metrics import Metrics
from ._state import StateStore
from ._supervisor import Supervisor

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
PROBE_PATHS = frozenset({HEALTHZ_PATH, READYZ_PATH})
OK_BODY = "ok"
NOT_READY_BODY = "not ready"
JSON_CONTENT_TYPE = "application/json"
_AIOHTTP_CODES = {
    404: "unknown route",
    405: "method not allowed",
    413: "payload too large",
}

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
BACKUPS = web.AppKey("backups", Backups)
DATA_AUTH = web.AppKey("data_auth", DataAuth)
ADMIN_AUTH = web.AppKey("admin_auth", AdminAuth)
SCOPED_TOKENS: web.AppKey[ScopedTokens | None] = web.AppKey("scoped_tokens")

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
        return error_response(exc.status, exc.code, exc.detail, exc.headers())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _AIOHTTP_CODES.get(exc.status, (exc.reason or "error").lower())
        headers = {str(hdrs.ALLOW): exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        return error_response(exc.status, code, f"{request.method} {request.path}", headers)
    except Exception:
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return error_response(500, "internal error", "unexpected server error; see the server log")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text=OK_BODY)


async def readyz(request: web.Request) -> web.Response:
    if request.app[READINESS].ready:
        return web.Response(text=OK_BODY)
    return web.Response(status=503, text=NOT_READY_BODY)


def add_probe_routes(app: web.Application) -> None:
    app.router.add_get(HEALTHZ_PATH, healthz)
    app.router.add_get(READYZ_PATH, readyz)
