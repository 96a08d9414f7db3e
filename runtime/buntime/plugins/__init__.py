"""The plugin host and the contract plugins implement (built-in plugins live in subpackages)."""

from ._errors import ApiError, ManifestError, PluginConfigError, PluginError, PluginInitError, PluginLoadError
from ._host import BUILTIN_DIR, LoadedPlugin, PluginHost, order_plugins, plugin_dirs
from ._manifest import Manifest, discover, load_manifest
from ._plugin import Plugin, PluginContext, ResponseHook
from ._reserved import ReservedPath, ReservedPaths, route_samples
from ._settings import SETTING_TYPES, Setting, Settings, parse_settings, resolve_settings, whole_number

__all__ = [
    "BUILTIN_DIR",
    "SETTING_TYPES",
    "ApiError",
    "LoadedPlugin",
    "Manifest",
    "ManifestError",
    "Plugin",
    "PluginConfigError",
    "PluginContext",
    "PluginError",
    "PluginHost",
    "PluginInitError",
    "PluginLoadError",
    "ReservedPath",
    "ReservedPaths",
    "ResponseHook",
    "Setting",
    "Settings",
    "discover",
    "load_manifest",
    "order_plugins",
    "parse_settings",
    "plugin_dirs",
    "resolve_settings",
    "route_samples",
    "whole_number",
]
