"""Auth on both ports (global, scoped and read-only tokens) and hostile namespace names and paths."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import turso
from tests.turso_server.support import ADMIN_TOKEN, DATA_TOKEN, RawResponse, ServerFactory, ServerProcess

PULL = "/pull-updates"
PIPELINE = "/v2/pipeline"
# A pull body tursodb accepts and that is long enough to send slowly: unknown protobuf fields
# (number 15, varint 1), which its decoder skips.
PULL_FILLER = b"\x78\x01" * 8
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


class _SlowRequest:
    """A data-port request whose head and first bytes of body are sent now, the rest on ``finish``:
    a client that takes its time while the namespace changes under it."""

    def __init__(self, server: ServerProcess, target: str, token: str, body: bytes) -> None:
        head = (
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self._sock = socket.create_connection(("127.0.0.1", server.data_port), timeout=30)
        self._sock.sendall(head.encode() + body[:10])
        self._rest = body[10:]
        time.sleep(0.3)  # authenticated, now waiting for the body

    def finish(self) -> RawResponse:
        with self._sock:
            self._sock.sendall(self._rest)
            data = b""
            while chunk := self._sock.recv(65536):
                data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        return RawResponse(int(head.split()[1]), {}, payload)


def _assert_revoked(response: RawResponse) -> None:
    assert response.status == 401, response.body
    assert response.json()["code"] == "unauthorized" and "revoked" in response.json()["detail"]


def test_a_request_whose_namespace_is_deleted_and_created_again_while_its_body_comes_is_refused(
    server: ServerProcess,
) -> None:
    assert server.admin("POST", "/v1/namespaces/victim/create", {"owner": "team-a"}).status == 201
    team_a = _mint(server, "victim")
    push = _SlowRequest(server, f"/victim{PIPELINE}", team_a, _pipeline("CREATE TABLE from_team_a (x TEXT)"))
    pull = _SlowRequest(server, f"/victim{PULL}", team_a, PULL_FILLER)
    assert server.admin("DELETE", "/v1/namespaces/victim").status == 200
    assert server.admin("POST", "/v1/namespaces/victim/create", {"owner": "team-b"}).status == 201

    # Both were authenticated against team-a's incarnation: neither reaches team-b's database.
    _assert_revoked(push.finish())
    _assert_revoked(pull.finish())
    team_b = _mint(server, "victim")
    response = server.data(
        "POST", f"/victim{PIPELINE}", token=team_b, body=_pipeline("SELECT name FROM sqlite_schema")
    )
    assert response.status == 200 and b"from_team_a" not in response.body, response.body
    assert server.admin("GET", "/v1/namespaces/victim").json()["owner"] == "team-b"


def test_a_request_whose_namespace_is_deleted_while_its_body_comes_does_not_bring_the_name_back(
    server: ServerProcess,
) -> None:
    assert server.admin("POST", "/v1/namespaces/gone/create").status == 201
    token = _mint(server, "gone")
    push = _SlowRequest(server, f"/gone{PIPELINE}", token, _pipeline("CREATE TABLE planted (x TEXT)"))
    lease = _SlowRequest(server, "/gone/-/lease", token, b'{"holder": "pod-a", "wait": 0}')
    assert server.admin("DELETE", "/v1/namespaces/gone").status == 200
    _assert_revoked(push.finish())
    _assert_revoked(lease.finish())
    assert "gone" not in _names(server)


def test_a_request_in_flight_when_its_namespace_tokens_are_revoked_is_refused_even_under_its_lease(
    server: ServerProcess,
) -> None:
    assert server.admin("POST", "/v1/namespaces/ledger/create").status == 201
    old = _mint(server, "ledger")
    lease = server.data("POST", "/ledger/-/lease", token=old, body=b'{"holder": "pod-a"}')
    assert lease.status == 200, lease.body
    fenced = f"/ledger/-/lease/{lease.json()['token']}{PIPELINE}"
    write = _pipeline("CREATE TABLE after_revoke (x TEXT)")
    under_lease = _SlowRequest(server, fenced, old, write)
    pull = _SlowRequest(server, f"/ledger{PULL}", old, PULL_FILLER)
    new = _mint(server, "ledger", revokeOthers=True)
    _assert_revoked(pull.finish())
    _assert_revoked(under_lease.finish())
    response = server.data(
        "POST", f"/ledger{PIPELINE}", token=new, body=_pipeline("SELECT name FROM sqlite_schema")
    )
    assert response.status == 200 and b"after_revoke" not in response.body, response.body


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


def _generation(server: ServerProcess, namespace: str) -> int:
    generation: int = server.admin("GET", f"/v1/namespaces/{namespace}").json()["tokenGeneration"]
    return generation


def _opens(server: ServerProcess, namespace: str, token: str) -> int:
    """The data port's answer to a pull with ``token``; a revoked token must say so."""
    response = server.data("POST", f"/{namespace}{PULL}", token=token)
    if response.status == 401:
        assert response.json()["code"] == "unauthorized" and "revoked" in response.json()["detail"]
    return response.status


def test_a_revoking_mint_refuses_every_earlier_token_while_plain_mints_coexist_and_a_restart_keeps_it(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    assert server.admin("POST", "/v1/namespaces/ledger/create").status == 201
    assert server.admin("POST", "/v1/namespaces/other/create").status == 201
    assert _generation(server, "ledger") == 0
    old_rw, old_ro = _mint(server, "ledger"), _mint(server, "ledger", access="ro")
    neighbour = _mint(server, "other")
    assert [_opens(server, "ledger", t) for t in (old_rw, old_ro)] == [200, 200]
    assert server.data("POST", f"/ledger{PIPELINE}", token=old_rw, body=SELECT_ONE).status == 200

    # rw -> ro the safe way: the new token revokes every token minted before it.
    minted = server.admin("POST", "/v1/namespaces/ledger/tokens", {"access": "ro", "revokeOthers": True})
    assert minted.status == 201, minted.body
    assert (minted.json()["access"], minted.json()["tokenGeneration"]) == ("ro", 1)
    ro = minted.json()["token"]
    assert [_opens(server, "ledger", t) for t in (old_rw, old_ro)] == [401, 401]
    response = server.data("POST", f"/ledger{PIPELINE}", token=old_rw, body=SELECT_ONE)
    assert response.status == 401, "the old rw token can no longer push"
    assert _opens(server, "ledger", ro) == 200
    assert _opens(server, "other", neighbour) == 200, "another namespace's tokens are untouched"
    assert _generation(server, "ledger") == 1

    # A mint without revokeOthers (or with false) keeps the tokens of the current generation.
    second = _mint(server, "ledger")
    third = _mint(server, "ledger", revokeOthers=False)
    assert [_opens(server, "ledger", t) for t in (ro, second, third)] == [200, 200, 200]

    # /tokens/revoke revokes them all and mints nothing.
    revoked = server.admin("POST", "/v1/namespaces/ledger/tokens/revoke")
    assert revoked.status == 200, revoked.body
    assert revoked.json()["tokenGeneration"] == 2 and "token" not in revoked.json()
    assert [_opens(server, "ledger", t) for t in (ro, second, third)] == [401, 401, 401]
    fresh = _mint(server, "ledger")
    assert _opens(server, "ledger", fresh) == 200

    # The generation is in the state file (persisted before the reply): a restart keeps it.
    state = json.loads((server.data_dir / "_state" / "namespaces.json").read_text())
    assert {n["name"]: n.get("tokenGeneration") for n in state["namespaces"]} == {"ledger": 2, "other": None}
    server.stop()
    server = start_server(data_dir=server.data_dir)
    assert [_opens(server, "ledger", t) for t in (old_rw, old_ro, ro, second, third)] == [401] * 5
    assert _opens(server, "ledger", fresh) == 200
    assert _opens(server, "other", neighbour) == 200
    assert _generation(server, "ledger") == 2
    for secret in (old_rw, old_ro, ro, second, third, fresh):
        assert secret not in server.output()


HOSTILE_TOKEN_BODIES: list[tuple[str, Any]] = [
    ("/tokens", {"revokeOthers": "true"}),
    ("/tokens", {"revokeOthers": 1}),
    ("/tokens", {"revokeOthers": [True]}),
    ("/tokens", {"revokeOthers": {}}),
    ("/tokens", {"revokeOther": True}),  # a typo must not silently mean "keep the others"
    ("/tokens", {"revoke": True}),
    ("/tokens", {"access": "ro", "extra": 1}),
    ("/tokens", {"revokeOthers": True, "access": "admin"}),
    ("/tokens", {"revokeOthers": True, "access": 1}),
    ("/tokens", {"revokeOthers": True, "expiresIn": "0s"}),
    ("/tokens", {"revokeOthers": True, "expiresIn": 60}),
    ("/tokens", [{"revokeOthers": True}]),
    ("/tokens", "revokeOthers"),
    ("/tokens/revoke", {"revokeOthers": True}),
    ("/tokens/revoke", {"x": 1}),
    ("/tokens/revoke", []),
    ("/tokens/revoke", 1),
    ("/ttl", {"ttl": "1h", "revokeOthers": True}),
]


def test_hostile_token_bodies_are_400_and_revoke_or_mint_nothing(start_server: ServerFactory) -> None:
    server = start_server()
    assert server.admin("POST", "/v1/namespaces/ledger/create").status == 201
    kept = _mint(server, "ledger")
    for route, body in HOSTILE_TOKEN_BODIES:
        response = server.admin("POST", f"/v1/namespaces/ledger{route}", body)
        assert response.status == 400, (route, body, response.body)
        assert response.json()["code"] == "invalid body", (route, body)
        assert set(response.json()) == {"code", "detail"}
    response = server.admin("POST", "/v1/tokens", {"namespaces": ["ledger"], "revokeOthers": True})
    assert (response.status, response.json()["code"]) == (400, "invalid body")
    assert _generation(server, "ledger") == 0
    assert server.admin("GET", "/v1/namespaces/ledger").json()["ttl"] is None
    assert _opens(server, "ledger", kept) == 200
    state = json.loads((server.data_dir / "_state" / "namespaces.json").read_text())
    assert "tokenGeneration" not in state["namespaces"][0]
    # Unknown names and a server without a signing key revoke nothing either.
    assert server.admin("POST", "/v1/namespaces/nobody/tokens", {"revokeOthers": True}).status == 404
    assert server.admin("POST", "/v1/namespaces/nobody/tokens/revoke").status == 404
    assert "nobody" not in _names(server)
    plain = start_server(data_dir=server.data_dir.parent / "plain", TURSO_TOKEN_SIGNING_KEY="")
    assert plain.admin("POST", "/v1/namespaces/ledger/create").status == 201
    for route, body in (("/tokens", {"revokeOthers": True}), ("/tokens/revoke", None)):
        assert plain.admin("POST", f"/v1/namespaces/ledger{route}", body).status == 409


def test_a_mint_with_an_owner_or_created_at_precondition_mints_only_for_that_namespace(
    server: ServerProcess,
) -> None:
    """The operator checks the owner with a create, then mints: a delete and another owner's
    create in between must make that mint fail, not hand over the new owner's database."""
    first = server.admin("POST", "/v1/namespaces/shop/create", {"owner": "team-a"}).json()
    expected = {"owner": "team-a", "namespaceCreatedAt": first["createdAt"]}
    minted = server.admin("POST", "/v1/namespaces/shop/tokens", {**expected, "revokeOthers": True})
    assert minted.status == 201 and minted.json()["namespaceCreatedAt"] == first["createdAt"], minted.body
    assert _generation(server, "shop") == 1

    assert server.admin("DELETE", "/v1/namespaces/shop").status == 200
    time.sleep(1.1)  # createdAt has whole seconds: the new namespace's differs
    again = server.admin("POST", "/v1/namespaces/shop/create", {"owner": "team-b"}).json()
    assert again["createdAt"] != first["createdAt"]
    refused = {
        "owner": ({"owner": "team-a"}, "owner mismatch"),
        "createdAt": ({"namespaceCreatedAt": first["createdAt"]}, "namespace changed"),
        "both": ({**expected, "revokeOthers": True}, "owner mismatch"),
    }
    for label, (body, code) in refused.items():
        response = server.admin("POST", "/v1/namespaces/shop/tokens", body)
        assert (response.status, response.json()["code"]) == (409, code), (label, response.body)
        assert "token" not in response.json()
    assert _generation(server, "shop") == 0, "a refused revoking mint revokes nothing"
    matching = {"owner": "team-b", "namespaceCreatedAt": again["createdAt"]}
    assert server.admin("POST", "/v1/namespaces/shop/tokens", matching).status == 201
    bad = server.admin("POST", "/v1/namespaces/shop/tokens", {"namespaceCreatedAt": 5})
    assert (bad.status, bad.json()["code"]) == (400, "invalid body")


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
