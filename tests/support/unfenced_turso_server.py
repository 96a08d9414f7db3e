"""turso-server with its push fence taken out, for the history checker's self-test.

Run as a script (``python -P tests/support/unfenced_turso_server.py``, so that ``tests/support``
does not shadow the standard library) it is the real turso-server with one change:
a request under a lease token that is no longer the namespace's current lease is forwarded
anyway (without pinning anything), instead of ``409 lease lost``. Renewals are still refused, so
the runtime behaves as it would against a real server. A pod thawed in the middle of a push then
writes over what other pods wrote meanwhile, and the checker has to report it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from turso_server import _leases
from turso_server.cli import main

_fenced_use = _leases.LeaseTable.use


@contextlib.asynccontextmanager
async def _unfenced_use(
    self: _leases.LeaseTable, name: str, token: str, *, write: bool
) -> AsyncIterator[_leases.Lease | None]:
    current = self.current(name)
    if current is None or current.token != token:
        yield None  # the stale token goes through: what a server without the fence would do
        return
    async with _fenced_use(self, name, token, write=write) as lease:
        yield lease


_leases.LeaseTable.use = _unfenced_use  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    main()
