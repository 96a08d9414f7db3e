"""``TursoService``: the durable SQL service that plugins and worker apps use.

It picks its backends from the resolved config — one local MVCC file, one single-tenant
replica, or one replica per namespace against turso-server — and adds the transaction policy on
top: ``BEGIN CONCURRENT`` by default (``DEFERRED`` on replicas), retries of busy/conflict
errors with exponential backoff and jitter, and push after commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._backends import Backend, LocalBackend, PullListener, ReplicaBackend
from ._config import TursoConfig, resolve_config
from ._database import BlockingDatabase, Database, TransactionType
from ._errors import TursoClosedError, TursoConfigError, TursoError
from ._health import HealthStatus, NamespaceHealth, TursoHealth
from ._namespaces import DEFAULT_NAMESPACE, validate_namespace
from ._retry import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_DELAY, with_retries

log = logging.getLogger("buntime.turso")
T = TypeVar("T")

_TYPES = ("concurrent", "deferred", "immediate", "exclusive")
#: How long :meth:`TursoService.health` waits for a namespace's probe before it reports that
#: namespace ``degraded`` (busy): well under the chart's readiness timeout (3 s).
HEALTH_TIMEOUT = 1.0
_Probe = tuple[HealthStatus, str | None]


@dataclass
class _Opening:
    """An open in progress and how many callers wait for it."""

    task: asyncio.Task[Backend]
    waiters: int = 0


def _retrieve(task: asyncio.Task[Backend]) -> None:
    """Mark an open's error retrieved: its waiters got it, or every waiter had left."""
    if not task.cancelled():
        task.exception()


class TursoService:
    """The Turso service. Usage::

        service = TursoService(resolve_config())
        db = await service.connect("keyval")
        await service.transaction(lambda db: db.run("INSERT ..."), namespace="keyval")
        print((await service.health()).status)
        await service.aclose()

    Parameters:

    * **config** — a :class:`TursoConfig` from :func:`resolve_config`.
    """

    def __init__(self, config: TursoConfig) -> None:
        self.config = config
        self._backends: dict[str, Backend] = {}  # namespace -> backend (single-tenant: shared)
        self._opened: set[str] = set()  # every namespace used; several share one backend unless multi-tenant
        self._shared: Backend | None = None
        self._opening: dict[str, _Opening] = {}  # key -> the open in progress, shared by its callers
        self._discarded: dict[str, asyncio.Task[Backend]] = {}  # cancelled opens still closing
        self._listeners: list[PullListener] = []
        self._token = config.token_source()  # every replica of this service reads the token here
        self._closed = False
        self._probes: dict[str, asyncio.Task[_Probe]] = {}  # at most one probe in flight per backend
        self._health: asyncio.Task[TursoHealth] | None = None  # concurrent health() calls share one
        self._last_status: HealthStatus | None = None
        if config.ignored:
            log.warning(
                "Turso settings ignored in local mode (they apply to sync replicas only: set "
                "TURSO_SYNC_URL or TURSO_SERVER_URL, or unset them): %s",
                ", ".join(config.ignored),
            )

    @classmethod
    def from_env(cls, config: dict[str, Any] | None = None) -> TursoService:
        return cls(resolve_config(config))

    async def __aenter__(self) -> TursoService:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- namespaces and backends -----------------------------------------------------------
    def replica_path(self, namespace: str) -> str:
        """Multi-tenant replicas live beside ``local_path``: ``<dir>/<namespace>.db``."""
        if self.config.topology != "multi-tenant":
            return self.config.local_path
        return os.path.join(os.path.dirname(self.config.local_path) or ".", f"{namespace}.db")

    def sync_url(self, namespace: str) -> str | None:
        if self.config.server_url:
            return f"{self.config.server_url}/{namespace}"
        return self.config.sync_url

    async def _backend(self, namespace: str) -> Backend:
        if self._closed:
            raise TursoClosedError("the Turso service is closed")
        namespace = validate_namespace(namespace)
        key = namespace if self.config.topology == "multi-tenant" else ""
        if (backend := self._backends.get(key)) is None:
            backend = await self._join_open(key, namespace)
        self._opened.add(namespace)
        return backend

    async def _join_open(self, key: str, namespace: str) -> Backend:
        """Wait for the open of ``key``, started here or by a concurrent caller.

        The open runs as a task of its own: a caller cancelled while it waits leaves it to the
        others; only when every waiter is gone is the open cancelled (it then closes what it
        opened, and the next open of the file waits for that). A failure is not cached.
        """
        opening = self._opening.get(key)
        if opening is None:
            previous = self._discarded.get(key)
            task = asyncio.get_running_loop().create_task(
                self._open_once(key, namespace, previous), name=f"turso-open:{key or DEFAULT_NAMESPACE}"
            )
            task.add_done_callback(_retrieve)
            opening = self._opening[key] = _Opening(task)
        opening.waiters += 1
        try:
            return await asyncio.shield(opening.task)
        finally:
            opening.waiters -= 1
            if opening.waiters == 0 and not opening.task.done():  # every waiter was cancelled
                del self._opening[key]
                self._discarded[key] = opening.task
                opening.task.cancel()

    async def _open_once(self, key: str, namespace: str, previous: asyncio.Task[Backend] | None) -> Backend:
        me = asyncio.current_task()
        try:
            if previous is not None:  # a cancelled open of this file first closes what it opened
                await asyncio.wait([previous])
            backend = await self._open(namespace)
            self._backends[key] = backend  # closed by aclose() when it is closing meanwhile
            if self._closed:
                raise TursoClosedError("the Turso service was closed while opening")
            return backend
        finally:
            if (opening := self._opening.get(key)) is not None and opening.task is me:
                del self._opening[key]
            if self._discarded.get(key) is me:
                del self._discarded[key]

    async def _open(self, namespace: str) -> Backend:
        cfg = self.config
        if cfg.topology == "local":
            return await LocalBackend.open(cfg.local_path, cfg.executor)
        url = self.sync_url(namespace)
        assert url is not None
        replica = await ReplicaBackend.open(
            self.replica_path(namespace), url, self._token, self._listeners, cfg.write_policy
        )
        try:  # learn at once whether we are online; offline is degraded, not fatal
            await replica.sync()
        except TursoError as exc:
            log.warning("Turso replica %s opened offline: %s", replica.path, exc)
        except BaseException:  # cancelled: close the replica again, leave no thread behind
            await replica._discard()
            raise
        replica.start_background_sync(cfg.sync_interval)
        return replica

    # -- public API --------------------------------------------------------------------------
    async def connect(self, namespace: str = DEFAULT_NAMESPACE) -> Database:
        """An autocommit :class:`Database` for ``namespace`` (opened on first use)."""
        backend = await self._backend(namespace)
        return backend.database(namespace)

    async def transaction(
        self,
        fn: Callable[[Database], Awaitable[T]],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        type: TransactionType = "concurrent",
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay: float = DEFAULT_RETRY_DELAY,
    ) -> T:
        """Run ``fn(db)`` in a transaction and return its result.

        Busy/conflict errors (at ``BEGIN``, in a statement or at ``COMMIT``) roll back and re-run
        ``fn`` up to ``max_retries`` times, so ``fn`` must be safe to repeat. Other errors roll
        back and propagate at once. On replicas ``concurrent`` runs as ``deferred`` (CDC forbids
        MVCC). In serializable sync mode it returns once the commit's push landed, and a push
        that fails raises (docs/consistency.md); in offline mode the commit is acknowledged
        locally and a failed push is retried in the background.
        """
        backend, effective = await self._prepare(namespace, type, max_retries, retry_delay)

        async def attempt() -> T:
            return await backend.transaction(effective, namespace, fn)

        return await with_retries(attempt, max_retries, retry_delay)

    async def run_transaction(
        self,
        fn: Callable[[BlockingDatabase], T],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        type: TransactionType = "concurrent",
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay: float = DEFAULT_RETRY_DELAY,
    ) -> T:
        """Like :meth:`transaction`, for a *blocking* callback run on the engine thread.

        ``BEGIN``, ``fn(db)`` and ``COMMIT`` travel in one thread hop instead of one per
        statement, which is what short pure-SQL transactions (a keyval set, a counter bump)
        want. ``fn`` must not touch the event loop; retries and push-after-commit are the same.
        Cancelling the caller does not interrupt a callback already on the engine thread: it
        commits or rolls back on its own, like a statement sent to a database server.
        """
        backend, effective = await self._prepare(namespace, type, max_retries, retry_delay)

        async def attempt() -> T:
            return await backend.run_transaction(effective, namespace, fn)

        return await with_retries(attempt, max_retries, retry_delay)

    async def _prepare(
        self, namespace: str, type: TransactionType, max_retries: int, retry_delay: float
    ) -> tuple[Backend, TransactionType]:
        if type not in _TYPES:
            raise TursoConfigError(
                f"transaction type must be one of {', '.join(_TYPES)} (got {type!r})",
                code="INVALID_TURSO_TRANSACTION_TYPE",
            )
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise TursoConfigError("max_retries must be a non-negative integer", code="INVALID_TURSO_RETRY")
        if not isinstance(retry_delay, int | float) or retry_delay < 0:
            raise TursoConfigError("retry_delay must be a non-negative number", code="INVALID_TURSO_RETRY")
        backend = await self._backend(namespace)
        effective: TransactionType = "deferred" if backend.is_replica and type == "concurrent" else type
        return backend, effective

    def add_pull_listener(self, listener: PullListener) -> None:
        """Call ``await listener(replica_path)`` after a background pull brought changes."""
        self._listeners.append(listener)

    def remove_pull_listener(self, listener: PullListener) -> None:
        """Stop calling ``listener`` (a no-op when it is not registered)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def sync(self, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Pull now (offline mode pushes pending changes first); ``False`` in local mode."""
        backend = await self._backend(namespace)
        return await backend.sync() if isinstance(backend, ReplicaBackend) else False

    @property
    def namespaces(self) -> list[str]:
        return [ns for ns in self._backends if ns]

    async def health(self) -> TursoHealth:
        """Probe every opened backend (never opens one) and report per-namespace state.

        Answers within about :data:`HEALTH_TIMEOUT`: a replica is probed without its write gate
        (a sync holds it across network calls, a write while it waits for the lease), through
        one engine call that reads its sync stats and, when no pull, push or lease request told it
        for ``REACH_AGE`` (5 s) whether turso-server answers, one request to the server bounded at
        ``REACH_TIMEOUT`` (0.5 s; ``ReplicaBackend.reach``); a probe that has not answered in time leaves
        that namespace ``degraded`` (busy) and is reused by the next call instead of queueing
        another. Concurrent calls share one report.

        ``namespaces`` lists every namespace this process opened; in local and single-tenant
        mode they share one file, so they share one entry. The rule (:class:`TursoHealth`):
        ``down`` when nothing is open or no namespace serves, ``degraded`` when one is degraded
        or down while another serves, else ``ok``; ``usable`` is ``status != "down"``.
        """
        if self._health is None or self._health.done():
            self._health = asyncio.get_running_loop().create_task(self._report(), name="turso-health")
        return await asyncio.shield(self._health)

    async def _probe(self, backend: Backend) -> _Probe:
        try:
            if isinstance(backend, ReplicaBackend):
                # The engine thread only, never the write gate; beside it, when nothing else talked
                # to the server lately, one bounded request to it (ReplicaBackend.reach).
                status, _ = await asyncio.gather(backend.stats(), backend.reach())
                if status.last_error is not None:
                    if backend.reads_wait_for_reset and backend.unanswered:  # no read works now
                        return "down", (
                            "reads wait for a reset after a commit whose outcome is unknown: "
                            f"{status.last_error}"
                        )
                    return "degraded", status.last_error
            else:
                await backend.probe()
        except TursoError as exc:
            return "down", str(exc)
        return "ok", None

    async def _report(self) -> TursoHealth:
        cfg = self.config
        backends = list(self._backends.items())
        probes: dict[str, asyncio.Task[_Probe]] = {}
        for key, backend in backends:
            probe = self._probes.get(key)
            if probe is None or probe.done() or probe.get_loop() is not asyncio.get_running_loop():
                probe = self._probes[key] = asyncio.get_running_loop().create_task(self._probe(backend))
            probes[key] = probe
        if probes:
            await asyncio.wait(probes.values(), timeout=HEALTH_TIMEOUT)
        namespaces: dict[str, NamespaceHealth] = {}
        errors: dict[str, None] = {}  # ordered, each once
        states: list[HealthStatus] = []
        for key, backend in backends:
            names = [key] if key else sorted(self._opened) or [DEFAULT_NAMESPACE]
            probe = probes[key]
            state: HealthStatus
            error: str | None
            if not probe.done():
                state, error = "degraded", f"busy: no answer within {HEALTH_TIMEOUT:g}s (a sync holds it)"
            elif probe.cancelled() or probe.exception() is not None:
                state, error = (
                    "down",
                    f"probe failed: {probe.exception() if not probe.cancelled() else 'cancelled'!r}",
                )
            else:
                state, error = probe.result()
            states.append(state)
            if error is not None:
                errors[f"{key or ','.join(names)}: {error}"] = None
            entry = NamespaceHealth(replica_path=backend.path, status=state, error=error)
            if isinstance(backend, ReplicaBackend):
                status = backend.status  # what the probe just read, or the last one that answered
                entry = NamespaceHealth(
                    replica_path=backend.path,
                    status=state,
                    error=error,
                    sync_url=backend.url,
                    last_push=status.last_push,
                    last_pull=status.last_pull,
                    revision=status.revision,
                    pending_operations=status.pending_operations,
                    last_sync_error=status.last_error,
                )
            for name in names:
                namespaces[name] = entry
        connected = any(state != "down" for state in states)
        status_word: HealthStatus = (
            "down" if not connected else "ok" if all(state == "ok" for state in states) else "degraded"
        )
        error_text = "; ".join(errors) or (None if backends else "no database opened yet")
        if status_word != self._last_status and self._last_status is not None:  # details, once
            level = logging.INFO if status_word == "ok" else logging.WARNING
            log.log(level, "Turso health %s -> %s: %s", self._last_status, status_word, error_text or "ok")
        self._last_status = status_word
        return TursoHealth(
            ok=status_word == "ok",
            usable=status_word != "down",
            status=status_word,
            connected=connected,
            mode=cfg.mode,
            topology=cfg.topology,
            local_path=cfg.local_path,
            executor=cfg.executor,
            namespaces=namespaces,
            error=error_text,
        )

    async def aclose(self) -> None:
        """Wait for pushes in flight (offline replicas push what is pending), then close everything.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        unfinished = [t for t in (*self._probes.values(), self._health) if t is not None and not t.done()]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        opens = [opening.task for opening in self._opening.values()] + list(self._discarded.values())
        if opens:  # an open finishing now registers its backend (closed below); a failed one closed its own
            await asyncio.wait(opens)
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            try:
                await backend.aclose()
            except Exception:
                log.exception("Turso backend close failed: %s", backend.path)
