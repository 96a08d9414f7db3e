"""Send a matched request to its rule's target: a real reverse proxy, or a redirect.

Called by ``_proxy``'s middleware. One ``aiohttp.ClientSession`` per plugin (opened at
``on_init``, closed at ``on_shutdown``). Bodies stream both ways; bytes pass through untouched
(no decompression, no added ``Accept-Encoding``), cookies are never stored in the session (it
serves every client), and hop-by-hop headers are dropped in both directions. The one exception
is an HTML response of a rule with ``base`` or ``relativePaths``: it is read whole (gzip or
deflate undone), rewritten, and sent with a new length.

WebSocket upgrades (rules with ``ws``, the default) are proxied as two WebSocket connections,
client ↔ runtime ↔ upstream, that relay every text and binary frame; the first side to close
closes the other with the same code and reason (an upstream that vanishes without a close frame
closes the client with 1014, "bad gateway").

A rule stored before credentials in targets were refused (``_rules``) may still have a
``user:password@`` target: the credentials are taken out of the URL (aiohttp refuses a URL's
credentials beside an ``Authorization`` header, a 500 on every such request) and sent as a Basic
``Authorization`` header when the request has none after the rule's headers (the client's wins,
as in upstream's Node proxy); a redirect's ``Location`` never carries them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .._http import error_body
from ._rules import ProxyRule

UPSTREAM_UNAVAILABLE = "PROXY_UPSTREAM_UNAVAILABLE"
UPSTREAM_TIMEOUT = "PROXY_UPSTREAM_TIMEOUT"
UPSTREAM_REFUSED_UPGRADE = "PROXY_UPSTREAM_REFUSED_UPGRADE"

#: RFC 6455 §7.4 / IANA: codes that are never sent in a close frame, only reported locally.
_UNSENDABLE_CLOSE_CODES = frozenset({1005, 1006, 1015})
#: IANA "Bad Gateway": the upstream went away without a close frame.
CLOSE_BAD_GATEWAY = 1014
#: Seconds the second half of a relay gets to finish its closing handshake.
CLOSE_GRACE = 15.0
_WS_HANDSHAKE_HEADERS = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
_HTML_REF = re.compile(rb'(src|href)="/(?!/)')
_QUOTED_PATH = re.compile(rb"'/(?!/)")
_HEAD_TAG = re.compile(rb"<head\b[^>]*>", re.IGNORECASE)

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
        auth: str | None = None
        if url.raw_user is not None or url.raw_password is not None:  # a rule stored before the refusal
            auth = aiohttp.encode_basic_auth(url.user or "", url.password or "")
            url = url.with_user(None)
        if rule.redirect is not None:
            return web.Response(status=rule.redirect, headers={"Location": str(url)})
        if is_websocket_upgrade(request):
            return await self._proxy_websocket(request, rule, url, auth)
        return await self._proxy(request, rule, url, auth)

    @staticmethod
    def _ssl(rule: ProxyRule) -> bool:
        """``secure: false`` skips certificate verification (self-signed upstreams); else verify."""
        return rule.secure

    def _upstream_headers(
        self, request: web.Request, rule: ProxyRule, url: URL, auth: str | None
    ) -> CIMultiDict[str]:
        headers = end_to_end(request.headers)
        if rule.change_origin:
            headers.popall("Host", None)  # aiohttp sets it from the target URL
            if "Origin" in headers:
                headers["Origin"] = str(url.origin())
        forwarded_for = request.headers.get("X-Forwarded-For")
        remote = request.remote or ""
        headers["X-Forwarded-For"] = f"{forwarded_for}, {remote}" if forwarded_for else remote
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        if "X-Real-IP" not in headers:
            first_hop = forwarded_for.split(",")[0].strip() if forwarded_for else ""
            headers["X-Real-IP"] = first_hop or remote
        headers.update(rule.headers)
        if auth is not None and "Authorization" not in headers:
            headers["Authorization"] = auth
        return headers

    async def _proxy(
        self, request: web.Request, rule: ProxyRule, url: URL, auth: str | None
    ) -> web.StreamResponse:
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=self._upstream_headers(request, rule, url, auth),
                data=request.content if request.body_exists else None,
                allow_redirects=False,
                ssl=self._ssl(rule),
            )
        except TimeoutError as exc:  # aiohttp's timeouts subclass it
            log.warning("proxy rule %s: upstream %s timed out: %s", rule.id, url.origin(), exc)
            return web.json_response(error_body(UPSTREAM_TIMEOUT, "upstream timed out"), status=504)
        except aiohttp.ClientError as exc:
            log.warning("proxy rule %s: upstream %s unavailable: %s", rule.id, url.origin(), exc)
            body = error_body(UPSTREAM_UNAVAILABLE, f"upstream unavailable: {exc}")
            return web.json_response(body, status=502)
        async with upstream:
            if rule.rewrites_html and "text/html" in upstream.headers.get("Content-Type", ""):
                rewritten = await self._rewritten_html(upstream, rule)
                if rewritten is not None:
                    return rewritten
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(end_to_end(upstream.headers))
            await response.prepare(request)
            # Past this point the status is sent: an upstream failure can only cut the body short,
            # which the exception does (aiohttp closes the connection).
            async for chunk in upstream.content.iter_chunked(CHUNK_SIZE):
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _rewritten_html(self, upstream: aiohttp.ClientResponse, rule: ProxyRule) -> web.Response | None:
        """The HTML body with ``relativePaths`` and ``base`` applied; ``None`` if it cannot be decoded."""
        encoding = upstream.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "deflate"):
            return None  # e.g. br: pass it through untouched rather than corrupt it
        body = await upstream.read()
        if encoding != "identity":
            try:
                body = zlib.decompress(body, wbits=47)  # 32 + 15: gzip or zlib header, detected
            except zlib.error:
                log.warning("proxy rule %s: cannot decode %s HTML body; not rewritten", rule.id, encoding)
                return _passthrough(upstream, body)
        body = rewrite_html(body, rule)
        headers = end_to_end(upstream.headers)
        headers.popall("Content-Encoding", None)
        headers.popall("Content-Length", None)
        return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)

    # -- WebSocket --------------------------------------------------------------------------------
    async def _proxy_websocket(
        self, request: web.Request, rule: ProxyRule, url: URL, auth: str | None
    ) -> web.StreamResponse:
        ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        headers = self._upstream_headers(request, rule, url, auth)
        for name in list(headers):
            if name.lower() in _WS_HANDSHAKE_HEADERS:
                headers.popall(name, None)  # aiohttp's client writes its own handshake
        protocols = [
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", [])
            for p in value.split(",")
        ]
        try:
            upstream = await self._session.ws_connect(
                ws_url,
                headers=headers,
                protocols=[p for p in protocols if p],
                ssl=self._ssl(rule),
                max_msg_size=0,
                autoclose=False,
            )
        except aiohttp.WSServerHandshakeError as exc:
            log.warning("proxy rule %s: upstream %s refused the upgrade: %s", rule.id, url.origin(), exc)
            status = exc.status if 400 <= exc.status < 600 else 502
            body = error_body(
                UPSTREAM_REFUSED_UPGRADE, f"upstream refused the WebSocket upgrade ({exc.status})"
            )
            return web.json_response(body, status=status)
        except TimeoutError as exc:
            log.warning("proxy rule %s: upstream %s timed out: %s", rule.id, url.origin(), exc)
            return web.json_response(error_body(UPSTREAM_TIMEOUT, "upstream timed out"), status=504)
        except aiohttp.ClientError as exc:
            log.warning("proxy rule %s: upstream %s unavailable: %s", rule.id, url.origin(), exc)
            return web.json_response(
                error_body(UPSTREAM_UNAVAILABLE, f"upstream unavailable: {exc}"), status=502
            )
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0, autoclose=False
        )
        try:
            await client.prepare(request)
            await relay(client, upstream)
        finally:
            await upstream.close()
        return client


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def is_websocket_upgrade(request: web.Request) -> bool:
    connection = {t.strip().lower() for v in request.headers.getall("Connection", []) for t in v.split(",")}
    return request.headers.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection


def _passthrough(upstream: aiohttp.ClientResponse, body: bytes) -> web.Response:
    headers = end_to_end(upstream.headers)
    headers.popall("Content-Length", None)
    return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)


def rewrite_html(body: bytes, rule: ProxyRule) -> bytes:
    """``relativePaths``: ``src="/x"``/``href="/x"`` and ``'/x'`` become ``./x`` (``//host`` kept);
    ``base``: ``<base href="<base>/">`` right after the opening ``<head ...>`` tag."""
    if rule.relative_paths:
        body = _HTML_REF.sub(rb'\1="./', body)
        body = _QUOTED_PATH.sub(b"'./", body)
    if rule.base is not None:
        href = rule.base if rule.base.endswith("/") else rule.base + "/"
        tag = f'<base href="{href}" />'.encode()
        body = _HEAD_TAG.sub(lambda m: m.group(0) + tag, body, count=1)
    return body


def _sendable(code: int | None, *, fallback: int) -> int:
    if code is None or code in _UNSENDABLE_CLOSE_CODES:
        return fallback
    return code


async def _pump(source: WebSocket, sink: WebSocket, *, vanished: int) -> None:
    """Relay ``source``'s frames to ``sink`` until ``source`` closes, then close ``sink`` alike."""
    while True:
        msg = await source.receive()
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            received = msg.data
            fallback = WSCloseCode.OK if received in (None, 0, 1005) else vanished
            code = _sendable(received, fallback=fallback)
            reason = str(msg.extra or "").encode()
            # Upstream first: once the client's socket closes, the server may cancel this handler.
            first, second = (sink, source) if isinstance(source, web.WebSocketResponse) else (source, sink)
            await first.close(code=code, message=reason)
            await second.close(code=code, message=reason)
            return
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            await sink.close(code=vanished, message=b"peer went away")
            return
        # PING/PONG are answered by each side itself (autoping); nothing to relay.


async def relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Relay both ways until one side closes; the other is closed with the same code."""
    tasks = [
        asyncio.ensure_future(_pump(client, upstream, vanished=WSCloseCode.GOING_AWAY)),
        asyncio.ensure_future(_pump(upstream, client, vanished=CLOSE_BAD_GATEWAY)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # The pump that ended has closed the other side, which ends the other pump; let it
        # finish its closing handshake (cancelling it would abort the socket: code 1006).
        await asyncio.wait(tasks, timeout=CLOSE_GRACE)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, ConnectionError):
            log.warning("WebSocket relay ended with %r", result)
