"""WarmConnections against a real tursodb: order, stale spares, abandoned sockets, close.

tursodb serves connections strictly in accept order and blocks on the oldest until it sends a
request, so every check here ends with a request that must be answered within a few seconds: a
connection left open and unused would hold the child for the ~minute of its idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tursodb import SyncServer
from turso_server._errors import UpstreamConnectError
from turso_server._upstream import exchange
from turso_server._warm import WarmConnections

ANSWER_WITHIN = 5.0
SELECT_ONE = json.dumps(
    {"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1", "args": [], "want_rows": True}}]}
).encode()


@pytest.fixture
def child(tmp_path: Path) -> Iterator[SyncServer]:
    server = SyncServer(tmp_path / "db.db").start()
    try:
        yield server
    finally:
        server.stop()


async def select_one(host: str, port: int, sock: socket.socket | None) -> int:
    async with asyncio.timeout(ANSWER_WITHIN):
        reply = await exchange(
            host,
            port,
            method="POST",
            target="/v2/pipeline",
            headers=[("Content-Type", "application/json")],
            body=SELECT_ONE,
            sock=sock,
        )
        try:
            body = json.loads(await reply.read())
        finally:
            reply.close()
    assert body["results"][0]["type"] == "ok", body
    return reply.status


async def test_connections_are_served_in_the_order_they_were_opened(child: SyncServer) -> None:
    warm = WarmConnections("127.0.0.1", child.port)
    try:
        first, second, third = [await warm.take() for _ in range(3)]
        # Sent in reverse: each waits for the ones opened before it, none waits forever.
        replies = await asyncio.gather(
            select_one(warm.host, warm.port, third),
            select_one(warm.host, warm.port, second),
            select_one(warm.host, warm.port, first),
        )
        assert replies == [200, 200, 200]
    finally:
        warm.close()


async def test_each_take_returns_with_the_next_spare_already_in_the_childs_accept_queue(
    child: SyncServer,
) -> None:
    """A child that finishes a request and finds its accept queue empty sleeps ~10 ms before it
    looks again, so the spare behind a connection must be connected before that connection's
    request goes out: take() returns only then."""
    warm = WarmConnections("127.0.0.1", child.port)
    try:
        for _ in range(3):
            sock = await warm.take()
            (spare,) = warm._queue
            assert spare.done() and not spare.cancelled() and spare.exception() is None
            spare_sock, _ = spare.result()
            assert spare_sock.getpeername()[1] == child.port
            assert await select_one("127.0.0.1", child.port, sock) == 200
    finally:
        warm.close()


async def test_a_spare_idle_too_long_is_skipped_and_closed(child: SyncServer) -> None:
    warm = WarmConnections("127.0.0.1", child.port, max_idle=0.05)
    try:
        await select_one(warm.host, warm.port, await warm.take())  # leaves a spare behind
        await asyncio.sleep(0.2)
        spare, _ = await warm._queue[0]  # white box: the connection that has gone stale
        taken = await warm.take()
        assert taken is not spare and spare.fileno() == -1, "the stale spare was handed out"
        assert await select_one(warm.host, warm.port, taken) == 200
    finally:
        warm.close()


async def test_an_abandoned_connection_does_not_hold_the_child(child: SyncServer) -> None:
    warm = WarmConnections("127.0.0.1", child.port)
    try:
        (await warm.take()).close()  # a request that failed before sending a byte
        assert await select_one(warm.host, warm.port, await warm.take()) == 200
        taking = asyncio.ensure_future(warm.take())
        taking.cancel()  # cancelled while connecting or just connected: its socket is closed
        with pytest.raises(asyncio.CancelledError):
            await taking
        assert await select_one(warm.host, warm.port, await warm.take()) == 200
    finally:
        warm.close()


async def test_close_frees_the_child_and_refuses_further_takes(child: SyncServer) -> None:
    warm = WarmConnections("127.0.0.1", child.port)
    await select_one(warm.host, warm.port, await warm.take())  # a spare is now queued at the child
    warm.close()
    with pytest.raises(UpstreamConnectError, match="stopping"):
        await warm.take()
    # A plain connection made now is served: the spare no longer holds the child.
    assert await select_one("127.0.0.1", child.port, None) == 200


async def test_a_child_that_is_gone_is_unreachable(child: SyncServer) -> None:
    warm = WarmConnections("127.0.0.1", child.port)
    try:
        await select_one(warm.host, warm.port, await warm.take())
        child.kill()
        with pytest.raises(UpstreamConnectError):
            await warm.take()
    finally:
        warm.close()


async def test_a_loopback_connection_is_ready_without_a_turn_of_the_loop(child: SyncServer) -> None:
    """The handshake completes inside connect() on loopback: take() then never yields, so a
    request goes out in the same turn of the loop it arrived in."""
    warm = WarmConnections("127.0.0.1", child.port)
    try:
        await select_one(warm.host, warm.port, await warm.take())  # the first spare is queued
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        counter = asyncio.ensure_future(count_turns())
        await asyncio.sleep(0)
        before = turns
        sock = await warm.take()
        assert turns == before  # take() did not give the loop up
        counter.cancel()
        assert await select_one(warm.host, warm.port, sock) == 200
    finally:
        warm.close()


async def test_a_connection_still_in_progress_is_awaited_on_the_loop() -> None:
    """A listener whose backlog is full leaves a new connection in progress (the kernel drops
    its SYN): take() waits for it on the loop, and gets it once the listener makes room."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue until a connect no longer completes at once
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            warm = WarmConnections("127.0.0.1", port)
            try:
                opening = warm._open()
                assert not opening.done()
                listener.setblocking(False)
                accepted = []
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while not opening.done() and loop.time() < deadline:
                    with contextlib.suppress(BlockingIOError):
                        accepted.append(listener.accept()[0])
                    await asyncio.sleep(0.05)
                sock, _ = await opening
                assert sock.getpeername()[1] == port
                sock.close()
                for conn in accepted:
                    conn.close()
            finally:
                warm.close()
        finally:
            for filler in fillers:
                filler.close()
