"""One ``tursodb --sync-server`` child per namespace: keep it running, create, destroy, lease.

The supervisor owns each namespace's child for its whole life; making and stopping one process
is ``_children``'s, and every path is ``_layout``'s:

* **Watch** - a keeper task per namespace spawns its child (``Children.spawn``) and awaits it; an
  unexpected exit is logged, counted and restarted with a capped exponential backoff
  (immediately if the child had been up a while). Requests that arrive meanwhile wait for it
  (``lease``) up to ``TURSO_STARTUP_TIMEOUT``.
* **Leases** - a request holds a reference on the child's port while it talks to it, and a port is
  only reused once its child has exited *and* every lease is returned, so a request can never land
  on another namespace's child that inherited the port. The lease hands out the child's
  ``WarmConnections`` (``_warm``), closed before the child is told to stop and when it exits.
* **One lock per name** covers spawn, restart, destroy and restore: 100 concurrent first requests
  start exactly one child, and a delete never races a respawn.
* **Stop** - every child in parallel: SIGTERM to its process group, SIGKILL after
  ``TURSO_SHUTDOWN_GRACE``.
* **Hung** - a child that leaves an exchange unanswered past ``TURSO_UPSTREAM_TIMEOUT`` (a
  statement that runs for hours: tursodb serves one connection at a time, so everyone else of the
  namespace waits behind it) is killed (``restart_hung``, SIGKILL) and restarted at once by its
  keeper on its data, counted and shown as any restart. Only the child the exchange was with, once:
  one already stopping (destroy, undo, shutdown) or replaced is left alone.
* **Startup** - the data directory's directories are created, leftover children of a crashed run
  are killed (they hold the database lock), then the earlier flat layout is migrated.
* **Destroy** - the child is stopped and the database files are moved to ``archive/``.
* **Undo** - an auto namespace whose first request did nothing (tursodb could not parse the
  pipeline or decode the pull) is removed without an archive, so a refused request leaves nothing behind.
  So is one an owned token provisioned (below), unless an admin create claimed it meanwhile.
* **Owned tokens** - a data request whose token carries an owner (``_auth``'s ``nsOwner``) creates
  its missing namespace explicit + locked with that owner, as an admin create with the owner would,
  and ``claim`` promotes an ``auto`` namespace with no owner (or that owner) it reaches the same
  way, data kept; a namespace already explicit or another owner's is left as it is.

Used by ``_app`` (lifecycle), ``_proxy``, ``_admin``, ``_backup`` and ``_gc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ._children import Child, Children
from ._config import LandlockMode, ServerConfig
from ._confine import Confinement, describe_unavailable
from ._errors import (
    ApiError,
    ChildStartError,
    InternalError,
    NamespaceLimitError,
    NamespaceNotFoundError,
    NotOwnedError,
    OwnerMismatchError,
    UnavailableError,
)
from ._layout import DataLayout, archive_stamp
from ._leases import LeaseTable
from ._logging import get_logger
from ._metrics import Metrics
from ._names import validate_name
from ._state import NamespaceRecord, Origin, StateStore, utcnow
from ._warm import WarmConnections

STABLE_AFTER = 10.0
BACKOFF_INITIAL = 0.25
SPAWN_CONCURRENCY = 8

log = get_logger("supervisor")


class ChildState(StrEnum):
    """Where a namespace's child is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ChildStatus:
    """A snapshot for views and metrics."""

    state: ChildState
    port: int | None = None
    pid: int | None = None
    restarts: int = 0


@dataclass(eq=False)
class _Slot:
    name: str
    state: ChildState = ChildState.STARTING
    child: Child | None = None
    keeper: asyncio.Task[None] | None = None
    retired: bool = False
    restarts: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    attempted: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs one tursodb child per stored namespace.

    Usage::

        supervisor = Supervisor(config, store, metrics, leases)
        await supervisor.start()                     # dirs, orphan cleanup
        await supervisor.restore()                   # every stored namespace, in parallel
        created = await supervisor.ensure("app", Origin.EXPLICIT, promote=True)
        async with supervisor.lease("app", provision=Origin.AUTO) as warm:
            sock = await warm.take()                 # a connection to 127.0.0.1:warm.port
        await supervisor.destroy("app")              # archive; 404 error when unknown
        await supervisor.stop()

    Parameters:

    * ``config`` - the server config (paths, ports, timeouts, limits).
    * ``store`` - the namespace registry, already loaded.
    * ``metrics`` - restart and start-failure counters.
    * ``leases`` - the write leases, forgotten with a namespace that is archived.
    """

    def __init__(self, config: ServerConfig, store: StateStore, metrics: Metrics, leases: LeaseTable) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._leases = leases
        self.layout = DataLayout(config.data_dir)
        self._children = Children(config, self.layout)
        self._slots: dict[str, _Slot] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: set[str] = set()
        # Created explicit by an owned token's request and not claimed by an admin create since:
        # still removable by undo_create when that first request turns out to have done nothing.
        self._provisioned: set[str] = set()
        self._spawn_gate = asyncio.Semaphore(SPAWN_CONCURRENCY)
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create our directories and kill children a crashed predecessor left behind."""
        await asyncio.to_thread(self.layout.prepare)
        await asyncio.to_thread(self._children.reclaim_orphans)
        await asyncio.to_thread(self.layout.migrate_flat_layout)
        await self.finish_interrupted_archives()
        if self.confinement.active:
            log.info("children confined with Landlock", extra={"landlockAbi": self.confinement.abi})
        elif self._config.child_landlock is LandlockMode.OFF:
            log.warning("children run unconfined (TURSO_CHILD_LANDLOCK=off)")
        else:
            log.warning(
                "children run unconfined: Landlock is unavailable",
                extra={"reason": describe_unavailable()},
            )
        if self._config.child_memory_limit:
            log.info("children memory-limited", extra={"rlimitData": self._config.child_memory_limit})

    async def finish_interrupted_archives(self) -> None:
        """Forget every stored namespace whose files a delete or GC archive moved without getting
        to forget it (killed, shut down or a state write failed in between): its data is whole in
        the archive, and a child on its missing directory would serve an empty database in its
        place. One without such an archive keeps its record; its spawns fail until an admin acts."""
        for record in list(self._store.records()):
            archive = await asyncio.to_thread(self.layout.interrupted_archive, record.name, record.created_at)
            if archive is not None:
                await self._store.remove(record.name)
                log.warning(
                    "namespace archived by a delete that did not finish: forgotten now",
                    extra={"namespace": record.name, "archive": str(archive)},
                )
            elif not self.layout.namespace_dir(record.name).exists():
                log.error(
                    "namespace directory missing and no archive of it: not served",
                    extra={"namespace": record.name},
                )

    def prepare_restore(self) -> list[str]:
        """Register a slot and keeper for every stored namespace (synchronous, so no request can
        slip in between); the keepers spawn in the background. Returns the names."""
        names = []
        for record in self._store.records():
            if record.name not in self._slots:
                self._start_keeper(self._new_slot(record.name))
                names.append(record.name)
        return names

    async def restore(self, names: list[str]) -> None:
        """Wait until every restored namespace had its first spawn attempt (success or not)."""
        slots = [self._slots[name] for name in names if name in self._slots]
        await asyncio.gather(*(slot.attempted.wait() for slot in slots))
        running = sum(1 for slot in slots if slot.state is ChildState.RUNNING)
        log.info("restore finished", extra={"namespaces": len(slots), "running": running})

    async def stop(self) -> None:
        """Stop every child in parallel (SIGTERM, then SIGKILL after the grace)."""
        self._closing = True
        slots = list(self._slots.values())
        self._slots.clear()
        await asyncio.gather(*(self._retire(slot) for slot in slots), return_exceptions=True)

    # --- queries -----------------------------------------------------------------------------------

    def lock(self, name: str) -> asyncio.Lock:
        """The per-name lock serialising spawn, restart, destroy and restore."""
        return self._locks.setdefault(name, asyncio.Lock())

    def status(self, name: str) -> ChildStatus:
        slot = self._slots.get(name)
        if slot is None:
            return ChildStatus(ChildState.STOPPED)
        child = slot.child
        if slot.state is ChildState.RUNNING and child is not None:
            return ChildStatus(slot.state, child.port, child.process.pid, slot.restarts)
        return ChildStatus(slot.state, restarts=slot.restarts)

    def state_counts(self) -> dict[str, int]:
        counts = dict.fromkeys((state.value for state in ChildState), 0)
        for record in self._store.records():
            counts[self.status(record.name).state.value] += 1
        return counts

    @property
    def confinement(self) -> Confinement:
        """Whether (and how) children are confined with Landlock."""
        return self._children.confinement

    def size_on_disk(self, name: str) -> int:
        """Bytes of ``<name>.db`` and its ``-wal``/``-shm``/... companions."""
        return self.layout.size_on_disk(name)

    # --- create / acquire --------------------------------------------------------------------------

    async def ensure(
        self,
        name: str,
        origin: Origin,
        *,
        create: bool = True,
        promote: bool = False,
        owner: str | None = None,
        adopt: bool = False,
        token_owner: str | None = None,
    ) -> bool:
        """Make sure ``name`` exists and has a child; ``True`` when it was created now.

        A new namespace's first spawn happens inline, so a start failure is the caller's error and
        leaves nothing behind. ``promote`` turns an existing auto namespace into a locked explicit
        one (``POST .../create``). ``create=False`` raises a 404 error for an unknown name.

        ``owner`` (an admin create's) is recorded on a new namespace. An existing one must have that
        owner already (:class:`OwnerMismatchError` when it has another), or none and ``adopt``, which
        records it (:class:`NotOwnedError` without ``adopt``). The check and the record happen under
        the name's lock, so of two creates with different owners exactly one wins, for good. A
        refused create changes nothing.

        ``token_owner`` (a data request's, from its token's owner claim) makes a new namespace
        explicit + locked with that owner whatever ``origin`` says, and promotes an existing one as
        :meth:`claim` does.
        """
        validate_name(name)
        async with self.lock(name):
            if self._closing:
                raise UnavailableError("server is shutting down", retry_after=5.0)
            # Decided on what the file holds: a lock or owner change still being written must not
            # make this create answer "already so" for what a kill -9 would then forget.
            await self._store.settled()
            record = self._store.get(name)
            if record is None:
                if not create:
                    raise NamespaceNotFoundError(f"namespace not found: {name}")
                if token_owner is None:
                    await self._create(name, origin, owner)
                else:
                    await self._create(name, Origin.EXPLICIT, token_owner)
                    self._provisioned.add(name)
                return True
            if token_owner is not None:
                await self._claim_locked(record, token_owner)
            if promote:
                self._provisioned.discard(name)  # an admin create: the namespace is its now
            claim = owner is not None and record.owner != owner
            if claim and record.owner is not None:
                raise OwnerMismatchError(f"namespace {name!r} belongs to owner {record.owner!r}")
            if claim and not adopt:
                raise NotOwnedError(
                    f'namespace {name!r} exists with no owner; send "adopt": true to claim it'
                )
            promoting = promote and (record.origin is not Origin.EXPLICIT or not record.locked)
            if promoting or claim:
                await self._store.update(name, _claimed(owner if claim else None, promote=promoting))
                if promoting:
                    log.info("namespace promoted to explicit", extra={"namespace": name})
                if claim:
                    log.info("ownerless namespace adopted", extra={"namespace": name, "owner": owner})
            if name not in self._slots:
                self._start_keeper(self._new_slot(name))
            return False

    async def claim(self, name: str, owner: str) -> None:
        """Promote ``name`` to explicit + locked with ``owner`` when it is an ``auto`` namespace
        with no owner or that owner (one left by an earlier version that an owned token reaches),
        its data kept; anything else (missing, explicit, another owner's) is left as it is."""
        record = self._store.get(name)
        if record is None or not _claimable(record, owner):
            return  # the common case: nothing to do, no lock taken
        async with self.lock(name):
            record = self._store.get(name)
            if record is not None:
                await self._claim_locked(record, owner)

    async def _claim_locked(self, record: NamespaceRecord, owner: str) -> None:
        if not _claimable(record, owner):
            return
        await self._store.update(record.name, _claimed(owner, promote=True))
        log.info(
            "auto namespace claimed by its token's owner", extra={"namespace": record.name, "owner": owner}
        )

    @contextlib.asynccontextmanager
    async def lease(
        self,
        name: str,
        *,
        provision: Origin | None = None,
        timeout: float | None = None,
        owner: str | None = None,
    ) -> AsyncIterator[WarmConnections]:
        """Hold ``name``'s child (its port) while talking to it; yields its connections.

        Waits (up to ``timeout``, default ``TURSO_STARTUP_TIMEOUT``) for a child that is starting
        or restarting; then :class:`UnavailableError` with a ``retry_after``. An unknown name is
        created with origin ``provision``, or is a 404 error when ``provision`` is ``None``; with
        ``owner`` (the request's token's), explicit + locked with that owner (see :meth:`ensure`).
        """
        deadline = time.monotonic() + (self._config.startup_timeout if timeout is None else timeout)
        warm = await self._running_child(name, provision, deadline, owner)
        self._children.ports.retain(warm.port)
        try:
            yield warm
        finally:
            self._children.ports.release(warm.port)

    async def _running_child(
        self, name: str, provision: Origin | None, deadline: float, owner: str | None = None
    ) -> WarmConnections:
        while True:
            slot = self._slots.get(name)
            if slot is None:
                await self.ensure(
                    name, provision or Origin.AUTO, create=provision is not None, token_owner=owner
                )
                continue
            child = slot.child
            if slot.state is ChildState.RUNNING and child is not None:
                return child.warm
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = slot.last_error or slot.state.value
                raise UnavailableError(
                    f"namespace {name!r} is not serving yet ({reason})",
                    retry_after=max(1.0, slot.retry_at - time.monotonic()),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.ready.wait(), remaining)

    async def _create(self, name: str, origin: Origin, owner: str | None = None) -> None:
        limit = self._config.max_namespaces
        if limit and len(self._store) + len(self._pending) >= limit:
            raise NamespaceLimitError(f"max namespaces reached ({limit})")
        self._pending.add(name)
        try:
            slot = self._new_slot(name)
            try:
                await self._spawn_into(slot, create=True)
            except BaseException:
                self._slots.pop(name, None)
                await asyncio.to_thread(self.layout.remove_namespace, name)
                raise
            now = utcnow()
            record = NamespaceRecord(
                name=name,
                origin=origin,
                created_at=now,
                last_access_at=now,
                locked=origin is Origin.EXPLICIT,
                owner=owner,
            )
            try:
                await self._store.add(record)
            except BaseException:
                if name in self._store:  # cancelled once the record was on disk: a namespace
                    _serving(slot)
                    self._start_keeper(slot)
                    raise
                # Not on disk, so not a namespace: a child serving it would take writes that the
                # next start forgets. Stopped and its directory removed, as if never created.
                self._slots.pop(name, None)
                await self._retire(slot)
                await asyncio.to_thread(self.layout.remove_namespace, name)
                raise
            _serving(slot)
            self._start_keeper(slot)
        finally:
            self._pending.discard(name)
        log.info("namespace created", extra={"namespace": name, "origin": origin.value})

    def restart_hung(self, name: str, warm: WarmConnections, *, waited: float) -> bool:
        """Kill ``name``'s child, whose connections ``warm`` are, for leaving an exchange unanswered
        for ``waited`` seconds (``TURSO_UPSTREAM_TIMEOUT``); its keeper restarts it. ``False`` (nothing
        done) when that child is not the slot's running one any more: it exited, was replaced, is
        being stopped for a destroy, undo or shutdown (the slot is retired, so it is never
        restarted), or was killed already by a request that waited as long.

        Synchronous: nothing can change the slot between the check and the signal.
        """
        slot = self._slots.get(name)
        child = slot.child if slot is not None and not slot.retired else None
        if child is None or child.warm is not warm or child.hung or child.process.returncode is not None:
            return False
        log.warning(
            "tursodb did not answer within the upstream timeout; killing it to restart",
            extra={"namespace": name, "pid": child.process.pid, "timeout": waited},
        )
        self._children.kill(child)
        return True

    # --- destroy -----------------------------------------------------------------------------------

    async def destroy(
        self, name: str, *, only_if: Callable[[NamespaceRecord], bool] | None = None
    ) -> Path | None:
        """Stop ``name``'s child, move its files to ``archive/<name>.<UTC stamp>/`` and forget its
        write lease (the admin delete and the GC both come here).

        Returns the archive directory, or ``None`` when ``only_if`` (re-checked under the lock, so
        the GC never archives a namespace that became busy meanwhile) says no.
        """
        validate_name(name)
        async with self.lock(name):
            record = self._store.get(name)
            if record is None:
                raise NamespaceNotFoundError(f"namespace not found: {name}")
            if only_if is not None and not only_if(record):
                return None
            slot = self._slots.pop(name, None)
            if slot is not None:
                await self._retire(slot)
            try:
                archive = await asyncio.to_thread(
                    self.layout.archive_namespace, name, archive_stamp(utcnow())
                )
            except OSError as exc:
                # Keep the record: the next request restarts the child on the untouched files.
                raise InternalError(f"archiving {name!r} failed: {exc}") from exc
            try:
                await self._store.remove(name)
            except Exception as exc:
                # Not forgotten on disk: the files go back, and the namespace serves as before (if
                # even that fails, the next start finishes the delete from the archive).
                await asyncio.to_thread(self.layout.unarchive_namespace, name, archive)
                raise InternalError(f"deleting {name!r} failed: {exc}") from exc
            self._provisioned.discard(name)
            # Whoever wrote last wrote to the archived files: a namespace created again under the
            # name starts with no lease and no last writer, so every replica pulls before it writes.
            self._leases.invalidate(name)
        log.info("namespace archived", extra={"namespace": name, "archive": str(archive)})
        return archive

    async def undo_create(self, name: str) -> bool:
        """Remove an auto namespace created for a request that did nothing (tursodb could not parse
        the pipeline or decode the pull): child stopped, directory deleted (nothing to archive),
        record and lease state gone, as if the request had been refused before it was created.

        The caller holds the namespace's implicit write lease since before it was created, so no
        write can have landed. ``False`` (nothing done) when the name is gone or is not ``auto``
        any more (an admin create made it explicit meanwhile). One an owned token's request created
        explicit is removed the same way until an admin create claims it.
        """
        async with self.lock(name):
            record = self._store.get(name)
            if record is None or (record.origin is not Origin.AUTO and name not in self._provisioned):
                return False
            self._provisioned.discard(name)
            slot = self._slots.pop(name, None)
            if slot is not None:
                await self._retire(slot)
            await asyncio.to_thread(self.layout.remove_namespace, name)
            await self._store.remove(name)
            self._leases.invalidate(name)
        log.info("namespace removed: its first request did nothing", extra={"namespace": name})
        return True

    # --- keeper ------------------------------------------------------------------------------------

    def _new_slot(self, name: str) -> _Slot:
        slot = _Slot(name)
        self._slots[name] = slot
        return slot

    def _start_keeper(self, slot: _Slot) -> None:
        slot.keeper = asyncio.create_task(self._keep(slot), name=f"keeper:{slot.name}")

    async def _keep(self, slot: _Slot) -> None:
        """Own one namespace's child: (re)spawn with backoff until the slot is retired."""
        backoff = 0.0
        while not slot.retired:
            if slot.child is None:
                if backoff:
                    slot.state = ChildState.BACKOFF
                    slot.retry_at = time.monotonic() + backoff
                    await asyncio.sleep(backoff)
                try:
                    async with self.lock(slot.name):
                        if slot.retired:
                            return
                        await self._spawn_into(slot)
                except Exception as exc:
                    slot.last_error = exc.detail if isinstance(exc, ApiError) else repr(exc)
                    slot.state = ChildState.BACKOFF
                    backoff = self._next_backoff(backoff)
                    log.warning(
                        "tursodb start failed; retrying",
                        extra={"namespace": slot.name, "error": slot.last_error, "retryIn": backoff},
                        exc_info=not isinstance(exc, ApiError),
                    )
                    continue
                finally:
                    slot.attempted.set()
            child = slot.child
            if child is None:  # pragma: no cover - _spawn_into either sets it or raises
                continue
            started = time.monotonic()
            returncode = await child.process.wait()
            await self._reap(slot, child)
            if slot.retired:
                return
            slot.restarts += 1
            self._metrics.child_restarts.labels(slot.name).inc()
            if child.hung:  # killed by restart_hung, which logged it: no crash loop to back off from
                backoff = 0.0
                continue
            backoff = 0.0 if time.monotonic() - started >= STABLE_AFTER else self._next_backoff(backoff)
            log.warning(
                "tursodb exited; restarting",
                extra={
                    "namespace": slot.name,
                    "returncode": returncode,
                    "lastStderr": child.last_error(),
                    "restartIn": backoff,
                },
            )

    def _next_backoff(self, current: float) -> float:
        return min(self._config.restart_backoff_max, max(BACKOFF_INITIAL, current * 2))

    async def _retire(self, slot: _Slot) -> None:
        slot.retired = True
        slot.ready.set()  # wake waiting requests; they look the name up again
        keeper = slot.keeper
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        child = slot.child
        if child is not None:
            await self._children.terminate(child, self._config.shutdown_grace)
            await self._reap(slot, child)
        slot.state = ChildState.STOPPED
        slot.attempted.set()

    # --- spawning ----------------------------------------------------------------------------------

    async def _spawn_into(self, slot: _Slot, *, create: bool = False) -> None:
        """Start a child for ``slot`` (caller holds the name's lock) and wait until it serves;
        ``create``: a new namespace, whose directory the spawn makes, and which requests reach
        only once its record is in the state file (:meth:`_create` marks the slot serving then)."""
        async with self._spawn_gate:
            slot.state = ChildState.STARTING
            try:
                child = await self._children.spawn(slot.name, create=create)
            except ChildStartError:
                self._metrics.child_start_failures.inc()
                raise
            slot.child = child
            if not create:
                _serving(slot)
            log.info(
                "namespace running",
                extra={"namespace": slot.name, "port": child.port, "pid": child.process.pid},
            )

    async def _reap(self, slot: _Slot, child: Child) -> None:
        """After ``child`` exited: free what it held, and take it off ``slot``."""
        await self._children.reap(child)
        if slot.child is child:
            slot.child = None
            slot.ready.clear()
            slot.state = ChildState.STOPPED if slot.retired else ChildState.BACKOFF


def _serving(slot: _Slot) -> None:
    """``slot``'s child takes requests from now on."""
    slot.state = ChildState.RUNNING
    slot.last_error = ""
    slot.ready.set()


def _claimable(record: NamespaceRecord, owner: str) -> bool:
    """An ``auto`` namespace with no owner, or ``owner`` already: what an owned token promotes."""
    return record.origin is Origin.AUTO and record.owner in (None, owner)


def _claimed(owner: str | None, *, promote: bool) -> Callable[[NamespaceRecord], None]:
    """The change an admin create makes to an existing record: promoted to explicit + locked
    (``promote``) and/or the ``owner`` recorded (not ``None``)."""

    def apply(record: NamespaceRecord) -> None:
        if promote:
            record.origin = Origin.EXPLICIT
            record.locked = True
        if owner is not None:
            record.owner = owner

    return apply
