"""OCC transactions (``kv.transaction``), ``kv.uuidv7()`` key placeholders and ``$now`` values
at commit, on a real local store.

Also the protocol upstream's ``Kv`` client runs for its own ``kv.transaction()`` over HTTP:
reads through ``GET /keys/<path>`` and ``POST /keys/batch``, then one ``POST /atomic`` with the
reads as checks, retried while the answer is ``ok: false``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from buntime.plugins.keyval import (
    InvalidKeyError,
    InvalidRequestError,
    InvalidValueError,
    Kv,
    KvTransaction,
    TransactionResult,
)

API = "/keyval/api"
Client = TestClient[web.Request, web.Application]


async def test_reads_and_writes_commit_together(kv: Kv) -> None:
    await kv.set(["acct", "a"], 100)
    await kv.set(["acct", "b"], 50)

    async def transfer(tx: KvTransaction) -> int:
        a, b = await tx.get_many([["acct", "a"], ["acct", "b"]])
        tx.set(["acct", "a"], a.value - 30).set(["acct", "b"], b.value + 30)
        return int(a.value) - 30

    result = await kv.transaction(transfer)
    assert result.ok and result.value == 70 and result.versionstamp is not None
    assert result.as_json() == {"ok": True, "value": 70, "versionstamp": result.versionstamp}
    a, b = await kv.get_many([["acct", "a"], ["acct", "b"]])
    assert (a.value, b.value) == (70, 80)
    assert a.versionstamp == b.versionstamp == result.versionstamp  # one commit


async def test_a_concurrent_write_to_a_read_key_is_a_conflict(kv: Kv) -> None:
    await kv.set(["shared"], {"version": 1})

    async def fn(tx: KvTransaction) -> None:
        first = await tx.get(["shared"])
        await kv.set(["shared"], {"version": 2})  # someone else, between the read and the commit
        again = await tx.get(["shared"])  # snapshot: the first read, not the new value
        assert again == first
        tx.set(["shared"], {"version": 3})

    result = await kv.transaction(fn)
    assert result == TransactionResult(False, error="conflict")
    assert result.as_json() == {"ok": False, "error": "conflict"}
    assert (await kv.get(["shared"])).value == {"version": 2}  # the other write survives


async def test_reading_an_absent_key_checks_that_it_stays_absent(kv: Kv) -> None:
    async def fn(tx: KvTransaction) -> None:
        assert (await tx.get(["claim"])).versionstamp is None
        await kv.set(["claim"], "other")  # created in between
        tx.set(["claim"], "mine")

    assert (await kv.transaction(fn)).error == "conflict"
    assert (await kv.get(["claim"])).value == "other"


async def test_a_conflict_is_retried_with_a_fresh_read(kv: Kv) -> None:
    await kv.set(["counter"], 0)
    attempts = 0

    async def fn(tx: KvTransaction) -> int:
        nonlocal attempts
        attempts += 1
        entry = await tx.get(["counter"])
        if attempts == 1:
            await kv.set(["counter"], 999)
        tx.set(["counter"], entry.value + 1)
        return attempts

    result = await kv.transaction(fn, max_retries=3, retry_delay=1)
    assert result.ok and result.value == 2
    assert (await kv.get(["counter"])).value == 1000


async def test_retries_run_out(kv: Kv) -> None:
    attempts = 0

    async def fn(tx: KvTransaction) -> None:
        nonlocal attempts
        attempts += 1
        await tx.get(["hot"])
        await kv.set(["hot"], attempts)
        tx.set(["hot"], -1)

    result = await kv.transaction(fn, max_retries=2, retry_delay=1)
    assert result.error == "conflict" and attempts == 3
    assert (await kv.get(["hot"])).value == 3


async def test_concurrent_increments_lose_nothing(kv: Kv) -> None:
    await kv.set(["n"], 0)

    async def bump(tx: KvTransaction) -> None:
        entry = await tx.get(["n"])
        await asyncio.sleep(0)  # let the others read the same value
        tx.set(["n"], entry.value + 1)

    results = await asyncio.gather(*(kv.transaction(bump, max_retries=50, retry_delay=1) for _ in range(8)))
    assert all(r.ok for r in results)
    assert (await kv.get(["n"])).value == 8


async def test_an_exception_is_an_error_result_and_writes_nothing(kv: Kv) -> None:
    await kv.set(["safe"], "original")

    async def fn(tx: KvTransaction) -> None:
        await tx.get(["safe"])
        tx.set(["safe"], "modified")
        raise RuntimeError("business rule")

    result = await kv.transaction(fn)
    assert result.as_json() == {"ok": False, "error": "error", "message": "business rule"}
    assert (await kv.get(["safe"])).value == "original"


async def test_a_bad_mutation_in_the_callback_is_an_error_result(kv: Kv) -> None:
    async def fn(tx: KvTransaction) -> None:
        tx.set([None], 1)  # type: ignore[list-item]

    result = await kv.transaction(fn)
    assert result.error == "error" and result.message is not None


async def test_a_transaction_is_closed_after_its_commit(kv: Kv) -> None:
    leaked: list[KvTransaction] = []

    async def fn(tx: KvTransaction) -> None:
        leaked.append(tx)
        await tx.get(["k"])
        tx.set(["x"], 1).delete(["y"]).sum(["z"], 1)
        assert (tx.read_count, tx.write_count) == (1, 3)

    assert (await kv.transaction(fn)).ok
    (tx,) = leaked
    for call in (lambda: tx.set(["k"], 1), lambda: tx.delete(["k"]), lambda: tx.sum(["k"], 1)):
        with pytest.raises(InvalidRequestError) as raised:
            call()
        assert raised.value.code == "TRANSACTION_CLOSED"
    with pytest.raises(InvalidRequestError):
        await tx.get(["k"])


async def test_read_only_and_empty_transactions(kv: Kv) -> None:
    async def read(tx: KvTransaction) -> Any:
        return (await tx.get(["none"])).value

    assert await kv.transaction(read) == TransactionResult(True, None, None)


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"max_retries": -1}, "INVALID_TRANSACTION_OPTION"),
        ({"retry_delay": float("nan")}, "INVALID_TRANSACTION_OPTION"),
    ],
)
async def test_bad_options_are_refused(kv: Kv, options: dict[str, Any], code: str) -> None:
    async def fn(tx: KvTransaction) -> None:
        tx.set(["never"], 1)

    with pytest.raises(InvalidValueError) as raised:
        await kv.transaction(fn, **options)
    assert raised.value.code == code
    assert (await kv.get(["never"])).versionstamp is None


async def test_a_transaction_keeps_search_indexes_in_step(kv: Kv) -> None:
    """Upstream's atomic() and transaction() never updated the search tables."""
    await kv.create_index(["notes"], ["t"])

    async def fn(tx: KvTransaction) -> None:
        tx.set(["notes", 1], {"t": "written in a transaction"}).set(
            ["notes", kv.uuidv7()], {"t": "placeholder"}
        )

    assert (await kv.transaction(fn)).ok
    assert [e.key for e in await kv.search(["notes"], "transaction")] == [("notes", 1)]
    assert len(await kv.search(["notes"], "placeholder")) == 1

    async def remove(tx: KvTransaction) -> None:
        tx.delete(["notes", 1])

    assert (await kv.transaction(remove)).ok
    assert await kv.search(["notes"], "transaction") == []


# -- kv.uuidv7() ----------------------------------------------------------------------------
async def test_uuidv7_placeholders_resolve_to_the_commit_versionstamp(kv: Kv) -> None:
    post = kv.uuidv7()
    result = await (
        kv.atomic()
        .set(["posts", post], {"title": "hi"})
        .set(["posts_by_author", "ada", post], "ref")
        .sum(["post_count", post], 1)
        .commit()
    )
    assert result.ok and result.versionstamp is not None
    vs = result.versionstamp
    assert [e.key for e in await kv.list(["posts"])] == [("posts", vs)]
    assert (await kv.get(["posts_by_author", "ada", vs])).value == "ref"
    assert (await kv.get(["post_count", vs])).value == 1
    # One per commit, in commit order.
    later = await kv.atomic().set(["posts", kv.uuidv7()], {"title": "later"}).commit()
    assert later.versionstamp is not None and later.versionstamp > vs
    assert [e.key[1] for e in await kv.list(["posts"])] == [vs, later.versionstamp]


async def test_uuidv7_in_a_transaction_and_a_failed_check(kv: Kv) -> None:
    async def fn(tx: KvTransaction) -> None:
        tx.set(["events", kv.uuidv7()], "e")

    result = await kv.transaction(fn)
    assert result.ok and [e.key for e in await kv.list(["events"])] == [("events", result.versionstamp)]
    await kv.set(["guard"], 1)
    failed = await kv.atomic().check(["guard"], None).set(["events", kv.uuidv7()], "no").commit()
    assert not failed.ok and await kv.count(["events"]) == 1


async def test_uuidv7_keys_are_validated_before_the_commit(kv: Kv) -> None:
    with pytest.raises(InvalidKeyError):
        kv.atomic().set(["x" * 2040, kv.uuidv7()], 1)  # too long once resolved
    with pytest.raises(InvalidKeyError):
        kv.atomic().check([kv.uuidv7()], None)  # checks name existing keys: no placeholder


async def test_uuidv7_over_http(client: Client) -> None:
    response = await client.post(
        f"{API}/atomic",
        json={
            "mutations": [
                {"type": "set", "key": ["posts", {"$uuidv7": True}], "value": 1},
                {"type": "set", "key": ["by_time", {"$uuidv7": True}, "p"], "value": 2},
            ]
        },
    )
    body = await response.json()
    assert response.status == 200 and body["ok"] is True, body
    vs = body["versionstamp"]
    listed = await (await client.get(f"{API}/keys?prefix=posts")).json()
    assert [e["key"] for e in listed] == [["posts", vs]]
    for bad in ({"$uuidv7": False}, {"$uuidv7": 1}, {"$uuidv7": True, "x": 1}, {}):
        response = await client.post(
            f"{API}/atomic", json={"mutations": [{"type": "set", "key": [bad], "value": 1}]}
        )
        assert response.status == 400 and (await response.json())["code"] == "INVALID_KEY"
    assert await (await client.get(f"{API}/keys/count")).json() == {"count": 2}  # nothing else written


# -- upstream's client transaction over HTTP -------------------------------------------------
async def _client_transaction(
    client: Client, key: str, *, interfere: bool, max_retries: int
) -> dict[str, Any]:
    """What ``@buntime/keyval``'s ``kv.transaction`` sends: read, compute, POST /atomic with
    the reads as checks; ``ok: false`` means "retry" (it reads the JSON whatever the status)."""
    for attempt in range(max_retries + 1):
        response = await client.get(f"{API}/keys/{key}")
        entry = await response.json() if response.status == 200 else {"versionstamp": None, "value": None}
        if interfere and attempt == 0:
            await client.put(f"{API}/keys/{key}", json=1000)
        committed = await (
            await client.post(
                f"{API}/atomic",
                json={
                    "checks": [{"key": [key], "versionstamp": entry["versionstamp"]}],
                    "mutations": [{"type": "set", "key": [key], "value": (entry["value"] or 0) + 1}],
                },
            )
        ).json()
        if committed["ok"]:
            return {"ok": True, "versionstamp": committed["versionstamp"], "attempts": attempt + 1}
    return {"ok": False}


async def test_the_upstream_client_transaction_protocol(client: Client) -> None:
    await client.put(f"{API}/keys/c", json=1)
    assert (await _client_transaction(client, "c", interfere=False, max_retries=0))["ok"]
    assert await _client_transaction(client, "c", interfere=True, max_retries=0) == {"ok": False}
    done = await _client_transaction(client, "c", interfere=True, max_retries=1)
    assert done["ok"] and done["attempts"] == 2
    assert (await (await client.get(f"{API}/keys/c")).json())["value"] == 1001


# -- $now ----------------------------------------------------------------------------------
async def test_now_in_a_transaction_resolves_at_commit(kv: Kv) -> None:
    async def fn(tx: KvTransaction) -> None:
        tx.set(["ev"], {"at": {"$now": True}, "soon": {"$now": True, "$offset": 500}})

    before = kv.now_ms()
    assert (await kv.transaction(fn)).ok
    value = (await kv.get(["ev"])).value
    assert before <= value["at"] <= kv.now_ms() and value["soon"] == value["at"] + 500


@pytest.mark.parametrize("offset", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_a_non_finite_now_offset_is_refused(client: Client, offset: str) -> None:
    """Python's JSON parser takes NaN and Infinity: they used to reach int() and answer 500."""
    placeholder = f'{{"$now": true, "$offset": {offset}}}'
    put = await client.put(f"{API}/keys/ev", data=placeholder)
    assert put.status == 400 and (await put.json())["code"] == "INVALID_VALUE"
    atomic = await client.post(
        f"{API}/atomic", data=f'{{"mutations": [{{"type": "set", "key": ["ev"], "value": {placeholder}}}]}}'
    )
    assert atomic.status == 400 and (await atomic.json())["code"] == "INVALID_VALUE"
    assert (await client.get(f"{API}/keys/ev")).status == 404  # nothing written
