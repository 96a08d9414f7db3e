"""buntime: the durable SQL layer of the Buntime runtime.

* :mod:`buntime.turso` — the Turso service (local / single-tenant sync / multi-tenant sync).
* :mod:`buntime.worker` — ``open_turso()`` for worker apps.
* :mod:`buntime.plugins` — the plugin host and the built-in plugins.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
