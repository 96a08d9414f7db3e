"""One ``tursodb --sync-server`` child per namespace: spawn, watch, restart, stop, archive.

The supervisor is the children's parent and owns their whole life:

* **Spawn** - ``tursodb <data_dir>/namespaces/<name>/<name>.db --sync-server 127.0.0.1:<port>`` on
  a port from ``TURSO_BACKEND_PORT_START..END`` (test-bound first), in its own process group, with
  our secrets stripped from its environment, its working directory and ``TMPDIR`` (``tmp/``, where
  tursodb puts sort and temp-table spills) inside its namespace directory, and confined there by
  Landlock (``_confine``: read-write in that directory only, its binary and the system libraries
  read-only, bind on its port only). Ready once an HTTP ``OPTIONS`` probe is answered (a bare TCP probe
  makes tursodb log "Invalid HTTP request" and accepts any foreign listener); a child that exits
  while we wait fails fast with its last stderr line, and a lost port race is retried on another.
* **Watch** - a keeper task per namespace awaits the child; an unexpected exit is logged, counted
  and restarted with a capped exponential backoff (immediately if the child had been up a while).
  Requests that arrive meanwhile wait for it (``lease``) up to ``TURSO_STARTUP_TIMEOUT``.
* **Leases** - a request holds a reference on the child's port while it talks to it, and a port is
  only reused once its child has exited *and* every lease is returned, so a request can never land
  on another namespace's child that inherited the port. The lease hands out the child's
  ``WarmConnections`` (``_warm``), closed before the child is told to stop and when it exits.
* **One lock per name** covers spawn, restart, destroy and restore: 100 concurrent first requests
  start exactly one child, and a delete never races a respawn.
* **Stop** - SIGTERM to the process group, SIGKILL after ``TURSO_SHUTDOWN_GRACE``; stdout and
  stderr are re-emitted as JSON log lines tagged ``src=tursodb.<name>``.
* **Orphans** - each child's pid is recorded in ``_state/run/<name>.pid``; after a crash of the
  server, startup kills leftover children (they hold the database lock) before restoring.
* **Layout** - each namespace owns ``namespaces/<name>/`` (database, companions, ``tmp/``,
  ``backups/``); startup moves the files of the earlier flat layout (``<data_dir>/<name>.db*``)
  into it, after the orphans are gone.

Used by ``_app`` (lifecycle), ``_proxy``, ``_admin``, ``_backup`` and ``_gc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from ._config import SETTINGS, Kind, LandlockMode, ServerConfig
from ._confine import Confinement, describe_unavailable
from ._errors import (
    ApiError,
    ChildStartError,
    InternalError,
    NamespaceLimitError,
    NamespaceNotFoundError,
    NoFreePortError,
    UnavailableError,
)
from ._logging import get_logger
from ._metrics import Metrics
from ._names import validate_name
from ._state import STATE_DIR_NAME, NamespaceRecord, Origin, StateStore, utcnow
from ._warm import WarmConnections

RUN_DIR_NAME = "run"
ARCHIVE_DIR_NAME = "archive"
NAMESPACES_DIR_NAME = "namespaces"
TMP_DIR_NAME = "tmp"
BACKUPS_DIR_NAME = "backups"
DB_SUFFIX = ".db"
ARCHIVE_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
LOOPBACK = "127.0.0.1"
PROBE_REQUEST = b"OPTIONS / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
PROBE_INTERVAL = 0.02
PROBE_TIMEOUT = 1.0
STABLE_AFTER = 10.0
BACKOFF_INITIAL = 0.25
SPAWN_CONCURRENCY = 8
PORT_ATTEMPTS = 3
STDERR_TAIL_LINES = 20
PIPE_LINE_LIMIT = 1 << 20
PUMP_DRAIN_TIMEOUT = 2.0
ORPHAN_KILL_TIMEOUT = 5.0
ADDRESS_IN_USE_MARKERS = ("address already in use", "os error 98")
SECRET_ENV = frozenset(setting.env for setting in SETTINGS if setting.kind is Kind.SECRET)
_TRACING_LEVEL = re.compile(r"^\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s")
_LOG_LEVELS = {"TRACE": 10, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40}

log = get_logger("supervisor")
child_log = get_logger("tursodb")


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


class PortPool:
    """Backend ports, handed out round-robin and reference-counted (child + in-flight leases)."""

    def __init__(self, start: int, end: int) -> None:
        self._start = start
        self._end = end
        self._next = start
        self._refs: dict[int, int] = {}

    def allocate(self) -> int:
        for _ in range(self._end - self._start + 1):
            port = self._next
            self._next = self._start if port >= self._end else port + 1
            if port not in self._refs and _bindable(port):
                self._refs[port] = 1
                return port
        raise NoFreePortError(
            f"no free backend port in {self._start}..{self._end} (TURSO_BACKEND_PORT_START..END)",
            retry_after=5.0,
        )

    def retain(self, port: int) -> None:
        self._refs[port] = self._refs.get(port, 0) + 1

    def release(self, port: int) -> None:
        remaining = self._refs.get(port, 0) - 1
        if remaining > 0:
            self._refs[port] = remaining
        else:
            self._refs.pop(port, None)


def _bindable(port: int) -> bool:
    # SO_REUSEADDR like tursodb's own listener, so TIME_WAIT leftovers do not hide a usable port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


@dataclass(eq=False)
class _Child:
    process: asyncio.subprocess.Process
    port: int
    warm: WarmConnections
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    reaped: bool = False

    def last_error(self) -> str:
        return self.stderr_tail[-1] if self.stderr_tail else "no output"


@dataclass(eq=False)
class _Slot:
    name: str
    state: ChildState = ChildState.STARTING
    child: _Child | None = None
    keeper: asyncio.Task[None] | None = None
    retired: bool = False
    restarts: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    attempted: asyncio.Event = field(default_factory=asyncio.Event)


class _EarlyExit(Exception):
    """The child exited before it listened."""


class Supervisor:
    """Runs one tursodb child per stored namespace.

    Usage::

        supervisor = Supervisor(config, store, metrics)
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
    """

    def __init__(self, config: ServerConfig, store: StateStore, metrics: Metrics) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._ports = PortPool(config.backend_port_start, config.backend_port_end)
        self._slots: dict[str, _Slot] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: set[str] = set()
        self._spawn_gate = asyncio.Semaphore(SPAWN_CONCURRENCY)
        self._closing = False
        self.data_dir = config.data_dir
        self.run_dir = config.data_dir / STATE_DIR_NAME / RUN_DIR_NAME
        self.archive_dir = config.data_dir / ARCHIVE_DIR_NAME
        self.namespaces_dir = config.data_dir / NAMESPACES_DIR_NAME
        self.confinement = Confinement.detect(
            config.tursodb_bin, enabled=config.child_landlock is not LandlockMode.OFF
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create our directories and kill children a crashed predecessor left behind."""
        await asyncio.to_thread(self._prepare_dirs)
        await asyncio.to_thread(self._reclaim_orphans)
        await asyncio.to_thread(self._migrate_flat_layout)
        if self.confinement.active:
            log.info("children confined with Landlock", extra={"landlockAbi": self.confinement.abi})
        elif self._config.child_landlock is LandlockMode.OFF:
            log.warning("children run unconfined (TURSO_CHILD_LANDLOCK=off)")
        else:
            log.warning(
                "children run unconfined: Landlock is unavailable",
                extra={"reason": describe_unavailable()},
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

    def size_on_disk(self, name: str) -> int:
        """Bytes of ``<name>.db`` and its ``-wal``/``-shm``/... companions."""
        total = 0
        for path in self._db_files(name):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    # --- create / acquire --------------------------------------------------------------------------

    async def ensure(self, name: str, origin: Origin, *, create: bool = True, promote: bool = False) -> bool:
        """Make sure ``name`` exists and has a child; ``True`` when it was created now.

        A new namespace's first spawn happens inline, so a start failure is the caller's error and
        leaves nothing behind. ``promote`` turns an existing auto namespace into a locked explicit
        one (``POST .../create``). ``create=False`` raises a 404 error for an unknown name.
        """
        validate_name(name)
        async with self.lock(name):
            if self._closing:
                raise UnavailableError("server is shutting down", retry_after=5.0)
            record = self._store.get(name)
            if record is None:
                if not create:
                    raise NamespaceNotFoundError(f"namespace not found: {name}")
                await self._create(name, origin)
                return True
            if promote and (record.origin is not Origin.EXPLICIT or not record.locked):
                await self._store.update(name, _promote)
                log.info("namespace promoted to explicit", extra={"namespace": name})
            if name not in self._slots:
                self._start_keeper(self._new_slot(name))
            return False

    @contextlib.asynccontextmanager
    async def lease(
        self, name: str, *, provision: Origin | None = None, timeout: float | None = None
    ) -> AsyncIterator[WarmConnections]:
        """Hold ``name``'s child (its port) while talking to it; yields its connections.

        Waits (up to ``timeout``, default ``TURSO_STARTUP_TIMEOUT``) for a child that is starting
        or restarting; then :class:`UnavailableError` with a ``retry_after``. An unknown name is
        created with origin ``provision``, or is a 404 error when ``provision`` is ``None``.
        """
        deadline = time.monotonic() + (self._config.startup_timeout if timeout is None else timeout)
        warm = await self._running_child(name, provision, deadline)
        self._ports.retain(warm.port)
        try:
            yield warm
        finally:
            self._ports.release(warm.port)

    async def _running_child(self, name: str, provision: Origin | None, deadline: float) -> WarmConnections:
        while True:
            slot = self._slots.get(name)
            if slot is None:
                await self.ensure(name, provision or Origin.AUTO, create=provision is not None)
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

    async def _create(self, name: str, origin: Origin) -> None:
        limit = self._config.max_namespaces
        if limit and len(self._store) + len(self._pending) >= limit:
            raise NamespaceLimitError(f"max namespaces reached ({limit})")
        self._pending.add(name)
        try:
            slot = self._new_slot(name)
            try:
                await self._spawn_into(slot)
            except BaseException:
                self._slots.pop(name, None)
                await asyncio.to_thread(shutil.rmtree, self.namespace_dir(name), True)
                raise
            now = utcnow()
            record = NamespaceRecord(
                name=name, origin=origin, created_at=now, last_access_at=now, locked=origin is Origin.EXPLICIT
            )
            await self._store.add(record)
            self._start_keeper(slot)
        finally:
            self._pending.discard(name)
        log.info("namespace created", extra={"namespace": name, "origin": origin.value})

    # --- destroy -----------------------------------------------------------------------------------

    async def destroy(
        self, name: str, *, only_if: Callable[[NamespaceRecord], bool] | None = None
    ) -> Path | None:
        """Stop ``name``'s child and move its files to ``archive/<name>.<UTC stamp>/``.

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
                archive = await asyncio.to_thread(self._archive_files, name)
            except OSError as exc:
                # Keep the record: the next request restarts the child on the untouched files.
                raise InternalError(f"archiving {name!r} failed: {exc}") from exc
            await self._store.remove(name)
        log.info("namespace archived", extra={"namespace": name, "archive": str(archive)})
        return archive

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
            await self._terminate(child, self._config.shutdown_grace)
            await self._reap(slot, child)
        slot.state = ChildState.STOPPED
        slot.attempted.set()

    # --- spawning ----------------------------------------------------------------------------------

    async def _spawn_into(self, slot: _Slot) -> None:
        """Start a child for ``slot`` (caller holds the name's lock) and wait until it serves."""
        async with self._spawn_gate:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                slot.state = ChildState.STARTING
                port = self._ports.allocate()
                try:
                    child = await self._launch(slot.name, port)
                except OSError as exc:
                    self._ports.release(port)
                    self._metrics.child_start_failures.inc()
                    raise ChildStartError(f"cannot start tursodb for {slot.name!r}: {exc}") from exc
                try:
                    await self._wait_listening(child)
                except _EarlyExit:
                    await self._reap(slot, child)
                    in_use = any(
                        m in line.lower() for line in child.stderr_tail for m in ADDRESS_IN_USE_MARKERS
                    )
                    if in_use and attempt < PORT_ATTEMPTS:
                        continue
                    self._metrics.child_start_failures.inc()
                    raise ChildStartError(
                        f"tursodb for {slot.name!r} exited with {child.process.returncode} while starting: "
                        f"{child.last_error()}"
                    ) from None
                except TimeoutError:
                    await self._terminate(child, 0.0)
                    await self._reap(slot, child)
                    self._metrics.child_start_failures.inc()
                    raise ChildStartError(
                        f"tursodb for {slot.name!r} did not listen on {port} within "
                        f"{self._config.startup_timeout:g}s"
                    ) from None
                except BaseException:
                    await self._terminate(child, 0.0)
                    await self._reap(slot, child)
                    raise
                slot.child = child
                slot.state = ChildState.RUNNING
                slot.last_error = ""
                slot.ready.set()
                log.info(
                    "namespace running",
                    extra={"namespace": slot.name, "port": port, "pid": child.process.pid},
                )
                return

    async def _launch(self, name: str, port: int) -> _Child:
        directory = await asyncio.to_thread(self._prepare_namespace_dir, name)
        env = {key: value for key, value in os.environ.items() if key not in SECRET_ENV}
        env["TMPDIR"] = str(directory / TMP_DIR_NAME)
        ruleset = None
        if self.confinement.active:
            ruleset = self.confinement.ruleset(writable=[directory], port=port)
        try:
            process = await asyncio.create_subprocess_exec(
                str(self._config.tursodb_bin),
                str(self._db_path(name)),
                "--sync-server",
                f"{LOOPBACK}:{port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                cwd=directory,
                env=env,
                limit=PIPE_LINE_LIMIT,
                preexec_fn=ruleset.preexec if ruleset is not None else None,
            )
        finally:
            if ruleset is not None:
                ruleset.close()
        child = _Child(process=process, port=port, warm=WarmConnections(LOOPBACK, port))
        if process.stdout is not None:
            child.pumps.append(asyncio.create_task(self._pump(name, process.stdout, child, is_stderr=False)))
        if process.stderr is not None:
            child.pumps.append(asyncio.create_task(self._pump(name, process.stderr, child, is_stderr=True)))
        self._write_pidfile(name, process.pid, port)
        return child

    async def _wait_listening(self, child: _Child) -> None:
        deadline = time.monotonic() + self._config.startup_timeout
        while True:
            if child.process.returncode is not None:
                raise _EarlyExit
            if await _http_probe(child.port):
                if child.process.returncode is not None:
                    raise _EarlyExit  # something else answered on that port
                return
            if time.monotonic() >= deadline:
                raise TimeoutError
            await asyncio.sleep(PROBE_INTERVAL)

    async def _pump(self, name: str, stream: asyncio.StreamReader, child: _Child, *, is_stderr: bool) -> None:
        """Re-emit one child stream as JSON log lines (a final partial line included)."""
        default_level = 30 if is_stderr else 20
        extra = {"src": f"tursodb.{name}", "namespace": name, "stream": "stderr" if is_stderr else "stdout"}
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the limit: take what is buffered
                raw = await stream.read(PIPE_LINE_LIMIT)
            if not raw:
                return
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not text:
                continue
            if is_stderr:
                child.stderr_tail.append(text)
            match = _TRACING_LEVEL.match(text)
            level = _LOG_LEVELS[match.group(1)] if match else default_level
            child_log.log(level, text, extra=extra)

    async def _terminate(self, child: _Child, grace: float) -> None:
        child.warm.close()  # an idle spare would keep tursodb waiting for a request, not for SIGTERM
        process = child.process
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _reap(self, slot: _Slot, child: _Child) -> None:
        """After ``child`` exited: drain its pipes, free its port and pidfile, update the slot."""
        child.warm.close()
        if not child.reaped:
            child.reaped = True
            self._ports.release(child.port)
            self._remove_pidfile(slot.name, child.process.pid)
            if child.pumps:
                _, pending = await asyncio.wait(child.pumps, timeout=PUMP_DRAIN_TIMEOUT)
                for task in pending:
                    task.cancel()
        if slot.child is child:
            slot.child = None
            slot.ready.clear()
            slot.state = ChildState.STOPPED if slot.retired else ChildState.BACKOFF

    # --- files -------------------------------------------------------------------------------------

    def namespace_dir(self, name: str) -> Path:
        """``namespaces/<name>/``: everything of one namespace, and all its child may write."""
        return self.namespaces_dir / name

    def backups_dir(self, name: str) -> Path:
        """Where the child writes snapshots (``VACUUM INTO``), inside its own directory."""
        return self.namespace_dir(name) / BACKUPS_DIR_NAME

    def _db_path(self, name: str) -> Path:
        return self.namespace_dir(name) / f"{name}{DB_SUFFIX}"

    def _db_files(self, name: str) -> list[Path]:
        main = self._db_path(name)
        companions = sorted(self.namespace_dir(name).glob(f"{name}{DB_SUFFIX}-*"))
        return [main, *companions] if main.exists() else companions

    def _prepare_dirs(self) -> None:
        for directory in (self.run_dir, self.archive_dir, self.namespaces_dir):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _prepare_namespace_dir(self, name: str) -> Path:
        """Create ``namespaces/<name>/`` with ``backups/`` and an empty ``tmp/`` (a dead child's
        spills are removed; the backups are the admin handler's, cleaned at startup)."""
        directory = self.namespace_dir(name)
        tmp = directory / TMP_DIR_NAME
        shutil.rmtree(tmp, ignore_errors=True)
        for path in (directory, tmp, directory / BACKUPS_DIR_NAME):
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        return directory

    def _migrate_flat_layout(self) -> None:
        """Move ``<data_dir>/<name>.db`` and its companions (the layout before per-namespace
        directories) into ``namespaces/<name>/``; a name whose directory already holds a database is
        left alone and logged."""
        for main in sorted(self.data_dir.glob(f"*{DB_SUFFIX}")):
            name = main.name[: -len(DB_SUFFIX)]
            try:
                validate_name(name)
            except ApiError:
                continue
            if self._db_path(name).exists():
                log.warning("flat-layout database left in place", extra={"namespace": name})
                continue
            directory = self.namespace_dir(name)
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            for path in [main, *sorted(self.data_dir.glob(f"{name}{DB_SUFFIX}-*"))]:
                os.replace(path, directory / path.name)
            log.info("namespace files moved into their directory", extra={"namespace": name})

    def _archive_files(self, name: str) -> Path:
        stamp = archive_stamp(utcnow())
        target = _unique_dir(self.archive_dir, f"{name}.{stamp}")
        for path in self._db_files(name):
            os.replace(path, target / path.name)
        shutil.rmtree(self.namespace_dir(name), ignore_errors=True)  # tmp/, backups/
        return target

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _write_pidfile(self, name: str, pid: int, port: int) -> None:
        # Tiny, no fsync: losing it in an OS crash only matters if the children survived, and they
        # do not survive an OS crash.
        info = {"pid": pid, "port": port, "db": str(self._db_path(name))}
        try:
            self._pidfile(name).write_text(json.dumps(info), encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write pidfile", extra={"namespace": name, "error": str(exc)})

    def _remove_pidfile(self, name: str, pid: int) -> None:
        path = self._pidfile(name)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
                path.unlink()

    def _reclaim_orphans(self) -> None:
        """Kill tursodb children left by a server that died without stopping them."""
        for pidfile in sorted(self.run_dir.glob("*.pid")):
            try:
                info = json.loads(pidfile.read_text(encoding="utf-8"))
                pid, db = int(info["pid"]), str(info["db"])
            except (OSError, ValueError, KeyError, TypeError):
                pidfile.unlink(missing_ok=True)
                continue
            if _is_tursodb_for(pid, db):
                log.warning("killing orphaned tursodb", extra={"pid": pid, "db": db})
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, ORPHAN_KILL_TIMEOUT)
            pidfile.unlink(missing_ok=True)


def _promote(record: NamespaceRecord) -> None:
    record.origin = Origin.EXPLICIT
    record.locked = True


def _unique_dir(parent: Path, base: str) -> Path:
    """``parent/base``, or ``base-2``, ``base-3``... when a same-second archive exists."""
    for index in range(1, 10_000):
        candidate = parent / (base if index == 1 else f"{base}-{index}")
        try:
            candidate.mkdir(mode=0o755)
        except FileExistsError:
            continue
        return candidate
    raise OSError(f"cannot find a free archive directory for {base}")


async def _http_probe(port: int) -> bool:
    """``True`` when an HTTP server answers ``OPTIONS /`` on ``127.0.0.1:port``."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(PROBE_REQUEST)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT)
        return status_line.startswith(b"HTTP/1.")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _is_tursodb_for(pid: int, db: str) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return db.encode() in args and b"--sync-server" in args


def _wait_gone(pid: int, timeout: float) -> None:
    """Poll until ``pid`` is gone or a zombie (a zombie holds no file locks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rpartition(")")[2].split()[:1] == ["Z"]:
            return
        time.sleep(0.02)


def archive_stamp(moment: datetime) -> str:
    """The UTC stamp used in archive directory names."""
    return moment.strftime(ARCHIVE_STAMP_FORMAT)
