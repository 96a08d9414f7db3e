"""The plugin contract: what a factory returns and what it receives at ``on_init``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ._reserved import ReservedPaths
from ._settings import Settings

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.typedefs import Middleware

#: ``hook(request, response)``, awaited just before a response's headers are sent.
ResponseHook = Callable[["web.Request", "web.StreamResponse"], Awaitable[None]]


@dataclass
class PluginContext:
    """Handed to ``on_init``: the plugin's options and settings, a logger and the other plugins.

    ``settings`` is the manifest's ``config`` block resolved by the host (non-blank env over the
    option over the default, typed: ``settings["queue.lockDuration"]`` is seconds); a bad value
    never gets this far, the plugin fails to start with one line naming the variable.

    ``get_plugin(name)`` returns what that plugin's ``provides()`` returned, or ``None``; it is
    only reliable for plugins listed in ``dependencies`` / ``optionalDependencies`` (they are
    initialised first).
    """

    name: str
    config: Mapping[str, Any]
    logger: logging.Logger
    get_plugin: Callable[[str], Any]
    env: Mapping[str, str] = field(default_factory=dict)
    #: The host's metrics registry; the runtime server exports it on ``/metrics``.
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: Paths plugin middlewares must leave alone (mounted bases, probes, ``/metrics``); the
    #: server fills it after every ``on_init``, so read it at request time, not in ``on_init``.
    reserved: ReservedPaths = field(default_factory=ReservedPaths)
    settings: Settings = field(default_factory=Settings)


class Plugin:
    """Base class with no-op hooks; a factory ``create(config) -> Plugin`` builds one.

    * ``on_init(ctx)`` — open resources, run migrations (bounded by the host's init timeout).
    * ``provides()`` — the value other plugins get through ``ctx.get_plugin(name)``.
    * ``routes()`` — an aiohttp sub-application mounted under the manifest ``base``.
    * ``middlewares()`` — aiohttp middlewares the runtime server installs on its root app, so a
      plugin can see (count, proxy, redirect) every request, not only those under its ``base``.
      They run in plugin load order, outermost first, and never see the server's own
      ``/api/health/*`` and ``/metrics`` (probes must not depend on a plugin).
    * ``response_hooks()`` — callbacks run just before *any* response's headers go out
      (``on_response_prepare``), including streamed, proxied and WebSocket ones a middleware
      can no longer change; the same paths are exempt as for middlewares.
    * ``on_shutdown()`` — release resources; called in reverse load order.
    """

    async def on_init(self, ctx: PluginContext) -> None:
        return None

    def provides(self) -> Any:
        return None

    def routes(self) -> web.Application | None:
        return None

    def middlewares(self) -> Sequence[Middleware]:
        return ()

    def response_hooks(self) -> Sequence[ResponseHook]:
        return ()

    async def on_shutdown(self) -> None:
        return None
