"""Scope tokens with an owner (``POST /v1/tokens`` ``"owner"``, claim ``nsOwner``).

A real turso-server: a namespace a prefix token auto-provisions starts ``auto`` with no owner, and
the GC archives it once idle past ``TURSO_AUTO_IDLE_DURATION``, so the next open starts empty. A
token minted with an owner creates it explicit, locked and that owner's instead (the GC keeps it,
with its data), and promotes an ownerless ``auto`` namespace it reaches the same way. It opens
nothing its scope and access did not open before, and leaves other owners' and explicit
namespaces as they are.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.turso_server.support import SIGNING_KEY, ServerFactory, ServerProcess
from turso_server import ScopedTokens
from turso_server._auth import TOKEN_ALGORITHM, TOKEN_AUDIENCE, TOKEN_ISSUER
from turso_server._errors import UnauthorizedError

PULL = "/pull-updates"
PIPELINE = "/v2/pipeline"
SELECT_ONE = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'
OWNER = "runtime:buntime"


def _mint(server: ServerProcess, namespaces: list[str], **body: Any) -> str:
    response = server.admin("POST", "/v1/tokens", {"namespaces": namespaces, **body})
    assert response.status == 201, response.body
    token: str = response.json()["token"]
    return token


def _view(server: ServerProcess, name: str) -> dict[str, Any] | None:
    response = server.admin("GET", f"/v1/namespaces/{name}")
    if response.status == 404:
        return None
    assert response.status == 200, response.body
    view: dict[str, Any] = response.json()
    return view


def _recorded(server: ServerProcess, name: str) -> tuple[str, bool, str | None]:
    view = _view(server, name)
    assert view is not None, name
    return view["origin"], view["locked"], view["owner"]


def _write(replicas: Callable[..., Any], url: str, token: str, value: str) -> None:
    writer = replicas(url, token=token)
    writer.execute("CREATE TABLE t(v TEXT)")
    writer.execute(f"INSERT INTO t VALUES ('{value}')")
    writer.push()


def test_an_owned_token_creates_what_the_gc_keeps_an_unowned_one_what_it_archives(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    server = start_server(TURSO_GC_INTERVAL="200ms", TURSO_AUTO_IDLE_DURATION="1500ms")
    minted = server.admin("POST", "/v1/tokens", {"namespaces": ["worker-*"], "owner": OWNER})
    assert minted.status == 201, minted.body
    assert minted.json()["owner"] == OWNER
    owned = minted.json()["token"]
    unowned_reply = server.admin("POST", "/v1/tokens", {"namespaces": ["worker-*"]}).json()
    assert unowned_reply["owner"] is None
    unowned = unowned_reply["token"]

    _write(replicas, server.url("worker-kept"), owned, "kept")
    _write(replicas, server.url("worker-lost"), unowned, "lost")
    lease = server.data("POST", "/worker-leased/-/lease", token=owned, body=b'{"holder":"w1"}')
    assert lease.status == 200, lease.body  # a lease grant creates its namespace as a push would
    assert _recorded(server, "worker-kept") == ("explicit", True, OWNER)
    assert _recorded(server, "worker-leased") == ("explicit", True, OWNER)
    assert _recorded(server, "worker-lost") == ("auto", False, None)  # tokens without it: as before

    def archived() -> set[str]:
        return {r["namespace"] for r in server.find_logs("gc archive")}

    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline and "worker-lost" not in archived():
        time.sleep(0.1)
    assert archived() == {"worker-lost"}
    time.sleep(2.0)  # well past the idle duration, for several more sweeps
    assert archived() == {"worker-lost"}
    assert _view(server, "worker-lost") is None
    assert _recorded(server, "worker-kept") == ("explicit", True, OWNER)
    reader = replicas(server.url("worker-kept"), token=owned)
    assert reader.execute("SELECT v FROM t").fetchall() == [("kept",)]
    again = replicas(server.url("worker-lost"), token=unowned)  # the silent loss the owner prevents
    assert again.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall() == []
    assert owned not in server.output() and unowned not in server.output()


def test_an_owned_token_promotes_an_ownerless_auto_namespace_and_leaves_the_rest(
    server: ServerProcess, replicas: Callable[..., Any]
) -> None:
    unowned = _mint(server, ["worker-*"])
    _write(replicas, server.url("worker-old"), unowned, "from before")  # an earlier version's
    created_at = _view(server, "worker-old")["createdAt"]  # type: ignore[index]
    _write(replicas, server.url("worker-stray"), unowned, "stray")
    assert server.admin("POST", "/v1/namespaces/worker-stray/owner", {"owner": "team-b"}).status == 200
    assert server.admin("POST", "/v1/namespaces/worker-theirs/create", {"owner": "team-b"}).status == 201
    assert server.admin("POST", "/v1/namespaces/worker-open/create").status == 201
    assert server.admin("POST", "/v1/namespaces/worker-open/unlock").status == 200
    assert _recorded(server, "worker-old") == ("auto", False, None)

    owned = _mint(server, ["worker-*"], owner=OWNER)
    for name in ("worker-old", "worker-open"):
        response = server.data("POST", f"/{name}{PULL}", token=owned)
        assert response.status == 200, f"{name}: {response.status} {response.body!r}"
    # Another owner's namespaces stay closed to it, whatever its scope matches: a pull, a push, a
    # lease (a tenant's database made under a name the runtime's prefix happens to match).
    for name in ("worker-stray", "worker-theirs"):
        for method, path, body in (
            ("POST", PULL, b""),
            ("POST", PIPELINE, SELECT_ONE),
            ("POST", "/-/lease", b'{"holder":"w1"}'),
        ):
            response = server.data(method, f"/{name}{path}", token=owned, body=body)
            assert response.status == 403, f"{name}{path}: {response.status}"
            assert response.json()["code"] == "forbidden"
    assert server.data("POST", f"/worker-stray{PULL}", token=unowned).status == 200  # no owner: as before
    assert _recorded(server, "worker-old") == ("explicit", True, OWNER)
    assert _view(server, "worker-old")["createdAt"] == created_at  # type: ignore[index]
    assert replicas(server.url("worker-old"), token=owned).execute("SELECT v FROM t").fetchall() == [
        ("from before",)
    ]
    assert _recorded(server, "worker-stray") == ("auto", False, "team-b")  # another owner's
    assert _recorded(server, "worker-theirs") == ("explicit", True, "team-b")
    assert _recorded(server, "worker-open") == ("explicit", False, None)  # already explicit


def test_the_owner_claim_opens_nothing_more(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    server = start_server()
    # Namespaces outside the scope, one of them the very owner's: still 403, and untouched.
    assert server.admin("POST", "/v1/namespaces/keyval/create", {"owner": OWNER}).status == 201
    _write(replicas, server.url("loose"), _mint(server, ["loose"]), "x")
    owned = _mint(server, ["worker-*"], owner=OWNER)
    for name in ("keyval", "loose", "gateway", "workerx"):
        for route, body in ((PULL, b""), (PIPELINE, SELECT_ONE)):
            response = server.data("POST", f"/{name}{route}", token=owned, body=body)
            assert response.status == 403, f"{name}{route}: {response.status}"
        lease = server.data("POST", f"/{name}/-/lease", token=owned, body=b'{"holder":"w1"}')
        assert lease.status == 403
    assert _view(server, "gateway") is None and _view(server, "workerx") is None
    assert _recorded(server, "loose") == ("auto", False, None)
    # Read-only stays read-only: no push, and no namespace created by a pull.
    ro = _mint(server, ["worker-*"], owner=OWNER, access="ro")
    assert server.data("POST", f"/worker-new{PIPELINE}", token=ro, body=SELECT_ONE).status == 403
    assert server.data("POST", f"/worker-new{PULL}", token=ro).status == 404
    assert _view(server, "worker-new") is None
    # The admin port stays closed to it.
    assert server.admin("GET", "/v1/namespaces", token=owned).status == 401
    # The claim is signed: another owner written into the token does not verify.
    header, payload, signature = owned.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["nss"], claims["nsOwner"] = ["keyval"], "team-b"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert server.data("POST", f"/keyval{PULL}", token=f"{header}.{forged}.{signature}").status == 401
    assert _recorded(server, "keyval") == ("explicit", True, OWNER)


def test_no_provisioning_means_no_database_even_for_an_owned_token(start_server: ServerFactory) -> None:
    server = start_server(TURSO_ALLOW_AUTO_PROVISION="false")
    owned = _mint(server, ["worker-*"], owner=OWNER)
    response = server.data("POST", f"/worker-a{PIPELINE}", token=owned, body=SELECT_ONE)
    assert (response.status, response.json()["code"]) == (404, "namespace not found")
    assert _view(server, "worker-a") is None


def test_a_refused_first_request_through_an_owned_token_leaves_nothing(server: ServerProcess) -> None:
    owned = _mint(server, ["worker-*"], owner=OWNER)
    unparsable = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1","args":5}}]}'
    response = server.data("POST", f"/worker-junk{PIPELINE}", token=owned, body=unparsable)
    assert (response.status, response.json()["code"]) == (400, "invalid pipeline"), response.body
    pulled = server.data("POST", f"/worker-junk2{PULL}", token=owned, body=b"\xff\xff\xff\xff")
    assert (pulled.status, pulled.json()["code"]) == (400, "invalid body"), pulled.body
    for name in ("worker-junk", "worker-junk2"):
        assert _view(server, name) is None
        assert not (server.data_dir / "namespaces" / name).exists()
    assert server.child_pids() == {}


def test_a_refused_request_through_an_owned_token_claims_nothing(
    server: ServerProcess, replicas: Callable[..., Any]
) -> None:
    unowned = _mint(server, ["worker-*"])
    for name in ("worker-a", "worker-b", "worker-c", "worker-d"):
        _write(replicas, server.url(name), unowned, name)
    owned = _mint(server, ["worker-*"], owner=OWNER)
    ro = _mint(server, ["worker-*"], owner=OWNER, access="ro")
    unparsable = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1","args":5}}]}'
    refused = [
        (server.data("POST", f"/worker-a{PIPELINE}", token=owned, body=unparsable), 400, "invalid pipeline"),
        (server.data("POST", f"/worker-b/-/lease/bogus{PIPELINE}", token=owned, body=SELECT_ONE), 409, None),
        (server.data("POST", f"/worker-c{PULL}", token=ro, body=b"\xff\xff\xff\xff"), 400, "invalid body"),
    ]
    for response, status, code in refused:
        assert response.status == status, response.body
        assert code is None or response.json()["code"] == code
    assert server.data("POST", f"/worker-d{PULL}", token=ro).status == 200  # accepted, but read-only
    for name in ("worker-a", "worker-b", "worker-c", "worker-d"):
        assert _recorded(server, name) == ("auto", False, None), name
    # Another owner can still adopt them; an accepted write through the owned token claims one.
    adopted = server.admin("POST", "/v1/namespaces/worker-a/create", {"owner": "team-b", "adopt": True})
    assert adopted.status in (200, 201), adopted.body
    assert server.data("POST", f"/worker-b{PIPELINE}", token=owned, body=SELECT_ONE).status == 200
    assert _recorded(server, "worker-b") == ("explicit", True, OWNER)
    lease = server.data("POST", "/worker-c/-/lease", token=owned, body=b'{"holder":"w1"}')
    assert lease.status == 200
    assert _recorded(server, "worker-c") == ("explicit", True, OWNER)


@pytest.mark.parametrize(
    "owner",
    [
        123,
        True,
        ["team-a"],
        {"name": "team-a"},
        "has space",
        "tab\there",
        "line\nbreak",
        "caf\u00e9",
        "x" * 254,
    ],
)
def test_hostile_owners_are_400_and_mint_nothing(server: ServerProcess, owner: object) -> None:
    before = len(server.find_logs("scoped token minted"))
    response = server.admin("POST", "/v1/tokens", {"namespaces": ["worker-*"], "owner": owner})
    assert (response.status, response.json()["code"]) == (400, "invalid body"), response.body
    assert "token" not in response.json()
    assert len(server.find_logs("scoped token minted")) == before
    # The route takes an owner: the same body with a valid one mints.
    assert server.admin("POST", "/v1/tokens", {"namespaces": ["worker-*"], "owner": OWNER}).status == 201


@pytest.mark.parametrize("owner", ["", None])
def test_an_empty_owner_mints_an_unowned_token(server: ServerProcess, owner: object) -> None:
    response = server.admin("POST", "/v1/tokens", {"namespaces": ["worker-*"], "owner": owner})
    assert response.status == 201, response.body
    assert response.json()["owner"] is None


def _signed(claims: dict[str, Any]) -> str:
    base = {"iss": TOKEN_ISSUER, "aud": TOKEN_AUDIENCE, "iat": 1_700_000_000, "access": "rw"}
    return jwt.encode({**base, **claims}, SIGNING_KEY.encode(), algorithm=TOKEN_ALGORITHM)


@pytest.mark.parametrize(
    "claims",
    [
        {"nss": ["a"], "nsOwner": ""},
        {"nss": ["a"], "nsOwner": 1},
        {"nss": ["a"], "nsOwner": None},
        {"nss": ["a"], "nsOwner": "has space"},
        {"nss": ["a"], "nsOwner": "x" * 254},
        # A token bound to one namespace incarnation never carries an owner.
        {"ns": "a", "nsCreatedAt": "2026-05-21T12:00:00.000000Z", "nsOwner": OWNER},
    ],
)
def test_tokens_with_malformed_owner_claims_do_not_verify(claims: dict[str, Any]) -> None:
    with pytest.raises(UnauthorizedError):
        ScopedTokens(SIGNING_KEY).verify(_signed(claims))


def test_the_owner_claim_verifies_on_a_list_token() -> None:
    principal = ScopedTokens(SIGNING_KEY).verify(_signed({"nss": ["worker-*"], "nsOwner": OWNER}))
    assert principal.owner == OWNER
    assert ScopedTokens(SIGNING_KEY).verify(_signed({"nss": ["worker-*"]})).owner is None
