"""Contract point 4 across pods: two real ``buntime serve`` processes, one turso-server.

Each test runs twice: single-tenant (both pods on database ``runtime`` of a turso-server) and
multi-tenant (one database per plugin namespace). Every write goes through the pods' HTTP APIs
at the same time, released together by a barrier, so the two pods really race:

* ``atomic`` with the same versionstamp check from both pods: exactly one ``ok: true``, one
  ``ok: false`` (both 200, as upstream answers a failed check);
* 5 + 5 concurrent ``sum`` mutations end at 10 (``min``/``max`` likewise exact);
* versionstamps never repeat across pods and grow in commit order;
* N queued messages drained by consumers on both pods: each delivered once, ``attempts`` 1,
  each ack answered 200 once; after a lease runs out the message moves to the other pod with
  ``attempts`` 2 and the first consumer's late ack or nack is refused (fenced by ``attempts``);
* gateway metrics snapshots recorded by both pods in the same instant are all kept;
* a proxy reorder sent to a pod whose cache has not seen a rule another pod just made is
  decided on the stored rules (the transaction's pull brings the rule), not refused with 404.

Reads through a pod's autocommit API may be stale (they serve its replica), so final values are
polled until both pods agree.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from tests.server.support import (
    GATEWAY,
    KEYVAL,
    PROXY,
    TURSO,
    RuntimeProcess,
    builtin_host,
    http,
    kv_value,
    start_runtime,
)
from tests.support.tursoserver import SyncEndpoint

pytestmark = pytest.mark.slow

API = "/keyval/api"
LOCK_DURATION = 2.0  # seconds: short, so the redelivery test waits little
DEADLINE = 15.0

Pods = tuple[RuntimeProcess, RuntimeProcess]


@pytest.fixture(scope="module", params=["single-tenant", "multi-tenant"])
def pods(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    """Two ``buntime serve`` pods with their own replica directories, sharing one turso-server."""
    root = tmp_path_factory.mktemp("cross-pod")
    multi = request.param == "multi-tenant"
    server = SyncEndpoint(root / "server", namespace=None if multi else "runtime").start()
    started: list[RuntimeProcess] = []
    try:
        for name in ("a", "b"):
            env = {
                "TURSO_SERVER_URL" if multi else "TURSO_SYNC_URL": server.url,
                "TURSO_LOCAL_PATH": str(root / name / "runtime.db"),
                "TURSO_SYNC_INTERVAL": "0.3s",
                "KEYVAL_QUEUE_LOCK_DURATION": f"{LOCK_DURATION:g}s",
                "KEYVAL_QUEUE_CLEANUP_INTERVAL": "0.2s",
                "GATEWAY_SNAPSHOT_INTERVAL": "0",  # only the snapshots a test takes itself
            }
            started.append(RuntimeProcess(env, root / f"{name}.log").start())
        yield started[0], started[1]
    finally:
        for runtime in started:
            assert runtime.stop() == 0, runtime.log()
        server.stop()


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread, all released at once; results in call order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def eventually(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"not seen within {DEADLINE}s: {what}")


def kv_get(pod: RuntimeProcess, key: str) -> Any:
    status, body = http("GET", f"{pod.url}{API}/keys/{key}")
    return kv_value(body) if status == 200 else None


def atomic(pod: RuntimeProcess, checks: list[Any], mutations: list[Any]) -> tuple[int, Any]:
    return http("POST", f"{pod.url}{API}/atomic", {"checks": checks, "mutations": mutations}, timeout=30)


def test_one_atomic_wins_per_versionstamp(pods: Pods) -> None:
    for round_ in range(6):
        compare_and_set_race(pods, round_)


def compare_and_set_race(pods: Pods, round_: int) -> None:
    """Both pods check the versionstamp a client just read and set the key: one may win."""
    a, b = pods
    key = ["cas", round_]
    status, body = http("PUT", f"{a.url}{API}/keys/cas/{round_}", {"owner": "nobody"})
    assert status == 200, body
    seen = body["versionstamp"]
    check = [{"key": key, "versionstamp": seen}]
    results = race(
        [
            lambda pod=pod, name=name: atomic(
                pod, check, [{"type": "set", "key": key, "value": {"owner": name}}]
            )
            for pod, name in ((a, "a"), (b, "b"))
        ]
    )
    assert [status for status, _ in results] == [200, 200], results
    assert sorted(body["ok"] for _, body in results) == [False, True], results
    winner = "a" if results[0][1]["ok"] else "b"
    won = results[0 if winner == "a" else 1][1]
    lost = results[1 if winner == "a" else 0][1]
    assert won["ok"] is True and won["versionstamp"] > seen
    assert lost["ok"] is False and lost["code"] == "CHECK_FAILED"
    for pod in pods:
        eventually(
            lambda pod=pod: kv_get(pod, f"cas/{round_}") == {"owner": winner},
            f"round {round_}: the winner's value on {pod.url}",
        )


def test_sum_min_max_from_both_pods_are_exact(pods: Pods) -> None:
    a, b = pods

    def bump(pod: RuntimeProcess, n: int) -> tuple[int, Any]:
        return atomic(
            pod,
            [],
            [
                {"type": "sum", "key": ["counter", "sum"], "value": 1},
                {"type": "min", "key": ["counter", "min"], "value": n},
                {"type": "max", "key": ["counter", "max"], "value": n},
            ],
        )

    results = race([lambda n=n: bump(a if n % 2 else b, n) for n in range(1, 11)])
    assert [status for status, _ in results] == [200] * 10, results
    versionstamps = [body["versionstamp"] for _, body in results]
    assert len(set(versionstamps)) == 10
    for pod in pods:
        eventually(
            lambda pod=pod: (
                (
                    kv_get(pod, "counter/sum"),
                    kv_get(pod, "counter/min"),
                    kv_get(pod, "counter/max"),
                )
                == (10, 1, 10)
            ),
            f"sum 10, min 1, max 10 on {pod.url}",
        )


def test_versionstamps_never_repeat_and_follow_commit_order(pods: Pods) -> None:
    a, b = pods

    def put(pod: RuntimeProcess, i: int) -> tuple[int, Any]:
        return http("PUT", f"{pod.url}{API}/keys/stamps/shared", {"writer": i}, timeout=30)

    results = race([lambda i=i: put(a if i % 2 else b, i) for i in range(12)])
    assert all(status == 200 for status, _ in results), results
    stamps = {body["versionstamp"]: i for i, (_, body) in enumerate(results)}
    assert len(stamps) == 12, "a versionstamp was handed out twice"
    last = stamps[max(stamps)]  # the greatest versionstamp is the last commit: its value stays
    for pod in pods:
        eventually(
            lambda pod=pod: (
                http("GET", f"{pod.url}{API}/keys/stamps/shared")[1]
                == {
                    "key": ["stamps", "shared"],
                    "value": {"writer": last},
                    "versionstamp": max(stamps),
                    "expiresAt": None,
                }
            ),
            f"the last commit's value and versionstamp on {pod.url}",
        )


def test_each_message_goes_to_one_consumer(pods: Pods) -> None:
    a, b = pods
    enqueued = race(
        [
            lambda i=i: http("POST", f"{(a if i % 2 else b).url}{API}/queue/enqueue", {"value": {"n": i}})
            for i in range(20)
        ]
    )
    assert all(status == 200 for status, _ in enqueued), enqueued
    ids = {body["id"] for _, body in enqueued}
    assert len(ids) == 20
    deliveries: list[tuple[str, int, str]] = []
    acks: list[int] = []
    lock = threading.Lock()

    def consume(pod: RuntimeProcess) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            with lock:
                if len(deliveries) >= len(ids):
                    return
            status, body = http("POST", f"{pod.url}{API}/queue/poll", timeout=30)
            assert status == 200, body
            message = body["message"]
            if message is None:
                time.sleep(0.02)
                continue
            with lock:
                deliveries.append((message["id"], message["attempts"], pod.url))
            ack_status, _ = http(
                "POST", f"{pod.url}{API}/queue/ack", {"id": message["id"], "attempts": message["attempts"]}
            )
            with lock:
                acks.append(ack_status)

    race([lambda pod=pod: consume(pod) for pod in (a, a, b, b)])
    delivered = [message_id for message_id, _, _ in deliveries]
    assert sorted(delivered) == sorted(ids), "each message delivered exactly once"
    assert {attempts for _, attempts, _ in deliveries} == {1}
    assert acks == [200] * len(ids)
    assert {pod for _, _, pod in deliveries} == {a.url, b.url}, "both pods consumed"
    for pod in pods:
        eventually(
            lambda pod=pod: (
                http("GET", f"{pod.url}{API}/queue/stats")[1]
                == {"pending": 0, "processing": 0, "dlq": 0, "total": 0}
            ),
            f"an empty queue on {pod.url}",
        )
    # An ack of a message that is gone is a 404, not a second success.
    assert http("POST", f"{a.url}{API}/queue/ack", {"id": delivered[0]})[0] == 404


def test_an_expired_lease_moves_the_message_and_fences_the_first_consumer(pods: Pods) -> None:
    a, b = pods
    status, body = http("POST", f"{a.url}{API}/queue/enqueue", {"value": "slow job"})
    assert status == 200
    message_id = body["id"]
    first = http("POST", f"{a.url}{API}/queue/poll")[1]["message"]
    assert first["id"] == message_id and first["attempts"] == 1
    assert http("POST", f"{b.url}{API}/queue/poll")[1]["message"] is None, "leased to A"
    redelivered = None
    deadline = time.monotonic() + DEADLINE
    while redelivered is None and time.monotonic() < deadline:
        time.sleep(0.1)
        redelivered = http("POST", f"{b.url}{API}/queue/poll")[1]["message"]
    assert redelivered is not None, "the message came back once A's lease ran out"
    assert redelivered["id"] == message_id and redelivered["attempts"] == 2
    # A's lease is over: neither its ack nor its nack may touch B's lease.
    late = {"id": message_id, "attempts": first["attempts"]}
    assert http("POST", f"{a.url}{API}/queue/ack", late)[0] == 409
    assert http("POST", f"{a.url}{API}/queue/nack", late)[0] == 409
    assert http("POST", f"{a.url}{API}/queue/poll")[1]["message"] is None, "still leased to B"
    assert http("POST", f"{b.url}{API}/queue/ack", {"id": message_id, "attempts": 2})[0] == 200
    assert http("POST", f"{b.url}{API}/queue/ack", {"id": message_id, "attempts": 2})[0] == 404


def test_gateway_snapshots_from_both_pods_are_all_kept(pods: Pods, tmp_path: Path) -> None:
    a, b = pods
    path = "/gateway/admin/metrics"
    assert http("DELETE", f"{a.url}{path}/history")[0] in (200, 204)
    results = race([lambda pod=pod: http("POST", f"{pod.url}{path}/snapshot") for pod in (a, b) * 4])
    assert [status for status, _ in results] == [201] * 8, results
    stamps = [body["timestamp"] for _, body in results]
    assert len(set(stamps)) == 8, "two snapshots shared a timestamp (one would replace the other)"
    for pod in pods:
        eventually(
            lambda pod=pod: (
                sorted(s["timestamp"] for s in http("GET", f"{pod.url}{path}/history")[1]) == sorted(stamps)
            ),
            f"all 8 snapshots on {pod.url}",
        )


async def test_caches_follow_the_pull_a_write_makes(tmp_path: Path, sync_server: SyncEndpoint) -> None:
    """A pod's write pulls other pods' changes first (under the lease): the pull listeners of
    every plugin sharing the replica must see that pull, since the next background pull has
    nothing left to bring and would never tell them."""
    hosts = []
    for name in ("a", "b"):
        env = {
            "TURSO_SYNC_URL": sync_server.url,
            "TURSO_LOCAL_PATH": str(tmp_path / name / "runtime.db"),
            "TURSO_SYNC_INTERVAL": "0",  # no background pulls: only the one before B's write
            "KEYVAL_SWEEP_INTERVAL": "0",
            "KEYVAL_QUEUE_CLEANUP_INTERVAL": "0",
        }
        host = builtin_host(env, TURSO, GATEWAY, KEYVAL)
        hosts.append(host)
        await host.start()
        assert host.ready, host.failed
    try:
        a_gateway, b_gateway = (host.get_plugin(GATEWAY) for host in hosts)
        await a_gateway.add_exclude("from-a")
        assert "from-a" not in b_gateway.excluded_basenames()
        await hosts[1].get_plugin(KEYVAL).set(["poke"], 1)  # B's write pulls A's exclude
        deadline = asyncio.get_running_loop().time() + 5
        while "from-a" not in b_gateway.excluded_basenames():
            assert asyncio.get_running_loop().time() < deadline, "B's gateway cache missed the pull"
            await asyncio.sleep(0.02)
    finally:
        for host in reversed(hosts):
            await host.stop()


async def test_a_reorder_is_decided_on_the_stored_rules_not_on_a_stale_cache(
    tmp_path: Path, sync_server: SyncEndpoint, aiohttp_client: AiohttpClient
) -> None:
    """B has not pulled A's new rule (no background pulls) when the reorder naming it reaches B."""
    rules = "/redirects/admin/rules"
    pods = []
    for name in ("a", "b"):
        env = {
            "TURSO_SYNC_URL": sync_server.url,
            "TURSO_LOCAL_PATH": str(tmp_path / name / "runtime.db"),
            "TURSO_SYNC_INTERVAL": "0",  # B's cache only learns of A's rule through a write's pull
        }
        pods.append(await start_runtime(aiohttp_client, env, TURSO, PROXY))
    a, b = pods
    first = await b.post(rules, json={"pattern": "^/one/", "target": "http://127.0.0.1:9"})
    assert first.status == 201, await first.text()
    one = (await first.json())["id"]
    made = await a.post(rules, json={"pattern": "^/two/", "target": "http://127.0.0.1:9"})
    assert made.status == 201, await made.text()
    two = (await made.json())["id"]
    assert [r["id"] for r in await (await b.get(rules)).json()] == [one]  # B's cache is behind
    reordered = await b.put(f"{rules}/reorder", json={"ids": [two, one]})
    body = await reordered.json()
    assert reordered.status == 200, body
    assert [(r["id"], r["order"]) for r in body] == [(two, 0), (one, 1)]
    # and one the stored rules do not have is still a 404, changing nothing
    refused = await b.put(f"{rules}/reorder", json={"ids": [two, one, "nope"]})
    assert refused.status == 404 and (await refused.json())["code"] == "PROXY_RULE_NOT_FOUND"
    assert [r["id"] for r in await (await b.get(rules)).json()] == [two, one]
