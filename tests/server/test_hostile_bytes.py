"""Every route of the runtime, all built-in plugins mounted, sent bytes no client should send.

aiohttp hands header bytes that are not UTF-8 to handlers as lone surrogates (``surrogateescape``),
which ``str.encode`` and ``hmac.compare_digest`` refuse; ``json.loads`` raises ``RecursionError``,
not ``ValueError``, for deep nesting; a ``charset`` Python does not know is a ``LookupError``. A
handler not ready for one of them answers 500. Each sweep sends its inputs to every registered
route (path parameters filled in, over a raw socket so the bytes go out as written) and asserts
that every answer is a 2xx or a 4xx.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web
from pytest_aiohttp import AiohttpClient

from tests.server.support import start_runtime

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


async def status_line(port: int, head: str, extra: bytes = b"", body: bytes = b"") -> bytes:
    """Send one request; the reply's status line only (some routes stream: events, watches)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = f"{head}\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    writer.write(start.encode() + extra + b"\r\n" + body)
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


def answered(line: bytes) -> bool:
    return line.startswith((b"HTTP/1.1 2", b"HTTP/1.1 4"))


async def runtime(aiohttp_client: AiohttpClient, env: dict[str, str]) -> tuple[int, list[tuple[str, str]]]:
    gateway = {  # the gateway's optional paths on: API key, rate limit by user, CORS
        "GATEWAY_API_KEY": "s3cret",
        "GATEWAY_RATE_LIMIT_REQUESTS": "1000000",
        "GATEWAY_RATE_LIMIT_KEY_BY": "user",
        "GATEWAY_CORS_ORIGIN": "https://app.example",
    }
    client = await start_runtime(aiohttp_client, {**env, **gateway})
    table = routes(client.app)
    assert len(table) > 40, table  # every built-in plugin's routes are mounted
    assert client.port is not None
    return client.port, table


async def test_no_route_answers_5xx_to_hostile_header_values(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    port, table = await runtime(aiohttp_client, env)
    failures = []
    for method, path in table:
        for header in HEADERS:
            for value in HEADER_VALUES:
                line = await status_line(
                    port, f"{method} {path} HTTP/1.1", header.encode() + b": " + value + b"\r\n"
                )
                if not answered(line):
                    failures.append((method, path, header, value[:8], line))
    assert not failures, failures


async def test_no_route_answers_5xx_to_hostile_bodies(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    port, table = await runtime(aiohttp_client, env)
    failures = []
    for method, path in table:
        if method in ("GET", "HEAD"):
            continue
        for body in BODIES:
            for content_type in CONTENT_TYPES:
                extra = f"X-API-Key: s3cret\r\nContent-Type: {content_type}\r\n".encode()
                line = await status_line(port, f"{method} {path} HTTP/1.1", extra, body)
                if not answered(line):
                    failures.append((method, path, body[:8], content_type, line))
    assert not failures, failures


async def test_no_route_answers_5xx_to_hostile_query_parameters(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    port, table = await runtime(aiohttp_client, env)
    failures = []
    for method, path in table:
        for query in QUERIES:
            line = await status_line(port, f"{method} {path}?{query} HTTP/1.1", b"X-API-Key: s3cret\r\n")
            if not answered(line):
                failures.append((method, path, query[:12], line))
    assert not failures, failures
