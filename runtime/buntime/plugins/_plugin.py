"""The plugin contract: what a factory returns and what it receives at ``on_init``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web


@dataclass
class PluginContext:
    """Handed to ``on_init``: the plugin's options, a logger and access to other plugins.

    ``get_plugin(name)`` returns what that plugin's ``provides()`` returned, or ``None``; it is
    only reliable for plugins listed in ``dependencies`` / ``optionalDependencies`` (they are
    initialised first).
    """

    name: str
    config: Mapping[str, Any]
    logger: logging.Logger
    get_plugin: Callable[[str], Any]
    env: Mapping[str, str] = field(default_factory=dict)


class Plugin:
    """Base class with no-op hooks; a factory ``create(config) -> Plugin`` builds one.

    * ``on_init(ctx)`` — open resources, run migrations (bounded by the host's init timeout).
    * ``provides()`` — the value other plugins get through ``ctx.get_plugin(name)``.
    * ``routes()`` — an aiohttp sub-application mounted under the manifest ``base``.
    * ``on_shutdown()`` — release resources; called in reverse load order.
    """

    async def on_init(self, ctx: PluginContext) -> None:
        return None

    def provides(self) -> Any:
        return None

    def routes(self) -> web.Application | None:
        return None

    async def on_shutdown(self) -> None:
        return None
