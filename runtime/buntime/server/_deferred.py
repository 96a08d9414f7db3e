"""Room in the frozen root app for plugins that start after it: deferred mounts and a live chain.

Called by ``_app`` only. aiohttp freezes an application's router, middlewares and signals when it
starts, so a plugin that the host starts late (:meth:`~buntime.plugins.PluginHost.recover`)
cannot be added with ``add_subapp``. Instead the root app reserves, before it starts:

* a :class:`DeferredMount` under the base of every plugin that has not started yet: a router
  resource (a subclass of aiohttp's public ``AbstractResource``) that answers 503
  ``PLUGIN_STARTING`` with ``Retry-After`` until :meth:`DeferredMount.attach` hands it the
  plugin's sub-app, and from then on resolves into that sub-app exactly as ``add_subapp`` would
  (the same :class:`~aiohttp.web.PrefixedSubAppResource`, so the sub-app's own middlewares,
  signals and ``request.app`` behave as if it had been mounted up front);
* one root middleware and one response hook (:class:`PluginChain`) that run the plugins'
  middlewares and hooks from a list the server extends when a plugin starts late.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from ..plugins import ResponseHook
from ..plugins._http import error_body

#: The ``code`` of the 503 a deferred mount answers while its plugin is not up.
PLUGIN_STARTING = "PLUGIN_STARTING"
#: Seconds a client is told to wait (``Retry-After``); the host retries at most this often.
RETRY_AFTER = 5


def _placeholder(name: str) -> web.Application:
    async def starting(request: web.Request) -> web.Response:
        body = error_body(PLUGIN_STARTING, f"plugin {name} is not started yet; retry later")
        return web.json_response(body, status=503, headers={"Retry-After": str(RETRY_AFTER)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", starting)
    return app


class DeferredMount(web.AbstractResource):
    """The root router's resource for ``base``: a 503 placeholder until :meth:`attach`.

    Usage (before the root app starts, then at any time after)::

        mount = DeferredMount("/keyval", name="@buntime/plugin-keyval")
        app.router.register_resource(mount)
        ...
        await mount.attach(plugin.routes())   # freezes and starts the sub-app
        ...
        await mount.shutdown()                 # its on_shutdown, from the root's on_shutdown
        await mount.aclose()                   # (its on_shutdown if not yet run) and its cleanup
    """

    def __init__(self, base: str, *, plugin: str) -> None:
        super().__init__()
        self._prefix = base
        self.plugin = plugin
        self.app: web.Application | None = None
        self._shut_down = False
        self._inner = self._freeze(_placeholder(plugin))

    def _freeze(self, subapp: web.Application) -> web.PrefixedSubAppResource:
        inner = web.PrefixedSubAppResource(self.canonical, subapp)  # prefixes the sub-app's routes
        subapp.freeze()
        return inner

    @property
    def canonical(self) -> str:
        return self._prefix  # the root router indexes the resource under its base

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("a deferred mount lives on the root app only")

    def raw_match(self, path: str) -> bool:
        return False

    async def attach(self, subapp: web.Application | None) -> None:
        """Serve ``subapp`` under the base from now on (runs its startup signals first).

        ``None`` (the plugin turned out to have no routes) leaves an empty app: 404, not 503.
        """
        subapp = web.Application() if subapp is None else subapp
        inner = self._freeze(subapp)
        await subapp.startup()
        self.app, self._inner = subapp, inner

    async def shutdown(self) -> None:
        """The attached sub-app's ``on_shutdown`` (once), before the root app drains its requests.

        ``add_subapp`` wires a sub-app's shutdown into the root's; a deferred mount cannot (the
        root's signals are frozen), so the root's ``on_shutdown`` calls this instead: a plugin
        that started late ends its streams at the same moment as the others.
        """
        app = self.app
        if app is not None and not self._shut_down:
            self._shut_down = True
            await app.shutdown()

    async def aclose(self) -> None:
        await self.shutdown()
        app, self.app = self.app, None
        if app is not None:
            await app.cleanup()

    async def resolve(self, request: web.Request) -> tuple[Any, set[str]]:
        return await self._inner.resolve(request)

    def url_for(self, *args: str, **kwargs: str) -> URL:
        raise RuntimeError(".url_for() is not supported by a deferred mount")

    def get_info(self) -> Any:
        return self._inner.get_info()  # {"app", "prefix"}: the placeholder's until attached

    def __len__(self) -> int:
        return len(self._inner)

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(self._inner)

    def __repr__(self) -> str:
        return f"<DeferredMount {self.canonical} -> {self.plugin} ({'up' if self.app else 'starting'})>"


class PluginChain:
    """The plugins' middlewares and response hooks, in load order, extendable after startup.

    ``middleware`` and ``on_response_prepare`` are installed once on the root app; each runs
    whatever :meth:`add` has collected so far. Requests for a path in ``bypass`` (the server's
    own endpoints) skip every plugin middleware and hook, so probes cannot be hijacked; the
    check is made once per request, not once per plugin.
    """

    def __init__(self, *, bypass: frozenset[str] = frozenset()) -> None:
        self.bypass = bypass
        self.middlewares: list[Middleware] = []
        self.hooks: list[ResponseHook] = []

    def add(self, middlewares: list[Middleware], hooks: list[ResponseHook]) -> None:
        self.middlewares.extend(middlewares)
        self.hooks.extend(hooks)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self.bypass:
            return await handler(request)
        for plugin_middleware in reversed(self.middlewares):  # the first one ends outermost
            handler = _Bound(plugin_middleware, handler)
        return await handler(request)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path in self.bypass:
            return
        for hook in list(self.hooks):
            await hook(request, response)


class _Bound:
    """``middleware`` with its inner ``handler``, callable as a handler.

    Calling it returns the middleware's own coroutine: the hot path of every request pays no
    extra coroutine frame per plugin (a closure wrapping ``await middleware(...)`` would).
    """

    __slots__ = ("handler", "middleware")

    def __init__(self, middleware: Middleware, handler: Handler) -> None:
        self.middleware = middleware
        self.handler = handler

    def __call__(self, request: web.Request) -> Awaitable[web.StreamResponse]:
        return self.middleware(request, self.handler)
