"""Watchers: change notifications for keys and prefixes, and the wake-up of queue listeners.

Owned by the Kv store (``kv.watch``), which hands it its two reads (keys, a prefix) and calls
:meth:`WatchHub.poke` from the storage core's commit listener and its own pull listener; the HTTP
routes stream what it delivers as SSE. It imports nothing of the store itself.

* **What wakes it**: every committed write of this store (:meth:`WatchHub.poke`, called by the
  write path) and every background pull that brought another pod's changes (the Turso
  service's pull listener, through ``Kv._on_pull``). Nothing polls the table: with no write
  and no pull there is no statement at all.
* **What it reads**: one round per wake-up (wake-ups during a round coalesce into the next),
  one statement per distinct watch target (subscribers watching the same keys or prefix share
  it), diffed against what each subscriber was last sent. A prefix watcher watches at most
  :data:`MAX_WATCH_PREFIXES` distinct prefixes (repeats and prefixes under another one are
  dropped, see :func:`distinct_prefixes`) and gets at most ``limit`` entries in all of them
  together (:func:`read_prefixes`), so one request cannot multiply the rows a round reads.
* **Back-pressure**: each subscriber has a bounded queue of undelivered events. A subscriber
  that lets it fill (a slow or stuck client) is closed, not buffered without bound and never
  allowed to hold the others up; its client reconnects with ``Last-Event-ID`` and catches up.
* **Event ids** are versionstamps (they increase in commit order across pods), so
  ``Last-Event-ID`` resumes: a prefix watcher replays entries written after it; a key watcher
  sends the current entries if one of them is newer. Deletions made while a client was away are
  not replayed (a deleted row has no versionstamp left); a key watcher's first event after a
  reconnect without ``Last-Event-ID`` carries the current state, deletions included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import InvalidRequestError, KeyValError, KeyValUnavailableError
from ._keys import Key, decode_key, encode_key, key_to_json, prefix_range
from ._storage import KvEntry

log = logging.getLogger("buntime.plugin.keyval")

DEFAULT_QUEUE_SIZE = 64
#: Seconds between SSE keep-alive pings (proxies drop idle streams after about a minute).
DEFAULT_PING_INTERVAL = 15.0
#: Seconds a stream write may wait on a client that does not read before it is closed.
DEFAULT_WRITE_TIMEOUT = 30.0
DEFAULT_PREFIX_LIMIT = 1000
#: The most distinct prefixes one prefix watch or poll takes: each costs a statement per round.
MAX_WATCH_PREFIXES = 32
#: The most watch streams one pod serves at once: every write re-reads what each distinct watch
#: covers, so the count bounds the work one write costs.
MAX_WATCHERS = 1000
CLOSE_OVERFLOW = "overflow"
CLOSE_SHUTDOWN = "shutdown"

#: Reads the hub runs: the entries of some keys (in order), the entries under a prefix (``limit``).
ReadKeys = Callable[[Sequence[Key]], Awaitable[list[KvEntry]]]
ReadPrefix = Callable[[Key, int], Awaitable[list[KvEntry]]]


def distinct_prefixes(prefixes: Sequence[Key]) -> list[Key]:
    """``prefixes`` validated, in order, without repeats and without those under another one of
    them (its entries are the other's); :class:`InvalidRequestError` ``INVALID_PARAMETER`` for
    more than :data:`MAX_WATCH_PREFIXES` distinct ones."""
    unique: dict[bytes, Key] = {}
    for prefix in prefixes:
        unique.setdefault(encode_key(prefix), tuple(prefix))
    if len(unique) > MAX_WATCH_PREFIXES:
        raise InvalidRequestError(
            f"watch at most {MAX_WATCH_PREFIXES} distinct prefixes", code="INVALID_PARAMETER"
        )
    ranges = [prefix_range(encoded) for encoded in unique]
    return [
        prefix
        for encoded, prefix in unique.items()
        if not any(lo <= encoded < hi for lo, hi in ranges)  # never its own range: lo > encoded
    ]


async def read_prefixes(read: ReadPrefix, prefixes: Sequence[Key], limit: int) -> list[KvEntry]:
    """The entries under ``prefixes`` (from :func:`distinct_prefixes`: no entry twice), prefix by
    prefix, ``limit`` in total: no statement runs once ``limit`` entries were read."""
    entries: list[KvEntry] = []
    for prefix in prefixes:
        if len(entries) >= limit:
            break
        entries.extend(await read(prefix, limit - len(entries)))
    return entries


@dataclass(frozen=True)
class WatchEvent:
    """One change event: ``entries`` as JSON, ``id`` the newest versionstamp seen (or ``""``)."""

    entries: list[dict[str, Any]]
    id: str


def _entry_json(key: Key, value: Any, versionstamp: str | None) -> dict[str, Any]:
    return {"key": key_to_json(key), "value": value, "versionstamp": versionstamp}


@dataclass(eq=False)
class Watcher:
    """One subscriber: read :meth:`next` until it returns ``None`` (closed; see ``close_reason``)."""

    keys: tuple[Key, ...] = ()
    prefixes: tuple[Key, ...] = ()
    limit: int = DEFAULT_PREFIX_LIMIT
    queue_size: int = DEFAULT_QUEUE_SIZE
    last_id: str = ""
    close_reason: str | None = None
    _queue: asyncio.Queue[WatchEvent | None] = field(init=False)
    _seen: dict[bytes, str] | None = field(default=None, init=False)  # key -> versionstamp sent

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.queue_size)

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    async def next(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event; raises :class:`TimeoutError` after ``timeout`` seconds without one."""
        if self.closed and self._queue.empty():
            return None
        return await asyncio.wait_for(self._queue.get(), timeout)

    def offer(self, event: WatchEvent) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # A slow subscriber: drop what it has not read and close it (it resumes by id).
            while not self._queue.empty():
                self._queue.get_nowait()
            self.close(CLOSE_OVERFLOW)
            return
        self.last_id = max(self.last_id, event.id)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.close_reason = reason
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    # -- diffs (called by the hub) --------------------------------------------------------
    def on_keys(self, entries: Sequence[KvEntry], *, initial: bool) -> None:
        current = {encode_key(e.key): e.versionstamp or "" for e in entries}
        if self._seen is None:
            self._seen = current
            newest = max(current.values(), default="")
            if not initial and not (self.last_id and newest > self.last_id):
                return
        elif current == self._seen:
            return
        self._seen = current
        event_id = max([*current.values(), self.last_id])
        self.offer(WatchEvent([_entry_json(e.key, e.value, e.versionstamp) for e in entries], event_id))

    def on_prefix(self, entries: Sequence[KvEntry], *, initial: bool) -> None:
        current = {encode_key(e.key): e.versionstamp or "" for e in entries}
        if self._seen is None:
            self._seen = current
            if self.last_id:
                changed = [e for e in entries if (e.versionstamp or "") > self.last_id]
            else:
                changed = list(entries) if initial else []
            if changed:
                self._emit(changed, [])
            return
        previous = self._seen
        self._seen = current
        changed = [e for e in entries if previous.get(encode_key(e.key)) != e.versionstamp]
        gone = [k for k in previous if k not in current]
        if changed or gone:
            self._emit(changed, gone)

    def _emit(self, changed: Sequence[KvEntry], gone: Sequence[bytes]) -> None:
        out = [_entry_json(e.key, e.value, e.versionstamp) for e in changed]
        out += [_entry_json(decode_key(k), None, None) for k in gone]
        event_id = max([*(e.versionstamp or "" for e in changed), self.last_id])
        self.offer(WatchEvent(out, event_id))


class WatchHub:
    """The watchers of one store, and the queue's wake-up signal. Usage (by the routes)::

    watcher = kv.watch.watch_keys([["a"], ["b"]], initial=True, last_id=request_last_event_id)
    try:
        while (event := await watcher.next()) is not None: ...
    finally:
        kv.watch.unsubscribe(watcher)
    """

    def __init__(
        self, read_keys: ReadKeys, read_prefix: ReadPrefix, *, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        self._read_keys = read_keys
        self._read_prefix = read_prefix
        self.queue_size = queue_size
        self.ping_interval = DEFAULT_PING_INTERVAL
        self.write_timeout = DEFAULT_WRITE_TIMEOUT
        self._watchers: set[Watcher] = set()
        self._initial: dict[Watcher, bool] = {}  # send the current state as the first event?
        self._wake = asyncio.Event()
        self._queue_signal = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscribers(self) -> int:
        return len(self._watchers)

    def poke(self) -> None:
        """Something was committed (here or, after a pull, elsewhere): re-read the watched data."""
        signal, self._queue_signal = self._queue_signal, asyncio.Event()
        signal.set()
        if self._watchers:
            self._wake.set()

    def queue_mark(self) -> asyncio.Event:
        """What the next write or pull sets: take it before a read and pass it to
        :meth:`wait_queue`, so a write that lands while the read runs still wakes the waiter."""
        return self._queue_signal

    async def wait_queue(self, timeout: float, mark: asyncio.Event | None = None) -> None:
        """Until the next write or pull (queue listeners re-read then), or ``timeout``; with
        ``mark`` (from :meth:`queue_mark`), at once if one happened since it was taken."""
        signal = self._queue_signal if mark is None else mark
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), timeout)

    def watch_keys(self, keys: Sequence[Key], *, initial: bool = True, last_id: str = "") -> Watcher:
        for key in keys:
            encode_key(key, allow_empty=False)
        return self._add(
            Watcher(keys=tuple(tuple(k) for k in keys), queue_size=self.queue_size, last_id=last_id),
            initial=initial,
        )

    def watch_prefixes(
        self,
        prefixes: Sequence[Key],
        *,
        limit: int = DEFAULT_PREFIX_LIMIT,
        initial: bool = False,
        last_id: str = "",
    ) -> Watcher:
        watcher = Watcher(
            prefixes=tuple(distinct_prefixes(prefixes)),
            limit=limit,
            queue_size=self.queue_size,
            last_id=last_id,
        )
        return self._add(watcher, initial=initial)

    def _add(self, watcher: Watcher, *, initial: bool) -> Watcher:
        if self._closed:
            watcher.close(CLOSE_SHUTDOWN)
            return watcher
        if len(self._watchers) >= MAX_WATCHERS:
            raise KeyValUnavailableError(
                f"this pod already serves {MAX_WATCHERS} watch streams; retry later or on another pod",
                code="KEYVAL_TOO_MANY_WATCHERS",
            )
        self._watchers.add(watcher)
        self._initial[watcher] = initial
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="keyval:watch")
        self._wake.set()  # the first round reads the new watcher's state
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        self._initial.pop(watcher, None)

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._round()
            except KeyValError as exc:
                log.warning("KeyVal watch round failed (retried on the next change): %s", exc)
            except Exception:
                log.exception("KeyVal watch round failed")

    async def _round(self) -> None:
        cache: dict[Any, Any] = {}

        async def read(prefix: Key, limit: int) -> list[KvEntry]:
            target = ("prefix", encode_key(prefix), limit)  # (1,) == (True,) as tuples
            if target not in cache:
                cache[target] = await self._read_prefix(prefix, limit)
            return list(cache[target])

        for watcher in list(self._watchers):
            if watcher.closed:
                self.unsubscribe(watcher)
                continue
            initial = self._initial.get(watcher, True)
            if watcher.keys:
                target: Any = ("keys", tuple(encode_key(key) for key in watcher.keys))  # not (1,) == (True,)
                if target not in cache:
                    cache[target] = await self._read_keys(watcher.keys)
                watcher.on_keys(cache[target], initial=initial)
            else:
                entries = await read_prefixes(read, watcher.prefixes, watcher.limit)
                watcher.on_prefix(entries, initial=initial)

    async def aclose(self) -> None:
        """Close every subscriber (their streams end) and stop the hub's task."""
        self._closed = True
        for watcher in list(self._watchers):
            watcher.close(CLOSE_SHUTDOWN)
        self._watchers.clear()
        self._queue_signal.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
