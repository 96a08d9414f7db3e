"""The built-in ``@buntime/plugin-gateway``: request counters, metrics history, shell excludes."""

from ._config import GatewayConfig, GatewayConfigError, resolve_gateway_config
from ._gateway import Gateway, RequestCounters
from ._plugin import GATEWAY_PLUGIN_NAME, GatewayPlugin, create
from ._store import NAMESPACE, MetricsSnapshot

__all__ = [
    "GATEWAY_PLUGIN_NAME",
    "NAMESPACE",
    "Gateway",
    "GatewayConfig",
    "GatewayConfigError",
    "GatewayPlugin",
    "MetricsSnapshot",
    "RequestCounters",
    "create",
    "resolve_gateway_config",
]
