"""The namespace registry and its file, ``<data_dir>/_state/namespaces.json``.

The file is what lets a restarted server bring every namespace back, so it is written atomically
(unique tmp file, fsync, ``os.replace``, fsync of the directory) and awaited on every lifecycle
change (add, remove, lock, TTL, promote) before the HTTP answer goes out. Last-access bumps happen
on every proxied request and only mark the store dirty; :meth:`StateStore.run_flusher` persists
them on a debounce and :meth:`StateStore.close` at shutdown. Writes run in a worker thread and are
serialised (a change is made and written under one lock, and a cancelled caller waits for its
write's thread before the lock goes to the next one), so the event loop never blocks on disk and
the file never goes back to an older snapshot. The format is upstream's version 1 (camelCase
records, port and pid never stored), so a Go wrapper's state file loads as is; a newer version is
refused rather than misread. Owned by the data app's lifecycle (``_app``); used by ``_supervisor``,
``_admin``, ``_proxy`` and ``_gc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from ._errors import NamespaceNotFoundError, StateError
from ._layout import DataLayout
from ._logging import get_logger
from ._names import MAX_OWNER_LENGTH, is_valid_name, is_valid_owner

STATE_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
_TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})"
)

log = get_logger("state")


class Origin(StrEnum):
    """How a namespace came to exist."""

    AUTO = "auto"
    EXPLICIT = "explicit"


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    """Parse RFC 3339 (ours, or Go's nanosecond ``RFC3339Nano``) into an aware UTC datetime."""
    match = _TIMESTAMP.fullmatch(text)  # not match + $: that accepts a trailing newline
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    base, fraction, zone = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{base}.{micros}{zone}").astimezone(UTC)


@dataclass
class NamespaceRecord:
    """What is persisted about a namespace. ``ttl`` is the text the client sent (``30d``).

    ``token_generation`` counts revocations of the namespace's tokens: a single-namespace token
    carries the generation it was minted in, and verifies only while it is still this one. It is
    stored as ``tokenGeneration`` only once it is above 0, so a file of a server without it (or an
    upstream one) loads with 0, and a namespace never revoked is written as upstream writes it.

    ``owner`` is who the namespace belongs to: an opaque string an admin ``create`` gave (the
    operator sends the Kubernetes namespace of the TursoNamespace). It is written only when set, so
    an earlier file loads with no owner; only ``create`` (adopting an ownerless namespace), a data
    request whose token carries an owner (recording it on an ownerless auto namespace it creates or
    reaches, see ``_supervisor``) and the admin ``owner`` route change it.
    """

    name: str
    origin: Origin
    created_at: datetime
    last_access_at: datetime
    locked: bool
    ttl: str | None = None
    token_generation: int = 0
    owner: str | None = None

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "name": self.name,
            "origin": self.origin.value,
            "createdAt": format_timestamp(self.created_at),
            "lastAccessAt": format_timestamp(self.last_access_at),
            "locked": self.locked,
        }
        if self.ttl:
            payload["ttl"] = self.ttl
        if self.token_generation:
            payload["tokenGeneration"] = self.token_generation
        if self.owner is not None:
            payload["owner"] = self.owner
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> NamespaceRecord:
        created = parse_timestamp(str(payload["createdAt"]))
        last = payload.get("lastAccessAt")
        return cls(
            name=str(payload["name"]),
            origin=Origin(payload.get("origin", Origin.EXPLICIT)),
            created_at=created,
            last_access_at=parse_timestamp(str(last)) if last else created,
            locked=bool(payload.get("locked", False)),
            ttl=str(payload["ttl"]) if payload.get("ttl") else None,
            token_generation=_token_generation(payload.get("tokenGeneration", 0)),
            owner=_owner(payload.get("owner")),
        )

    @property
    def incarnation(self) -> str:
        """Which namespace of this name it is: its ``createdAt`` text, what a single-namespace token
        is bound to (claim ``nsCreatedAt``). A re-created namespace has a new one."""
        return format_timestamp(self.created_at)

    def copy(self) -> NamespaceRecord:
        return dataclasses.replace(self)


def _token_generation(value: object) -> int:
    """A stored ``tokenGeneration``: a whole number from 0 (``ValueError`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"tokenGeneration must be a whole number from 0, not {value!r}")
    return value


def _owner(value: object) -> str | None:
    """A stored ``owner``: absent or a valid owner string (``ValueError`` otherwise)."""
    if value is None:
        return None
    if not isinstance(value, str) or not is_valid_owner(value):
        raise ValueError(f"owner must be 1-{MAX_OWNER_LENGTH} visible ASCII characters, not {value!r}")
    return value


class StateStore:
    """The in-memory registry of namespaces, persisted to ``_state/namespaces.json``.

    Usage::

        store = StateStore(data_dir, flush_interval=10.0)
        store.load()                       # at startup; StateError on a corrupt or newer file
        await store.add(record)            # persisted before it returns
        store.touch("app")                 # memory only; the flusher writes it later
        await store.close()                # final flush

    Parameters:

    * ``data_dir`` - the server's data directory; the file lives in ``_state/`` under it.
    * ``flush_interval`` - debounce for last-access bumps, in seconds.
    """

    def __init__(self, data_dir: Path, *, flush_interval: float) -> None:
        layout = DataLayout(data_dir)
        self.state_dir = layout.state_dir
        self.path = layout.state_file
        self._flush_interval = flush_interval
        self._records: dict[str, NamespaceRecord] = {}
        self._generation = 0
        self._saved_generation = 0
        self._write_lock = asyncio.Lock()
        self._touched = asyncio.Event()

    # --- reading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the file (a missing file is an empty registry). Blocking: call before serving."""
        self.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"{self.path} is not valid JSON ({exc}); fix or move it aside") from exc
        if not isinstance(document, dict):
            raise StateError(f"{self.path} must hold a JSON object")
        version = document.get("version", STATE_VERSION)
        if version not in SUPPORTED_VERSIONS:
            raise StateError(
                f"{self.path} has version {version!r}; this server reads {sorted(SUPPORTED_VERSIONS)}"
            )
        for entry in document.get("namespaces") or []:
            try:
                record = NamespaceRecord.from_json(entry)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning(
                    "skipping unreadable state entry", extra={"entry": repr(entry)[:200], "error": str(exc)}
                )
                continue
            if not is_valid_name(record.name):
                # A hand-edited name must never turn into a path under the data dir.
                log.warning(
                    "skipping state entry with an invalid name", extra={"namespace": record.name[:80]}
                )
                continue
            self._records[record.name] = record

    def get(self, name: str) -> NamespaceRecord | None:
        """A copy of the record, or ``None``."""
        record = self._records.get(name)
        return record.copy() if record else None

    def token_binding(self, name: str) -> tuple[str, int] | None:
        """What a single-namespace token of ``name`` must carry to verify now: the stored
        namespace's :attr:`NamespaceRecord.incarnation` and its ``token_generation``; ``None``
        when there is no such namespace."""
        record = self._records.get(name)
        return (record.incarnation, record.token_generation) if record else None

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[NamespaceRecord]:
        """Copies of every record, sorted by name."""
        return [self._records[name].copy() for name in sorted(self._records)]

    # --- lifecycle changes (persisted before returning) -------------------------------------------

    # Each change is made and written under the write lock, one at a time, so no two interleave and
    # a failed write takes back exactly its own change (in memory too, so what the server acts on is
    # what the next start reads). A cancelled caller: one still waiting for the lock changes
    # nothing; once the change is made, the cancellation waits for its write to end (kept when it
    # landed, taken back when it failed) and is raised then, so memory and file never disagree.

    async def add(self, record: NamespaceRecord) -> None:
        stored = record.copy()

        def change() -> Callable[[], None]:
            before = self._records.get(record.name)
            self._records[record.name] = stored

            def undo() -> None:
                self._put_back(record.name, before, touched=stored)

            return undo

        await self._commit(change)

    async def remove(self, name: str) -> bool:
        removed = False

        def change() -> Callable[[], None] | None:
            nonlocal removed
            before = self._records.pop(name, None)
            if before is None:
                return None
            removed = True

            def undo() -> None:
                self._put_back(name, before)

            return undo

        await self._commit(change)
        return removed

    async def update(self, name: str, mutate: Callable[[NamespaceRecord], None]) -> NamespaceRecord:
        """Apply ``mutate`` to the stored record and persist; 404 error when ``name`` is unknown.

        ``mutate`` runs on a copy once the write lock is held, so what it checks (it may raise to
        refuse, changing nothing) is what it changes, and what is returned is what was written."""
        updated: NamespaceRecord | None = None

        def change() -> Callable[[], None]:
            nonlocal updated
            before = self._records.get(name)
            if before is None:
                raise NamespaceNotFoundError(f"namespace not found: {name}")
            updated = before.copy()
            mutate(updated)
            self._records[name] = updated
            written = updated

            def undo() -> None:
                self._put_back(name, before, touched=written)

            return undo

        await self._commit(change)
        assert updated is not None
        return updated.copy()

    def _put_back(
        self, name: str, record: NamespaceRecord | None, *, touched: NamespaceRecord | None = None
    ) -> None:
        """Undo a change whose write failed: ``record`` (``None``: absent) is stored again, with
        a last-access bump that :meth:`touch` made on ``touched`` during the write kept."""
        if record is None:
            self._records.pop(name, None)
            return
        current = self._records.get(name)
        if touched is not None and current is touched and touched.last_access_at > record.last_access_at:
            record.last_access_at = touched.last_access_at
        self._records[name] = record

    async def _commit(self, change: Callable[[], Callable[[], None] | None]) -> None:
        """Make ``change`` (synchronous; returns its undo, ``None`` when there was nothing to change;
        may raise to change nothing) and write the file, all under the write lock; a failed write
        undoes it and is raised."""
        async with self._write_lock:
            undo = change()
            if undo is None:
                return
            self._generation += 1
            error, cancelled = await self._write_locked()
            if error is not None:
                undo()
                self._generation += 1
                # The failed write may have replaced the file before failing (a directory fsync):
                # write what memory holds again now, else the flusher retries it.
                again, cancelled_again = await self._write_locked()
                if again is not None:
                    self._touched.set()
                cancelled = cancelled or cancelled_again
            if cancelled is not None:
                raise cancelled
            if error is not None:
                raise error

    async def settled(self) -> None:
        """Return once no change is being written: until the caller next awaits, what memory holds
        is what the file holds (last-access bumps aside), so an answer built on it survives a kill."""
        async with self._write_lock:
            pass

    # --- last access (debounced) ----------------------------------------------------------------

    def touch(self, name: str, when: datetime | None = None) -> None:
        """Bump ``lastAccessAt`` in memory; persisted by the flusher within ``flush_interval``."""
        record = self._records.get(name)
        if record is None:
            return
        record.last_access_at = when or utcnow()
        self._generation += 1
        self._touched.set()

    async def run_flusher(self) -> None:
        """Background task: after a bump, wait ``flush_interval`` (coalescing bumps), then write."""
        while True:
            await self._touched.wait()
            await asyncio.sleep(self._flush_interval)
            self._touched.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("state flush failed; will retry on the next access")

    async def flush(self) -> None:
        """Write the file if anything changed since the last write."""
        async with self._write_lock:
            if self._generation == self._saved_generation:
                return
            error, cancelled = await self._write_locked()
            if cancelled is not None:
                raise cancelled
            if error is not None:
                raise error

    async def close(self) -> None:
        """Final flush at shutdown."""
        await self.flush()

    async def _write_locked(self) -> tuple[BaseException | None, asyncio.CancelledError | None]:
        """Write what memory holds now (the write lock held); returns the write's error and a
        cancellation that came meanwhile, for the caller to raise once it has acted on the error.

        The write runs in a thread, which a cancellation cannot stop: it is waited for (the lock
        still held, so a later write never runs beside it and lands first)."""
        generation = self._generation
        payload = {"version": STATE_VERSION, "namespaces": [r.to_json() for r in self.records()]}
        text = json.dumps(payload, indent=2)
        write = asyncio.ensure_future(asyncio.to_thread(_write_atomically, self.path, text))
        cancelled: asyncio.CancelledError | None = None
        while not write.done():
            try:
                await asyncio.wait({write})
            except asyncio.CancelledError as exc:
                cancelled = exc
        error = write.exception()
        if error is None:
            self._saved_generation = generation
        return error, cancelled


def _write_atomically(path: Path, text: str) -> None:
    """tmp file in the same directory, fsync, ``os.replace``, fsync the directory."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
