"""Hostile input on the ``/keyval/api`` routes: every limit answers a 4xx with a stable code and
changes nothing (the review findings F3, F5, F6, F7), against a real local database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from buntime.plugins.keyval import InvalidValueError, Kv
from buntime.plugins.keyval._errors import translate_storage_error
from buntime.turso import TursoQueryError

from .test_keyval_http import API, Client, error, ok
from .test_keyval_watch import next_event

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


def nested(levels: int, wrap: Any) -> dict[str, Any]:
    """``levels`` filters, each wrapping the next with ``wrap`` (the innermost: ``{"n": 1}``)."""
    where: dict[str, Any] = {"n": 1}
    for _ in range(levels):
        where = wrap(where)
    return where


async def test_every_filter_within_the_limits_runs_and_beyond_them_is_400(client: Client, kv: Kv) -> None:
    for i in range(3):
        await kv.set(["w", i], {"n": 1, "i": i, **{f"f{j}": j for j in range(256)}})
    one = {"n": 1}
    allowed: list[dict[str, Any]] = [
        {"$and": [one] * 256},  # a flat AND chain of 256 parsed 256 deep; the engine stops at 100
        {f"f{j}": j for j in range(256)},  # 256 fields of one object
        {"$or": [{"i": 9}] * 255 + [{"i": 1}]},
        {"$or": [{}] * 256},  # empty filters count as conditions, up to the limit
        {"n": {"$gte": 1, "$lte": 1, "$ne": 2, "$in": [1], "$nin": [2], "$between": [0, 2], "$gt": 0}},
        nested(16, lambda inner: {"$and": [inner, {"n": 1}]}),
        nested(16, lambda inner: {"$or": [{"i": 9}] * 14 + [inner]}),  # deep and wide: 225 conditions
        nested(15, lambda inner: {"$not": inner}),
    ]
    expected = [[0, 1, 2], [0, 1, 2], [1], [0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2], []]
    for where, matches in zip(allowed, expected, strict=True):
        listed = await ok(await client.post(f"{API}/keys/list", json={"prefix": ["w"], "where": where}))
        assert [e["key"][1] for e in listed] == matches, where
        counted = await ok(await client.get(f"{API}/keys/count", params={"where": json.dumps(where)}))
        assert counted == {"count": len(matches)}
    refused: list[dict[str, Any]] = [
        {"$and": [one] * 257},
        {f"f{j}": j for j in range(257)},
        {"$or": [{}] * 257},  # was no limit at all: only the body size bounded it
        {"$or": [{}] * 200_000},
        nested(17, lambda inner: {"$not": inner}),
    ]
    for where in refused:
        body = {"prefix": ["w"], "where": where}
        await error(await client.post(f"{API}/keys/list", json=body), 400, "INVALID_FILTER")
        body = {"keys": [["w", 0]], "where": where}
        await error(await client.post(f"{API}/keys/delete-batch", json=body), 400, "INVALID_FILTER")
    assert await ok(await client.get(f"{API}/keys/count")) == {"count": 3}


async def test_the_engines_too_deep_refusal_is_a_client_error(kv: Kv) -> None:
    """The safety net behind the compiler: the engine's own "too large" error maps to 400."""
    db = await kv.service.connect(kv.namespace)
    with pytest.raises(TursoQueryError) as refused:
        await db.get("SELECT " + "(1 AND " * 150 + "1" + ")" * 150)
    mapped = translate_storage_error(refused.value)
    assert mapped is not None and (mapped.status, mapped.code) == (400, "INVALID_FILTER")


async def test_prefix_watches_take_distinct_prefixes_and_limit_their_rows_in_total(
    client: Client, kv: Kv
) -> None:
    for i in range(5):
        await kv.set(["k", i], i)
        await kv.set(["m", i], i)
    lists = kv.metrics.snapshot
    before = lists().get("list", {}).get("count", 0)
    polled = await ok(await client.get(f"{API}/watch/prefix/poll", params={"prefix": "," * 1000}))
    assert len(polled["entries"]) == 10
    assert lists()["list"]["count"] - before == 1  # one statement, not one per empty prefix
    # Repeats and prefixes under another one are dropped; limit counts all prefixes together.
    params = {"prefix": "k,m,k,k/1,m/2", "limit": "7"}
    before = lists()["list"]["count"]
    polled = await ok(await client.get(f"{API}/watch/prefix/poll", params=params))
    assert [e["key"] for e in polled["entries"]] == [["k", i] for i in range(5)] + [["m", 0], ["m", 1]]
    assert lists()["list"]["count"] - before == 2
    stream = await client.get(f"{API}/watch/prefix", params={"prefixes": "k,k,k", "initial": "true"})
    _, _, data = await next_event(stream)
    assert sorted(e["key"][1] for e in data) == [0, 1, 2, 3, 4]  # each entry once, not three times
    stream.close()
    # More distinct prefixes than the limit: 400 before any read, for the poll and the stream.
    many = ",".join(f"p{i}" for i in range(33))
    before = lists()["list"]["count"]
    for route in ("watch/prefix/poll", "watch/prefix"):
        await error(await client.get(f"{API}/{route}", params={"prefix": many}), 400, "INVALID_PARAMETER")
    assert lists()["list"]["count"] == before and kv.watch.subscribers == 0
    thirty_two = many.rsplit(",", 1)[0]
    assert (await ok(await client.get(f"{API}/watch/prefix/poll", params={"prefix": thirty_two})))[
        "entries"
    ] == []
