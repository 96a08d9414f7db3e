"""Search indexes on a real local file: matching, maintenance on every write path, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from buntime.plugins import PluginHost
from buntime.plugins.keyval import KEYVAL_PLUGIN_NAME, InvalidRequestError, KeyValNotFoundError, Kv
from buntime.plugins.keyval._keys import encode_key
from buntime.plugins.keyval._search import build_document, index_table_name, parse_query

HostStarter = Callable[[dict[str, str]], Awaitable[PluginHost]]

PEOPLE = {
    1: {"name": "Ada Lovelace", "bio": "mathematician, poet's daughter", "tags": ["math", "engines"]},
    2: {"name": "Alan Turing", "bio": "mathematician and codebreaker", "tags": ["math", "crypto"]},
    3: {"name": "Grace Hopper", "bio": "Rear admiral; COBOL", "tags": ["compilers"]},
    4: {"name": "Émilie du Châtelet", "bio": "physicist", "tags": []},
}


async def found(kv: Kv, query: str, prefix: tuple[str, ...] = ("people",)) -> list[object]:
    return [e.key[-1] for e in await kv.search(prefix, query)]


async def doc_rows(kv: Kv, prefix: tuple[str, ...] = ("people",)) -> int:
    db = await kv.service.connect(kv.namespace)
    row = await db.get(f"SELECT count(*) AS n FROM {index_table_name(encode_key(prefix))}")
    assert row is not None
    return int(row["n"])


async def seed(kv: Kv) -> None:
    for pid, person in PEOPLE.items():
        await kv.set(["people", pid], person)
    await kv.set(["other", 1], {"name": "Ada elsewhere"})


def test_query_parsing_and_documents() -> None:
    assert parse_query("ada lovelace") == [["ada", "lovelace"]]
    assert parse_query("ada AND turing OR grace") == [["ada", "turing"], ["grace"]]
    assert parse_query('"rear admiral" OR name:Ada', ["name"]) == [["rear admiral"], ["ada"]]
    assert parse_query("http://x", ["name"]) == [["http://x"]]
    with pytest.raises(InvalidRequestError):
        parse_query("  OR AND ")
    assert (
        build_document({"a": {"b": "X"}, "n": 3, "t": ["P", "q"]}, ["a.b", "n", "t", "missing"]) == "x 3 p q"
    )


async def test_create_index_backfills_and_matches(kv: Kv) -> None:
    await seed(kv)
    info = await kv.create_index(["people"], ["name", "bio", "tags"])
    assert info.table == index_table_name(encode_key(("people",)))
    assert await doc_rows(kv) == 4
    assert await found(kv, "mathematician") == [1, 2]
    assert await found(kv, "MATHEMATICIAN turing") == [2]
    assert await found(kv, "turing OR hopper") == [2, 3]
    assert await found(kv, "ada AND crypto OR cobol") == [3]
    assert await found(kv, '"rear admiral"') == [3]
    assert await found(kv, "CHÂTELET") == [4]
    assert await found(kv, "name:lovelace") == [1]
    assert await found(kv, "nobody") == []
    assert [e.key for e in await kv.search(["people"], "a", limit=2)] == [("people", 1), ("people", 2)]
    assert [i.prefix for i in await kv.list_indexes()] == [("people",)]


async def test_index_follows_set_delete_atomic_and_ttl(kv: Kv) -> None:
    await seed(kv)
    await kv.create_index(["people"], ["name"])
    await kv.set(["people", 5], {"name": "Katherine Johnson"})
    await kv.set(["people", 1], {"name": "Countess of Lovelace"})
    assert await found(kv, "johnson") == [5]
    assert await found(kv, "ada") == []  # the old document was replaced
    await kv.set(["people", 5], {"nickname": "no indexed field"})
    assert await found(kv, "johnson") == [] and await doc_rows(kv) == 4
    await kv.delete(["people", 2], exact=True)
    assert await found(kv, "turing") == []
    await kv.atomic().set(["people", 6], {"name": "Hedy Lamarr"}).delete(["people", 3]).commit()
    assert await found(kv, "lamarr") == [6] and await found(kv, "hopper") == []
    await kv.atomic().sum(["people", 7], 1).commit()  # a number has no indexed field
    await kv.set(["people", 8], {"name": "Mary Somerville"}, expire_in=400)
    assert await found(kv, "somerville") == [8]
    await asyncio.sleep(0.5)
    assert await found(kv, "somerville") == []  # expired: hidden at once
    rows_before = await doc_rows(kv)
    assert await kv.sweep_expired() == 1
    assert await doc_rows(kv) == rows_before - 1  # and its document is swept with it
    await kv.delete(["people"])  # a prefix delete empties the index
    assert await doc_rows(kv) == 0 and await found(kv, "e") == []


async def test_deeper_and_missing_indexes(kv: Kv) -> None:
    await kv.set(["docs", "en", 1], {"t": "hello world"})
    await kv.set(["docs", "fr", 1], {"t": "bonjour world"})
    await kv.create_index(["docs"], ["t"])
    assert [e.key for e in await kv.search(["docs", "fr"], "world")] == [("docs", "fr", 1)]
    assert len(await kv.search(["docs"], "world")) == 2
    with pytest.raises(KeyValNotFoundError) as info:
        await kv.search(["people"], "x")
    assert info.value.code == "INDEX_NOT_FOUND"
    assert await kv.remove_index(["docs"]) is True
    assert await kv.remove_index(["docs"]) is False
    with pytest.raises(KeyValNotFoundError):
        await kv.search(["docs"], "world")
    await kv.set(["docs", "en", 2], {"t": "after removal"})  # writes no longer touch a dropped table


async def test_recreating_an_index_rebuilds_it(kv: Kv) -> None:
    await seed(kv)
    await kv.create_index(["people"], ["name"])
    assert await found(kv, "codebreaker") == []
    await kv.create_index(["people"], ["bio"])
    assert await found(kv, "codebreaker") == [2] and await found(kv, "turing") == []


async def test_search_works_right_after_a_restart(start_host: HostStarter, local_env: dict[str, str]) -> None:
    host = await start_host(local_env)
    kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
    await seed(kv)
    await kv.create_index(["people"], ["name", "tags"])
    await host.stop()
    kv2 = (await start_host(local_env)).get_plugin(KEYVAL_PLUGIN_NAME)
    assert await found(kv2, "math") == [1, 2]  # before any set/delete (an upstream failure)
    await kv2.set(["people", 9], {"name": "New After Restart"})
    assert await found(kv2, "restart") == [9]  # writes after the restart are indexed too
