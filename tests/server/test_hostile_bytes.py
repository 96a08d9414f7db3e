"""Every route of the runtime, all built-in plugins mounted, sent bytes no client should send.

aiohttp hands header bytes that are not UTF-8 to handlers as lone surrogates (``surrogateescape``),
which ``str.encode`` and ``hmac.compare_digest`` refuse; ``json.loads`` raises ``RecursionError``,
not ``ValueError``, for deep nesting; a ``charset`` Python does not know is a ``LookupError``. A
handler not ready for one of them answers 500. Each sweep sends its inputs to every registered
route (path parameters filled in, over a raw socket so the bytes go out as written) and asserts
that every answer is a 2xx or a 4xx.
"""

from __future__ import annotations

import re

from aiohttp import web
from pytest_aiohttp import AiohttpClient

from tests.server.support import raw_request, start_runtime

HEADERS = [
    "X-API-Key", "Authorization", "Origin", "Cookie", "Content-Type", "Accept", "If-None-Match",
    "X-Forwarded-For", "X-Forwarded-Host", "X-Request-Id", "User-Agent", "Accept-Encoding", "X-Custom",
    "X-Identity",
]  # fmt: skip
HEADER_VALUES = [b"ab\xff\xfecd", b"[" * 4000]
BODIES = [
    b'{"a": "\xff"}', b"\xff\xfe", b"[1,2", b'{"key": ["a"], "value": 1e999}', b'"\\ud800"',
    b'{"a":' * 2000, b"[" * 5000, b"1" * 5000,
]  # fmt: skip
CONTENT_TYPES = ["application/json", "text/plain; charset=utf-8", "application/json; charset=bogus"]
QUERIES = ["where=" + "%5B" * 2000, "keys=" + "%5B" * 2000, "key=" + "%5B" * 2000, "limit=1e999"]
_PARAMETER = re.compile(r"\{[^}]+\}")


def routes(app: web.Application) -> list[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if path is None:
            continue
        method = "POST" if route.method == "*" else route.method
        found.add((method, _PARAMETER.sub("x", path.replace("{tail:.*}", "x"))))
    return sorted(found)


Case = tuple[str, bytes, bytes]  # request line, extra header lines, body


async def unanswered(port: int, cases: list[Case]) -> list[tuple[Case, bytes]]:
    """The cases whose status line is not a 2xx or a 4xx, with that line."""
    failures = []
    for head, extra, body in cases:
        line = await raw_request(port, head, extra, body, status_line_only=True)
        if not line.startswith((b"HTTP/1.1 2", b"HTTP/1.1 4")):
            failures.append(((head[:60], extra[:40], body[:8]), line))
    return failures


async def runtime(aiohttp_client: AiohttpClient, env: dict[str, str]) -> tuple[int, list[tuple[str, str]]]:
    gateway = {  # the gateway's optional paths on: API key, rate limit by user, CORS
        "GATEWAY_API_KEY": "s3cret",
        "GATEWAY_RATE_LIMIT_REQUESTS": "1000000",
        "GATEWAY_RATE_LIMIT_KEY_BY": "user",
        "GATEWAY_CORS_ORIGIN": "https://app.example",
    }
    proxy = {"PROXY_API_KEY": "s3cret"}  # the proxy's admin key, in the same header
    client = await start_runtime(aiohttp_client, {**env, **gateway, **proxy})
    table = routes(client.app)
    assert len(table) > 40, table  # every built-in plugin's routes are mounted
    assert client.port is not None
    return client.port, table


async def test_no_route_answers_5xx_to_hostile_header_values(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    port, table = await runtime(aiohttp_client, env)
    cases = [
        (f"{method} {path} HTTP/1.1", header.encode() + b": " + value + b"\r\n", b"")
        for method, path in table
        for header in HEADERS
        for value in HEADER_VALUES
    ]
    assert not (failures := await unanswered(port, cases)), failures


async def test_no_route_answers_5xx_to_hostile_bodies(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    port, table = await runtime(aiohttp_client, env)
    cases = [
        (f"{method} {path} HTTP/1.1", f"X-API-Key: s3cret\r\nContent-Type: {content_type}\r\n".encode(), body)
        for method, path in table
        if method not in ("GET", "HEAD")
        for body in BODIES
        for content_type in CONTENT_TYPES
    ]
    assert not (failures := await unanswered(port, cases)), failures


async def test_no_route_answers_5xx_to_hostile_query_parameters(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    port, table = await runtime(aiohttp_client, env)
    cases = [
        (f"{method} {path}?{query} HTTP/1.1", b"X-API-Key: s3cret\r\n", b"")
        for method, path in table
        for query in QUERIES
    ]
    assert not (failures := await unanswered(port, cases)), failures
