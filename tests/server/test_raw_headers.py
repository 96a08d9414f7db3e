"""Every route of the runtime, all built-in plugins mounted, with header bytes that are not UTF-8.

aiohttp hands such bytes to handlers as lone surrogates (``surrogateescape``), which ``str.encode``
and ``hmac.compare_digest`` refuse: a handler that is not ready for them answers 500. The sweep
sends each header of interest with byte 0xff to every registered route (path parameters filled
in) and asserts that nothing answers 5xx.
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
]  # fmt: skip
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


async def raw_request(port: int, method: str, path: str, header: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"a": 1}'
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + header.encode() + b": ab\xff\xfecd\r\n\r\n" + body)
    try:
        # The status line only: some routes stream (server-sent events, watches).
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_no_route_answers_5xx_to_header_bytes_that_are_not_utf8(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, {**env, "GATEWAY_API_KEY": "s3cret"})
    table = routes(client.app)
    assert len(table) > 40, table  # every built-in plugin's routes are mounted
    failures = []
    for method, path in table:
        for header in HEADERS:
            reply = await raw_request(client.port, method, path, header)
            status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/") else b"none"
            if status.startswith(b"5") or status == b"none":
                failures.append((method, path, header, reply))
    assert not failures, failures
