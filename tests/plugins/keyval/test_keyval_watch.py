"""Watch and queue-listen streams (SSE) and their poll forms: two subscribers, a slow one, a
reconnect with ``Last-Event-ID``, shutdown, and a change made through a second pod."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from buntime.plugins import PluginHost
from buntime.plugins.keyval import KEYVAL_PLUGIN_NAME, Kv
from buntime.plugins.keyval._watch import CLOSE_OVERFLOW, CLOSE_SHUTDOWN
from tests.server.support import raw_request

from .conftest import mount

API = "/keyval/api"
Client = TestClient[web.Request, web.Application]
Event = tuple[str, str | None, Any]


async def next_event(response: ClientResponse, *, skip_pings: bool = True, timeout: float = 5.0) -> Event:
    """The next SSE event as ``(event, id, data)``; ``("eof", None, None)`` when the stream ended."""

    async def read() -> Event:
        name, event_id, data = "message", None, None
        while True:
            line = await response.content.readline()
            if not line:
                return ("eof", None, None)
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                name = text[7:]
            elif text.startswith("id: "):
                event_id = text[4:]
            elif text.startswith("data: "):
                data = json.loads(text[6:])
            elif text == "" and data is not None:
                if name == "ping" and skip_pings:
                    name, event_id, data = "message", None, None
                    continue
                return (name, event_id, data)

    return await asyncio.wait_for(read(), timeout)


def values(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"/".join(str(p) for p in e["key"]): e["value"] for e in data}


async def test_two_subscribers_see_each_change(client: Client, kv: Kv) -> None:
    await kv.set(["cfg", "a"], 1)
    one = await client.get(f"{API}/watch", params={"keys": "cfg/a,cfg/b"})
    two = await client.get(f"{API}/watch", params={"keys": '[["cfg","a"],["cfg","b"]]'})
    assert one.headers["Content-Type"].startswith("text/event-stream")
    for stream in (one, two):
        name, event_id, data = await next_event(stream)
        assert name == "change" and values(data) == {"cfg/a": 1, "cfg/b": None}
        assert event_id == (await kv.get(["cfg", "a"])).versionstamp
    await kv.set(["cfg", "b"], 2)
    for stream in (one, two):
        _, event_id, data = await next_event(stream)
        assert values(data) == {"cfg/a": 1, "cfg/b": 2}
        assert event_id == (await kv.get(["cfg", "b"])).versionstamp
    await kv.set(["other"], 0)  # not watched: no event, the next one is the delete
    await kv.delete(["cfg", "a"])
    for stream in (one, two):
        assert values((await next_event(stream))[2]) == {"cfg/a": None, "cfg/b": 2}
    one.close()
    two.close()


async def test_keep_alive_pings(client: Client, kv: Kv) -> None:
    kv.watch.ping_interval = 0.1
    stream = await client.get(f"{API}/watch/prefix", params={"prefix": "p"})
    assert (await next_event(stream, skip_pings=False))[0] == "ping"
    listen = await client.get(f"{API}/queue/listen")
    assert (await next_event(listen, skip_pings=False))[0] == "ping"
    stream.close()
    listen.close()


async def test_prefix_watch_and_reconnect_with_last_event_id(client: Client, kv: Kv) -> None:
    await kv.set(["users", 1], "ada")
    stream = await client.get(f"{API}/watch/prefix", params={"prefixes": "users", "initial": "true"})
    _, first_id, data = await next_event(stream)
    assert values(data) == {"users/1": "ada"}
    await kv.set(["users", 2], "bob")
    _, second_id, data = await next_event(stream)
    assert values(data) == {"users/2": "bob"} and second_id and second_id > (first_id or "")
    stream.close()
    # Away: two writes. Back with Last-Event-ID: only what it missed, not the initial state.
    await kv.set(["users", 3], "cy")
    await kv.set(["users", 1], "ada2")
    resumed = await client.get(
        f"{API}/watch/prefix",
        params={"prefix": "users", "initial": "true"},
        headers={"Last-Event-ID": second_id},
    )
    _, resumed_id, data = await next_event(resumed)
    assert values(data) == {"users/1": "ada2", "users/3": "cy"}
    assert resumed_id == (await kv.get(["users", 1])).versionstamp
    await kv.delete(["users", 2])
    [gone] = (await next_event(resumed))[2]
    # Upstream sent a deleted key as key.split("/"): ["users", "2"], the number a string.
    assert gone["key"] == ["users", 2] and type(gone["key"][1]) is int and gone["value"] is None
    resumed.close()


@pytest.mark.parametrize("route", ["/watch/prefix?prefix=w&initial=true", "/watch?keys=w/1"])
async def test_a_last_event_id_that_is_no_versionstamp_is_400(client: Client, kv: Kv, route: str) -> None:
    """The header was taken as it came and echoed as the next event's id: bytes that are not
    UTF-8 broke the stream after its 200 (a traceback per request), and any other text sorted
    above every versionstamp (``zzz``) hid every change from the replay."""
    versionstamp = (await kv.set(["w", 1], "x")).versionstamp
    assert versionstamp is not None
    for bad in (b"\xff\xfe", b"zzz", b"not-a-versionstamp", b"0" * 21, versionstamp.upper().encode()):
        header = b"Last-Event-ID: " + bad + b"\r\n"
        line = await raw_request(client.port, f"GET {API}{route} HTTP/1.1", header)
        assert line.startswith(b"HTTP/1.1 400"), (bad, line)
    resumed = await client.get(f"{API}{route}", headers={"Last-Event-ID": versionstamp})
    assert resumed.status == 200
    resumed.close()


async def test_a_slow_subscriber_is_closed_not_buffered(kv: Kv) -> None:
    kv.watch.queue_size = 2
    slow = kv.watch.watch_prefixes([("jobs",)])
    fast = kv.watch.watch_prefixes([("jobs",)])
    seen: list[Any] = []

    async def drain() -> None:
        while (event := await fast.next()) is not None:
            seen.extend(e["key"][1] for e in event.entries)

    reader = asyncio.create_task(drain())
    await asyncio.sleep(0.05)
    for i in range(6):
        await kv.set(["jobs", i], i)
        await asyncio.sleep(0.05)  # one watch round per write
    assert slow.close_reason == CLOSE_OVERFLOW
    assert seen == [0, 1, 2, 3, 4, 5]  # the slow one never held the fast one up
    assert await slow.next() is None
    await kv.watch.aclose()
    await reader
    assert fast.close_reason == CLOSE_SHUTDOWN


async def test_shutdown_ends_the_streams(client: Client, kv: Kv) -> None:
    stream = await client.get(f"{API}/watch", params={"keys": "k"})
    assert (await next_event(stream))[0] == "change"
    listen = await client.get(f"{API}/queue/listen")
    await asyncio.sleep(0.05)
    await kv.watch.aclose()
    assert (await next_event(stream))[0] == "eof"
    assert (await next_event(listen))[0] == "eof"


async def test_queue_listen_streams_messages_as_they_arrive(client: Client, kv: Kv) -> None:
    listen = await client.get(f"{API}/queue/listen")
    await asyncio.sleep(0.05)
    first = await kv.queue.enqueue({"job": 1})
    name, event_id, data = await next_event(listen)
    assert name == "message" and event_id == first and data["value"] == {"job": 1}
    assert await kv.queue.ack(data["id"], attempts=data["attempts"])
    delayed = await kv.queue.enqueue({"job": 2}, delay=300)
    _, event_id, data = await next_event(listen)  # woken when it is due, no write needed
    assert event_id == delayed and data["attempts"] == 1
    listen.close()


async def test_a_listener_that_stops_reading_holds_one_lease_not_the_queue(client: Client, kv: Kv) -> None:
    for i in range(300):
        await kv.queue.enqueue({"job": i})
    listen = await client.get(f"{API}/queue/listen")
    assert await listen.content.readline() == b"retry: 1000\n"  # then it reads nothing more
    await asyncio.sleep(1)
    stats = await kv.queue.stats()
    assert (stats.processing, stats.pending) == (1, 299)  # not whatever fits in the socket buffers
    listen.close()


async def test_a_listener_leases_the_next_message_once_the_last_is_acked_nacked_or_expired(
    start_host: Callable[[dict[str, str]], Awaitable[PluginHost]],
    local_env: dict[str, str],
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    host = await start_host({**local_env, "KEYVAL_QUEUE_LOCK_DURATION": "1s"})
    kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
    assert isinstance(kv, Kv)
    client = await aiohttp_client(mount(host))
    ids = [await kv.queue.enqueue({"job": i}) for i in range(4)]
    listen = await client.get(f"{API}/queue/listen")
    _, event_id, first = await next_event(listen)
    assert event_id == ids[0]
    with pytest.raises(TimeoutError):  # nothing more while it holds that lease
        await next_event(listen, timeout=0.3)
    started = time.monotonic()
    acked = await client.post(f"{API}/queue/ack", json={"id": first["id"], "attempts": first["attempts"]})
    assert acked.status == 200
    _, event_id, second = await next_event(listen)
    assert event_id == ids[1] and time.monotonic() - started < 0.5  # woken by the ack
    nacked = await client.post(f"{API}/queue/nack", json={"id": second["id"], "attempts": second["attempts"]})
    assert nacked.status == 200
    _, event_id, third = await next_event(listen)
    assert event_id == ids[2]
    started = time.monotonic()  # not acked: the next one comes when its 1 s lease has run out
    _, event_id, _ = await next_event(listen)
    assert event_id == ids[3] and 0.5 < time.monotonic() - started < 3
    assert third["lockedUntil"] <= kv.now_ms()
    listen.close()


async def test_poll_forms(client: Client, kv: Kv) -> None:
    a = await kv.set(["p", "a"], 1)
    polled = await (await client.get(f"{API}/watch/poll", params={"keys": "p/a,p/b"})).json()
    assert polled["changed"] is True and [e["value"] for e in polled["entries"]] == [1]  # p/b: still absent
    assert polled["versionstamps"] == [a.versionstamp, ""]  # upstream's: send them back next time
    same = {"keys": "p/a,p/b", "versionstamps": ",".join(polled["versionstamps"])}
    assert await (await client.get(f"{API}/watch/poll", params=same)).json() == {
        "entries": [],
        "versionstamps": [a.versionstamp, ""],
        "changed": False,
    }
    known = {"prefix": "p", "versionstamps": f"p/a:{a.versionstamp},p/gone:00"}
    polled = await (await client.get(f"{API}/watch/prefix/poll", params=known)).json()
    assert polled == {
        "entries": [{"key": ["p", "gone"], "value": None, "versionstamp": None}],
        "versionstamps": f"p/a:{a.versionstamp}",
        "changed": True,
    }
    b = await kv.set(["p", "b"], 2)
    await kv.set(["p", "x/y", 7], 3)  # a part with a slash survives the round trip
    polled = await (await client.get(f"{API}/watch/prefix/poll", params={"prefix": "p"})).json()
    assert len(polled["entries"]) == 3
    known["versionstamps"] = polled["versionstamps"]
    assert (await (await client.get(f"{API}/watch/prefix/poll", params=known)).json())["changed"] is False
    assert f"p/b:{b.versionstamp}" in known["versionstamps"].split(",")
    bad = await client.get(f"{API}/watch/prefix/poll", params={"prefix": "p", "versionstamps": "nocolon"})
    assert bad.status == 400
    assert (await client.get(f"{API}/watch")).status == 400


async def test_the_prefix_poll_names_every_key_losslessly(client: Client, kv: Kv) -> None:
    """The path form read "42" back as 42, "True"/true as a string, 1e-05 as a string: each poll
    with the answered versionstamps said changed, with phantom deletions, forever."""
    keys: list[tuple[Any, ...]] = [
        ("p", "42"), ("p", True), ("p", 1e-05), ("p", ""), ("p", b"\x00,:"), ("p", "a,b:c"), ("p", "[x"),
        ("p", "ok"), ("p", 42), ("p", 2.5),
    ]  # fmt: skip
    for key in keys:
        await kv.set(key, 1)
    first = await (await client.get(f"{API}/watch/prefix/poll", params={"prefix": "p"})).json()
    assert first["changed"] is True and len(first["entries"]) == len(keys)
    tokens = first["versionstamps"].split(",")
    assert "p/ok:" in first["versionstamps"] and "p/42:" in first["versionstamps"]  # upstream's form kept
    assert len(tokens) == len(keys)
    for _ in range(2):
        known = {"prefix": "p", "versionstamps": first["versionstamps"]}
        again = await (await client.get(f"{API}/watch/prefix/poll", params=known)).json()
        assert again == {"entries": [], "versionstamps": first["versionstamps"], "changed": False}
    await kv.delete(("p", "42"))
    known = {"prefix": "p", "versionstamps": first["versionstamps"]}
    gone = await (await client.get(f"{API}/watch/prefix/poll", params=known)).json()
    assert gone["entries"] == [{"key": ["p", "42"], "value": None, "versionstamp": None}]


async def test_a_change_on_another_pod_reaches_a_watcher_through_the_pull(
    start_host: Callable[[dict[str, str]], Awaitable[PluginHost]],
    replica_env: Callable[[str], dict[str, str]],
) -> None:
    pods = [(await start_host(replica_env(name))).get_plugin(KEYVAL_PLUGIN_NAME) for name in ("a", "b")]
    a, b = pods
    assert isinstance(a, Kv) and isinstance(b, Kv)
    watcher = b.watch.watch_keys([("shared",)], initial=False)
    await asyncio.sleep(0.05)
    written = await a.set(["shared"], "from a")
    await asyncio.sleep(0.1)
    assert watcher._queue.empty()  # B has not pulled: nothing polls its table
    await b.service.sync(b.namespace)  # what the background loop does every TURSO_SYNC_INTERVAL
    event = await watcher.next(5)
    assert event is not None and event.id == written.versionstamp
    assert event.entries[0]["value"] == "from a"
    b.watch.unsubscribe(watcher)


async def test_watchers_of_keys_equal_only_as_python_values_get_their_own_entries(
    client: Client, kv: Kv
) -> None:
    """``[1]`` and ``[true]`` are different keys, though ``(1,) == (True,)`` in Python: one
    watch round used to read one of them for both watchers."""
    await kv.set([1], "one")
    await kv.set([True], "yes")
    number = await client.get(f"{API}/watch", params={"keys": "[[1]]"})
    boolean = await client.get(f"{API}/watch", params={"keys": "[[true]]"})
    for stream, expected in ((number, "one"), (boolean, "yes")):
        _, _, data = await next_event(stream)
        assert [e["value"] for e in data] == [expected]
    await kv.set([True], "still yes")
    _, _, data = await next_event(boolean)
    assert [(e["key"], e["value"]) for e in data] == [([True], "still yes")]
    number.close()
    boolean.close()


async def test_a_pod_serves_a_bounded_number_of_watch_streams(
    client: Client, kv: Kv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write re-reads every distinct watch, so a pod takes at most MAX_WATCHERS streams; the
    next gets 503 KEYVAL_TOO_MANY_WATCHERS (with Retry-After) until one closes."""
    monkeypatch.setattr("buntime.plugins.keyval._watch.MAX_WATCHERS", 2)
    first = await client.get(f"{API}/watch", params={"keys": "a"})
    second = await client.get(f"{API}/watch/prefix", params={"prefix": "p"})
    assert (await next_event(first))[0] == "change"
    refused = await client.get(f"{API}/watch", params={"keys": "b"})
    assert refused.status == 503 and refused.headers["Retry-After"] == "1"
    assert (await refused.json())["code"] == "KEYVAL_TOO_MANY_WATCHERS"
    first.close()
    for _ in range(100):  # the hub drops a closed stream's watcher when its handler ends
        if kv.watch.subscribers < 2:
            break
        await asyncio.sleep(0.02)
    third = await client.get(f"{API}/watch", params={"keys": "b"})
    assert third.status == 200 and (await next_event(third))[0] == "change"
    second.close()
    third.close()
