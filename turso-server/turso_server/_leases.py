"""Write leases: the point where writes from many replicas of one namespace are serialised.

tursodb's sync engine replays a replica's unpushed changes on top of whatever it pulls, so two
replicas that commit without seeing each other collide on rowids and the later push silently
replaces the earlier one. The fix is to let one replica at a time write: a replica takes the
namespace's lease, brings itself up to date (a pull, skipped when the last write on the namespace
was its own), commits, pushes, and gives the lease back (or keeps it while it has more to write).

A lease is ``(token, holder, fence, expiry)``. The *token* is a random secret; the replica sends
its pushes to ``/<ns>/-/lease/<token>/<rest>`` and :meth:`LeaseTable.use` refuses any request
whose token is not the namespace's current lease (``409 lease lost``): that is the fencing, so a
replica whose lease ran out while it was paused can never push over a newer holder's writes. A
request in flight *pins* its lease — it cannot expire under it — and every pinned request extends
the expiry by the lease's TTL, so a holder that just pushed has a whole TTL to learn the outcome.
*fence* counts grants per namespace (for logs and clients; tokens are what is checked).

Writes that arrive without a lease (``/v2/pipeline`` from a plain sync client or an upstream app)
wait for the lease to be free and run under an implicit one; they reset ``last_writer``, so every
lease holder pulls before its next write. Leases live in memory: after a restart every old token is
refused, which the runtime treats as "outcome unknown" for a push it had in flight.

An entry with nothing to remember (no live lease, no waiter, no last writer) is dropped as soon as
it goes idle, so names that were only asked about cost no memory; the ``_proxy`` grants only for
stored namespaces. Dropping it loses nothing a later grant needs: a new entry has no last writer,
so it answers ``fresh`` exactly as the dropped one would have, and every token of the dropped one
is refused (``409 lease lost``) like any other that is not current. Its ``fence`` starts again.
Used by ``_proxy``; nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ._config import LEASE_TTL_MAX, LEASE_TTL_MIN, LEASE_WAIT_MAX
from ._errors import LeaseBusyError, LeaseLostError

HOLDER_MAX_LENGTH = 128


@dataclass
class Lease:
    token: str
    holder: str
    fence: int
    ttl: float
    expires_at: float
    pinned: int = 0
    revoked: bool = False  # its namespace was archived: nothing more may go out under it

    def alive(self, now: float) -> bool:
        return self.pinned > 0 or now < self.expires_at


@dataclass
class Grant:
    """What :meth:`LeaseTable.acquire` hands back."""

    lease: Lease
    fresh: bool  # the last write on the namespace was made by this holder: no pull needed


@dataclass
class _Namespace:
    current: Lease | None = None
    fence: int = 0
    last_writer: str | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    queue: deque[object] = field(default_factory=deque)  # waiters, served first come first served
    invalidated: bool = False  # forgotten with its archived namespace: waiters ask again


class LeaseTable:
    """Every namespace's lease, in memory."""

    def __init__(self) -> None:
        self._namespaces: dict[str, _Namespace] = {}
        self._clock = time.monotonic

    @contextlib.asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[_Namespace]:
        """The namespace's entry (created when missing), holding its lock.

        An entry dropped while we waited for its lock is looked up again, so two callers never hold
        the leases of two entries for one name. One forgotten with its archived namespace is handed
        over as it is: :meth:`_wait_free` tells the caller to ask again.
        """
        while True:
            entry = self._namespaces.get(name)
            if entry is None:
                entry = self._namespaces[name] = _Namespace()
            async with entry.changed:
                if entry.invalidated or self._namespaces.get(name) is entry:
                    yield entry
                    return

    def _drop_if_idle(self, name: str, entry: _Namespace) -> None:
        """Forget ``entry`` (its lock held) when it holds no live lease, no waiter and no last writer."""
        if (
            self._namespaces.get(name) is entry
            and self._live(entry) is None
            and not entry.queue
            and entry.last_writer is None
        ):
            del self._namespaces[name]

    def __len__(self) -> int:
        """Namespaces the table holds an entry for (what it costs in memory)."""
        return len(self._namespaces)

    def _live(self, entry: _Namespace) -> Lease | None:
        lease = entry.current
        if lease is not None and not lease.alive(self._clock()):
            entry.current = lease = None
        return lease

    async def _wait_free(self, entry: _Namespace, deadline: float, holder: str | None) -> None:
        """Return, holding ``entry.changed``'s lock, once it is this caller's turn.

        That is: no other holder has a live lease and no one asked before us (first come, first
        served, so a replica that writes without pause cannot starve the others).
        """
        marker = object()
        entry.queue.append(marker)
        try:
            while True:
                if entry.invalidated:
                    raise LeaseBusyError("the namespace was archived meanwhile; ask again", retry_after=0.0)
                lease = self._live(entry)
                mine = holder is not None and lease is not None and lease.holder == holder
                free = lease is None or (mine and not lease.pinned)
                if free and entry.queue[0] is marker:
                    return
                now = self._clock()
                if now >= deadline:
                    raise LeaseBusyError(
                        "the write lease is held by another replica"
                        + (f" (fence {lease.fence})" if lease is not None else " (queue ahead)"),
                        retry_after=max(0.0, lease.expires_at - now) if lease is not None else 0.0,
                    )
                until = deadline
                if lease is not None and lease.pinned == 0:
                    until = min(deadline, lease.expires_at)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry.changed.wait(), timeout=max(0.001, until - now))
        finally:
            entry.queue.remove(marker)
            entry.changed.notify_all()

    async def acquire(self, name: str, holder: str, *, ttl: float, wait: float) -> Grant:
        """Grant ``holder`` the lease, waiting up to ``wait`` seconds for the current one to end.

        A holder that asks again while its own lease is live gets a new token (the old one is
        fenced off), which is what a replica that lost track of its token needs.
        """
        deadline = self._clock() + min(max(wait, 0.0), LEASE_WAIT_MAX)
        async with self._locked(name) as entry:
            try:
                await self._wait_free(entry, deadline, holder)
            except LeaseBusyError:
                self._drop_if_idle(name, entry)  # the lease it waited for may have run out meanwhile
                raise
            entry.fence += 1
            ttl = min(max(ttl, LEASE_TTL_MIN), LEASE_TTL_MAX)
            lease = Lease(secrets.token_urlsafe(18), holder, entry.fence, ttl, self._clock() + ttl)
            entry.current = lease
            return Grant(lease, fresh=entry.last_writer == holder)

    def _current(self, name: str, token: str) -> tuple[_Namespace, Lease]:
        entry = self._namespaces.get(name)
        lease = self._live(entry) if entry is not None else None
        if entry is None or lease is None or not secrets.compare_digest(lease.token, token):
            raise LeaseLostError("this write lease has expired or was replaced")
        return entry, lease

    def renew(self, name: str, token: str) -> Lease:
        _, lease = self._current(name, token)
        lease.expires_at = max(lease.expires_at, self._clock() + lease.ttl)
        return lease

    async def release(self, name: str, token: str) -> bool:
        """Give the lease back; ``False`` when it was not (or no longer) the current one."""
        entry = self._namespaces.get(name)
        if entry is None:
            return False
        async with entry.changed:
            lease = self._live(entry)
            if lease is None or not secrets.compare_digest(lease.token, token) or lease.pinned:
                return False
            entry.current = None
            entry.changed.notify_all()
            self._drop_if_idle(name, entry)
            return True

    @contextlib.asynccontextmanager
    async def use(self, name: str, token: str, *, write: bool) -> AsyncIterator[Lease]:
        """Pin the lease for one forwarded request.

        ``write`` makes the holder the last writer whatever the outcome: a request that failed
        after it was sent (no reply, a timeout, a cancelled exchange) may still have landed, so
        no other holder may skip its pull; the holder itself may (its replica holds everything
        the server has, plus that write, which its client re-pushes only past the server's
        cursor).
        """
        entry, lease = self._current(name, token)
        lease.pinned += 1
        try:
            yield lease
        finally:
            lease.pinned = max(0, lease.pinned - 1)
            lease.expires_at = max(lease.expires_at, self._clock() + lease.ttl)
            if write and entry.current is lease:
                entry.last_writer = lease.holder
            if lease.pinned == 0:
                async with entry.changed:
                    entry.changed.notify_all()

    @contextlib.asynccontextmanager
    async def implicit(self, name: str, *, wait: float) -> AsyncIterator[Lease]:
        """A write without a lease: wait until none is held and hold an anonymous one meanwhile."""
        deadline = self._clock() + min(max(wait, 0.0), LEASE_WAIT_MAX)
        async with self._locked(name) as entry:
            try:
                await self._wait_free(entry, deadline, None)
            except LeaseBusyError:
                self._drop_if_idle(name, entry)
                raise
            entry.fence += 1
            lease = Lease(
                secrets.token_urlsafe(18), "", entry.fence, LEASE_TTL_MAX, self._clock() + LEASE_TTL_MAX, 1
            )
            entry.current = lease
        try:
            yield lease
        finally:
            async with entry.changed:
                entry.last_writer = None
                if entry.current is lease:
                    entry.current = None
                entry.changed.notify_all()
                self._drop_if_idle(name, entry)

    def invalidate(self, name: str) -> None:
        """Forget the namespace's lease and last writer (it was archived: deleted or collected)."""
        entry = self._namespaces.pop(name, None)
        if entry is None:
            return
        entry.invalidated = True
        if entry.current is not None:
            entry.current.expires_at = 0.0
            entry.current.pinned = 0
            entry.current.revoked = True  # a request pinning it that has not gone out yet: 409

    def current(self, name: str) -> Lease | None:
        """The namespace's live lease, if any (the admin view: who holds up the writers)."""
        entry = self._namespaces.get(name)
        return self._live(entry) if entry is not None else None

    def view(self, name: str) -> dict[str, object] | None:
        """The admin view of the namespace's live lease: who holds up its writers, and how long.

        ``holder`` is what the replica sent (a runtime replica's ``<host>.<pid>.<random>``; ``""``
        for a push without a lease, run under an implicit one); ``inUse`` while a request runs
        under it; ``expiresIn`` the seconds left unless renewed. Never the token.
        """
        lease = self.current(name)
        if lease is None:
            return None
        return {
            "holder": lease.holder,
            "fence": lease.fence,
            "ttl": lease.ttl,
            "expiresIn": round(max(0.0, lease.expires_at - self._clock()), 3),
            "inUse": lease.pinned > 0,
        }
