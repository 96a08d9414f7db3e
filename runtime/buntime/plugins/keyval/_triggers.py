"""Triggers: in-process handlers called after a commit for each entry it wrote or deleted.

``kv.add_trigger(prefix, events, handler)`` registers a handler (upstream's ``addTrigger``) and
returns the function that removes it. The registry is the storage core's change sink: the core
records the entries each write transaction changes (only while a trigger exists) and, once the
transaction committed and the write lock is released, hands them here. So every path that
changes ``kv_entries`` fires: ``set``, ``delete`` (also by prefix and with ``where``),
atomics (``sum``/``min``/``max``/``append``/``prepend`` fire ``set`` with the new value),
transactions and a dead letter's ``keysIfUndelivered``. TTL expiry is no write and fires
nothing. Called by the Kv store, which owns the registry.

* A **prefix** matches the key itself and every key under it (``[]``: every key).
* One event per key, in commit order, with the commit's versionstamp (``""`` for a plain
  delete, which takes none). Upstream fired a prefix delete once, with the prefix as the key,
  whether or not anything was deleted; here each deleted live key fires, and nothing else.
* Handlers run one after the other on the event loop, after the write lock is released (so a
  handler may write to the store), and the write's caller waits for them, as upstream. A
  handler that raises is logged and counted (``buntime_keyval_trigger_failures_total``); the
  write stays committed and the other handlers still run.
* In-process only, as upstream: another pod's writes fire the triggers of that pod.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import InvalidValueError
from ._keys import Key, decode_key, encode_key, key_to_json, prefix_range
from ._metrics import KvMetrics
from ._storage import Change

log = logging.getLogger("buntime.plugin.keyval")

TriggerEventType = Literal["set", "delete"]
TRIGGER_EVENTS: tuple[TriggerEventType, ...] = ("set", "delete")
INVALID_TRIGGER = "INVALID_TRIGGER"


@dataclass(frozen=True)
class TriggerEvent:
    """What a handler gets: the key, ``set`` (with the new value) or ``delete`` (``None``)."""

    key: Key
    type: TriggerEventType
    value: Any
    versionstamp: str

    def as_json(self) -> dict[str, Any]:
        return {
            "key": key_to_json(self.key),
            "type": self.type,
            "value": self.value,
            "versionstamp": self.versionstamp,
        }


TriggerHandler = Callable[[TriggerEvent], Awaitable[None] | None]


@dataclass(frozen=True, eq=False)
class _Trigger:
    encoded: bytes
    lo: bytes
    hi: bytes
    events: frozenset[str]
    handler: TriggerHandler

    def matches(self, change: Change) -> bool:
        return change.type in self.events and (
            change.encoded == self.encoded or self.lo <= change.encoded < self.hi
        )


class Triggers:
    """The triggers of one store (the storage core's change sink).

    Parameters:

    * **metrics** — where failed handlers are counted.
    """

    def __init__(self, metrics: KvMetrics) -> None:
        self._metrics = metrics
        self._triggers: list[_Trigger] = []

    @property
    def active(self) -> bool:
        return bool(self._triggers)

    def add(
        self, prefix: Sequence[Any], events: Sequence[str], handler: TriggerHandler
    ) -> Callable[[], None]:
        """Call ``handler(event)`` for each ``events`` change under ``prefix``; returns the
        function that removes this trigger."""
        encoded = encode_key(prefix)
        if (
            isinstance(events, str)
            or not events
            or not all(isinstance(e, str) and e in TRIGGER_EVENTS for e in events)
        ):
            raise InvalidValueError(
                f"events must be a non-empty list of {', '.join(TRIGGER_EVENTS)}", code=INVALID_TRIGGER
            )
        if not callable(handler):
            raise InvalidValueError("a trigger handler must be callable", code=INVALID_TRIGGER)
        lo, hi = prefix_range(encoded)
        trigger = _Trigger(encoded, lo, hi, frozenset(events), handler)
        self._triggers.append(trigger)

        def remove() -> None:
            if trigger in self._triggers:
                self._triggers.remove(trigger)

        return remove

    async def deliver(self, changes: list[Change]) -> None:
        for change in changes:
            matching = [t for t in self._triggers if t.matches(change)]
            if not matching:
                continue
            event = TriggerEvent(decode_key(change.encoded), change.type, change.value, change.versionstamp)
            for trigger in matching:
                try:
                    outcome = trigger.handler(event)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    self._metrics.trigger_failures.inc()
                    log.exception(
                        "KeyVal trigger on %s failed (the write is committed)", key_to_json(event.key)
                    )
