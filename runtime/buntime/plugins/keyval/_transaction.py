"""OCC transactions: reads become versionstamp checks of one atomic commit, retried on conflict.

``kv.transaction(fn, max_retries=, retry_delay=)`` (upstream's ``kv.transaction``) calls
``await fn(tx)``; ``tx.get``/``tx.get_many`` read through the store once per key and cache the
entry (snapshot reads: a second read of a key returns the first), ``tx.set``/``delete``/
``sum``/``min``/``max``/``append``/``prepend`` buffer mutations. When ``fn`` returns, the
cached reads become the checks of one atomic commit with the buffered mutations, so the commit
succeeds only if nothing read changed in between (on any pod: the checks run in the write
transaction, under the write lease). A conflict re-runs ``fn`` on a fresh transaction after
``retry_delay * 2**attempt + random() * retry_delay`` ms (at most 5 s), at most ``max_retries``
times.

Results (:class:`TransactionResult`): ``{ok: true, value, versionstamp}``,
``{ok: false, error: "conflict"}`` once the retries are spent, or
``{ok: false, error: "error", message}`` when ``fn`` (or the commit) raised; nothing is written
then. A commit whose outcome is unknown (its push may have landed) is none of these: it raises
:class:`KeyValCommitUnknownError`, and is never re-run.
A transaction object refuses every call once committed. Called by the Kv store, which
hands it its batch read and the atomic committer.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ._atomic import Check, CommitResult, Committer, Mutation, make_mutation
from ._errors import InvalidRequestError, InvalidValueError, outcome_unknown, translate_storage_error
from ._keys import Key, encode_key
from ._storage import KvEntry

T = TypeVar("T")

ERROR_CONFLICT: Literal["conflict"] = "conflict"
ERROR_RAISED: Literal["error"] = "error"
DEFAULT_RETRY_DELAY = 10.0
MAX_RETRIES = 100
#: Upper bound of one back-off sleep (ms): upstream's doubling has none.
MAX_RETRY_SLEEP = 5000.0
TRANSACTION_CLOSED = "TRANSACTION_CLOSED"

ReadMany = Callable[[Sequence[Sequence[Any]]], Awaitable[list[KvEntry]]]


@dataclass(frozen=True)
class TransactionResult(Generic[T]):
    """How a transaction ended; see the module docstring for the three shapes."""

    ok: bool
    value: T | None = None
    versionstamp: str | None = None
    error: Literal["conflict", "error"] | None = None
    message: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True, "value": self.value, "versionstamp": self.versionstamp}
        out: dict[str, Any] = {"ok": False, "error": self.error}
        if self.message is not None:
            out["message"] = self.message
        return out


class KvTransaction:
    """One attempt of a transaction (see the module docstring). Usage::

    async def transfer(tx: KvTransaction) -> int:
        a, b = await tx.get_many([["acct", "a"], ["acct", "b"]])
        tx.set(["acct", "a"], a.value - 10).set(["acct", "b"], b.value + 10)
        return a.value - 10

    result = await kv.transaction(transfer, max_retries=3)
    """

    def __init__(self, read_many: ReadMany, committer: Committer) -> None:
        self._read_many = read_many
        self._committer = committer
        self._reads: dict[bytes, KvEntry] = {}
        self._mutations: list[Mutation] = []
        self._committed = False

    @property
    def read_count(self) -> int:
        return len(self._reads)

    @property
    def write_count(self) -> int:
        return len(self._mutations)

    def _check_active(self) -> None:
        if self._committed:
            raise InvalidRequestError("Transaction already committed", code=TRANSACTION_CLOSED)

    async def get(self, key: Sequence[Any]) -> KvEntry:
        """The entry at ``key`` as first read in this transaction."""
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[Sequence[Any]]) -> list[KvEntry]:
        """The entries at ``keys`` (in order), each as first read in this transaction; the
        keys not read yet are read in one batch."""
        self._check_active()
        encoded = [encode_key(k, allow_empty=False) for k in keys]
        missing: dict[bytes, Key] = {}
        for key, enc in zip(keys, encoded, strict=True):
            if enc not in self._reads:
                missing.setdefault(enc, tuple(key))
        if missing:
            fresh = await self._read_many(list(missing.values()))
            self._check_active()  # fn kept a read running past its own return
            for enc, entry in zip(missing, fresh, strict=True):
                self._reads.setdefault(enc, entry)
        return [self._reads[enc] for enc in encoded]

    def _buffer(
        self, type_: str, key: Sequence[Any], value: Any = None, expire_in: object = None
    ) -> KvTransaction:
        self._check_active()
        self._mutations.append(make_mutation(type_, key, value, expire_in))
        return self

    def set(self, key: Sequence[Any], value: Any, *, expire_in: float | None = None) -> KvTransaction:
        return self._buffer("set", key, value, expire_in)

    def delete(self, key: Sequence[Any]) -> KvTransaction:
        return self._buffer("delete", key)

    def sum(self, key: Sequence[Any], value: Any, *, expire_in: float | None = None) -> KvTransaction:
        return self._buffer("sum", key, value, expire_in)

    def min(self, key: Sequence[Any], value: Any, *, expire_in: float | None = None) -> KvTransaction:
        return self._buffer("min", key, value, expire_in)

    def max(self, key: Sequence[Any], value: Any, *, expire_in: float | None = None) -> KvTransaction:
        return self._buffer("max", key, value, expire_in)

    def append(
        self, key: Sequence[Any], items: list[Any], *, expire_in: float | None = None
    ) -> KvTransaction:
        return self._buffer("append", key, items, expire_in)

    def prepend(
        self, key: Sequence[Any], items: list[Any], *, expire_in: float | None = None
    ) -> KvTransaction:
        return self._buffer("prepend", key, items, expire_in)

    def close(self) -> None:
        """Refuse every further call."""
        self._committed = True

    async def commit(self) -> CommitResult:
        """The reads as checks plus the buffered mutations, in one atomic commit (once)."""
        self._check_active()
        self._committed = True
        checks = [Check(e.key, enc, e.versionstamp) for enc, e in self._reads.items()]
        return await self._committer(checks, list(self._mutations))


def check_options(max_retries: object, retry_delay: object) -> tuple[int, float]:
    if (
        not isinstance(max_retries, int)
        or isinstance(max_retries, bool)
        or not 0 <= max_retries <= MAX_RETRIES
    ):
        raise InvalidValueError(
            f"maxRetries must be an integer from 0 to {MAX_RETRIES}", code="INVALID_TRANSACTION_OPTION"
        )
    if (
        not isinstance(retry_delay, int | float)
        or isinstance(retry_delay, bool)
        or not 0 <= retry_delay < math.inf
    ):
        raise InvalidValueError(
            "retryDelay must be a non-negative number of milliseconds", code="INVALID_TRANSACTION_OPTION"
        )
    return max_retries, float(retry_delay)


async def run(
    fn: Callable[[KvTransaction], Awaitable[T]],
    *,
    read_many: ReadMany,
    committer: Committer,
    max_retries: int = 0,
    retry_delay: float = DEFAULT_RETRY_DELAY,
) -> TransactionResult[T]:
    """Run ``fn`` as an OCC transaction (see the module docstring)."""
    retries, delay = check_options(max_retries, retry_delay)
    for attempt in range(retries + 1):
        tx = KvTransaction(read_many, committer)
        try:
            value = await fn(tx)
            result = await tx.commit()
        except Exception as exc:
            if outcome_unknown(exc):
                mapped = translate_storage_error(exc)
                if mapped is None:  # already the KeyVal error
                    raise
                raise mapped from exc
            return TransactionResult(False, error=ERROR_RAISED, message=str(exc))
        finally:
            tx.close()  # a tx leaked out of fn is closed, whatever happened
        if result.ok:
            return TransactionResult(True, value, result.versionstamp)
        if attempt < retries:
            pause = min(delay * 2 ** min(attempt, 32) + random.random() * delay, MAX_RETRY_SLEEP)
            await asyncio.sleep(pause / 1000)
    return TransactionResult(False, error=ERROR_CONFLICT)
