"""Send a matched request to its rule's target: a real reverse proxy, or a redirect.

Called by ``_proxy``'s middleware. One ``aiohttp.ClientSession`` per plugin (opened at
``on_init``, closed at ``on_shutdown``). Bodies stream both ways; bytes pass through untouched
(no decompression, no added ``Accept-Encoding``), cookies are never stored in the session (it
serves every client), and hop-by-hop headers are dropped in both directions.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .._http import error_body
from ._rules import ProxyRule

UPSTREAM_UNAVAILABLE = "PROXY_UPSTREAM_UNAVAILABLE"
UPSTREAM_TIMEOUT = "PROXY_UPSTREAM_TIMEOUT"

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
#: Headers aiohttp would add on its own; a transparent proxy sends only what the client sent.
SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Content-Type")
CHUNK_SIZE = 64 * 1024

log = logging.getLogger("buntime.plugin.proxy")


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """``headers`` minus hop-by-hop ones, including those the ``Connection`` header names."""
    dropped = HOP_BY_HOP | {
        token.strip().lower() for value in headers.getall("Connection", []) for token in value.split(",")
    }
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in dropped)


class Forwarder:
    """Proxies or redirects requests. Parameters:

    * **timeout** — seconds allowed to connect and for each read from the upstream.
    """

    def __init__(self, *, timeout: float) -> None:
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def handle(self, request: web.Request, rule: ProxyRule) -> web.StreamResponse:
        url = rule.upstream_url(request.rel_url.raw_path, request.rel_url.raw_query_string)
        if rule.redirect is not None:
            return web.Response(status=rule.redirect, headers={"Location": str(url)})
        return await self._proxy(request, rule, url)

    def _upstream_headers(self, request: web.Request, rule: ProxyRule) -> CIMultiDict[str]:
        headers = end_to_end(request.headers)
        if rule.change_origin:
            headers.popall("Host", None)  # aiohttp sets it from the target URL
        forwarded_for = request.headers.get("X-Forwarded-For")
        remote = request.remote or ""
        headers["X-Forwarded-For"] = f"{forwarded_for}, {remote}" if forwarded_for else remote
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        headers.update(rule.headers)
        return headers

    async def _proxy(self, request: web.Request, rule: ProxyRule, url: URL) -> web.StreamResponse:
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=self._upstream_headers(request, rule),
                data=request.content if request.body_exists else None,
                allow_redirects=False,
            )
        except TimeoutError as exc:  # aiohttp's timeouts subclass it
            log.warning("proxy rule %s: upstream %s timed out: %s", rule.id, url.origin(), exc)
            return web.json_response(error_body(UPSTREAM_TIMEOUT, "upstream timed out"), status=504)
        except aiohttp.ClientError as exc:
            log.warning("proxy rule %s: upstream %s unavailable: %s", rule.id, url.origin(), exc)
            body = error_body(UPSTREAM_UNAVAILABLE, f"upstream unavailable: {exc}")
            return web.json_response(body, status=502)
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(end_to_end(upstream.headers))
            await response.prepare(request)
            # Past this point the status is sent: an upstream failure can only cut the body short,
            # which the exception does (aiohttp closes the connection).
            async for chunk in upstream.content.iter_chunked(CHUNK_SIZE):
                await response.write(chunk)
            await response.write_eof()
            return response
