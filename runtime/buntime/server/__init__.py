"""The runtime server (``buntime serve``): plugins over HTTP, health probes and metrics.

``build_app(env)`` starts the plugin host and returns the aiohttp app (tests drive it with
``aiohttp_client``); ``run_server()`` listens until SIGTERM/SIGINT and shuts down gracefully.
"""

from ._app import (
    HOST_KEY,
    LIVE_PATH,
    METRICS_PATH,
    READY_PATH,
    RUNTIME_PATHS,
    STATE_KEY,
    ServerState,
    assemble_app,
    build_app,
)
from ._config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ENV_EVENT_LOOP,
    ENV_HOST,
    ENV_PLUGIN_DIRS,
    ENV_PORT,
    EVENT_LOOPS,
    ServerConfig,
    ServerConfigError,
    load_server_config,
)
from ._deferred import PLUGIN_STARTING, RETRY_AFTER, DeferredMount
from ._metrics import ServerMetrics
from ._run import LISTENING_MESSAGE, loop_factory, run_server, serve

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ENV_EVENT_LOOP",
    "ENV_HOST",
    "ENV_PLUGIN_DIRS",
    "ENV_PORT",
    "EVENT_LOOPS",
    "HOST_KEY",
    "LISTENING_MESSAGE",
    "LIVE_PATH",
    "METRICS_PATH",
    "PLUGIN_STARTING",
    "READY_PATH",
    "RETRY_AFTER",
    "RUNTIME_PATHS",
    "STATE_KEY",
    "DeferredMount",
    "ServerConfig",
    "ServerConfigError",
    "ServerMetrics",
    "ServerState",
    "assemble_app",
    "build_app",
    "load_server_config",
    "loop_factory",
    "run_server",
    "serve",
]
