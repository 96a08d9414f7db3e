"""buntime: the durable SQL layer of the Buntime runtime.

* :mod:`buntime.turso` — the Turso service (local / single-tenant sync / multi-tenant sync).
* :mod:`buntime.worker` — ``open_turso()`` for worker apps.
* :mod:`buntime.plugins` — the plugin host and the built-in plugins.

Every error any of them raises is a :class:`BuntimeError` (the tree: ``buntime/_errors.py``).
"""

from ._errors import BuntimeError

__version__ = "0.1.0"
__all__ = ["BuntimeError", "__version__"]
