"""The KeyVal queue: delayed messages, leases, retries with a backoff schedule, a dead-letter table.

Called through ``kv.queue`` by plugins and the HTTP routes. It sits on the storage core
(:class:`~._storage.KvStorage`): every change is one of its write transactions (pushed in sync
mode, under its write lock, its body a blocking function run on the engine thread in one hop),
and a dead letter's ``keysIfUndelivered`` are written through its entry path (versionstamp,
search documents, triggers) in the same transaction. Times are epoch milliseconds.

* ``dequeue`` leases the oldest ready message: ``status='processing'``, ``attempts + 1`` and
  ``locked_until = now + lock duration``, in one statement of one write transaction (in sync
  mode under the namespace's write lease, so of two pods polling at once only one gets it).
  ``ack`` deletes it.
* ``attempts`` doubles as the lease's fencing token: it grows by one with every dequeue, so an
  ``ack``/``nack`` that passes the ``attempts`` it was given is refused with
  :class:`KeyValConflictError` once the message was leased again (the consumer's lease ran out
  and another consumer has it now) instead of deleting or releasing someone else's lease.
* ``nack`` puts it back with the delay ``backoff_schedule[attempts - 1]`` (the last entry
  repeats) or, once ``attempts`` reached ``len(schedule) + 1``, moves it to ``kv_dlq`` and writes
  its value to each of ``keys_if_undelivered``.
* Leases that run out (a consumer died) go back to pending in :meth:`KvQueue.requeue_stale`,
  run by a background task; a message whose last attempt's lease ran out is dead-lettered.
"""

from __future__ import annotations

import builtins
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...turso import BlockingDatabase
from ._errors import InvalidRequestError, InvalidValueError, KeyValConflictError
from ._keys import encode_key, key_from_json, key_to_json
from ._storage import KvStorage
from ._values import decode_value, encode_value, is_number

DEFAULT_BACKOFF_SCHEDULE: tuple[int, ...] = (1000, 5000, 10000)
MAX_BACKOFF_STEPS = 32
MAX_ATTEMPTS = 1000
STATUS_PENDING = "pending"
STATUS_PROCESSING = "processing"
#: What :meth:`KvQueue.nack` did with the message.
NACK_RETRY = "retry"
NACK_DEAD = "dead"
ERROR_MAX_ATTEMPTS = "Max attempts exceeded"
ERROR_LEASE_EXPIRED = "Lease expired on the last attempt"
_LEASE_LOST = "lease-lost"


@dataclass(frozen=True)
class QueueMessage:
    """A leased message: process it, then ``ack`` or ``nack`` its ``id``."""

    id: str
    value: Any
    attempts: int
    max_attempts: int
    locked_until: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "value": self.value,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "lockedUntil": self.locked_until,
        }


@dataclass(frozen=True)
class QueueStats:
    """Message counts; ``total`` includes the dead letters, as upstream."""

    pending: int
    processing: int
    dlq: int

    @property
    def total(self) -> int:
        return self.pending + self.processing + self.dlq

    def as_json(self) -> dict[str, int]:
        return {"pending": self.pending, "processing": self.processing, "dlq": self.dlq, "total": self.total}


@dataclass(frozen=True)
class DeadLetter:
    """A message that ran out of attempts."""

    id: str
    original_id: str
    value: Any
    error_message: str | None
    attempts: int
    original_created_at: int
    failed_at: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeadLetter:
        return cls(
            row["id"],
            row["original_id"],
            decode_value(row["value"]),
            row["error_message"],
            int(row["attempts"]),
            int(row["original_created_at"]),
            int(row["failed_at"]),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "originalId": self.original_id,
            "value": self.value,
            "errorMessage": self.error_message,
            "attempts": self.attempts,
            "originalCreatedAt": self.original_created_at,
            "failedAt": self.failed_at,
        }


def _milliseconds(value: object, name: str) -> int:
    if not is_number(value) or not (0 <= float(value) < math.inf):  # type: ignore[arg-type]
        raise InvalidValueError(
            f"{name} must be a non-negative number of milliseconds", code="INVALID_QUEUE_OPTION"
        )
    return math.ceil(value)  # type: ignore[call-overload, no-any-return]


class KvQueue:
    """The queue of one :class:`~buntime.plugins.keyval.Kv`. Usage::

        msg_id = await kv.queue.enqueue({"job": 1}, delay=500, backoff_schedule=[1000, 5000])
        message = await kv.queue.dequeue()
        if message:
            try:
                handle(message.value)
                await kv.queue.ack(message.id)
            except Exception as exc:
                await kv.queue.nack(message.id, error=str(exc))

    Parameters:

    * **storage** — the storage core whose transactions and metrics the queue uses.
    * **lock_duration** *(optional)* — lease length in seconds, default 30.
    """

    def __init__(self, storage: KvStorage, *, lock_duration: float = 30.0) -> None:
        if lock_duration <= 0:
            raise InvalidValueError("the queue lock duration must be positive", code="INVALID_QUEUE_OPTION")
        self._store = storage
        self.lock_duration_ms = math.ceil(lock_duration * 1000)

    async def enqueue(
        self,
        value: Any,
        *,
        delay: float = 0,
        backoff_schedule: Sequence[float] | None = None,
        keys_if_undelivered: Sequence[Sequence[Any]] | None = None,
        max_attempts: int | None = None,
    ) -> str:
        """Add a message, deliverable after ``delay`` ms; return its id.

        ``backoff_schedule`` (ms, default 1 s, 5 s, 10 s) is the wait after each failed attempt
        (the last one repeats), so a message gets ``max_attempts`` attempts (default
        ``len(schedule) + 1``) before it is dead-lettered.
        """
        with self._store.op("queue_enqueue"):
            raw = encode_value(value)
            delay_ms = _milliseconds(delay, "delay")
            schedule = DEFAULT_BACKOFF_SCHEDULE if backoff_schedule is None else backoff_schedule
            if not isinstance(schedule, list | tuple) or len(schedule) > MAX_BACKOFF_STEPS:
                raise InvalidValueError(
                    f"backoffSchedule must be a list of at most {MAX_BACKOFF_STEPS} delays",
                    code="INVALID_QUEUE_OPTION",
                )
            steps = [_milliseconds(s, "backoffSchedule entries") for s in schedule]
            if max_attempts is None:
                max_attempts = len(steps) + 1
            if (
                not isinstance(max_attempts, int)
                or isinstance(max_attempts, bool)
                or not 1 <= max_attempts <= MAX_ATTEMPTS
            ):
                raise InvalidValueError(
                    f"maxAttempts must be an integer from 1 to {MAX_ATTEMPTS}", code="INVALID_QUEUE_OPTION"
                )
            undelivered = None
            if keys_if_undelivered:
                for key in keys_if_undelivered:
                    encode_key(key, allow_empty=False)
                undelivered = json.dumps([key_to_json(tuple(k)) for k in keys_if_undelivered])
            message_id = str(uuid.uuid4())

            def fn(db: BlockingDatabase) -> str:
                now = self._store.now_ms()
                db.run(
                    "INSERT INTO kv_queue(id, value, ready_at, attempts, max_attempts, backoff_schedule, "
                    "keys_if_undelivered, status, created_at, updated_at) "
                    "VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                    [
                        message_id,
                        raw,
                        now + delay_ms,
                        max_attempts,
                        json.dumps(steps),
                        undelivered,
                        STATUS_PENDING,
                        now,
                        now,
                    ],
                )
                return message_id

            return await self._store.write(fn, entries=False)

    async def dequeue(self) -> QueueMessage | None:
        """Lease the oldest ready message, or ``None`` when nothing is ready."""
        with self._store.op("queue_dequeue"):

            def fn(db: BlockingDatabase) -> QueueMessage | None:
                now = self._store.now_ms()
                row = db.get(
                    "UPDATE kv_queue SET status = ?, locked_until = ?, attempts = attempts + 1, "
                    "updated_at = ? "
                    "WHERE id = (SELECT id FROM kv_queue WHERE status = ? AND ready_at <= ? "
                    "ORDER BY ready_at, created_at LIMIT 1) "
                    "RETURNING id, value, attempts, max_attempts, locked_until",
                    [STATUS_PROCESSING, now + self.lock_duration_ms, now, STATUS_PENDING, now],
                )
                if row is None:
                    return None
                return QueueMessage(
                    row["id"],
                    decode_value(row["value"]),
                    int(row["attempts"]),
                    int(row["max_attempts"]),
                    int(row["locked_until"]),
                )

            return await self._store.write(fn, entries=False)

    async def ack(self, message_id: str, *, attempts: int | None = None) -> bool:
        """Done with a message: delete it. ``False`` when no such message exists.

        With ``attempts`` (the :class:`QueueMessage`'s) the ack is fenced: it raises
        :class:`KeyValConflictError` when the message has been leased again since.
        """
        with self._store.op("queue_ack"):
            _check_id(message_id)
            _check_attempts(attempts)

            def fn(db: BlockingDatabase) -> bool | str:
                row = db.get("SELECT attempts FROM kv_queue WHERE id = ?", [message_id])
                if row is None:
                    return False
                if attempts is not None and int(row["attempts"]) != attempts:
                    return _LEASE_LOST
                db.run("DELETE FROM kv_queue WHERE id = ?", [message_id])
                return True

            done = await self._store.write(fn, entries=False)
            if done == _LEASE_LOST:
                raise _lease_lost(message_id, attempts)
            return bool(done)

    async def nack(
        self, message_id: str, *, error: str | None = None, attempts: int | None = None
    ) -> str | None:
        """A failed attempt: retry after the backoff, or dead-letter after the last attempt.

        Returns :data:`NACK_RETRY`, :data:`NACK_DEAD`, or ``None`` when no such message exists.
        With ``attempts`` it is fenced like :meth:`ack`.
        """
        with self._store.op("queue_nack"):
            _check_id(message_id)
            _check_attempts(attempts)

            def fn(db: BlockingDatabase) -> str | None:
                now = self._store.now_ms()
                row = db.get("SELECT * FROM kv_queue WHERE id = ?", [message_id])
                if row is None:
                    return None
                tried = int(row["attempts"])
                if attempts is not None and tried != attempts:
                    return _LEASE_LOST
                if tried >= int(row["max_attempts"]):
                    self._dead_letter(db, row, error or ERROR_MAX_ATTEMPTS, now)
                    return NACK_DEAD
                schedule = json.loads(row["backoff_schedule"] or "[]") or [0]
                delay = int(schedule[min(max(tried - 1, 0), len(schedule) - 1)])
                db.run(
                    "UPDATE kv_queue SET status = ?, ready_at = ?, locked_until = NULL, last_error = ?, "
                    "updated_at = ? WHERE id = ?",
                    [STATUS_PENDING, now + delay, error, now, message_id],
                )
                return NACK_RETRY

            outcome = await self._store.write(fn)
            if outcome == _LEASE_LOST:
                raise _lease_lost(message_id, attempts)
            return outcome

    def _dead_letter(self, db: BlockingDatabase, row: dict[str, Any], reason: str, now: int) -> None:
        db.run(
            "INSERT INTO kv_dlq(id, original_id, value, error_message, attempts, original_created_at, "
            "failed_at, backoff_schedule, max_attempts, keys_if_undelivered) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                str(uuid.uuid4()),
                row["id"],
                row["value"],
                reason,
                row["attempts"],
                row["created_at"],
                now,
                row["backoff_schedule"],
                row["max_attempts"],
                row["keys_if_undelivered"],
            ],
        )
        db.run("DELETE FROM kv_queue WHERE id = ?", [row["id"]])
        if row["keys_if_undelivered"]:
            value = decode_value(row["value"])
            raw = encode_value(value)
            versionstamp = self._store.next_versionstamp(db)
            for key_json in json.loads(row["keys_if_undelivered"]):
                encoded = encode_key(key_from_json(key_json), allow_empty=False)
                self._store.put_in_tx(db, encoded, raw, value, versionstamp=versionstamp, expires_at=None)

    async def requeue_stale(self) -> int:
        """Return messages whose lease ran out to pending (or dead-letter them); return how many."""
        with self._store.op("queue_requeue_stale"):

            def fn(db: BlockingDatabase) -> int:
                now = self._store.now_ms()
                stale = db.all(
                    "SELECT * FROM kv_queue WHERE status = ? AND locked_until < ?", [STATUS_PROCESSING, now]
                )
                for row in stale:
                    if int(row["attempts"]) >= int(row["max_attempts"]):
                        self._dead_letter(db, row, ERROR_LEASE_EXPIRED, now)
                    else:
                        db.run(
                            "UPDATE kv_queue SET status = ?, ready_at = ?, locked_until = NULL, "
                            "updated_at = ? WHERE id = ?",
                            [STATUS_PENDING, now, now, row["id"]],
                        )
                return len(stale)

            return await self._store.write(fn)

    async def lease_left(self, message: QueueMessage) -> int | None:
        """Milliseconds left of ``message``'s lease (the one its ``attempts`` fences); ``None``
        once that lease is over: acked, nacked, dead-lettered, leased again or run out."""
        with self._store.op("queue_lease_left"):
            row = await (await self._store.db()).get(
                "SELECT locked_until FROM kv_queue WHERE id = ? AND attempts = ? AND status = ?",
                [message.id, message.attempts, STATUS_PROCESSING],
            )
            if row is None or row["locked_until"] is None:
                return None
            left = int(row["locked_until"]) - self._store.now_ms()
            return left if left > 0 else None

    async def next_ready_in(self) -> int | None:
        """Milliseconds until the earliest pending message is ready (0: one is), ``None``: none pending."""
        with self._store.op("queue_next_ready"):
            row = await (await self._store.db()).get(
                "SELECT min(ready_at) AS ready_at FROM kv_queue WHERE status = ?", [STATUS_PENDING]
            )
            if not row or row["ready_at"] is None:
                return None
            return max(0, int(row["ready_at"]) - self._store.now_ms())

    async def stats(self) -> QueueStats:
        with self._store.op("queue_stats"):
            row = await (await self._store.db()).get(
                "SELECT (SELECT count(*) FROM kv_queue WHERE status = ?) AS pending, "
                "(SELECT count(*) FROM kv_queue WHERE status = ?) AS processing, "
                "(SELECT count(*) FROM kv_dlq) AS dlq",
                [STATUS_PENDING, STATUS_PROCESSING],
            )
            counts = row or {}
            stats = QueueStats(
                int(counts.get("pending", 0)), int(counts.get("processing", 0)), int(counts.get("dlq", 0))
            )
            self._store.metrics.set_queue(stats.pending, stats.processing, stats.dlq)
            return stats

    # -- dead letters -----------------------------------------------------------------------
    async def list_dlq(self, *, limit: int = 100, offset: int = 0) -> builtins.list[DeadLetter]:
        """Dead letters, newest first."""
        with self._store.op("dlq_list"):
            if not isinstance(limit, int) or limit < 1 or not isinstance(offset, int) or offset < 0:
                raise InvalidRequestError("limit must be >= 1 and offset >= 0", code="INVALID_LIMIT")
            db = await self._store.db()
            rows = await db.all(
                "SELECT * FROM kv_dlq ORDER BY failed_at DESC, id LIMIT ? OFFSET ?", [limit, offset]
            )
            return [DeadLetter.from_row(r) for r in rows]

    async def get_dlq(self, dlq_id: str) -> DeadLetter | None:
        with self._store.op("dlq_get"):
            _check_id(dlq_id)
            row = await (await self._store.db()).get("SELECT * FROM kv_dlq WHERE id = ?", [dlq_id])
            return DeadLetter.from_row(row) if row else None

    async def requeue_dlq(self, dlq_id: str) -> str | None:
        """Move a dead letter back into the queue with a fresh attempt budget and its own retry
        policy (backoff schedule, max attempts, keys if undelivered); return the new id."""
        with self._store.op("dlq_requeue"):
            _check_id(dlq_id)
            new_id = str(uuid.uuid4())

            def fn(db: BlockingDatabase) -> str | None:
                row = db.get(
                    "SELECT value, backoff_schedule, max_attempts, keys_if_undelivered "
                    "FROM kv_dlq WHERE id = ?",
                    [dlq_id],
                )
                if row is None:
                    return None
                now = self._store.now_ms()
                # Dead letters from before schema v3 kept no policy: they get the default one.
                schedule = row["backoff_schedule"] or json.dumps(builtins.list(DEFAULT_BACKOFF_SCHEDULE))
                budget = row["max_attempts"] or len(json.loads(schedule)) + 1
                db.run(
                    "INSERT INTO kv_queue(id, value, ready_at, attempts, max_attempts, backoff_schedule, "
                    "keys_if_undelivered, status, created_at, updated_at) "
                    "VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                    [
                        new_id,
                        row["value"],
                        now,
                        budget,
                        schedule,
                        row["keys_if_undelivered"],
                        STATUS_PENDING,
                        now,
                        now,
                    ],
                )
                db.run("DELETE FROM kv_dlq WHERE id = ?", [dlq_id])
                return new_id

            return await self._store.write(fn, entries=False)

    async def delete_dlq(self, dlq_id: str) -> bool:
        with self._store.op("dlq_delete"):
            _check_id(dlq_id)

            def fn(db: BlockingDatabase) -> bool:
                return db.run("DELETE FROM kv_dlq WHERE id = ?", [dlq_id]).changes > 0

            return await self._store.write(fn, entries=False)

    async def purge_dlq(self) -> int:
        """Delete every dead letter; return how many."""
        with self._store.op("dlq_purge"):

            def fn(db: BlockingDatabase) -> int:
                return db.run("DELETE FROM kv_dlq").changes

            return await self._store.write(fn, entries=False)


def _check_id(message_id: object) -> None:
    if not isinstance(message_id, str) or not message_id or len(message_id) > 128:
        raise InvalidRequestError("a message id must be a non-empty string", code="INVALID_MESSAGE_ID")


def _check_attempts(attempts: object) -> None:
    if attempts is not None and (not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1):
        raise InvalidRequestError("attempts must be a positive integer", code="INVALID_ATTEMPTS")


def _lease_lost(message_id: str, attempts: int | None) -> KeyValConflictError:
    return KeyValConflictError(
        f"message {message_id} was leased again after attempt {attempts}: this lease is over "
        "(the message is another consumer's now)"
    )
