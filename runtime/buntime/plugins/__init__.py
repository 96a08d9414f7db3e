"""The plugin host and the contract plugins implement (built-in plugins live in subpackages)."""

from ._errors import ManifestError, PluginError, PluginInitError, PluginLoadError
from ._host import BUILTIN_DIR, LoadedPlugin, PluginHost, order_plugins, plugin_dirs
from ._manifest import Manifest, discover, load_manifest
from ._plugin import Plugin, PluginContext, ResponseHook
from ._reserved import ReservedPath, ReservedPaths, route_samples

__all__ = [
    "BUILTIN_DIR",
    "LoadedPlugin",
    "Manifest",
    "ManifestError",
    "Plugin",
    "PluginContext",
    "PluginError",
    "PluginHost",
    "PluginInitError",
    "PluginLoadError",
    "ReservedPath",
    "ReservedPaths",
    "ResponseHook",
    "discover",
    "load_manifest",
    "order_plugins",
    "plugin_dirs",
    "route_samples",
]
