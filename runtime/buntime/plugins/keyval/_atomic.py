"""Atomic operations: versionstamp checks plus set/delete/sum/min/max/append/prepend in one transaction.

Built by ``kv.atomic()`` and committed by the Kv store, which runs the checks inside the same
write transaction as the mutations (and under the store's write lock), so of two concurrent
commits that check the same versionstamp exactly one succeeds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import InvalidValueError
from ._keys import Key, encode_key
from ._values import bigint_of, bigint_value, encode_value, is_number

MutationType = Literal["set", "delete", "sum", "min", "max", "append", "prepend"]
MUTATION_TYPES: tuple[MutationType, ...] = ("set", "delete", "sum", "min", "max", "append", "prepend")
NUMERIC_MUTATIONS = frozenset({"sum", "min", "max"})
LIST_MUTATIONS = frozenset({"append", "prepend"})


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
    key: Key
    encoded: bytes
    value: Any = None
    expire_in: float | None = None


def validate_expire_in(expire_in: object) -> float | None:
    """A TTL in milliseconds: a positive finite number, or ``None`` for no expiry."""
    if expire_in is None:
        return None
    if not is_number(expire_in) or not (0 < float(expire_in) < float("inf")):  # type: ignore[arg-type]
        raise InvalidValueError(
            "expireIn must be a positive number of milliseconds", code="INVALID_EXPIRE_IN"
        )
    return float(expire_in)  # type: ignore[arg-type]


def make_mutation(type_: str, key: Sequence[Any], value: Any = None, expire_in: object = None) -> Mutation:
    """Validate one mutation up front, so a bad one fails before any statement runs."""
    if type_ not in MUTATION_TYPES:
        raise InvalidValueError(
            f"unknown mutation type {type_!r}: use one of {', '.join(MUTATION_TYPES)}",
            code="INVALID_MUTATION",
        )
    encoded = encode_key(key, allow_empty=False)
    if type_ == "set":
        encode_value(value)
    elif type_ in NUMERIC_MUTATIONS and not is_number(value) and bigint_of(value) is None:
        raise InvalidValueError(
            f"{type_} needs a number or bigint operand (got {value!r})", code="INVALID_MUTATION"
        )
    elif type_ in LIST_MUTATIONS:
        if not isinstance(value, list):
            raise InvalidValueError(f"{type_} needs a list of items (got {value!r})", code="INVALID_MUTATION")
        encode_value(value)
    return Mutation(type_, tuple(key), encoded, value, validate_expire_in(expire_in))  # type: ignore[arg-type]


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
    bigint, exactly; a bigint never mixes with a fraction."""
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
        return bigint_value(_combine(type_, left, right))
    return _combine(type_, current, operand)


def _combine(type_: MutationType, current: Any, operand: Any) -> Any:
    if type_ == "sum":
        return current + operand
    return min(current, operand) if type_ == "min" else max(current, operand)


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

    Each method validates at once and returns the operation, so calls chain.
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

    def sum(self, key: Sequence[Any], value: float) -> AtomicOperation:
        return self.mutate(make_mutation("sum", key, value))

    def min(self, key: Sequence[Any], value: float) -> AtomicOperation:
        return self.mutate(make_mutation("min", key, value))

    def max(self, key: Sequence[Any], value: float) -> AtomicOperation:
        return self.mutate(make_mutation("max", key, value))

    def append(self, key: Sequence[Any], items: list[Any]) -> AtomicOperation:
        return self.mutate(make_mutation("append", key, items))

    def prepend(self, key: Sequence[Any], items: list[Any]) -> AtomicOperation:
        return self.mutate(make_mutation("prepend", key, items))

    async def commit(self) -> CommitResult:
        return await self._commit(list(self.checks), list(self.mutations))
