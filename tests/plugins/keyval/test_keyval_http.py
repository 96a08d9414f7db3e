"""Every ``/keyval/api`` route through aiohttp against a real local database, errors included."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from buntime.plugins import PluginHost
from buntime.plugins.keyval import KeyValCommitUnknownError, Kv

from .conftest import commit_outcome_unknown

API = "/keyval/api"
Client = TestClient[web.Request, web.Application]


async def ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def error(response: Any, status: int, code: str) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert body["code"] == code and isinstance(body["error"], str), body
    return dict(body)


async def test_put_get_delete_a_key(client: Client) -> None:
    put = await ok(await client.put(f"{API}/keys/users/42/profile", json={"name": "Ada"}))
    assert put["ok"] is True and len(put["versionstamp"]) == 20
    got = await ok(await client.get(f"{API}/keys/users/42/profile"))
    assert got == {
        "key": ["users", 42, "profile"],
        "value": {"name": "Ada"},
        "versionstamp": put["versionstamp"],
        "expiresAt": None,
    }
    await ok(await client.put(f"{API}/keys/files/a%2Fb.txt", data="null"))  # %2F stays inside one part
    assert (await ok(await client.get(f"{API}/keys/files/a%2Fb.txt")))["key"] == ["files", "a/b.txt"]
    await ok(await client.put(f"{API}/keys/users/42", data="1"))
    assert await ok(await client.delete(f"{API}/keys/users/42?exact=true")) == {"deletedCount": 1}
    assert (await ok(await client.get(f"{API}/keys/users/42/profile")))["value"] == {"name": "Ada"}
    assert await ok(await client.delete(f"{API}/keys/users/42")) == {"deletedCount": 1}
    await error(await client.get(f"{API}/keys/users/42/profile"), 404, "KEY_NOT_FOUND")


#: Values whose stored JSON text the read routes copy into responses unparsed: each must read
#: back exactly as ``Kv.get``/``Kv.list`` decode it (non-ASCII and escapes, big and negative
#: ints, floats, the client's bigint and bytes wrappers, nesting, scalars, null).
RAW_VALUES: list[Any] = [
    {"name": "Zoë 東京 😀", "quote": 'say "hi"\\n\u0000', "tab": "\t"},
    2**70,
    -(2**63) - 1,
    0.1,
    -1.5e-300,
    1e300,
    {"__type": "bigint", "value": "12345678901234567890"},
    {"$bytes": "AAEC/w=="},
    [[], {}, [None, True, False], {"a": {"b": [1, 2.5, "x"]}}],
    "",
    None,
    False,
    0,
]


async def test_read_routes_answer_the_values_as_decoded(client: Client, kv: Kv) -> None:
    keys = [("raw", i) for i in range(len(RAW_VALUES))] + [("raw", b"\x00\xff"), ("raw", "é/ü")]
    values = [*RAW_VALUES, "bytes key", "unicode key"]
    for key, value in zip(keys, values, strict=True):
        await kv.set(key, value, expire_in=60_000 if key[1] == 0 else None)
    expected = [e.as_json() for e in await kv.list(["raw"])]
    assert len(expected) == len(keys) and any(e["expiresAt"] is not None for e in expected)
    # The same entries through every read route that passes stored JSON through.
    assert await ok(await client.get(f"{API}/keys?prefix=raw")) == expected
    assert await ok(await client.post(f"{API}/keys/list", json={"prefix": ["raw"]})) == expected
    reverse = await ok(await client.post(f"{API}/keys/list", json={"prefix": ["raw"], "reverse": True}))
    assert reverse == expected[::-1]
    for i, value in enumerate(RAW_VALUES):
        got = await ok(await client.get(f"{API}/keys/raw/{i}"))
        assert got == next(e for e in expected if e["key"] == ["raw", i]), got
        assert got["value"] == value and type(got["value"]) is type(value)
    response = await client.get(f"{API}/keys/raw/0")
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_put_with_ttl(client: Client) -> None:
    await ok(await client.put(f"{API}/keys/session/1?expireIn=400", json="token"))
    got = await ok(await client.get(f"{API}/keys/session/1"))
    assert got["expiresAt"] is not None
    await asyncio.sleep(0.5)
    await error(await client.get(f"{API}/keys/session/1"), 404, "KEY_NOT_FOUND")
    await error(await client.put(f"{API}/keys/session/2?expireIn=soon", json=1), 400, "INVALID_PARAMETER")
    await error(await client.put(f"{API}/keys/session/2?expiresIn=-5", json=1), 400, "INVALID_EXPIRE_IN")


async def test_atomic_read_modify_writes_keep_the_keys_ttl_or_take_their_own(client: Client, kv: Kv) -> None:
    async def atomic(*mutations: dict[str, Any]) -> None:
        assert (await ok(await client.post(f"{API}/atomic", json={"mutations": list(mutations)})))["ok"]

    async def expires_at(path: str) -> Any:
        return (await ok(await client.get(f"{API}/keys/{path}")))["expiresAt"]

    # A counter set with a TTL keeps it through sum/min/max (it dropped it: the key became permanent).
    await ok(await client.put(f"{API}/keys/hits/1?expireIn=60000", json=5))
    window = await expires_at("hits/1")
    assert window is not None
    for type_ in ("sum", "min", "max"):
        await atomic({"type": type_, "key": ["hits", 1], "value": 3})
        assert await expires_at("hits/1") == window, type_
    assert (await kv.get(["hits", 1])).value == 3
    await ok(await client.put(f"{API}/keys/log/1?expireIn=60000", json=["b"]))
    window = await expires_at("log/1")
    await atomic({"type": "append", "key": ["log", 1], "value": ["c"]})
    await atomic({"type": "prepend", "key": ["log", 1], "value": ["a"]})
    assert (await ok(await client.get(f"{API}/keys/log/1")))["value"] == ["a", "b", "c"]
    assert await expires_at("log/1") == window
    # Without a TTL the key stays permanent; one given with the mutation applies (it was ignored).
    await atomic({"type": "sum", "key": ["hits", 2], "value": 1})
    assert await expires_at("hits/2") is None
    await atomic({"type": "sum", "key": ["hits", 2], "value": 1, "expireIn": 400})
    await atomic({"type": "max", "key": ["hits", 3], "value": 1, "expiresIn": 400})
    assert await expires_at("hits/2") is not None and await expires_at("hits/3") is not None
    await atomic({"type": "sum", "key": ["hits", 2], "value": 1})  # keeps the 400 ms it was given
    await asyncio.sleep(0.5)
    await error(await client.get(f"{API}/keys/hits/2"), 404, "KEY_NOT_FOUND")
    await error(await client.get(f"{API}/keys/hits/3"), 404, "KEY_NOT_FOUND")
    # Refused, and nothing written: a bad TTL on a sum, and any TTL on a delete.
    for bad in (
        {"type": "sum", "key": ["hits", 4], "value": 1, "expireIn": -1},
        {"type": "delete", "key": ["hits", 1], "expireIn": 1000},
    ):
        body = {"mutations": [{"type": "set", "key": ["hits", 5], "value": 1}, bad]}
        await error(await client.post(f"{API}/atomic", json=body), 400, "INVALID_EXPIRE_IN")
    assert (await kv.get(["hits", 5])).versionstamp is None and (await kv.get(["hits", 1])).value == 3
    # The Python API and transactions take the same expire_in.
    await kv.atomic().sum(["hits", 6], 1, expire_in=60_000).commit()
    assert (await kv.get(["hits", 6])).expires_at is not None
    async def lower(tx: Any) -> None:
        tx.min(["hits", 6], 0)

    result = await kv.transaction(lower)
    assert result.ok and (await kv.get(["hits", 6])).expires_at is not None


async def test_malformed_requests_are_400(client: Client) -> None:
    await error(await client.put(f"{API}/keys/a", data="{not json"), 400, "INVALID_JSON")
    await error(await client.put(f"{API}/keys/a", data=""), 400, "INVALID_JSON")
    await error(await client.put(f"{API}/keys/a", data="NaN"), 400, "INVALID_VALUE")
    await error(await client.post(f"{API}/keys/batch", json={"keys": [["a", None]]}), 400, "INVALID_KEY")
    await error(await client.post(f"{API}/keys/batch", json={"keys": "a"}), 400, "INVALID_KEY")
    await error(await client.post(f"{API}/keys/batch", json=["a"]), 400, "INVALID_REQUEST")
    await error(await client.get(f"{API}/keys", params={"prefix": "[1, null]"}), 400, "INVALID_KEY")
    await error(await client.get(f"{API}/keys", params={"limit": "0"}), 400, "INVALID_PARAMETER")
    await error(await client.get(f"{API}/keys", params={"limit": "1001"}), 400, "INVALID_PARAMETER")
    await error(await client.get(f"{API}/keys", params={"reverse": "maybe"}), 400, "INVALID_PARAMETER")
    await error(await client.get(f"{API}/keys/paginate", params={"cursor": "!!"}), 400, "INVALID_CURSOR")


#: A lone surrogate: ``json.dumps`` sends it as the escape ``"\ud800"``, legal JSON but no UTF-8
#: text (the key encoder raised, the engine refused the parameter: 500s). Every route refuses it
#: before the handler sees it.
LONE = "\ud800"
LONE_SURROGATE_REQUESTS: list[tuple[str, str, Any]] = [
    ("PUT", "/keys/s", LONE),
    ("POST", "/atomic", {"mutations": [{"type": "set", "key": [LONE], "value": 1}]}),
    ("POST", "/atomic", {"checks": [{"key": ["a"], "versionstamp": LONE}], "mutations": []}),
    ("POST", "/keys/list", {"prefix": [LONE]}),
    ("POST", "/keys/list", {"where": {LONE: 1}}),
    ("POST", "/keys/list", {"where": {"x": {"$eq": LONE}}}),
    ("POST", "/keys/delete-batch", {"keys": [["a", LONE]]}),
    ("POST", "/indexes", {"prefix": ["i"], "fields": ["a"], "tokenize": LONE}),
    ("POST", "/queue/ack", {"id": LONE}),
    ("GET", "/keys?where=" + quote(json.dumps({"x": LONE})), None),
    ("GET", "/keys?prefix=" + quote(json.dumps([LONE])), None),
    ("GET", "/watch?keys=" + quote(json.dumps([[LONE]])), None),
    ("GET", "/watch/prefix?prefix=" + quote(json.dumps([[LONE]])), None),
    ("DELETE", "/keys/a?where=" + quote(json.dumps({"x": LONE})), None),
]


@pytest.mark.parametrize(("method", "path", "body"), LONE_SURROGATE_REQUESTS)
async def test_a_lone_surrogate_anywhere_is_400_invalid_unicode_and_changes_nothing(
    client: Client, kv: Kv, method: str, path: str, body: Any
) -> None:
    await ok(await client.put(f"{API}/keys/a", json={"x": "kept"}))
    refused = await client.request(method, f"{API}{path}", json=body)
    await error(refused, 400, "INVALID_UNICODE")
    assert [(e.key, e.value) for e in await kv.list(())] == [(("a",), {"x": "kept"})]
    # A surrogate pair is one character: text, taken as it is.
    await ok(await client.put(f"{API}/keys/emoji", data='"\\ud83d\\ude00"'))
    assert (await ok(await client.get(f"{API}/keys/emoji")))["value"] == "\U0001f600"


@pytest.mark.parametrize(
    ("method", "path", "body"), [r for r in LONE_SURROGATE_REQUESTS if r[2] is not None]
)
@pytest.mark.parametrize("surrogates", [LONE, "\ud83d\ude00"], ids=["lone", "pair"])
async def test_a_surrogate_sent_as_raw_bytes_is_400_invalid_unicode_and_changes_nothing(
    client: Client, kv: Kv, method: str, path: str, body: Any, surrogates: str
) -> None:
    """Surrogates UTF-8-encoded as bytes (``ED A0 80``: no UTF-8 at all, even as a pair of
    them) are no escape for the check to find, and ``json.loads`` decodes bytes with
    ``surrogatepass``: they reached the key encoder and the engine (500s) on every route."""
    await ok(await client.put(f"{API}/keys/a", json={"x": "kept"}))
    raw = json.dumps(body, ensure_ascii=False).replace(LONE, surrogates).encode("utf-8", "surrogatepass")
    assert b"\\u" not in raw and b"\xed\xa0" in raw
    refused = await client.request(
        method, f"{API}{path}", data=raw, headers={"Content-Type": "application/json"}
    )
    assert refused.status == 400, await refused.text()
    assert (await refused.json())["code"] == "INVALID_UNICODE"
    assert [(e.key, e.value) for e in await kv.list(())] == [(("a",), {"x": "kept"})]


@pytest.mark.parametrize("escape", ["%FF", "%FE", "%C0%80", "%ED%A0%80", "%F4%90%80%80", "a%E2%82"])
async def test_a_percent_encoding_that_is_not_utf8_is_400_invalid_unicode_and_changes_nothing(
    client: Client, kv: Kv, escape: str
) -> None:
    """yarl and ``unquote`` decode such escapes to U+FFFD: ``PUT /keys/a/%FF`` and ``/keys/a/%FE``
    wrote the same key ``["a", "\ufffd"]``, one overwriting the other, and a query prefix read it."""
    await ok(await client.put(f"{API}/keys/a", json={"x": "kept"}))
    for method, path in (
        ("PUT", f"/keys/a/{escape}"),
        ("GET", f"/keys/a/{escape}"),
        ("DELETE", f"/keys/{escape}"),
        ("GET", f"/keys?prefix=a/{escape}"),
        ("GET", f"/keys/count?prefix={escape}"),
        ("GET", f"/watch/prefix/poll?prefix={escape}"),
    ):
        headers = {"Content-Type": "application/json"}
        refused = await client.request(method, f"{API}{path}", data=b"1", headers=headers)
        await error(refused, 400, "INVALID_UNICODE")
    assert [(e.key, e.value) for e in await kv.list(())] == [(("a",), {"x": "kept"})]
    # Escapes of UTF-8 are text, U+FFFD itself included.
    await ok(await client.put(f"{API}/keys/a/%E2%82%AC%EF%BF%BD", json=1))
    assert (await kv.get(["a", "\u20ac\ufffd"])).value == 1


async def test_a_lone_surrogate_in_a_nack_error_is_400_and_the_lease_stays(client: Client) -> None:
    await ok(await client.post(f"{API}/queue/enqueue", json={"value": 1}))
    message = (await ok(await client.post(f"{API}/queue/poll")))["message"]
    refused = await client.post(f"{API}/queue/nack", json={"id": message["id"], "error": LONE})
    await error(refused, 400, "INVALID_UNICODE")
    stats = await ok(await client.get(f"{API}/queue/stats"))
    assert stats["processing"] == 1 and stats["dlq"] == 0, stats


async def test_batch_get_and_delete(client: Client) -> None:
    for i in range(3):
        await ok(await client.put(f"{API}/keys/b/{i}", json=i))
    body = await ok(await client.post(f"{API}/keys/batch", json={"keys": [["b", 2], ["b", 9], ["b", 0]]}))
    assert [(e["key"], e["value"]) for e in body] == [
        (["b", 2], 2),
        (["b", 9], None),
        (["b", 0], 0),
    ]
    assert body[1]["versionstamp"] is None
    deleted = await ok(
        await client.post(f"{API}/keys/delete-batch", json={"keys": [["b", 0], ["b", 1]], "exact": True})
    )
    assert deleted == {"deletedCount": 2}
    assert await ok(await client.post(f"{API}/keys/delete-batch", json={"keys": [["b"]]})) == {
        "deletedCount": 1
    }


async def test_list_count_and_paginate(client: Client) -> None:
    for i in range(7):
        await ok(await client.put(f"{API}/keys/items/{i}", json={"i": i}))
    await ok(await client.put(f"{API}/keys/items/name", json="string part sorts first"))
    await ok(await client.put(f"{API}/keys/zzz", json=0))
    listed = await ok(await client.get(f"{API}/keys", params={"prefix": "items", "limit": "3"}))
    assert [e["key"] for e in listed] == [["items", "name"], ["items", 0], ["items", 1]]
    by_json = await ok(await client.get(f"{API}/keys", params={"prefix": '["items"]', "reverse": "true"}))
    assert [e["key"][1] for e in by_json] == [6, 5, 4, 3, 2, 1, 0, "name"]
    ranged = await ok(
        await client.get(f"{API}/keys", params={"prefix": "items", "start": "items/2", "end": "items/4"})
    )
    assert [e["key"][1] for e in ranged] == [2, 3]
    posted = await ok(
        await client.post(f"{API}/keys/list", json={"prefix": ["items"], "start": ["items", 5], "limit": 10})
    )
    assert [e["key"][1] for e in posted] == [5, 6]
    assert await ok(await client.get(f"{API}/keys/count", params={"prefix": "items"})) == {"count": 8}
    assert await ok(await client.get(f"{API}/keys/count")) == {"count": 9}
    assert len(await ok(await client.get(f"{API}/keys"))) == 9

    for reverse in ("false", "true"):
        seen: list[Any] = []
        cursor = None
        while True:
            params = {"prefix": "items", "limit": "3", "reverse": reverse}
            if cursor:
                params["cursor"] = cursor
            page = await ok(await client.get(f"{API}/keys/paginate", params=params))
            seen.extend(e["key"][1] for e in page["entries"])
            if not page["hasMore"]:
                assert page["cursor"] is None
                break
            cursor = page["cursor"]
            await client.delete(f"{API}/keys/items/3?exact=true")  # deletes between pages are fine
        expected = ["name", 0, 1, 2, 4, 5, 6]  # 3 went after the first page of the first pass
        assert seen == (expected[::-1] if reverse == "true" else expected)


async def test_atomic(client: Client) -> None:
    created = await ok(
        await client.post(
            f"{API}/atomic",
            json={
                "checks": [{"key": ["acct"], "versionstamp": None}],
                "mutations": [
                    {"type": "set", "key": ["acct"], "value": 10},
                    {"type": "set", "key": ["tmp"], "value": 1, "expireIn": 60000},
                    {"type": "sum", "key": ["hits"], "value": 2},
                ],
            },
        )
    )
    assert created["ok"] is True
    conflict = await client.post(
        f"{API}/atomic",
        json={
            "checks": [{"key": ["acct"], "versionstamp": None}],
            "mutations": [{"type": "delete", "key": ["acct"]}],
        },
    )
    body = await error(conflict, 200, "CHECK_FAILED")  # a result, as upstream answers it
    assert body["ok"] is False
    updated = await ok(
        await client.post(
            f"{API}/atomic",
            json={
                "checks": [{"key": ["acct"], "versionstamp": created["versionstamp"]}],
                "mutations": [
                    {"type": "max", "key": ["acct"], "value": 50},
                    {"type": "min", "key": ["hits"], "value": 1},
                    {"type": "delete", "key": ["tmp"]},
                ],
            },
        )
    )
    assert updated["ok"] and updated["versionstamp"] > created["versionstamp"]
    batch = await ok(await client.post(f"{API}/keys/batch", json={"keys": [["acct"], ["hits"], ["tmp"]]}))
    assert [e["value"] for e in batch] == [50, 1, None]
    bad = {"mutations": [{"type": "append", "key": ["a"], "value": 1}]}
    await error(await client.post(f"{API}/atomic", json=bad), 400, "INVALID_MUTATION")
    bad = {"mutations": [{"type": "sum", "key": ["acct"], "value": "1"}]}
    await error(await client.post(f"{API}/atomic", json=bad), 400, "INVALID_MUTATION")
    await ok(await client.put(f"{API}/keys/text", json="abc"))
    bad = {"mutations": [{"type": "sum", "key": ["text"], "value": 1}]}
    await error(await client.post(f"{API}/atomic", json=bad), 400, "INVALID_MUTATION")
    await error(
        await client.post(f"{API}/atomic", json={"checks": [{"versionstamp": None}]}), 400, "INVALID_KEY"
    )


async def test_queue_routes(client: Client) -> None:
    created = await ok(
        await client.post(
            f"{API}/queue/enqueue",
            json={"value": {"job": 1}, "backoffSchedule": [0], "keysIfUndelivered": [["dead", 1]]},
        ),
        200,
    )
    message_id = created["id"]
    polled = await ok(await client.get(f"{API}/queue/poll"))
    assert polled["message"]["id"] == message_id and polled["message"]["attempts"] == 1
    assert await ok(await client.get(f"{API}/queue/stats")) == {
        "pending": 0,
        "processing": 1,
        "dlq": 0,
        "total": 1,
    }
    assert await ok(await client.post(f"{API}/queue/nack", json={"id": message_id, "error": "e1"})) == {
        "ok": True,
        "result": "retry",
    }
    polled = await ok(await client.post(f"{API}/queue/poll"))
    assert polled["message"]["attempts"] == 2
    assert (await ok(await client.post(f"{API}/queue/nack", json={"id": message_id})))["result"] == "dead"
    assert await ok(await client.get(f"{API}/queue/poll")) == {"message": None}
    assert (await ok(await client.get(f"{API}/keys/dead/1")))["value"] == {"job": 1}

    letters = await ok(await client.get(f"{API}/queue/dlq"))
    assert len(letters) == 1 and letters[0]["originalId"] == message_id
    dlq_id = letters[0]["id"]
    assert (await ok(await client.get(f"{API}/queue/dlq/{dlq_id}")))["value"] == {"job": 1}
    requeued = await ok(await client.post(f"{API}/queue/dlq/{dlq_id}/requeue"))
    await error(await client.get(f"{API}/queue/dlq/{dlq_id}"), 404, "MESSAGE_NOT_FOUND")
    await error(await client.post(f"{API}/queue/dlq/{dlq_id}/requeue"), 404, "MESSAGE_NOT_FOUND")
    polled = await ok(await client.get(f"{API}/queue/poll"))
    assert polled["message"]["id"] == requeued["id"]
    stale = {"id": requeued["id"], "attempts": polled["message"]["attempts"] + 1}
    await error(await client.post(f"{API}/queue/ack", json=stale), 409, "LEASE_LOST")
    await error(await client.post(f"{API}/queue/nack", json=stale), 409, "LEASE_LOST")
    invalid = {"id": requeued["id"], "attempts": "1"}
    await error(await client.post(f"{API}/queue/ack", json=invalid), 400, "INVALID_ATTEMPTS")
    assert await ok(await client.post(f"{API}/queue/ack", json={"id": requeued["id"]})) == {"ok": True}
    await error(await client.post(f"{API}/queue/ack", json={"id": requeued["id"]}), 404, "MESSAGE_NOT_FOUND")
    await error(await client.post(f"{API}/queue/nack", json={"id": "nope"}), 404, "MESSAGE_NOT_FOUND")
    await error(await client.post(f"{API}/queue/ack", json={}), 400, "INVALID_MESSAGE_ID")
    await error(await client.post(f"{API}/queue/enqueue", json={"delay": 1}), 400, "INVALID_REQUEST")
    await error(
        await client.post(f"{API}/queue/enqueue", json={"value": 1, "delay": -1}), 400, "INVALID_QUEUE_OPTION"
    )

    for _ in range(2):
        await ok(await client.post(f"{API}/queue/enqueue", json={"value": 0, "backoffSchedule": []}), 200)
        polled = await ok(await client.get(f"{API}/queue/poll"))
        await ok(await client.post(f"{API}/queue/nack", json={"id": polled["message"]["id"]}))
    letters = await ok(await client.get(f"{API}/queue/dlq", params={"limit": "1"}))
    assert len(letters) == 1
    assert await ok(await client.delete(f"{API}/queue/dlq/{letters[0]['id']}")) == {"ok": True}
    await error(await client.delete(f"{API}/queue/dlq/{letters[0]['id']}"), 404, "MESSAGE_NOT_FOUND")
    assert await ok(await client.delete(f"{API}/queue/dlq")) == {"deletedCount": 1}


async def test_index_and_search_routes(client: Client) -> None:
    await ok(await client.put(f"{API}/keys/notes/1", json={"title": "Buy milk", "body": "and bread"}))
    await ok(await client.put(f"{API}/keys/notes/2", json={"title": "Call Ada", "body": "about engines"}))
    created = await ok(
        await client.post(f"{API}/indexes", json={"prefix": ["notes"], "fields": ["title", "body"]}), 200
    )
    assert created["index"]["prefix"] == ["notes"] and created["index"]["fields"] == ["title", "body"]
    assert [i["prefix"] for i in await ok(await client.get(f"{API}/indexes"))] == [["notes"]]
    await ok(await client.put(f"{API}/keys/notes/3", json={"title": "Milk again"}))
    hits = await ok(await client.get(f"{API}/search", params={"prefix": "notes", "query": "milk"}))
    assert [e["key"] for e in hits] == [["notes", 1], ["notes", 3]]
    hits = await ok(
        await client.post(f"{API}/search", json={"prefix": ["notes"], "query": "bread OR ada", "limit": 5})
    )
    assert [e["key"][1] for e in hits] == [1, 2]
    await error(
        await client.get(f"{API}/search", params={"prefix": "notes", "query": " "}), 400, "INVALID_QUERY"
    )
    await error(
        await client.get(f"{API}/search", params={"prefix": "none", "query": "x"}), 404, "INDEX_NOT_FOUND"
    )
    await error(
        await client.post(f"{API}/indexes", json={"prefix": ["x"], "fields": []}), 400, "INVALID_INDEX"
    )
    await error(
        await client.post(f"{API}/indexes", json={"prefix": ["x"], "fields": "title"}), 400, "INVALID_INDEX"
    )
    assert await ok(await client.delete(f"{API}/indexes", params={"prefix": "notes"})) == {"ok": True}
    await error(await client.delete(f"{API}/indexes", json={"prefix": ["notes"]}), 404, "INDEX_NOT_FOUND")


async def test_metrics_routes(client: Client) -> None:
    await ok(await client.put(f"{API}/keys/m", json=1))
    await client.get(f"{API}/keys/nothing")
    body = await ok(await client.get(f"{API}/metrics"))
    assert body["operations"]["set"]["count"] == 1
    assert body["operations"]["get"]["count"] == 1
    assert body["storage"] == {"entries": 1, "sizeBytes": len(b"\x02m\x00") + len(b"1")}
    assert body["queue"] == {"pending": 0, "processing": 0, "dlq": 0, "total": 0}
    response = await client.get(f"{API}/metrics/prometheus")
    assert response.status == 200 and response.content_type == "text/plain"
    text = await response.text()
    assert 'buntime_keyval_operations_total{operation="set"} 1.0' in text
    assert "buntime_keyval_operation_duration_seconds_bucket" in text


async def test_unknown_routes_answer_json(client: Client) -> None:
    await error(await client.get(f"{API}/nope"), 404, "NOT_FOUND")
    response = await client.patch(f"{API}/keys/a", data="1")
    await error(response, 405, "METHOD_NOT_ALLOWED")
    assert "PUT" in response.headers["Allow"]


async def test_503_while_storage_is_unavailable(client: Client, host: PluginHost, kv: Kv) -> None:
    await ok(await client.put(f"{API}/keys/a", json=1))
    await host.get_plugin("@buntime/plugin-turso").aclose()  # storage goes away under the routes
    for response in (
        await client.get(f"{API}/keys/a"),
        await client.put(f"{API}/keys/a", json=2),
        await client.get(f"{API}/queue/stats"),
        await client.get(f"{API}/search", params={"prefix": "a", "query": "x"}),
    ):
        await error(response, 503, "KEYVAL_UNAVAILABLE")
        assert response.headers["Retry-After"] == "1"
    await kv.aclose()  # and after the plugin shut down
    await error(await client.get(f"{API}/keys/a"), 503, "KEYVAL_UNAVAILABLE")
    assert json.loads(await (await client.get(f"{API}/keys/count")).text())["code"] == "KEYVAL_UNAVAILABLE"


async def test_a_write_whose_outcome_is_unknown_is_a_504_and_never_re_run(client: Client, kv: Kv) -> None:
    """A write the service reports as TursoCommitUnknownError (its push may have landed; here it
    did) answers 504 KEYVAL_COMMIT_OUTCOME_UNKNOWN without Retry-After, unlike the 503 that means
    "not applied"; grouped writes are not re-run one by one (each would apply twice), and an OCC
    transaction raises instead of answering ``ok: false`` ("nothing is written")."""
    with commit_outcome_unknown(kv) as results:
        answers = await asyncio.gather(*(client.put(f"{API}/keys/k{i}", json=i) for i in range(6)))
        for answer in answers:
            await error(answer, 504, "KEYVAL_COMMIT_OUTCOME_UNKNOWN")
            assert "Retry-After" not in answer.headers
        bodies = [len(result) for result in results if isinstance(result, list)]  # sets per group
        assert sum(bodies) == 6, bodies  # grouped or not, every set ran once
        atomic = await client.post(
            f"{API}/atomic", json={"mutations": [{"type": "sum", "key": ["hits"], "value": 1}]}
        )
        await error(atomic, 504, "KEYVAL_COMMIT_OUTCOME_UNKNOWN")

        async def bump(tx: Any) -> None:
            tx.sum(["hits"], 1)

        with pytest.raises(KeyValCommitUnknownError):
            await kv.transaction(bump)
    assert (await kv.get(["hits"])).value == 2  # each applied once, as it happened to land
    for i in range(6):
        assert (await kv.get([f"k{i}"])).value == i
