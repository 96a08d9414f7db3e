"""Multi-namespace and prefix scopes (``POST /v1/tokens``) and the read-only metrics token.

A real turso-server: a token for ``["runtime", "keyval", "worker-*"]`` opens exactly those
namespaces (and every name starting with ``worker-``) and is 403 everywhere else; the metrics
token reads ``/metrics`` and is refused on every other admin route and on the data port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest

import turso
from tests.turso_server.support import ADMIN_TOKEN, DATA_TOKEN, SIGNING_KEY, ServerFactory, ServerProcess
from turso_server import Access, ScopedTokens
from turso_server._auth import TOKEN_ALGORITHM, TOKEN_AUDIENCE, TOKEN_ISSUER, DataAuth, Scope
from turso_server._errors import ForbiddenError, InvalidBodyError, UnauthorizedError

PULL = "/pull-updates"
PIPELINE = "/v2/pipeline"
SELECT_ONE = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'
METRICS_TOKEN = "metrics-token-for-tests"
CREATED = "2026-05-21T12:00:00.000000Z"


def _mint_scope(server: ServerProcess, namespaces: list[Any], **body: Any) -> str:
    response = server.admin("POST", "/v1/tokens", {"namespaces": namespaces, **body})
    assert response.status == 201, response.body
    token: str = response.json()["token"]
    return token


def test_a_prefix_and_list_token_opens_its_namespaces_and_nothing_else(
    server: ServerProcess, replicas: Callable[..., Any]
) -> None:
    assert server.admin("POST", "/v1/namespaces/other/create").status == 201
    response = server.admin(
        "POST", "/v1/tokens", {"namespaces": ["worker-*", "runtime", "keyval", "runtime"]}
    )
    assert response.status == 201, response.body
    minted = response.json()
    assert minted["namespaces"] == ["keyval", "runtime", "worker-*"]  # sorted, deduplicated
    assert (minted["access"], minted["expiresAt"]) == ("rw", None)
    token = minted["token"]
    single = server.admin("POST", "/v1/namespaces/other/tokens", {}).json()["token"]

    # Names need not exist: they auto-provision on first use, as with the global token.
    for namespace, expected in [
        ("runtime", 200),
        ("keyval", 200),
        ("worker-a", 200),
        ("worker-b", 200),
        ("other", 403),  # another tenant's database
        ("workerx", 403),  # the prefix is "worker-", dash included
        ("worker", 403),
        ("gateway", 403),
    ]:
        for route in (PULL, PIPELINE):
            body = SELECT_ONE if route == PIPELINE else b""
            response = server.data("POST", f"/{namespace}{route}", token=token, body=body)
            assert response.status == expected, f"{namespace}{route}: {response.status} {response.body!r}"
    # The original single-namespace token keeps working, for its one namespace only.
    assert server.data("POST", f"/other{PULL}", token=single).status == 200
    assert server.data("POST", f"/runtime{PULL}", token=single).status == 403

    # A real replica through the prefix token pushes and pulls; another tenant's is refused.
    writer = replicas(server.url("worker-orders"), token=token)
    writer.execute("CREATE TABLE t(v TEXT)")
    writer.execute("INSERT INTO t VALUES ('mine')")
    writer.push()
    reader = replicas(server.url("worker-orders"), token=token)
    assert reader.execute("SELECT v FROM t").fetchall() == [("mine",)]
    with pytest.raises(turso.Error, match="403"):
        replicas(server.url("other"), token=token)

    # A read-only scope token pulls its namespaces and pushes nowhere.
    ro = _mint_scope(server, ["worker-*"], access="ro")
    assert server.data("POST", f"/worker-orders{PULL}", token=ro).status == 200
    assert server.data("POST", f"/worker-orders{PIPELINE}", token=ro, body=SELECT_ONE).status == 403
    assert server.data("POST", f"/other{PULL}", token=ro).status == 403

    # The admin port stays closed to it, and no token reaches the log.
    assert server.admin("GET", "/v1/namespaces", token=token).status == 401
    output = server.output()
    for secret in (token, ro, single):
        assert secret not in output


@pytest.mark.parametrize(
    "body",
    [
        {"namespaces": ["*"]},  # every namespace: that is the global token's job
        {"namespaces": []},
        {"namespaces": "runtime"},
        {"namespaces": [1]},
        {"namespaces": ["_state"]},
        {"namespaces": ["_*"]},
        {"namespaces": ["UPPER"]},
        {"namespaces": ["a/b"]},
        {"namespaces": ["a*b"]},
        {"namespaces": ["healthz"]},
        {"namespaces": [f"n{i}" for i in range(65)]},
        {"namespaces": ["ok"], "access": "admin"},
        {"namespaces": ["ok"], "expiresIn": "0s"},
        {},
    ],
)
def test_bad_scopes_are_400_and_mint_nothing(server: ServerProcess, body: dict[str, Any]) -> None:
    response = server.admin("POST", "/v1/tokens", body)
    assert response.status == 400, response.body
    assert set(response.json()) == {"code", "detail"}
    assert "token" not in response.body.decode()


def test_scope_tokens_need_the_signing_key(start_server: ServerFactory) -> None:
    server = start_server(TURSO_TOKEN_SIGNING_KEY="")
    response = server.admin("POST", "/v1/tokens", {"namespaces": ["runtime"]})
    assert response.status == 409, response.body
    assert server.admin("POST", "/v1/tokens", {"namespaces": ["runtime"]}, token=DATA_TOKEN).status == 401


def test_the_metrics_token_reads_metrics_and_nothing_else(start_server: ServerFactory) -> None:
    server = start_server(TURSO_METRICS_TOKEN=METRICS_TOKEN)
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    response = server.admin("GET", "/metrics", token=METRICS_TOKEN)
    assert response.status == 200
    assert b"turso_server" in response.body
    assert server.admin("GET", "/metrics", token=ADMIN_TOKEN).status == 200
    for method, path, body in [
        ("GET", "/v1/namespaces", None),
        ("GET", "/v1/namespaces/tenant", None),
        ("DELETE", "/v1/namespaces/tenant", None),
        ("POST", "/v1/namespaces/tenant/create", None),
        ("POST", "/v1/namespaces/tenant/tokens", {}),
        ("POST", "/v1/tokens", {"namespaces": ["tenant"]}),
        ("GET", "/v1/namespaces/tenant/backup", None),
        ("POST", "/metrics", None),
        ("GET", "/metrics/", None),
        ("GET", "/no/such/route", None),
    ]:
        response = server.admin(method, path, body, token=METRICS_TOKEN)
        assert response.status == 403, f"{method} {path}: {response.status}"
        assert response.json()["code"] == "forbidden"
    assert server.admin("GET", "/v1/namespaces/tenant").status == 200  # nothing was deleted
    assert server.data("POST", f"/tenant{PULL}", token=METRICS_TOKEN).status == 401
    assert METRICS_TOKEN not in server.output()


def test_the_metrics_token_must_differ_from_the_admin_token(start_server: ServerFactory) -> None:
    with pytest.raises(Exception, match="TURSO_ADMIN_TOKEN and TURSO_METRICS_TOKEN must differ"):
        start_server(TURSO_METRICS_TOKEN=ADMIN_TOKEN)


# --- the claims themselves (no server) ---------------------------------------------------------


def _signed(claims: dict[str, Any]) -> str:
    base = {"iss": TOKEN_ISSUER, "aud": TOKEN_AUDIENCE, "iat": 1_700_000_000, "access": "rw"}
    return jwt.encode({**base, **claims}, SIGNING_KEY.encode(), algorithm=TOKEN_ALGORITHM)


@pytest.mark.parametrize(
    "claims",
    [
        {},  # no scope at all
        {"ns": "a", "nss": ["b"]},  # both shapes: ambiguous
        {"nss": ["*"]},
        {"nss": []},
        {"nss": "a"},
        {"nss": ["_state"]},
        {"ns": ["a"]},
        {"ns": "a"},  # no nsCreatedAt: minted before tokens were bound to one namespace incarnation
        {"ns": "a", "nsCreatedAt": ""},
        {"ns": "a", "nsCreatedAt": 1_700_000_000},
        {"nss": ["a"], "nsCreatedAt": "2026-05-21T12:00:00.000000Z"},  # a list is never bound
        {"ns": "a", "nsCreatedAt": CREATED, "nsGeneration": -1},
        {"ns": "a", "nsCreatedAt": CREATED, "nsGeneration": "1"},
        {"ns": "a", "nsCreatedAt": CREATED, "nsGeneration": True},
        {"ns": "a", "nsCreatedAt": CREATED, "nsGeneration": 1.5},
        {"ns": "a", "nsCreatedAt": CREATED, "nsGeneration": None},
        {"nss": ["a"], "nsGeneration": 0},  # nor is its generation
    ],
)
def test_tokens_with_malformed_scope_claims_do_not_verify(claims: dict[str, Any]) -> None:
    with pytest.raises(UnauthorizedError):
        ScopedTokens(SIGNING_KEY).verify(_signed(claims))


def test_a_token_minted_before_generations_counts_as_generation_0_until_the_first_revocation() -> None:
    before = _signed({"ns": "a", "nsCreatedAt": CREATED})  # what a server without generations minted
    current: dict[str, tuple[str, int]] = {"a": (CREATED, 0)}
    auth = DataAuth("", ScopedTokens(SIGNING_KEY), binding=current.get)
    assert auth.authenticate(f"Bearer {before}").generation == 0
    current["a"] = (CREATED, 1)
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.authenticate(f"Bearer {before}")
    # A token of a later generation than the namespace's (a state file put back) is refused too.
    current["a"] = (CREATED, 0)
    later = ScopedTokens(SIGNING_KEY).mint("a", CREATED, 1, Access.READ_WRITE).token
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.authenticate(f"Bearer {later}")


def test_scope_and_single_tokens_authorize_by_their_scope() -> None:
    tokens = ScopedTokens(SIGNING_KEY)
    multi = tokens.verify(tokens.mint_scope(Scope.parse(["a", "team-*"]), Access.READ_WRITE).token)
    assert multi.namespace is None and multi.scope is not None
    for namespace in ("a", "team-x", "team-"):
        DataAuth.authorize(multi, namespace, "POST", PIPELINE)
    for namespace in ("b", "team", "ateam-x"):
        with pytest.raises(ForbiddenError):
            DataAuth.authorize(multi, namespace, "POST", PULL)
    single = tokens.verify(tokens.mint("a", "2026-05-21T12:00:00.000000Z", 0, Access.READ_ONLY).token)
    assert single.namespace == "a"
    DataAuth.authorize(single, "a", "POST", PULL)
    with pytest.raises(ForbiddenError):
        DataAuth.authorize(single, "a", "POST", PIPELINE)
    with pytest.raises(InvalidBodyError):
        Scope.parse(["ok", "*"])
