"""Errors of the plugin host::

PluginError
├── ManifestError (ValueError)   a manifest cannot be read or is invalid
├── PluginLoadError              the entry point cannot be imported or built
└── PluginInitError              on_init failed or timed out
"""

from __future__ import annotations


class PluginError(Exception):
    """Root of the plugin host's errors."""


class ManifestError(PluginError, ValueError):
    """A manifest cannot be read or is invalid."""


class PluginLoadError(PluginError):
    """A plugin's entry point cannot be imported or its factory failed."""


class PluginInitError(PluginError):
    """A plugin's ``on_init`` raised or timed out."""
