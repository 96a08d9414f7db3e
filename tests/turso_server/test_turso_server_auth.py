"""Auth on both ports (global, scoped and read-only tokens) and hostile namespace names and paths."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import turso
from tests.turso_server.support import ADMIN_TOKEN, DATA_TOKEN, ServerFactory, ServerProcess

PULL = "/pull-updates"
PIPELINE = "/v2/pipeline"
SELECT_ONE = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'


def _mint(server: ServerProcess, namespace: str, **body: Any) -> str:
    response = server.admin("POST", f"/v1/namespaces/{namespace}/tokens", body)
    assert response.status == 201, response.body
    assert response.json()["namespace"] == namespace
    token: str = response.json()["token"]
    return token


def test_data_port_auth_matrix(server: ServerProcess, replicas: Callable[..., Any]) -> None:
    for name in ("tenant", "other"):
        assert server.admin("POST", f"/v1/namespaces/{name}/create").status == 201
    rw = _mint(server, "tenant")
    ro = _mint(server, "tenant", access="ro")
    other = _mint(server, "other")
    short = _mint(server, "tenant", expiresIn="1s")

    cases: list[tuple[str, str | None, str, str, int]] = [
        ("no token", None, "POST", PULL, 401),
        ("wrong token", "not-the-token", "POST", PULL, 401),
        ("admin token on data port", ADMIN_TOKEN, "POST", PULL, 401),
        ("forged jwt", rw[:-4] + "AAAA", "POST", PULL, 401),
        ("global token", DATA_TOKEN, "POST", PULL, 200),
        ("global token, push", DATA_TOKEN, "POST", PIPELINE, 200),
        ("scoped, right namespace", rw, "POST", PULL, 200),
        ("scoped, right namespace, push", rw, "POST", PIPELINE, 200),
        ("scoped, wrong namespace", other, "POST", PULL, 403),
        ("read-only, pull", ro, "POST", PULL, 200),
        ("read-only, push", ro, "POST", PIPELINE, 403),
    ]
    for label, token, method, route, expected in cases:
        body = SELECT_ONE if route == PIPELINE else b""
        response = server.data(method, f"/tenant{route}", token=token, body=body)
        assert response.status == expected, f"{label}: {response.status} {response.body!r}"
        if expected == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        if expected >= 400:
            assert set(response.json()) == {"code", "detail"}

    # Real clients: a read-only replica bootstraps and pulls, but its push is refused with 403.
    writer = replicas(server.url("tenant"), token=rw)
    writer.execute("CREATE TABLE t(v TEXT)")
    writer.execute("INSERT INTO t VALUES ('written')")
    writer.push()
    reader = replicas(server.url("tenant"), token=ro)
    assert reader.execute("SELECT v FROM t").fetchall() == [("written",)]
    reader.execute("INSERT INTO t VALUES ('sneaky')")
    with pytest.raises(turso.Error, match="403"):
        reader.push()
    with pytest.raises(turso.Error, match="403"):
        replicas(server.url("tenant"), token=other)

    time.sleep(2.1)
    assert server.data("POST", f"/tenant{PULL}", token=short).status == 401

    # Probes need no token on the data port; nothing else is exempt.
    assert server.data("GET", "/healthz", token=None).status == 200
    assert server.data("GET", "/readyz", token=None).status == 200
    assert server.data("GET", "/healthz/", token=None).status == 401

    # Tokens never reach the log.
    output = server.output()
    for secret in (DATA_TOKEN, ADMIN_TOKEN, rw, ro, other):
        assert secret not in output


def _pipeline(*statements: str) -> bytes:
    requests = [{"type": "execute", "stmt": {"sql": sql}} for sql in statements]
    return json.dumps({"requests": requests}).encode()


def _names(server: ServerProcess) -> set[str]:
    return {n["name"] for n in server.admin("GET", "/v1/namespaces").json()["namespaces"]}


def test_a_namespace_token_opens_nothing_once_its_namespace_is_deleted_not_even_a_new_one_of_that_name(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    assert server.admin("POST", "/v1/namespaces/orders/create").status == 201
    created = server.admin("GET", "/v1/namespaces/orders").json()["createdAt"]
    minted = server.admin("POST", "/v1/namespaces/orders/tokens", {}).json()
    assert minted["namespaceCreatedAt"] == created
    tenant_x = minted["token"]
    write = _pipeline("CREATE TABLE t(v TEXT)", "INSERT INTO t VALUES ('X data')")
    assert server.data("POST", f"/orders{PIPELINE}", token=tenant_x, body=write).status == 200

    # Tenant X leaves. Its token opens nothing, and cannot auto-provision the name either.
    assert server.admin("DELETE", "/v1/namespaces/orders").status == 200
    for route, body in ((PULL, b""), (PIPELINE, SELECT_ONE)):
        response = server.data("POST", f"/orders{route}", token=tenant_x, body=body)
        assert response.status == 401, response.body
        assert response.json()["code"] == "unauthorized" and "revoked" in response.json()["detail"]
    assert "orders" not in _names(server)

    # Tenant Y gets a new database of the same name: X's token stays out, Y's fresh one works.
    assert server.admin("POST", "/v1/namespaces/orders/create").status == 201
    write = _pipeline("CREATE TABLE t(v TEXT)", "INSERT INTO t VALUES ('Y data')")
    assert server.data("POST", f"/orders{PIPELINE}", body=write).status == 200
    read = _pipeline("SELECT v FROM t")
    response = server.data("POST", f"/orders{PIPELINE}", token=tenant_x, body=read)
    assert response.status == 401 and b"Y data" not in response.body
    assert server.data("POST", f"/orders{PULL}", token=tenant_x).status == 401
    tenant_y = _mint(server, "orders")
    response = server.data("POST", f"/orders{PIPELINE}", token=tenant_y, body=read)
    assert response.status == 200 and b"Y data" in response.body

    # The binding survives a restart (createdAt is in the state file); X's token stays revoked.
    server.stop()
    server = start_server(data_dir=server.data_dir)
    assert server.data("POST", f"/orders{PULL}", token=tenant_y).status == 200
    assert server.data("POST", f"/orders{PULL}", token=tenant_x).status == 401
    for secret in (tenant_x, tenant_y):
        assert secret not in server.output()


def test_a_token_for_an_auto_provisioned_namespace_ends_with_its_gc_archive_while_prefix_tokens_go_on(
    start_server: ServerFactory,
) -> None:
    server = start_server(TURSO_GC_INTERVAL="200ms", TURSO_AUTO_IDLE_DURATION="1500ms")
    prefix = server.admin("POST", "/v1/tokens", {"namespaces": ["team-*"]}).json()["token"]
    assert server.data("POST", f"/team-a{PULL}", token=prefix).status == 200  # auto-provisioned
    assert server.admin("GET", "/v1/namespaces/team-a").json()["origin"] == "auto"
    before = _mint(server, "team-a")
    assert server.data("POST", f"/team-a{PULL}", token=before).status == 200

    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline and "team-a" in _names(server):
        time.sleep(0.1)
    assert "team-a" not in _names(server), "the GC archives the idle auto namespace"

    # The single-namespace token died with it and does not bring the name back ...
    assert server.data("POST", f"/team-a{PULL}", token=before).status == 401
    assert "team-a" not in _names(server)
    # ... while the prefix token, bound to no incarnation, provisions it again (the documented limit).
    assert server.data("POST", f"/team-a{PULL}", token=prefix).status == 200
    assert server.data("POST", f"/team-a{PULL}", token=before).status == 401
    after = _mint(server, "team-a")
    assert server.data("POST", f"/team-a{PULL}", token=after).status == 200


def test_admin_port_auth_matrix(server: ServerProcess) -> None:
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    scoped = _mint(server, "tenant")
    for label, token, expected in [
        ("no token", None, 401),
        ("wrong token", "nope", 401),
        ("data token", DATA_TOKEN, 401),
        ("scoped data token", scoped, 401),
        ("admin token", ADMIN_TOKEN, 200),
    ]:
        for path in ("/v1/namespaces", "/v1/namespaces/tenant", "/metrics"):
            response = server.admin("GET", path, token=token)
            assert response.status == expected, f"{label} {path}: {response.status}"
    # Auth comes before routing: no 404 oracle for callers without the token.
    assert server.admin("GET", "/no/such/route", token=None).status == 401
    assert server.admin("GET", "/no/such/route").status == 404
    assert server.admin("GET", "/healthz", token=None).status == 200
    assert server.admin("GET", "/readyz", token=None).status == 200
    assert server.admin("POST", "/v1/namespaces/x/create", token=f"{ADMIN_TOKEN}x").status == 401
    assert server.admin("GET", "/v1/namespaces", token=None).headers["www-authenticate"].startswith("Bearer")


HOSTILE_DATA_TARGETS: list[bytes] = [
    b"/",
    b"//etc/passwd",
    b"/../pull-updates",
    b"/../../etc/passwd",
    b"/..%2f..%2fetc/pull-updates",
    b"/%2e%2e/pull-updates",
    b"/%2E%2E%2Fescape/pull-updates",
    b"/a%2fb/pull-updates",
    b"/a%2Fb/pull-updates",
    b"/a%00b/pull-updates",
    b"/.hidden/pull-updates",
    b"/./pull-updates",
    b"/a.b/pull-updates",
    b"/_state/pull-updates",
    b"/_backups/pull-updates",
    b"/-dash/pull-updates",
    b"/UPPER/pull-updates",
    b"/sp%20ace/pull-updates",
    b"/caf%C3%A9/pull-updates",
    "/café/pull-updates".encode(),
    b"/%EF%BC%8E%EF%BC%8E/pull-updates",
    b"/" + b"a" * 64 + b"/pull-updates",
    b"/healthz/pull-updates",
    b"/readyz/pull-updates",
    b"/ns\\..\\x/pull-updates",
]
HOSTILE_ADMIN_PATHS = [
    "/v1/namespaces/..%2f..%2fetc/create",
    "/v1/namespaces/%2e%2e/create",
    "/v1/namespaces/_state/create",
    "/v1/namespaces/_backups/create",
    "/v1/namespaces/archive.x/create",
    "/v1/namespaces/a%2fb/create",
    "/v1/namespaces/caf%C3%A9/create",
    "/v1/namespaces/" + "a" * 64 + "/create",
    "/v1/namespaces/UPPER/create",
    "/v1/namespaces/-x/create",
    "/v1/namespaces/healthz/create",
]


def test_hostile_names_and_paths_are_rejected_and_touch_nothing(start_server: ServerFactory) -> None:
    server = start_server(TURSO_GC_INTERVAL="0")  # also proves a zero interval does not crash
    srv_root = server.data_dir.parent
    for target in HOSTILE_DATA_TARGETS:
        response = server.data("POST", target)
        assert 400 <= response.status < 500, f"{target!r} gave {response.status}"
    for path in HOSTILE_ADMIN_PATHS:
        response = server.admin("POST", path)
        assert 400 <= response.status < 500, f"{path!r} gave {response.status}"
        assert response.status != 201

    # The longest valid name is fine; it proves the 64-character rejection is the boundary.
    longest = "a" * 63
    assert server.data("POST", f"/{longest}/pull-updates").status == 200

    assert sorted(p.name for p in srv_root.iterdir()) == ["data"]
    entries = sorted(p.name for p in server.data_dir.iterdir())
    assert entries == ["_state", "archive", "namespaces"]
    assert [p.name for p in (server.data_dir / "namespaces").iterdir()] == [longest]
    assert _files_under(server.data_dir / "namespaces" / longest) == {f"{longest}.db", f"{longest}.db-wal"}
    assert _files_under(server.data_dir / "_state") == {"namespaces.json", f"run/{longest}.pid"}
    names = [n["name"] for n in server.admin("GET", "/v1/namespaces").json()["namespaces"]]
    assert names == [longest]
    assert server.process is not None and server.process.poll() is None


def _files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}
