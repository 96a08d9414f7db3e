"""Runtime server settings from the environment (and CLI flags, which win).

Called by ``_run`` before anything starts, so a bad value is a clear startup error (exit code 2)
rather than a half-started server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .._errors import BuntimeError
from ..plugins import plugin_dirs, whole_number

ENV_HOST = "BUNTIME_HOST"
ENV_PORT = "BUNTIME_PORT"
ENV_PLUGIN_DIRS = "BUNTIME_PLUGIN_DIRS"
ENV_EVENT_LOOP = "BUNTIME_EVENT_LOOP"
#: ``uvloop`` (when installed; asyncio's loop otherwise) or ``asyncio``.
EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8000
MAX_PORT = 65535


class ServerConfigError(BuntimeError, ValueError):
    """A server setting cannot be used; the message names it."""

    code = "INVALID_SERVER_CONFIG"


@dataclass(frozen=True)
class ServerConfig:
    """Where to listen, where plugins come from (built-ins first, then ``BUNTIME_PLUGIN_DIRS``)
    and which event loop to run on."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    plugin_dirs: tuple[Path, ...] = ()
    event_loop: str = EVENT_LOOPS[0]


def _port(raw: str | int, source: str) -> int:
    port = whole_number(raw)
    if port is None or not 0 <= port <= MAX_PORT:
        raise ServerConfigError(
            f"{source} must be a port number from 0 to {MAX_PORT} (got {raw!r})", code="INVALID_BUNTIME_PORT"
        )
    return port


def load_server_config(
    env: Mapping[str, str] | None = None, *, host: str | None = None, port: int | None = None
) -> ServerConfig:
    """Resolve :class:`ServerConfig`; raise :class:`ServerConfigError` naming the bad setting."""
    env = os.environ if env is None else env
    resolved_host = (host if host is not None else env.get(ENV_HOST, "")).strip() or DEFAULT_HOST
    if any(ch.isspace() for ch in resolved_host) or "/" in resolved_host:
        raise ServerConfigError(
            f"{ENV_HOST} must be a host name or address (got {resolved_host!r})", code="INVALID_BUNTIME_HOST"
        )
    if port is not None:
        resolved_port = _port(port, "--port")
    else:
        raw_port = env.get(ENV_PORT, "").strip()
        resolved_port = _port(raw_port, ENV_PORT) if raw_port else DEFAULT_PORT
    dirs = tuple(plugin_dirs(env))
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ServerConfigError(
            f"{ENV_PLUGIN_DIRS}: not a directory: {', '.join(missing)}", code="INVALID_BUNTIME_PLUGIN_DIRS"
        )
    event_loop = env.get(ENV_EVENT_LOOP, "").strip().lower() or EVENT_LOOPS[0]
    if event_loop not in EVENT_LOOPS:
        raise ServerConfigError(
            f"{ENV_EVENT_LOOP} must be one of {', '.join(EVENT_LOOPS)} (got {event_loop!r})",
            code="INVALID_BUNTIME_EVENT_LOOP",
        )
    return ServerConfig(host=resolved_host, port=resolved_port, plugin_dirs=dirs, event_loop=event_loop)
