"""The operator's admin client against a real turso-server: lifecycle, errors, token fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.tursoserver import TursoServer
from turso_operator import AdminClient
from turso_operator._errors import (
    AdminRejectedError,
    AdminUnavailableError,
    DatabaseChangedError,
    DatabaseNotOwnedError,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TursoServer]:
    with TursoServer(tmp_path_factory.mktemp("admin") / "data") as running:
        yield running


async def test_lifecycle(server: TursoServer) -> None:
    async with AdminClient(server.admin_url, server.admin_token) as admin:
        assert await admin.get("ledger") is None
        view = await admin.create("ledger")
        assert view.name == "ledger" and view.origin == "explicit"
        assert (await admin.create("ledger")).name == "ledger", "create is idempotent"
        await admin.set_locked("ledger", False)
        await admin.set_ttl("ledger", "12h")
        view = await admin.get("ledger")
        assert view is not None and (view.locked, view.ttl) == (False, "12h")
        minted = await admin.mint_token("ledger", "ro")
        assert minted is not None and minted.token not in (server.admin_token, server.data_token)
        assert minted.generation == 0 and minted.token not in repr(minted)
        revoking = await admin.mint_token("ledger", "rw", revoke_others=True)
        assert revoking is not None and revoking.generation == 1
        view = await admin.get("ledger")
        assert view is not None and view.token_generation == 1
        assert await admin.delete("ledger") is True
        assert await admin.delete("ledger") is False
        assert await admin.get("ledger") is None


async def test_a_mint_with_preconditions_mints_only_for_the_database_it_checked(server: TursoServer) -> None:
    """create-then-mint: a delete and a create for another owner (or a new database of the same
    owner) in between refuses the mint, which then neither mints nor revokes anything."""
    async with AdminClient(server.admin_url, server.admin_token) as admin:
        checked = await admin.create("orders", owner="team-a")
        minted = await admin.mint_token(
            "orders", "rw", revoke_others=True, owner="team-a", created_at=checked.created_at
        )
        assert minted is not None and minted.generation == 1

        assert await admin.delete("orders") is True
        await asyncio.sleep(1.1)  # createdAt has whole seconds
        theirs = await admin.create("orders", owner="team-b")
        with pytest.raises(DatabaseNotOwnedError) as not_ours:
            await admin.mint_token(
                "orders", "rw", revoke_others=True, owner="team-a", created_at=checked.created_at
            )
        assert not_ours.value.code == "owner mismatch"
        view = await admin.get("orders")
        assert view is not None and view.token_generation == 0 and view.owner == "team-b"

        # The same owner's new database: the token checked for the old one is not minted either.
        with pytest.raises(DatabaseChangedError) as changed:
            await admin.mint_token("orders", "rw", owner="team-b", created_at=checked.created_at)
        assert (changed.value.status, changed.value.code) == (409, "namespace changed")
        assert (
            await admin.mint_token("orders", "ro", owner="team-b", created_at=theirs.created_at) is not None
        )
        assert await admin.delete("orders") is True


async def test_errors_are_classified(server: TursoServer) -> None:
    async with AdminClient(server.admin_url, "wrong-token") as admin:
        with pytest.raises(AdminRejectedError) as info:
            await admin.create("x")
        assert info.value.status == 401
    async with AdminClient(server.admin_url, server.admin_token) as admin:
        with pytest.raises(AdminRejectedError) as info:
            await admin.set_ttl("missing-db", "1h")
        assert info.value.status == 404
    async with AdminClient(f"http://127.0.0.1:{free_port()}", "t", timeout=2) as admin:
        with pytest.raises(AdminUnavailableError):
            await admin.create("x")


async def test_a_server_without_signing_key_falls_back_to_the_shared_token(tmp_path: Path) -> None:
    with TursoServer(tmp_path / "data", extra_env={"TURSO_TOKEN_SIGNING_KEY": ""}) as plain:
        async with AdminClient(plain.admin_url, plain.admin_token) as admin:
            await admin.create("plain")
            assert await admin.mint_token("plain", "rw") is None


async def test_mint_scope_token(server: TursoServer) -> None:
    async with AdminClient(server.admin_url, server.admin_token) as admin:
        token = await admin.mint_scope_token(["runtime", "worker-*"], "rw")
        assert token and token not in (server.admin_token, server.data_token)
        with pytest.raises(AdminRejectedError) as rejected:
            await admin.mint_scope_token(["*"], "rw")
        assert rejected.value.status == 400
