"""The built-in ``@buntime/plugin-proxy``: static and dynamic rules that proxy or redirect."""

from ._config import ProxyConfig, ProxyConfigError, resolve_proxy_config
from ._forward import Forwarder
from ._plugin import PROXY_PLUGIN_NAME, ProxyPlugin, create
from ._proxy import Proxy
from ._rules import ProxyRule, RuleError, parse_rule
from ._store import NAMESPACE

__all__ = [
    "NAMESPACE",
    "PROXY_PLUGIN_NAME",
    "Forwarder",
    "Proxy",
    "ProxyConfig",
    "ProxyConfigError",
    "ProxyPlugin",
    "ProxyRule",
    "RuleError",
    "create",
    "parse_rule",
    "resolve_proxy_config",
]
