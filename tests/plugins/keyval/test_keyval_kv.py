"""The Kv API on a real local MVCC file: values, order, pagination, TTL, atomics, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import generate_latest

from buntime.plugins import PluginHost
from buntime.plugins.keyval import (
    KEYVAL_PLUGIN_NAME,
    CommitResult,
    InvalidKeyError,
    InvalidRequestError,
    InvalidValueError,
    KeyValUnavailableError,
    Kv,
    TriggerEvent,
    encode_key,
)
from buntime.plugins.keyval._schema import MIGRATIONS, SCHEMA_V1, migrate
from buntime.turso import BlockingDatabase, TursoService, resolve_config

HostStarter = Callable[[dict[str, str]], Awaitable[PluginHost]]


async def physical_rows(kv: Kv, table: str = "kv_entries") -> int:
    """Rows on disk, expired or not (what the sweeps are responsible for)."""
    db = await kv.service.connect(kv.namespace)
    row = await db.get(f"SELECT count(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


async def test_set_get_and_get_many(kv: Kv) -> None:
    first = await kv.set(["users", 1], {"name": "Ada", "n": 1})
    assert first.ok and first.versionstamp and len(first.versionstamp) == 20
    entry = await kv.get(["users", 1])
    assert entry.value == {"name": "Ada", "n": 1}
    assert entry.versionstamp == first.versionstamp
    missing = await kv.get(["users", 404])
    assert missing.value is None and missing.versionstamp is None
    await kv.set(["users", 2], [1, "two", None])
    await kv.set(["flags", True], None)
    many = await kv.get_many([["users", 2], ["nope"], ["users", 1], ["flags", True], ["users", 2]])
    assert [e.key for e in many] == [("users", 2), ("nope",), ("users", 1), ("flags", True), ("users", 2)]
    assert [e.value for e in many] == [
        [1, "two", None],
        None,
        {"name": "Ada", "n": 1},
        None,
        [1, "two", None],
    ]
    assert many[3].versionstamp is not None  # a stored null is not a missing key


async def test_versionstamps_increase_with_every_write(kv: Kv) -> None:
    stamps = [(await kv.set(["k", i % 3], i)).versionstamp for i in range(30)]
    assert all(isinstance(s, str) and len(s) == 20 for s in stamps)
    assert stamps == sorted(s or "" for s in stamps) and len(set(stamps)) == len(stamps)


async def test_list_order_bounds_reverse_and_limit(kv: Kv) -> None:
    keys = [("p", "b"), ("p", "a"), ("p", 10), ("p", 2), ("p", -1.5), ("p", b"\x00"), ("p", True), ("q", 1)]
    for key in keys:
        await kv.set(key, list(key[1:]) if not isinstance(key[1], bytes) else "bytes")
    await kv.set(["p"], "the prefix itself is not listed")
    listed = [e.key for e in await kv.list(["p"])]
    assert listed == [("p", b"\x00"), ("p", "a"), ("p", "b"), ("p", -1.5), ("p", 2), ("p", 10), ("p", True)]
    assert [e.key for e in await kv.list(["p"], reverse=True)] == listed[::-1]
    assert [e.key for e in await kv.list(["p"], limit=2)] == listed[:2]
    assert [e.key for e in await kv.list(["p"], start=["p", "b"], end=["p", 10])] == [
        ("p", "b"),
        ("p", -1.5),
        ("p", 2),
    ]
    assert len(await kv.list()) == len(keys) + 1
    assert await kv.count(["p"]) == 7
    assert await kv.count() == 9
    with pytest.raises(InvalidRequestError):
        await kv.list(["p"], limit=0)


def count_transactions(kv: Kv, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the service's blocking transactions (the one hop every keyval write is)."""
    calls: list[int] = []
    real = kv.service.run_transaction

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(kv.service, "run_transaction", counted)
    return calls


async def test_concurrent_sets_share_a_commit_each_with_its_own_versionstamp(
    kv: Kv, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[TriggerEvent] = []
    kv.add_trigger(["g"], ["set"], events.append)
    transactions = count_transactions(kv, monkeypatch)
    results = await asyncio.gather(*(kv.set(["g", i], {"n": i}) for i in range(40)))
    # The first set finds the lock free and commits alone; the 39 queued behind it share one.
    assert len(transactions) == 2
    stamps = [r.versionstamp for r in results]
    assert all(r.ok for r in results) and len(set(stamps)) == 40
    assert stamps == sorted(s or "" for s in stamps)  # in arrival order
    assert [(e.key, e.value, e.versionstamp) for e in events] == [
        (("g", i), {"n": i}, stamps[i]) for i in range(40)
    ]
    assert [(e.key, e.value, e.versionstamp) for e in await kv.list(["g"])] == [
        (("g", i), {"n": i}, stamps[i]) for i in range(40)
    ]
    after = await kv.set(["g", 0], "later")
    assert (after.versionstamp or "") > (stamps[-1] or "")


async def test_a_failing_set_fails_alone_in_its_group(kv: Kv, monkeypatch: pytest.MonkeyPatch) -> None:
    store = kv._store
    real = store.put_in_tx

    def put(db: BlockingDatabase, encoded: bytes, *args: Any, **kwargs: Any) -> None:
        real(db, encoded, *args, **kwargs)  # written, then the body fails: the write must go
        if encoded == encode_key(["f", 3]):
            raise RuntimeError("injected failure")

    monkeypatch.setattr(store, "put_in_tx", put)
    results = await asyncio.gather(*(kv.set(["f", i], i) for i in range(8)), return_exceptions=True)
    assert [type(r).__name__ for r in results].count("RuntimeError") == 1
    assert isinstance(results[3], RuntimeError)
    assert [e.value for e in await kv.list(["f"])] == [0, 1, 2, 4, 5, 6, 7]
    stamps = [r.versionstamp for i, r in enumerate(results) if i != 3 and isinstance(r, CommitResult)]
    assert len(stamps) == 7 and stamps == sorted(s or "" for s in stamps)


async def test_a_set_cancelled_before_its_group_started_writes_nothing(kv: Kv) -> None:
    first = asyncio.create_task(kv.set(["c", 1], "one"))
    queued = asyncio.create_task(kv.set(["c", 2], "two"))
    await asyncio.sleep(0)  # the first holds the write lock, the second waits for it
    queued.cancel()
    assert (await first).ok
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert [e.key for e in await kv.list(["c"])] == [("c", 1)]
    assert (await kv.set(["c", 3], "three")).ok  # the store still writes


async def test_concurrent_gets_share_an_engine_call_and_each_get_their_own_entry(
    kv: Kv, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(10):
        await kv.set(["r", i], {"n": i}, expire_in=200 if i == 9 else None)
    await asyncio.sleep(0.3)  # ("r", 9) expired
    db = await kv._store.db()
    calls: list[tuple[str, int]] = []  # (method, statements run), one engine call each
    real_get, real_get_each = db.get, db.get_each

    async def get(sql: str, params: Any = ()) -> Any:
        calls.append(("get", 1))
        return await real_get(sql, params)

    async def get_each(sql: str, params_each: Any) -> Any:
        calls.append(("get_each", len(params_each)))
        return await real_get_each(sql, params_each)

    monkeypatch.setattr(db, "get", get)
    monkeypatch.setattr(db, "get_each", get_each)
    keys = [["r", i % 12] for i in range(30)]  # repeats, absent (10, 11) and expired (9) keys
    entries = await asyncio.gather(*(kv.get(k) for k in keys))
    raws = await asyncio.gather(*(kv.get_raw(k) for k in keys))
    # The first get finds no read running and goes alone; the 29 queued behind it go in one
    # call, one statement per distinct key (all 12, ("r", 0) again among them).
    assert calls == [("get", 1), ("get_each", 12)] * 2
    for key, entry, raw in zip(keys, entries, raws, strict=True):
        n = key[1]
        assert entry.key == tuple(key)
        if n < 9:
            assert entry.value == {"n": n} and raw is not None
            assert (raw.key, raw.value_json, raw.versionstamp) == (
                entry.key,
                b'{"n":%d}' % n,
                entry.versionstamp,
            )
        else:
            assert entry.value is None and entry.versionstamp is None and raw is None


async def test_delete_prefix_and_exact(kv: Kv) -> None:
    for key in (["a"], ["a", 1], ["a", 2, "x"], ["a\x00b"], ["ab"]):
        await kv.set(key, 1)
    assert await kv.delete(["a"], exact=True) == 1
    assert (await kv.get(["a", 1])).value == 1
    assert await kv.delete(["a"]) == 2  # the children; "a\x00b" and "ab" are not under ("a",)
    assert [e.key for e in await kv.list()] == [("a\x00b",), ("ab",)]
    assert await kv.delete(["missing"]) == 0
    assert await kv.delete_many([["a\x00b"], ["ab"]], exact=True) == 2
    with pytest.raises(InvalidKeyError):
        await kv.delete([])


async def test_paginate_forward_and_back(kv: Kv) -> None:
    for i in range(10):
        await kv.set(["page", i], i)
    seen: list[int] = []
    cursor = None
    while True:
        page = await kv.paginate(["page"], cursor=cursor, limit=3)
        seen.extend(e.value for e in page.entries)
        if not page.has_more:
            assert page.cursor is None
            break
        cursor = page.cursor
    assert seen == list(range(10))
    first = await kv.paginate(["page"], limit=4, reverse=True)
    assert [e.value for e in first.entries] == [9, 8, 7, 6] and first.has_more


async def test_reverse_pagination_stays_stable_across_deletes(kv: Kv) -> None:
    for i in range(20):
        await kv.set(["r", i], i)
    seen: list[int] = []
    page = await kv.paginate(["r"], limit=4, reverse=True)
    seen.extend(e.value for e in page.entries)
    deleted = {17, 16, 15, 14, 9, 3}  # includes the cursor key and keys on later pages
    while page.has_more:
        for i in list(deleted):
            await kv.delete(["r", i], exact=True)
        page = await kv.paginate(["r"], cursor=page.cursor, limit=4, reverse=True)
        seen.extend(e.value for e in page.entries)
    expected = [19, 18, 17, 16] + [i for i in range(15, -1, -1) if i not in deleted]
    assert seen == expected
    assert len(seen) == len(set(seen))


def order_keys() -> list[tuple[object, ...]]:
    """Keys whose encodings differ in high and low bytes: strings with NULs and non-ASCII,
    bytes with 0x00/0x7F/0x80/0xFF, negative and huge numbers, bools, and nested children."""
    parts: list[object] = [
        "",
        "a",
        "a\x00",
        "a\x00b",
        "ab",
        "é",
        "\U0001f600",
        b"",
        b"\x00",
        b"\x00\xff",
        b"\x7f",
        b"\x80",
        b"\xff",
        b"\xff\xff",
        -(2**80),
        -1e300,
        -2.5,
        -1,
        0,
        0.5,
        1,
        255,
        256,
        2**53,
        2**70,
        False,
        True,
    ]
    return (
        [("o", p) for p in parts]
        + [("o", p, "child") for p in parts[::3]]
        + [("o", i) for i in range(300, 420)]
    )


async def check_order(kv: Kv, expected: list[tuple[object, ...]]) -> None:
    """list and paginate (both ways, small pages) answer exactly ``expected``, in byte order."""
    listed = [e.key for e in await kv.list(["o"], limit=1000)]
    assert listed == expected
    assert [e.key for e in await kv.list(["o"], limit=1000, reverse=True)] == expected[::-1]
    assert [e.key for e in await kv.list(["o"], limit=7, reverse=True)] == expected[::-1][:7]
    for reverse in (False, True):
        seen: list[tuple[object, ...]] = []
        cursor = None
        while True:
            page = await kv.paginate(["o"], cursor=cursor, limit=7, reverse=reverse)
            seen.extend(e.key for e in page.entries)
            if not page.has_more:
                break
            cursor = page.cursor
        assert seen == (expected[::-1] if reverse else expected), reverse


async def test_order_and_pages_survive_deletes_reinserts_and_a_restart(
    start_host: HostStarter, local_env: dict[str, str]
) -> None:
    """The upstream bug behind ``ORDER BY hex(key)``: ordering the BLOB keys themselves gave an
    unstable reverse order after deletes. Every listing here is checked against the byte order
    of the encoded keys: right after the writes, after deleting every third key (and the
    children of some), after writing some of them back, and after a restart."""
    host = await start_host(local_env)
    kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
    keys = order_keys()
    for i, key in enumerate(keys[::-1]):  # inserted against their order
        await kv.set(key, i)
    live = sorted(keys, key=encode_key)
    assert len(set(map(encode_key, live))) == len(live)
    await check_order(kv, live)
    # By encoding, not by tuple: ("o", 0) == ("o", False) in Python, not as keys.
    deleted = {encode_key(k) for k in live[::3]}
    for key in live[::3]:
        await kv.delete(key, exact=True)
    await kv.delete(["o", "a"])  # ("o", "a") and its children, not ("o", "a\x00b")
    gone = deleted | {encode_key(k) for k in live if k[:2] == ("o", "a")}
    back = [k for k in live[::6] if k[:2] != ("o", "a")]
    live = [k for k in live if encode_key(k) not in gone]
    await check_order(kv, live)
    for key in back:
        await kv.set(key, "back")
    live = sorted([*live, *back], key=encode_key)
    await check_order(kv, live)
    await host.stop()
    kv = (await start_host(local_env)).get_plugin(KEYVAL_PLUGIN_NAME)
    await check_order(kv, live)
    for key in live[1::4]:
        await kv.delete(key, exact=True)
    await check_order(kv, [k for i, k in enumerate(live) if i % 4 != 1])


async def test_ttl_is_millisecond_precise_and_filtered_everywhere(kv: Kv) -> None:
    await kv.set(["ttl", "short"], "x", expire_in=400)
    await kv.set(["ttl", "long"], "y", expire_in=60_000)
    await kv.set(["ttl", "none"], "z")
    assert (await kv.get(["ttl", "short"])).value == "x"  # upstream (seconds) expired this at once
    assert await kv.count(["ttl"]) == 3
    await asyncio.sleep(0.5)
    assert (await kv.get(["ttl", "short"])).value is None
    assert [e.key[1] for e in await kv.list(["ttl"])] == ["long", "none"]
    assert await kv.count(["ttl"]) == 2
    assert [e.key for e in await kv.get_many([["ttl", "short"]]) if e.versionstamp] == []
    assert await physical_rows(kv) == 3  # still on disk until swept
    assert await kv.sweep_expired() == 1
    assert await physical_rows(kv) == 2
    long = await kv.get(["ttl", "long"])
    assert long.expires_at is not None
    with pytest.raises(InvalidValueError):
        await kv.set(["ttl"], 1, expire_in=0)


async def test_background_sweep_deletes_expired_rows(
    start_host: HostStarter, local_env: dict[str, str]
) -> None:
    host = await start_host({**local_env, "KEYVAL_SWEEP_INTERVAL": "50ms"})
    kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
    await kv.set(["gone"], 1, expire_in=20)
    await kv.set(["kept"], 1)
    for _ in range(100):
        if await physical_rows(kv) == 1:
            break
        await asyncio.sleep(0.02)
    assert await physical_rows(kv) == 1


async def test_atomic_checks_and_mutations(kv: Kv) -> None:
    created = await kv.atomic().check(["acct"], None).set(["acct"], 100).set(["log", 1], "open").commit()
    assert created.ok
    assert (await kv.atomic().check(["acct"], None).set(["acct"], 0).commit()).ok is False
    entry = await kv.get(["acct"])
    assert entry.value == 100 and entry.versionstamp == created.versionstamp
    result = await (
        kv.atomic()
        .check(["acct"], entry.versionstamp)
        .sum(["acct"], -30)
        .sum(["fresh"], 5)
        .min(["lo"], 7)
        .max(["hi"], 7)
        .delete(["log", 1])
        .commit()
    )
    assert result.ok
    values = [e.value for e in await kv.get_many([["acct"], ["fresh"], ["lo"], ["hi"], ["log", 1]])]
    assert values == [70, 5, 7, 7, None]
    assert (await kv.get(["acct"])).versionstamp == result.versionstamp
    await kv.atomic().min(["lo"], 3).max(["hi"], 3).sum(["acct"], 0.5).commit()
    assert [e.value for e in await kv.get_many([["lo"], ["hi"], ["acct"]])] == [3, 7, 70.5]
    assert (await kv.atomic().check(["acct"], "00000000000000000000").set(["x"], 1).commit()).ok is False
    assert (await kv.get(["x"])).value is None


async def test_atomic_rolls_back_on_a_bad_mutation(kv: Kv) -> None:
    await kv.set(["text"], "not a number")
    with pytest.raises(InvalidValueError):
        await kv.atomic().set(["written"], 1).sum(["text"], 1).commit()
    assert (await kv.get(["written"])).value is None
    with pytest.raises(InvalidValueError):
        kv.atomic().sum(["n"], "1")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        kv.atomic().set(["n"], {1, 2})


async def test_two_concurrent_writers_one_wins(kv: Kv) -> None:
    await kv.set(["seat"], "free")
    stamp = (await kv.get(["seat"])).versionstamp

    async def book(who: str) -> bool:
        return (await kv.atomic().check(["seat"], stamp).set(["seat"], who).commit()).ok

    results = await asyncio.gather(book("alice"), book("bob"))
    assert sorted(results) == [False, True]
    winner = "alice" if results[0] else "bob"
    assert (await kv.get(["seat"])).value == winner


async def test_optimistic_increments_do_not_lose_updates(kv: Kv) -> None:
    async def increment() -> None:
        while True:
            entry = await kv.get(["counter"])
            value = entry.value or 0
            if (
                await kv.atomic().check(["counter"], entry.versionstamp).set(["counter"], value + 1).commit()
            ).ok:
                return

    await asyncio.gather(*(increment() for _ in range(15)))
    assert (await kv.get(["counter"])).value == 15


async def test_invalid_keys_and_values(kv: Kv) -> None:
    with pytest.raises(InvalidKeyError):
        await kv.set([], 1)
    with pytest.raises(InvalidKeyError):
        await kv.set("users", 1)
    with pytest.raises(InvalidKeyError):
        await kv.get(["a", None])
    with pytest.raises(InvalidValueError):
        await kv.set(["v"], float("nan"))
    with pytest.raises(InvalidValueError):
        await kv.set(["v"], object())
    await kv.set(["big"], 10**30)
    assert (await kv.get(["big"])).value == 10**30


async def test_migrations_are_idempotent(start_host: HostStarter, local_env: dict[str, str]) -> None:
    host = await start_host(local_env)
    kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
    await kv.set(["survives"], "restart")
    assert await migrate(kv.service, kv.namespace) == []
    await host.stop()
    again = await start_host(local_env)
    kv2 = again.get_plugin(KEYVAL_PLUGIN_NAME)
    assert (await kv2.get(["survives"])).value == "restart"
    db = await kv2.service.connect(kv2.namespace)
    assert await db.all("SELECT version FROM kv_schema_version ORDER BY version") == [
        {"version": version} for version, _ in MIGRATIONS
    ]
    # Versionstamps keep increasing across the restart.
    before = (await kv2.get(["survives"])).versionstamp
    after = (await kv2.set(["survives"], "again")).versionstamp
    assert before is not None and after is not None and after > before


async def test_an_upgraded_store_continues_from_its_highest_versionstamp(
    start_host: HostStarter, local_env: dict[str, str]
) -> None:
    """Version 2 moves the versionstamp counter into ``kv_meta``: seeded from the stored entries."""
    ahead = "7" + "0" * 19  # a versionstamp from a clock far ahead (or a pod that ran ahead)

    def v1_store(db: BlockingDatabase) -> None:
        db.exec(SCHEMA_V1)
        db.exec("CREATE TABLE kv_schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        db.run("INSERT INTO kv_schema_version(version, applied_at) VALUES (1, 0)")
        db.run(
            "INSERT INTO kv_entries(key, value, versionstamp) VALUES (?, ?, ?)", [b"\x02old\x00", b"1", ahead]
        )

    async with TursoService(resolve_config(env=local_env)) as service:
        await service.run_transaction(v1_store, namespace="keyval", type="exclusive")
    kv = (await start_host(local_env)).get_plugin(KEYVAL_PLUGIN_NAME)
    written = await kv.set(["new"], 1)
    assert written.versionstamp is not None and written.versionstamp > ahead
    assert (await kv.atomic().sum(["n"], 1).commit()).versionstamp > written.versionstamp


async def test_closed_store_is_unavailable(host: PluginHost, kv: Kv) -> None:
    await kv.set(["a"], 1)
    await host.get_plugin("@buntime/plugin-turso").aclose()
    with pytest.raises(KeyValUnavailableError) as info:
        await kv.get(["a"])
    assert info.value.code == "KEYVAL_UNAVAILABLE" and info.value.status == 503
    await kv.aclose()
    with pytest.raises(KeyValUnavailableError):
        await kv.set(["a"], 2)


async def test_metrics_land_in_the_host_registry(host: PluginHost, kv: Kv) -> None:
    await kv.set(["m"], 1)
    await kv.get(["m"])
    with pytest.raises(InvalidKeyError):
        await kv.get([None])
    text = generate_latest(host.metrics).decode()
    assert 'buntime_keyval_operations_total{operation="set"} 1.0' in text
    assert 'buntime_keyval_operation_errors_total{code="INVALID_KEY",operation="get"} 1.0' in text
    assert 'buntime_keyval_operation_duration_seconds_bucket{le="0.005",operation="get"}' in text
    snapshot = kv.metrics.snapshot()
    assert snapshot["get"]["count"] == 2 and snapshot["get"]["errors"] == 1
