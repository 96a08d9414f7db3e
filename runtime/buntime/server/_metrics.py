"""Server-level Prometheus metrics: requests by method, route and status, and their latency.

Called by ``_app``. The registry is the server's own; ``/metrics`` renders it after the plugin
host's shared registry. Labels stay bounded: the route is the matched resource's pattern (not
the raw path), unknown methods collapse to ``OTHER``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram

UNMATCHED_ROUTE = "<unmatched>"
OTHER_METHOD = "OTHER"
#: Status recorded when the client went away before a response (nginx's convention).
CLIENT_CLOSED = 499


def route_label(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None:
        return UNMATCHED_ROUTE
    resource = info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


class ServerMetrics:
    """The server's registry and the middleware that feeds it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "buntime_http_requests",
            "HTTP requests served by the runtime, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "buntime_http_request_duration_seconds",
            "Time to produce a response (streamed bodies included), by method and route.",
            ["method", "route"],
            registry=self.registry,
        )
        # ``labels()`` validates and hashes its arguments under a lock on every call; the label
        # sets are bounded (see the module docstring), so each child is looked up once.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counted = self._counted.get((method, route, status))
        if counted is None:
            counted = self._counted[method, route, status] = self.requests.labels(method, route, str(status))
        timed = self._timed.get((method, route))
        if timed is None:
            timed = self._timed[method, route] = self.latency.labels(method, route)
        counted.inc()
        timed.observe(seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            method = request.method if request.method in hdrs.METH_ALL else OTHER_METHOD
            self._observe(method, route_label(request), status, time.perf_counter() - started)
