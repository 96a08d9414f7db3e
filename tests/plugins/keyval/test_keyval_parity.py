"""The request and response shapes the upstream ``Kv`` client speaks: bare arrays, bigint
operands, enqueue ``options``, append/prepend, index ``options`` and dead-letter requeues."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from buntime.plugins.keyval import InvalidValueError, Kv

API = "/keyval/api"
Client = TestClient[web.Request, web.Application]


async def ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


def bigint(n: int) -> dict[str, str]:
    return {"__type": "bigint", "value": str(n)}


async def test_lists_are_bare_arrays(client: Client) -> None:
    await ok(await client.put(f"{API}/keys/a/1", json=1))
    assert [e["key"] for e in await ok(await client.get(f"{API}/keys", params={"prefix": "a"}))] == [["a", 1]]
    assert len(await ok(await client.post(f"{API}/keys/list", json={"prefix": ["a"]}))) == 1
    batch = await ok(await client.post(f"{API}/keys/batch", json={"keys": [["a", 1]]}))
    assert isinstance(batch, list) and batch[0]["value"] == 1
    assert await ok(await client.get(f"{API}/queue/dlq")) == []


async def test_sum_min_max_take_the_clients_bigint(client: Client, kv: Kv) -> None:
    async def mutate(type_: str, value: Any) -> None:
        await ok(
            await client.post(
                f"{API}/atomic", json={"mutations": [{"type": type_, "key": ["n"], "value": value}]}
            )
        )

    await mutate("sum", bigint(5))
    await mutate("sum", bigint(2**70))
    assert (await kv.get(["n"])).value == bigint(2**70 + 5)
    await mutate("sum", 1)  # an integer joins a bigint exactly
    await mutate("max", bigint(3))
    await mutate("min", bigint(-1))
    assert (await kv.get(["n"])).value == bigint(-1)
    await ok(
        await client.post(f"{API}/atomic", json={"mutations": [{"type": "sum", "key": ["f"], "value": 1.5}]})
    )
    bad = await client.post(
        f"{API}/atomic", json={"mutations": [{"type": "sum", "key": ["f"], "value": bigint(1)}]}
    )
    assert bad.status == 400 and (await bad.json())["code"] == "INVALID_MUTATION"
    bad = await client.post(
        f"{API}/atomic", json={"mutations": [{"type": "sum", "key": ["f"], "value": "5"}]}
    )
    assert bad.status == 400


@pytest.mark.parametrize(
    ("stored", "operand"),
    [
        (10**400, 0.5),  # an int beyond a float's range plus a fraction: OverflowError, a 500
        (1.5e308, 1.5e308),  # two floats whose sum is past a float's range
        (bigint(10**4300 - 1), bigint(1)),  # a bigint of 4301 digits: str() refused it, a 500
        (bigint(10**4300 - 1), 1),
        (10**4299, bigint(10**4300 - 1)),
    ],
)
async def test_a_sum_beyond_what_its_type_holds_is_400_and_writes_nothing(
    client: Client, kv: Kv, stored: Any, operand: Any
) -> None:
    before = await kv.set(["n"], stored)
    body = {
        "mutations": [
            {"type": "sum", "key": ["n"], "value": operand},
            {"type": "set", "key": ["o"], "value": 1},
        ]
    }
    bad = await client.post(f"{API}/atomic", json=body)
    assert bad.status == 400 and (await bad.json())["code"] == "INVALID_MUTATION", await bad.text()
    entry = await kv.get(["n"])
    assert (entry.value, entry.versionstamp) == (stored, before.versionstamp)
    assert (await kv.get(["o"])).versionstamp is None


@pytest.mark.parametrize("type_", ["sum", "min", "max"])
@pytest.mark.parametrize("operand", ["NaN", "Infinity", "-Infinity"])
async def test_a_nan_or_infinite_operand_is_400_for_sum_min_and_max_alike(
    client: Client, kv: Kv, type_: str, operand: str
) -> None:
    """Python's parser takes NaN and Infinity: max(5, NaN) is 5, so a NaN max answered 200 with a
    new versionstamp and the value unchanged, while a NaN sum was 400."""
    before = await kv.set(["n"], 5)
    for key in ("n", "missing"):  # json.dumps would refuse to write NaN: the body as a client sends it
        body = f'{{"mutations": [{{"type": "{type_}", "key": ["{key}"], "value": {operand}}}]}}'
        bad = await client.post(f"{API}/atomic", data=body, headers={"Content-Type": "application/json"})
        assert bad.status == 400 and (await bad.json())["code"] == "INVALID_MUTATION", await bad.text()
    assert (await kv.get(["n"])).versionstamp == before.versionstamp
    assert (await kv.get(["missing"])).versionstamp is None
    with pytest.raises(InvalidValueError):
        getattr(kv.atomic(), type_)(["n"], float(operand))


async def test_append_and_prepend(client: Client, kv: Kv) -> None:
    body = {
        "mutations": [
            {"type": "append", "key": ["log"], "value": [2, 3]},
            {"type": "prepend", "key": ["log"], "value": [1]},
            {"type": "append", "key": ["log"], "value": [{"x": 4}]},
        ]
    }
    result = await ok(await client.post(f"{API}/atomic", json=body))
    assert result["ok"] is True
    assert (await kv.get(["log"])).value == [1, 2, 3, {"x": 4}]
    await kv.set(["scalar"], 1)
    bad = await client.post(
        f"{API}/atomic", json={"mutations": [{"type": "append", "key": ["scalar"], "value": [1]}]}
    )
    assert bad.status == 400 and (await bad.json())["code"] == "INVALID_MUTATION"
    try:
        kv.atomic().append(["log"], 5)  # type: ignore[arg-type]
    except InvalidValueError as exc:
        assert exc.code == "INVALID_MUTATION"
    else:
        raise AssertionError("a non-list append operand was accepted")


async def test_enqueue_options_and_requeue_keep_the_policy(client: Client, kv: Kv) -> None:
    sent = {"value": {"job": 1}, "options": {"backoffSchedule": [0], "keysIfUndelivered": [["dead", 1]]}}
    message_id = (await ok(await client.post(f"{API}/queue/enqueue", json=sent)))["id"]
    for attempt in (1, 2):  # a one-step schedule: two attempts, then the dead-letter queue
        polled = await ok(await client.get(f"{API}/queue/poll"))
        assert polled["message"]["id"] == message_id and polled["message"]["maxAttempts"] == 2
        outcome = await ok(await client.post(f"{API}/queue/nack", json={"id": message_id}))
        assert outcome["result"] == ("retry" if attempt == 1 else "dead")
    assert (await kv.get(["dead", 1])).value == {"job": 1}
    letters = await ok(await client.get(f"{API}/queue/dlq"))
    requeued = await ok(await client.post(f"{API}/queue/dlq/{letters[0]['id']}/requeue"))
    polled = await ok(await client.get(f"{API}/queue/poll"))
    assert polled["message"]["id"] == requeued["id"] and polled["message"]["maxAttempts"] == 2

    delayed = {"value": 2, "options": {"delay": 60_000, "maxAttempts": 7}}
    await ok(await client.post(f"{API}/queue/enqueue", json=delayed))
    assert (await ok(await client.get(f"{API}/queue/stats")))["pending"] == 1
    assert await ok(await client.get(f"{API}/queue/poll")) == {"message": None}  # not ready for a minute
    bad = await client.post(f"{API}/queue/enqueue", json={"value": 1, "options": {"maxAttempts": 0}})
    assert bad.status == 400 and (await bad.json())["code"] == "INVALID_QUEUE_OPTION"


async def test_index_fields_at_the_top_or_under_options(client: Client) -> None:
    await ok(await client.put(f"{API}/keys/docs/1", json={"t": "hello"}))
    await ok(await client.post(f"{API}/indexes", json={"prefix": ["docs"], "options": {"fields": ["t"]}}))
    assert [
        e["key"]
        for e in await ok(await client.get(f"{API}/search", params={"prefix": "docs", "query": "hell"}))
    ] == [["docs", 1]]
    await ok(
        await client.post(f"{API}/indexes", json={"prefix": ["docs"], "fields": ["t"], "tokenize": "porter"})
    )
    indexes = await ok(await client.get(f"{API}/indexes"))
    assert [i["tokenize"] for i in indexes] == ["porter"]


async def test_now_placeholders_in_values(client: Client, kv: Kv) -> None:
    before = kv.now_ms()
    await ok(
        await client.put(
            f"{API}/keys/ev/1", json={"at": {"$now": True}, "due": [{"$now": True, "$offset": 1000}]}
        )
    )
    stored = (await kv.get(["ev", 1])).value
    assert before <= stored["at"] <= kv.now_ms() and stored["due"][0] == stored["at"] + 1000
    body = {"mutations": [{"type": "set", "key": ["ev", 2], "value": {"at": {"$now": True, "$offset": -5}}}]}
    await ok(await client.post(f"{API}/atomic", json=body))
    assert isinstance((await kv.get(["ev", 2])).value["at"], int)
    await kv.set(["ev", 3], {"$now": "no"})  # not a placeholder: stored as is
    assert (await kv.get(["ev", 3])).value == {"$now": "no"}
