"""Atomic operations: versionstamp checks plus set/delete/sum/min/max/append/prepend in one transaction.

Built by ``kv.atomic()`` (and by transactions, whose reads become its checks) and committed by
:func:`commit_atomic` on the storage core: the checks run inside the same write transaction as
the mutations (under the write lock and, on replicas, the namespace's write lease), so of two
concurrent commits that check the same versionstamp exactly one succeeds, on any pod.

**UUIDv7 placeholders** (``kv.uuidv7()``, spelled ``{"$uuidv7": true}`` in a JSON key): a
mutation key part that resolves, at commit, to the commit's versionstamp, the same one in every
key of the commit, so an entry and its index keys can name each other
(``["posts", id]``, ``["posts_by_author", author, id]``). Versionstamps increase in commit order
across pods, so such keys sort in commit order too.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ...turso import BlockingDatabase
from ._errors import InvalidKeyError, InvalidValueError
from ._keys import Key, KeyPart, encode_key, part_from_json
from ._storage import LIVE, KvStorage
from ._values import bigint_of, bigint_value, decode_value, encode_value, is_number, resolve_now

MutationType = Literal["set", "delete", "sum", "min", "max", "append", "prepend"]
MUTATION_TYPES: tuple[MutationType, ...] = ("set", "delete", "sum", "min", "max", "append", "prepend")
NUMERIC_MUTATIONS = frozenset({"sum", "min", "max"})
LIST_MUTATIONS = frozenset({"append", "prepend"})


UUIDV7_JSON_FIELD = "$uuidv7"
#: What a placeholder is replaced by while validating a key before commit (a versionstamp's size).
_VERSIONSTAMP_STANDIN = "0" * 20


class Uuidv7:
    """The placeholder :meth:`kv.uuidv7() <buntime.plugins.keyval.Kv.uuidv7>` returns (one object)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "kv.uuidv7()"


UUIDV7 = Uuidv7()
MutationKey = tuple[KeyPart | Uuidv7, ...]


def resolve_key(key: Sequence[Any], versionstamp: str) -> Key:
    """``key`` with every placeholder replaced by ``versionstamp``."""
    return tuple(versionstamp if isinstance(part, Uuidv7) else part for part in key)


def _is_uuidv7_json(part: object) -> bool:
    # ``is True``: {"$uuidv7": 1} compares equal to {"$uuidv7": True} in Python, and is not one.
    return isinstance(part, dict) and len(part) == 1 and part.get(UUIDV7_JSON_FIELD) is True


def mutation_key_from_json(raw: object) -> MutationKey:
    """A mutation key from JSON: :func:`~._keys.key_from_json` parts or ``{"$uuidv7": true}``."""
    if not isinstance(raw, list):
        raise InvalidKeyError('a key must be a JSON array of parts, e.g. ["users", 42]')
    key = tuple(UUIDV7 if _is_uuidv7_json(p) else part_from_json(p) for p in raw)
    encode_key(resolve_key(key, _VERSIONSTAMP_STANDIN), allow_empty=False)
    return key


@dataclass(frozen=True)
class CommitResult:
    """``ok`` is false when a check failed (nothing was written); ``versionstamp`` of the commit."""

    ok: bool
    versionstamp: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "versionstamp": self.versionstamp}


@dataclass(frozen=True)
class Check:
    """The key must currently have ``versionstamp`` (``None``: the key must not exist)."""

    key: Key
    encoded: bytes
    versionstamp: str | None


@dataclass(frozen=True)
class Mutation:
    """One write of an atomic operation; ``value`` is the operand for sum/min/max (a number or
    a bigint ``{"__type": "bigint", "value": "5"}``) and append/prepend (a list of items)."""

    type: MutationType
    key: MutationKey
    encoded: bytes | None  # None: the key holds a UUIDv7 placeholder, encoded at commit
    value: Any = None
    expire_in: float | None = None

    def resolved(self, versionstamp: str) -> tuple[Key, bytes]:
        """The key and its encoding once the commit's versionstamp is known."""
        if self.encoded is not None:
            return self.key, self.encoded  # type: ignore[return-value]  # no placeholder in it
        key = resolve_key(self.key, versionstamp)
        return key, encode_key(key, allow_empty=False)


def validate_expire_in(expire_in: object) -> float | None:
    """A TTL in milliseconds: a positive finite number, or ``None`` for no expiry."""
    if expire_in is None:
        return None
    if not is_number(expire_in) or not (0 < float(expire_in) < float("inf")):  # type: ignore[arg-type]
        raise InvalidValueError(
            "expireIn must be a positive number of milliseconds", code="INVALID_EXPIRE_IN"
        )
    return float(expire_in)  # type: ignore[arg-type]


def _finite_operand(value: Any) -> bool:
    """A sum/min/max operand: a bigint, or a number that is not NaN or infinite (JSON bodies may
    spell ``NaN``/``Infinity``, which Python's parser takes; ``max(5, nan)`` is 5, so a NaN max
    wrote a new versionstamp for nothing while a NaN sum was refused)."""
    if bigint_of(value) is not None:
        return True
    return is_number(value) and not (isinstance(value, float) and not math.isfinite(value))


def make_mutation(type_: str, key: Sequence[Any], value: Any = None, expire_in: object = None) -> Mutation:
    """Validate one mutation up front, so a bad one fails before any statement runs."""
    if type_ not in MUTATION_TYPES:
        raise InvalidValueError(
            f"unknown mutation type {type_!r}: use one of {', '.join(MUTATION_TYPES)}",
            code="INVALID_MUTATION",
        )
    parts: MutationKey = tuple(key)
    if any(isinstance(part, Uuidv7) for part in parts):
        encode_key(resolve_key(parts, _VERSIONSTAMP_STANDIN), allow_empty=False)  # validate now
        encoded = None
    else:
        encoded = encode_key(parts, allow_empty=False)
    if type_ == "set":
        encode_value(value)
    elif type_ in NUMERIC_MUTATIONS and not _finite_operand(value):
        raise InvalidValueError(
            f"{type_} needs a finite number or bigint operand (got {value!r})", code="INVALID_MUTATION"
        )
    elif type_ in LIST_MUTATIONS:
        if not isinstance(value, list):
            raise InvalidValueError(f"{type_} needs a list of items (got {value!r})", code="INVALID_MUTATION")
        encode_value(value)
    ttl = validate_expire_in(expire_in)
    if type_ == "delete" and ttl is not None:  # a TTL for a key it removes: refused, not dropped
        raise InvalidValueError("a delete takes no expireIn", code="INVALID_EXPIRE_IN")
    return Mutation(type_, parts, encoded, value, ttl)


def apply_mutation(type_: MutationType, current: Any, operand: Any, key: Key) -> Any:
    """The new value of a sum/min/max/append/prepend of ``operand`` onto the stored ``current``
    (``None``: missing)."""
    if type_ in LIST_MUTATIONS:
        if current is None:
            current = []
        if not isinstance(current, list):
            raise InvalidValueError(
                f"cannot {type_} to key {list(key)!r}: the stored value is not a list",
                code="INVALID_MUTATION",
            )
        return [*current, *operand] if type_ == "append" else [*operand, *current]
    return apply_numeric(type_, current, operand, key)


def apply_numeric(type_: MutationType, current: Any, operand: Any, key: Key) -> Any:
    """sum/min/max of the stored value and the operand; a missing value counts as the operand
    for min/max and as 0 for sum. A bigint on either side (and an integer on the other) gives a
    bigint, exactly; a bigint never mixes with a fraction. A sum beyond what its type holds (an
    integer too large for a float plus a fraction, a float past ``±1.8e308``, a bigint of more
    than Python's 4300 digits) is ``INVALID_MUTATION`` and the atomic writes nothing."""
    if current is None:
        return operand
    big_current, big_operand = bigint_of(current), bigint_of(operand)
    if big_current is None and not is_number(current):
        raise InvalidValueError(
            f"cannot {type_} into key {list(key)!r}: the stored value is not a number",
            code="INVALID_MUTATION",
        )
    if big_current is not None or big_operand is not None:
        left = current if big_current is None else big_current
        right = operand if big_operand is None else big_operand
        if not isinstance(left, int) or not isinstance(right, int):
            raise InvalidValueError(
                f"cannot {type_} a bigint and a fraction at key {list(key)!r}", code="INVALID_MUTATION"
            )
        try:
            return bigint_value(_combine(type_, left, right, key))
        except ValueError as exc:  # str() of an int over Python's 4300-digit limit
            if isinstance(exc, InvalidValueError):
                raise
            raise _overflow(type_, key, "a bigint of more than 4300 digits") from exc
    return _combine(type_, current, operand, key)


def _overflow(type_: MutationType, key: Key, what: str) -> InvalidValueError:
    return InvalidValueError(f"the {type_} at key {list(key)!r} would give {what}", code="INVALID_MUTATION")


def _combine(type_: MutationType, current: Any, operand: Any, key: Key) -> Any:
    if type_ != "sum":
        return min(current, operand) if type_ == "min" else max(current, operand)
    try:
        total = current + operand
    except OverflowError as exc:  # an integer beyond a float's range plus a fraction
        raise _overflow(type_, key, "a number beyond a float's range") from exc
    if isinstance(total, float) and not math.isfinite(total):
        raise _overflow(type_, key, "a number beyond a float's range")
    return total


Committer = Callable[[Sequence[Check], Sequence[Mutation]], Awaitable[CommitResult]]


class AtomicOperation:
    """A batch of checks and mutations. Usage::

        entry = await kv.get(["balance", "alice"])
        result = await (
            kv.atomic()
            .check(["balance", "alice"], entry.versionstamp)
            .sum(["balance", "alice"], -10)
            .set(["log", 1], {"what": "withdraw"}, expire_in=60_000)
            .commit()
        )
        if not result.ok: ...  # someone else wrote first: read again and retry

    Each method validates at once and returns the operation, so calls chain. Mutation keys
    may hold ``kv.uuidv7()`` placeholders (one UUIDv7 per commit: its versionstamp).
    """

    def __init__(self, committer: Committer) -> None:
        self._commit = committer
        self.checks: list[Check] = []
        self.mutations: list[Mutation] = []

    def check(self, key: Sequence[Any], versionstamp: str | None) -> AtomicOperation:
        if versionstamp is not None and not isinstance(versionstamp, str):
            raise InvalidValueError("a check's versionstamp must be a string or null", code="INVALID_CHECK")
        self.checks.append(Check(tuple(key), encode_key(key, allow_empty=False), versionstamp))
        return self

    def mutate(self, *mutations: Mutation) -> AtomicOperation:
        self.mutations.extend(mutations)
        return self

    def set(self, key: Sequence[Any], value: Any, *, expire_in: float | None = None) -> AtomicOperation:
        return self.mutate(make_mutation("set", key, value, expire_in))

    def delete(self, key: Sequence[Any]) -> AtomicOperation:
        return self.mutate(make_mutation("delete", key))

    def sum(self, key: Sequence[Any], value: float, *, expire_in: float | None = None) -> AtomicOperation:
        return self.mutate(make_mutation("sum", key, value, expire_in))

    def min(self, key: Sequence[Any], value: float, *, expire_in: float | None = None) -> AtomicOperation:
        return self.mutate(make_mutation("min", key, value, expire_in))

    def max(self, key: Sequence[Any], value: float, *, expire_in: float | None = None) -> AtomicOperation:
        return self.mutate(make_mutation("max", key, value, expire_in))

    def append(
        self, key: Sequence[Any], items: list[Any], *, expire_in: float | None = None
    ) -> AtomicOperation:
        return self.mutate(make_mutation("append", key, items, expire_in))

    def prepend(
        self, key: Sequence[Any], items: list[Any], *, expire_in: float | None = None
    ) -> AtomicOperation:
        return self.mutate(make_mutation("prepend", key, items, expire_in))

    async def commit(self) -> CommitResult:
        return await self._commit(list(self.checks), list(self.mutations))


async def commit_atomic(
    storage: KvStorage, checks: Sequence[Check], mutations: Sequence[Mutation]
) -> CommitResult:
    """Run ``checks`` then ``mutations`` in one write transaction of ``storage`` (see the module
    docstring); ``ok`` is false, and nothing is written, when a check fails."""
    with storage.op("atomic"):
        if not checks and not mutations:  # nothing to read or write: no transaction at all
            return CommitResult(True)

        def fn(db: BlockingDatabase) -> CommitResult:
            now = storage.now_ms()
            for check in checks:
                row = db.get(
                    f"SELECT versionstamp FROM kv_entries WHERE key = ? AND {LIVE}", [check.encoded, now]
                )
                if (row["versionstamp"] if row else None) != check.versionstamp:
                    return CommitResult(False)
            if not mutations:
                return CommitResult(True)
            versionstamp = storage.next_versionstamp(db)
            for m in mutations:
                key, encoded = m.resolved(versionstamp)
                if m.type == "delete":
                    storage.delete_in_tx(db, encoded, True, now, versionstamp=versionstamp)
                elif m.type == "set":
                    value = resolve_now(m.value, now)
                    storage.put_in_tx(
                        db,
                        encoded,
                        encode_value(value),
                        value,
                        versionstamp=versionstamp,
                        expires_at=storage.expiry(now, m.expire_in),
                    )
                else:
                    row = db.get(
                        f"SELECT value, expires_at FROM kv_entries WHERE key = ? AND {LIVE}", [encoded, now]
                    )
                    current = decode_value(row["value"]) if row else None
                    new = apply_mutation(m.type, current, m.value, key)
                    # The key keeps its expiry (Redis' INCR, not Deno KV's sum, which made the
                    # entry permanent: a counter set with a TTL outlived its window) unless the
                    # mutation gives its own expireIn.
                    if m.expire_in is not None:
                        expires_at = storage.expiry(now, m.expire_in)
                    else:
                        expires_at = row["expires_at"] if row else None
                    storage.put_in_tx(
                        db, encoded, encode_value(new), new, versionstamp=versionstamp, expires_at=expires_at
                    )
            return CommitResult(True, versionstamp)

        result = await storage.write(fn)
        if not result.ok:
            storage.metrics.check_failures.inc()
        return result
