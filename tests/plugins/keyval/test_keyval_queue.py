"""The queue on a real local file: delivery order, delays, leases, retry with backoff, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from buntime.plugins import PluginHost
from buntime.plugins.keyval import KEYVAL_PLUGIN_NAME, InvalidValueError, KeyValConflictError, Kv

HostStarter = Callable[[dict[str, str]], Awaitable[PluginHost]]


async def test_enqueue_dequeue_ack_in_order(kv: Kv) -> None:
    ids = [await kv.queue.enqueue({"n": i}) for i in range(3)]
    assert (await kv.queue.stats()).as_json() == {"pending": 3, "processing": 0, "dlq": 0, "total": 3}
    first = await kv.queue.dequeue()
    assert first is not None and first.id == ids[0] and first.value == {"n": 0} and first.attempts == 1
    assert first.max_attempts == 4  # default schedule 1s, 5s, 10s -> 3 retries
    assert first.locked_until > kv.now_ms()
    assert (await kv.queue.stats()).processing == 1
    assert await kv.queue.ack(first.id) is True
    assert await kv.queue.ack(first.id) is False
    second, third = await kv.queue.dequeue(), await kv.queue.dequeue()
    assert second is not None and third is not None
    assert [second.value["n"], third.value["n"]] == [1, 2]
    assert await kv.queue.dequeue() is None


async def test_delay(kv: Kv) -> None:
    await kv.queue.enqueue("later", delay=300)
    assert await kv.queue.dequeue() is None
    await asyncio.sleep(0.4)
    message = await kv.queue.dequeue()
    assert message is not None and message.value == "later"


async def test_nack_retries_with_backoff_then_dead_letters(kv: Kv) -> None:
    message_id = await kv.queue.enqueue(
        {"job": "x"}, backoff_schedule=[300, 300], keys_if_undelivered=[["failed", "x"], ["failed", "last"]]
    )
    for attempt in (1, 2):
        message = await kv.queue.dequeue()
        assert message is not None and message.id == message_id and message.attempts == attempt
        assert await kv.queue.nack(message.id, error=f"boom {attempt}") == "retry"
        assert await kv.queue.dequeue() is None  # backing off
        await asyncio.sleep(0.4)
    message = await kv.queue.dequeue()
    assert message is not None and message.attempts == 3 == message.max_attempts
    assert await kv.queue.nack(message.id) == "dead"
    assert await kv.queue.nack(message.id) is None
    stats = await kv.queue.stats()
    assert (stats.pending, stats.processing, stats.dlq, stats.total) == (0, 0, 1, 1)
    [dead] = await kv.queue.list_dlq()
    assert dead.original_id == message_id and dead.value == {"job": "x"} and dead.attempts == 3
    assert dead.error_message == "Max attempts exceeded"
    assert [e.value for e in await kv.get_many([["failed", "x"], ["failed", "last"]])] == [{"job": "x"}] * 2
    assert (await kv.queue.get_dlq(dead.id)) == dead
    new_id = await kv.queue.requeue_dlq(dead.id)
    assert new_id and new_id != message_id
    assert await kv.queue.get_dlq(dead.id) is None
    again = await kv.queue.dequeue()
    assert again is not None and again.id == new_id and again.attempts == 1


async def test_dlq_delete_and_purge(kv: Kv) -> None:
    for i in range(3):
        await kv.queue.enqueue(i, backoff_schedule=[])
        message = await kv.queue.dequeue()
        assert message is not None
        assert await kv.queue.nack(message.id) == "dead"
    letters = await kv.queue.list_dlq()
    assert len(letters) == 3
    assert len(await kv.queue.list_dlq(limit=2, offset=2)) == 1
    assert await kv.queue.delete_dlq(letters[0].id) is True
    assert await kv.queue.delete_dlq(letters[0].id) is False
    assert await kv.queue.requeue_dlq("no-such-id") is None
    assert await kv.queue.purge_dlq() == 2
    assert (await kv.queue.stats()).total == 0


async def test_stale_leases_return_to_pending(start_host: HostStarter, local_env: dict[str, str]) -> None:
    host = await start_host({**local_env, "KEYVAL_QUEUE_LOCK_DURATION": "300ms"})
    kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
    await kv.queue.enqueue("work", backoff_schedule=[0])
    leased = await kv.queue.dequeue()
    assert leased is not None
    assert await kv.queue.requeue_stale() == 0  # lease still valid
    await asyncio.sleep(0.4)
    assert await kv.queue.requeue_stale() == 1
    again = await kv.queue.dequeue()
    assert again is not None and again.id == leased.id and again.attempts == 2
    await asyncio.sleep(0.4)  # the consumer died on the last attempt too
    assert await kv.queue.requeue_stale() == 1
    [dead] = await kv.queue.list_dlq()
    assert dead.original_id == leased.id and "Lease expired" in (dead.error_message or "")


async def test_attempts_fence_a_consumer_whose_lease_ran_out(
    start_host: HostStarter, local_env: dict[str, str]
) -> None:
    kv = (await start_host({**local_env, "KEYVAL_QUEUE_LOCK_DURATION": "200ms"})).get_plugin(
        KEYVAL_PLUGIN_NAME
    )
    await kv.queue.enqueue("work", backoff_schedule=[0, 0])
    slow = await kv.queue.dequeue()
    assert slow is not None and slow.attempts == 1
    await asyncio.sleep(0.25)
    assert await kv.queue.requeue_stale() == 1
    # Nobody leased it since: the late consumer may still finish it (its attempt is the last).
    assert await kv.queue.nack(slow.id, attempts=slow.attempts) == "retry"
    fast = await kv.queue.dequeue()
    assert fast is not None and fast.attempts == 2
    with pytest.raises(KeyValConflictError) as raised:
        await kv.queue.ack(slow.id, attempts=slow.attempts)
    assert raised.value.code == "LEASE_LOST" and raised.value.status == 409
    with pytest.raises(KeyValConflictError):
        await kv.queue.nack(slow.id, attempts=slow.attempts)
    assert (await kv.queue.stats()).processing == 1  # the current lease is untouched
    assert await kv.queue.ack(fast.id, attempts=fast.attempts) is True
    assert await kv.queue.ack(fast.id, attempts=fast.attempts) is False


async def test_background_lease_sweep(start_host: HostStarter, local_env: dict[str, str]) -> None:
    env = {**local_env, "KEYVAL_QUEUE_LOCK_DURATION": "50ms", "KEYVAL_QUEUE_CLEANUP_INTERVAL": "50ms"}
    kv = (await start_host(env)).get_plugin(KEYVAL_PLUGIN_NAME)
    await kv.queue.enqueue("work")
    assert await kv.queue.dequeue() is not None
    for _ in range(100):
        if (await kv.queue.stats()).pending == 1:
            break
        await asyncio.sleep(0.02)
    assert (await kv.queue.stats()).pending == 1


async def test_invalid_queue_options(kv: Kv) -> None:
    with pytest.raises(InvalidValueError):
        await kv.queue.enqueue(1, delay=-1)
    with pytest.raises(InvalidValueError):
        await kv.queue.enqueue(1, backoff_schedule=["soon"])  # type: ignore[list-item]
    with pytest.raises(InvalidValueError):
        await kv.queue.enqueue({1, 2})
