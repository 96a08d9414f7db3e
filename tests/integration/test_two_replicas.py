"""Two ``buntime serve`` replicas of one deployment, syncing through a real server.

Each test runs twice: single-tenant against a plain ``tursodb --sync-server``, and multi-tenant
(one database per plugin namespace) against a real turso-server with its data token.

A change made through replica A's HTTP API is served by replica B within the sync interval (B's
in-memory caches are refreshed after its background pull, not only at start), and survives a
restart of A and a brand-new replica with an empty disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.support import RuntimeProcess, http, kv_value
from tests.support.tursoserver import SyncEndpoint, TursoServer

pytestmark = pytest.mark.slow

SYNC_INTERVAL = "0.3s"
DEADLINE = 15.0
EXCLUDES = "/gateway/admin/shell/excludes"
RULES = "/redirects/admin/rules"


@pytest.fixture(scope="module", params=["single-tenant", "turso-server"])
def sync_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """How replicas reach the shared server: one database (single-tenant) or multi-tenant."""
    root = tmp_path_factory.mktemp("sync")
    if request.param == "single-tenant":
        endpoint = SyncEndpoint(root / "single").start()
        try:
            yield {"TURSO_SYNC_URL": endpoint.url}
        finally:
            endpoint.kill()
    else:
        with TursoServer(root / "data") as server:
            yield {"TURSO_SERVER_URL": server.url, "TURSO_SERVER_TOKEN": server.data_token}


def replica(sync_env: dict[str, str], root: Path, name: str) -> RuntimeProcess:
    env = {
        **sync_env,
        "TURSO_LOCAL_PATH": str(root / name / "runtime.db"),
        "TURSO_SYNC_INTERVAL": SYNC_INTERVAL,
    }
    return RuntimeProcess(env, root / f"{name}.log")


def eventually(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> float:
    """Poll ``check`` until truthy; return the seconds it took (fail with ``what`` after ``deadline``)."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"not seen within {deadline}s: {what}")


def excludes(runtime: RuntimeProcess) -> list[str]:
    status, body = http("GET", f"{runtime.url}{EXCLUDES}")
    assert status == 200, body
    return [item["basename"] for item in body]


def rule_ids(runtime: RuntimeProcess) -> list[str]:
    status, body = http("GET", f"{runtime.url}{RULES}")
    assert status == 200, body
    return [rule["id"] for rule in body]


def kv_get(runtime: RuntimeProcess, key: str) -> Any:
    status, body = http("GET", f"{runtime.url}/keyval/api/keys/{key}")
    return kv_value(body) if status == 200 else None


@pytest.fixture(scope="module")
def replicas(
    sync_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RuntimeProcess, RuntimeProcess]]:
    root = tmp_path_factory.mktemp("replicas")
    a = replica(sync_env, root, "a").start()
    try:
        b = replica(sync_env, root, "b").start()
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        for runtime in (a, b):
            code = runtime.stop()
            assert code == 0, runtime.log()
            token = sync_env.get("TURSO_SERVER_TOKEN")
            assert not token or token not in runtime.log(), "the token never reaches the log"


def test_a_shell_exclude_crosses_replicas_both_ways(replicas: tuple[RuntimeProcess, RuntimeProcess]) -> None:
    a, b = replicas
    assert http("POST", f"{a.url}{EXCLUDES}", {"basename": "from-a"})[0] == 200
    took = eventually(lambda: "from-a" in excludes(b), "exclude from A on B")
    assert took < DEADLINE
    assert http("POST", f"{b.url}{EXCLUDES}", {"basename": "from-b"})[0] == 200
    eventually(lambda: "from-b" in excludes(a), "exclude from B on A")
    # B already has it through sync: adding it again there is a conflict, not a duplicate row
    assert http("POST", f"{b.url}{EXCLUDES}", {"basename": "from-a"})[1]["added"] is False
    assert http("DELETE", f"{b.url}{EXCLUDES}/from-a")[1] == {"removed": True, "basename": "from-a"}
    eventually(lambda: "from-a" not in excludes(a), "delete on B seen on A")


def test_a_proxy_rule_made_on_a_is_applied_by_b(replicas: tuple[RuntimeProcess, RuntimeProcess]) -> None:
    a, b = replicas
    # B proxies /hop/* to A's liveness probe: real traffic through a rule B learnt by pulling.
    status, rule = http(
        "POST", f"{a.url}{RULES}", {"pattern": "^/hop/.*", "target": a.url, "rewrite": "/api/health/live"}
    )
    assert status == 201, rule
    eventually(lambda: rule["id"] in rule_ids(b), "rule from A listed on B")
    eventually(lambda: http("GET", f"{b.url}/hop/x") == (200, {"status": "ok"}), "B proxies with A's rule")
    assert http("PATCH", f"{b.url}{RULES}/{rule['id']}/toggle")[0] == 200
    eventually(
        lambda: http("GET", f"{a.url}{RULES}/{rule['id']}")[1]["enabled"] is False, "toggle on B seen on A"
    )
    eventually(lambda: http("GET", f"{b.url}/hop/x")[0] == 404, "disabled rule no longer applied on B")


def test_a_kv_set_on_a_is_read_on_b(replicas: tuple[RuntimeProcess, RuntimeProcess]) -> None:
    a, b = replicas
    status, body = http("PUT", f"{a.url}/keyval/api/keys/replicas/greeting", {"hello": "from a"})
    assert status == 200, body
    eventually(lambda: kv_get(b, "replicas/greeting") == {"hello": "from a"}, "KV set on A read on B")


def test_state_survives_a_restart_and_reaches_a_new_replica(
    replicas: tuple[RuntimeProcess, RuntimeProcess], sync_env: dict[str, str], tmp_path: Path
) -> None:
    a, _ = replicas
    assert http("POST", f"{a.url}{EXCLUDES}", {"basename": "durable"})[0] == 200
    status, rule = http("POST", f"{a.url}{RULES}", {"pattern": "^/durable/", "target": "http://127.0.0.1:9"})
    assert status == 201
    assert http("PUT", f"{a.url}/keyval/api/keys/durable/k", {"v": 1})[0] == 200
    assert a.stop() == 0  # SIGTERM right after the writes: they were pushed at commit
    a.start()  # same disk, same port
    assert "durable" in excludes(a) and rule["id"] in rule_ids(a)
    fresh = replica(sync_env, tmp_path, "fresh").start()  # an empty disk: bootstraps from the server
    try:
        assert "durable" in excludes(fresh) and rule["id"] in rule_ids(fresh)
        assert kv_get(fresh, "durable/k") == {"v": 1}
    finally:
        assert fresh.stop() == 0
