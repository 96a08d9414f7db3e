"""``where`` filters: every operator against a real database, the compiler's bound parameters,
injection attempts in paths and values, and the HTTP routes that take a filter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from buntime.plugins.keyval import InvalidRequestError, Kv
from buntime.plugins.keyval._where import OPERATORS, compile_where

API = "/keyval/api"
Client = TestClient[web.Request, web.Application]

ROWS: dict[str, Any] = {
    "ada": {"name": "Ada", "city": "Lisbon", "age": 36, "tags": ["admin", "Dev"], "vip": True, "bio": ""},
    "bob": {"name": "bob", "city": "Porto", "age": 17, "tags": [], "vip": False, "bio": "Likes SQL"},
    "cy": {
        "name": "Cy",
        "city": "lisbon",
        "age": 52.5,
        "tags": ["dev"],
        "vip": None,
        "bio": "x",
        "extra": {},
    },
    "dee": {"name": "Dee", "age": "40", "profile": {"city": "Faro", "a.b": 1}, "tags": "devops"},
}


@pytest.fixture
async def people(kv: Kv) -> Kv:
    for name, value in ROWS.items():
        await kv.set(["people", name], value)
    await kv.set(["other", "ada"], ROWS["ada"])
    return kv


async def names(kv: Kv, where: Any) -> list[str]:
    return [str(e.key[1]) for e in await kv.list(["people"], where=where)]


CASES: list[tuple[Any, list[str]]] = [
    ({"city": "Lisbon"}, ["ada"]),
    ({"city": {"$eq": "Lisbon"}}, ["ada"]),
    ({"city": {"$ne": "Lisbon"}}, ["bob", "cy", "dee"]),
    ({"city": {"$eqi": "LISBON"}}, ["ada", "cy"]),
    ({"city": {"$nei": "lisbon"}}, ["bob", "dee"]),
    ({"age": {"$gt": 36}}, ["cy"]),  # "40" is a string: typed comparisons never mix types
    ({"age": {"$gte": 36}}, ["ada", "cy"]),
    ({"age": {"$lt": 36}}, ["bob"]),
    ({"age": {"$lte": 36}}, ["ada", "bob"]),
    ({"age": {"$between": [17, 36]}}, ["ada", "bob"]),
    ({"name": {"$between": ["B", "D"]}}, ["cy"]),
    ({"city": {"$in": ["Porto", "Faro", None]}}, ["bob", "dee"]),
    ({"city": {"$nin": ["Porto", "Lisbon"]}}, ["cy", "dee"]),
    ({"age": {"$in": [17, 52.5]}}, ["bob", "cy"]),
    ({"vip": {"$in": [True]}}, ["ada"]),
    ({"vip": {"$in": []}}, []),
    ({"tags": {"$contains": "dev"}}, ["cy", "dee"]),  # an array element, or a substring of a string
    ({"tags": {"$containsi": "DEV"}}, ["ada", "cy", "dee"]),
    ({"tags": {"$notContains": "dev"}}, ["ada", "bob"]),
    ({"tags": {"$notContainsi": "dev"}}, ["bob"]),
    ({"bio": {"$contains": "SQL"}}, ["bob"]),
    ({"name": {"$startsWith": "D"}}, ["dee"]),
    ({"name": {"$startsWithi": "b"}}, ["bob"]),
    ({"city": {"$endsWith": "bon"}}, ["ada", "cy"]),
    ({"city": {"$endsWithi": "BON"}}, ["ada", "cy"]),
    ({"name": {"$startsWith": ""}}, ["ada", "bob", "cy", "dee"]),
    ({"vip": {"$null": True}}, ["cy", "dee"]),
    ({"vip": {"$null": False}}, ["ada", "bob"]),
    ({"vip": True}, ["ada"]),
    ({"vip": {"$eq": False}}, ["bob"]),
    ({"bio": {"$empty": True}}, ["ada", "dee"]),
    ({"tags": {"$empty": True}}, ["bob"]),
    ({"extra": {"$empty": True}}, ["ada", "bob", "cy", "dee"]),
    ({"bio": {"$notEmpty": True}}, ["bob", "cy"]),
    ({"bio": {"$empty": False}}, ["bob", "cy"]),
    ({"profile.city": "Faro"}, ["dee"]),
    ({"profile.a.b": 1}, []),  # dots split paths
    ({"tags[0]": "admin"}, ["ada"]),
    ({"tags": ["admin", "Dev"]}, ["ada"]),
    ({"$and": [{"city": {"$eqi": "lisbon"}}, {"age": {"$gt": 40}}]}, ["cy"]),
    ({"$or": [{"city": "Porto"}, {"age": {"$gt": 50}}]}, ["bob", "cy"]),
    ({"$not": {"city": "Lisbon"}}, ["bob", "cy", "dee"]),
    ({"$not": {"$or": [{"vip": True}, {"vip": False}]}}, ["cy", "dee"]),
    ({"city": {"$startsWithi": "l", "$endsWith": "n"}, "age": {"$lt": 40}}, ["ada"]),
    ({"age": {"$gt": {"__type": "bigint", "value": "50"}}}, ["cy"]),
    ({}, ["ada", "bob", "cy", "dee"]),
]


def test_every_operator_has_a_case() -> None:
    used = {op for where, _ in CASES for op in json.dumps(where).split('"') if op.startswith("$")}
    assert set(OPERATORS) <= used, set(OPERATORS) - used


@pytest.mark.parametrize(("where", "expected"), CASES, ids=[json.dumps(c[0]) for c in CASES])
async def test_operator(people: Kv, where: Any, expected: list[str]) -> None:
    assert await names(people, where) == expected


async def test_now_operands(kv: Kv) -> None:
    now = kv.now_ms()
    await kv.set(["ev", 1], {"at": now - 60_000})
    await kv.set(["ev", 2], {"at": now + 60_000})
    past = await kv.list(["ev"], where={"at": {"$lt": {"$now": True}}})
    assert [e.key for e in past] == [("ev", 1)]
    window = {"at": {"$gt": {"$now": True, "$offset": -120_000}, "$lt": {"$now": True, "$offset": -1}}}
    assert await kv.count(["ev"], where=window) == 1


async def test_count_paginate_delete_and_search_filter(people: Kv) -> None:
    lisbon = {"city": {"$eqi": "lisbon"}}
    assert await people.count(["people"], where=lisbon) == 2
    page = await people.paginate(["people"], limit=1, where=lisbon)
    assert [e.key for e in page.entries] == [("people", "ada")] and page.has_more
    rest = await people.paginate(["people"], limit=1, cursor=page.cursor, where=lisbon)
    assert [e.key for e in rest.entries] == [("people", "cy")] and not rest.has_more
    await people.create_index(["people"], ["name", "bio"])
    hits = await people.search(["people"], "x OR sql", where={"age": {"$lt": 50}})
    assert [e.key for e in hits] == [("people", "bob")]
    assert await people.delete(["people"], where=lisbon) == 2
    assert await names(people, None) == ["bob", "dee"]
    assert await people.delete(["people", "bob"], exact=True, where={"city": "Lisbon"}) == 0
    assert await people.count(["other"]) == 1  # outside the prefix: untouched


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ({"city": {"$regex": ".*"}}, "UNKNOWN_OPERATOR"),
        ({"$nor": []}, "UNKNOWN_OPERATOR"),
        ("city = 'x'", "INVALID_FILTER"),
        ({"$and": {}}, "INVALID_FILTER"),
        ({"$or": []}, "INVALID_FILTER"),
        ({"$not": 1}, "INVALID_FILTER"),
        ({"age": {"$between": [1]}}, "INVALID_FILTER"),
        ({"age": {"$between": [1, "z"]}}, "INVALID_FILTER"),
        ({"age": {"$gt": True}}, "INVALID_FILTER"),
        ({"age": {"$gt": None}}, "INVALID_FILTER"),
        ({"age": {"$in": "x"}}, "INVALID_FILTER"),
        ({"age": {"$null": "yes"}}, "INVALID_FILTER"),
        ({"name": {"$startsWith": 1}}, "INVALID_FILTER"),
        ({"name": {"$eqi": 1}}, "INVALID_FILTER"),
        ({"name": {"$eq": {"$now": True, "$offset": "x"}}}, "INVALID_FILTER"),
        ({"": 1}, "INVALID_FILTER"),
        ({"a..b": 1}, "INVALID_FILTER"),
        ({'a"b': 1}, "INVALID_FILTER"),
        ({"a[0": 1}, "INVALID_FILTER"),
        ({"a\\b": 1}, "INVALID_FILTER"),
        ({"a\n": 1}, "INVALID_FILTER"),  # not the path "a"
        ({"a[٣]": 1}, "INVALID_FILTER"),  # an index is ASCII digits
        ({"x" * 600: 1}, "INVALID_FILTER"),
    ],
)
async def test_malformed_filters_are_refused(people: Kv, where: Any, code: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await people.list(["people"], where=where)
    assert info.value.code == code
    assert await people.count(["people"]) == 4  # the connection still works afterwards


def test_depth_and_size_are_bounded() -> None:
    deep: Any = {"a": 1}
    for _ in range(20):
        deep = {"$not": deep}
    with pytest.raises(InvalidRequestError):
        compile_where(deep, column="value", now_ms=0)
    with pytest.raises(InvalidRequestError):
        compile_where({"$and": [{"a": i} for i in range(300)]}, column="value", now_ms=0)


INJECTIONS = [
    "'; DROP TABLE kv_entries; --",
    "x' OR '1'='1",
    '") OR 1=1 --',
    "Lisbon' UNION SELECT key, value, versionstamp, expires_at FROM kv_entries --",
]


@pytest.mark.parametrize("evil", INJECTIONS)
async def test_values_and_paths_never_reach_the_sql_text(people: Kv, evil: str) -> None:
    for where in (
        {"city": evil},
        {"city": {"$in": [evil]}},
        {"city": {"$contains": evil}},
        {"city": {"$startsWithi": evil}},
        {"city": {"$between": [evil, evil + "z"]}},
    ):
        sql, params = compile_where(where, column="value", now_ms=0)
        assert evil not in sql and evil.lower() not in sql
        assert any(evil.lower() in str(p).lower() for p in params)
        assert await names(people, where) == []
    # a path with quotes is refused; one without is a (quoted) label, bound as a parameter
    path = evil.replace('"', "").replace(".", "")
    sql, params = compile_where({path: 1}, column="value", now_ms=0)
    assert path not in sql
    assert await names(people, {path: 1}) == []
    assert await people.count(["people"]) == 4


async def test_http_routes_take_where(people: Kv, client: Client) -> None:
    lisbon = {"city": {"$eqi": "lisbon"}}
    listed = await client.post(f"{API}/keys/list", json={"prefix": ["people"], "where": lisbon})
    assert listed.status == 200
    assert [e["key"][1] for e in await listed.json()] == ["ada", "cy"]
    counted = await client.get(f"{API}/keys/count", params={"prefix": "people", "where": json.dumps(lisbon)})
    assert (await counted.json()) == {"count": 2}
    page = await client.get(f"{API}/keys/paginate", params={"prefix": "people", "where": json.dumps(lisbon)})
    assert [e["key"][1] for e in (await page.json())["entries"]] == ["ada", "cy"]
    bad = await client.post(f"{API}/keys/list", json={"prefix": ["people"], "where": {"a": {"$nope": 1}}})
    assert bad.status == 400 and (await bad.json())["code"] == "UNKNOWN_OPERATOR"
    bad = await client.get(f"{API}/keys/count", params={"where": "{not json"})
    assert bad.status == 400 and (await bad.json())["code"] == "INVALID_FILTER"
    deleted = await client.post(
        f"{API}/keys/delete-batch", json={"keys": [["people"]], "where": {"age": {"$lt": 18}}}
    )
    assert (await deleted.json()) == {"deletedCount": 1}
    gone = await client.delete(f"{API}/keys/people", params={"where": json.dumps(lisbon)})
    assert (await gone.json()) == {"deletedCount": 2}
    assert await people.count(["people"]) == 1
