"""Hostile input on the ``/keyval/api`` routes: every limit answers a 4xx with a stable code and
changes nothing (the review findings F3, F5, F6, F7), against a real local database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from buntime.plugins.keyval import InvalidValueError, Kv

from .test_keyval_http import API, Client, error, ok

MAX_VALUE_BYTES = 64 * 1024  # Deno KV's, as docs/runtime-server.md states


async def nothing_stored(client: Client) -> None:
    assert await ok(await client.get(f"{API}/keys/count")) == {"count": 0}
    assert (await ok(await client.get(f"{API}/queue/stats")))["total"] == 0


async def test_unvalidated_keys_values_queue_options_and_operands_are_400(client: Client) -> None:
    digits = "9" * 5000  # over Python's 4300-digit int() limit
    await error(await client.put(f"{API}/keys/n/{digits}", json=1), 400, "INVALID_KEY")
    await error(await client.get(f"{API}/keys/n/{digits}"), 400, "INVALID_KEY")
    await error(await client.get(f"{API}/keys", params={"prefix": f"n/{digits}"}), 400, "INVALID_KEY")
    await error(await client.get(f"{API}/watch/poll", params={"keys": f"n/{digits}"}), 400, "INVALID_KEY")

    deep = "[" * 600 + "]" * 600  # the parser takes it; resolving $now recursed past the limit
    await error(await client.put(f"{API}/keys/deep", data=deep), 400, "INVALID_VALUE")
    mutation = '{"mutations": [{"type": "set", "key": ["deep"], "value": ' + deep + "}]}"
    await error(await client.post(f"{API}/atomic", data=mutation), 400, "INVALID_VALUE")
    message = '{"value": ' + deep + "}"
    await error(await client.post(f"{API}/queue/enqueue", data=message), 400, "INVALID_VALUE")
    eq = '{"where": {"a": {"$eq": ' + deep + "}}}"  # the engine's JSON parser refused it (500)
    await error(await client.post(f"{API}/keys/list", data=eq), 400, "INVALID_FILTER")
    shallow = "[" * 128 + "]" * 128
    await ok(await client.put(f"{API}/keys/shallow", data=shallow))
    await error(await client.put(f"{API}/keys/deep", data="[" + shallow + "]"), 400, "INVALID_VALUE")
    await ok(await client.delete(f"{API}/keys/shallow"))

    for schedule in (5, True, {"a": 1}):
        body = {"value": 1, "backoffSchedule": schedule}
        await error(await client.post(f"{API}/queue/enqueue", json=body), 400, "INVALID_QUEUE_OPTION")

    huge: list[Any] = [
        {"__type": "bigint", "value": "1" + "0" * 4000},
        {"__type": "bigint", "value": str(2**63)},
        -(2**63) - 1,
        {"$now": True, "$offset": 1e300},
    ]
    for operand in huge:
        for where in ({"n": {"$gt": operand}}, {"n": {"$in": [operand]}}):
            response = await client.post(f"{API}/keys/list", data=json.dumps({"where": where}))
            await error(response, 400, "INVALID_FILTER")
    bound = {"n": {"$lte": {"__type": "bigint", "value": str(2**63 - 1)}}}
    assert await ok(await client.post(f"{API}/keys/list", json={"where": bound})) == []
    await nothing_stored(client)


async def test_the_python_api_refuses_what_the_routes_refuse(kv: Kv) -> None:
    deep: Any = []
    for _ in range(600):
        deep = [deep]
    with pytest.raises(InvalidValueError):
        await kv.set(["deep"], deep)
    with pytest.raises(InvalidValueError):
        await kv.queue.enqueue(deep)
    with pytest.raises(InvalidValueError):
        await kv.atomic().set(["deep"], deep).commit()
    with pytest.raises(InvalidValueError):
        await kv.queue.enqueue(1, backoff_schedule=5)  # type: ignore[arg-type]
    assert await kv.count() == 0 and (await kv.queue.stats()).total == 0


async def test_values_over_64_kib_are_413_whatever_writes_them(client: Client, kv: Kv) -> None:
    fits = "x" * (MAX_VALUE_BYTES - 2)  # with its quotes: exactly the limit
    await ok(await client.put(f"{API}/keys/fits", json=fits))
    assert (await kv.get(["fits"])).value == fits
    over = fits + "x"
    await error(await client.put(f"{API}/keys/big", json=over), 413, "VALUE_TOO_LARGE")
    set_over = {"mutations": [{"type": "set", "key": ["big"], "value": over}]}
    await error(await client.post(f"{API}/atomic", json=set_over), 413, "VALUE_TOO_LARGE")
    await error(await client.post(f"{API}/queue/enqueue", json={"value": over}), 413, "VALUE_TOO_LARGE")
    # Appends that each fit, until the stored list would not: that one changes nothing.
    chunk = ["y" * 1000] * 30  # about 30 KB of JSON
    append = {"mutations": [{"type": "append", "key": ["log"], "value": chunk}]}
    await ok(await client.post(f"{API}/atomic", json=append))
    await ok(await client.post(f"{API}/atomic", json=append))
    before = await kv.get(["log"])
    assert before.value is not None and len(before.value) == 60
    await error(await client.post(f"{API}/atomic", json=append), 413, "VALUE_TOO_LARGE")
    prepend = {"mutations": [{"type": "prepend", "key": ["log"], "value": chunk}]}
    await error(await client.post(f"{API}/atomic", json=prepend), 413, "VALUE_TOO_LARGE")
    assert await kv.get(["log"]) == before
    assert await ok(await client.get(f"{API}/keys/count")) == {"count": 2}  # fits and log
    assert (await ok(await client.get(f"{API}/queue/stats")))["total"] == 0
    with pytest.raises(InvalidValueError):
        await kv.set(["big"], over)
