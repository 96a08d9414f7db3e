"""Triggers (``kv.add_trigger``): which commits fire which events, on a real local store."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from buntime.plugins.keyval import InvalidKeyError, InvalidValueError, Kv, KvTransaction, TriggerEvent


class Recorder:
    def __init__(self) -> None:
        self.events: list[TriggerEvent] = []

    def __call__(self, event: TriggerEvent) -> None:
        self.events.append(event)

    def seen(self) -> list[tuple[Any, ...]]:
        return [(e.type, e.key, e.value) for e in self.events]


async def test_set_and_delete_fire_after_the_commit(kv: Kv) -> None:
    got = Recorder()
    kv.add_trigger(["users"], ["set", "delete"], got)
    written = await kv.set(["users", 1], {"name": "Ada"})
    await kv.set(["other", 1], "not watched")
    await kv.set(["users"], "the prefix key itself")
    assert got.seen() == [
        ("set", ("users", 1), {"name": "Ada"}),
        ("set", ("users",), "the prefix key itself"),
    ]
    assert got.events[0].versionstamp == written.versionstamp
    assert got.events[0].as_json() == {
        "key": ["users", 1],
        "type": "set",
        "value": {"name": "Ada"},
        "versionstamp": written.versionstamp,
    }
    got.events.clear()
    assert await kv.delete(["users", 1], exact=True) == 1
    assert got.seen() == [("delete", ("users", 1), None)]


async def test_a_prefix_delete_fires_once_per_deleted_key(kv: Kv) -> None:
    """Upstream fired one event with the prefix as the key, deleted or not."""
    for i in range(3):
        await kv.set(["cart", i], i)
    await kv.set(["cart", "gone"], 0, expire_in=1)
    await asyncio.sleep(0.01)  # expired: not a live key, no event for it
    got = Recorder()
    kv.add_trigger(["cart"], ["delete"], got)
    assert await kv.delete(["cart"]) == 3
    assert got.seen() == [("delete", ("cart", i), None) for i in range(3)]
    got.events.clear()
    assert await kv.delete(["cart"]) == 0
    assert got.events == []  # nothing deleted, nothing fired


async def test_where_deletes_and_batches_fire_for_the_matching_keys(kv: Kv) -> None:
    await kv.set(["u", 1], {"city": "Lisbon"})
    await kv.set(["u", 2], {"city": "Porto"})
    await kv.set(["v", 1], 1)
    got = Recorder()
    kv.add_trigger([], ["delete"], got)  # every key
    assert await kv.delete(["u"], where={"city": "Porto"}) == 1
    assert await kv.delete_many([["u", 1], ["v", 1]], exact=True) == 2
    assert got.seen() == [("delete", ("u", 2), None), ("delete", ("u", 1), None), ("delete", ("v", 1), None)]


async def test_atomics_and_transactions_fire_with_the_new_values(kv: Kv) -> None:
    await kv.set(["n"], 5)
    await kv.set(["old"], 1)
    got = Recorder()
    kv.add_trigger([], ["set", "delete"], got)
    result = await kv.atomic().sum(["n"], 2).append(["log"], ["a"]).delete(["old"]).commit()
    assert got.seen() == [("set", ("n",), 7), ("set", ("log",), ["a"]), ("delete", ("old",), None)]
    assert {e.versionstamp for e in got.events} == {result.versionstamp}
    got.events.clear()
    failed = await kv.atomic().check(["n"], None).set(["n"], 0).commit()
    assert not failed.ok and got.events == []  # a failed check writes and fires nothing

    async def fn(tx: KvTransaction) -> None:
        tx.set(["tx"], (await tx.get(["n"])).value)

    assert (await kv.transaction(fn)).ok
    assert got.seen() == [("set", ("tx",), 7)]


async def test_a_dead_letter_fires_for_its_undelivered_keys(kv: Kv) -> None:
    got = Recorder()
    kv.add_trigger(["failed"], ["set"], got)
    message_id = await kv.queue.enqueue(
        {"job": 1}, backoff_schedule=[], keys_if_undelivered=[["failed", "j1"]]
    )
    assert await kv.queue.dequeue() is not None
    assert await kv.queue.nack(message_id) == "dead"
    assert got.seen() == [("set", ("failed", "j1"), {"job": 1})]


async def test_events_filter_and_prefixes_are_exact(kv: Kv) -> None:
    sets, deletes = Recorder(), Recorder()
    kv.add_trigger(["a"], ["set"], sets)
    kv.add_trigger(["a"], ["delete"], deletes)
    await kv.set(["ab"], 1)  # a longer string, not a child of ["a"]
    await kv.set(["a\x00"], 1)  # a string with a NUL, not a child of ["a"] either
    await kv.set([b"a"], 1)  # bytes, not the string
    await kv.set(["a", "child"], 1)
    await kv.delete(["a", "child"], exact=True)
    assert sets.seen() == [("set", ("a", "child"), 1)]
    assert deletes.seen() == [("delete", ("a", "child"), None)]


async def test_removed_triggers_stop_and_expiry_fires_nothing(kv: Kv) -> None:
    got = Recorder()
    remove = kv.add_trigger([], ["set", "delete"], got)
    await kv.set(["ttl"], 1, expire_in=1)
    got.events.clear()
    await asyncio.sleep(0.01)
    assert await kv.sweep_expired() == 1
    assert got.events == []  # expiry is no write
    remove()
    remove()  # twice is harmless
    await kv.set(["after"], 1)
    assert got.events == []


async def test_async_handlers_may_write_and_failures_do_not_undo_the_write(
    kv: Kv, caplog: pytest.LogCaptureFixture
) -> None:
    async def mirror(event: TriggerEvent) -> None:
        await kv.set(["mirror", *event.key[1:]], event.value)  # the write lock is free again

    def broken(event: TriggerEvent) -> None:
        raise RuntimeError("handler bug")

    kv.add_trigger(["src"], ["set"], broken)
    kv.add_trigger(["src"], ["set"], mirror)
    with caplog.at_level(logging.ERROR, logger="buntime.plugin.keyval"):
        result = await asyncio.wait_for(kv.set(["src", 1], "v"), 5)
    assert result.ok and (await kv.get(["src", 1])).value == "v"
    assert (await kv.get(["mirror", 1])).value == "v"  # the handler after the broken one ran
    assert kv.metrics.trigger_failures._value.get() == 1
    assert "handler bug" in caplog.text


@pytest.mark.parametrize(
    ("prefix", "events", "handler", "error"),
    [
        (["a"], [], print, InvalidValueError),
        (["a"], ["update"], print, InvalidValueError),
        (["a"], "set", print, InvalidValueError),
        (["a"], ["set"], "not callable", InvalidValueError),
        ([None], ["set"], print, InvalidKeyError),
    ],
)
def test_bad_triggers_are_refused(
    kv: Kv, prefix: Any, events: Any, handler: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        kv.add_trigger(prefix, events, handler)
    if error is InvalidValueError:
        assert raised.value.code == "INVALID_TRIGGER"  # type: ignore[attr-defined]
