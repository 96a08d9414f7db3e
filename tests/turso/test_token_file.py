"""``TURSO_SERVER_TOKEN_FILE``: a running service sends the token its file holds *now*.

The file is swapped the way the kubelet refreshes a Secret volume (the data in a new directory,
a ``..data`` symlink renamed over the old one), against a real turso-server minting real scoped
tokens: a namespace the old token could not open becomes writable, and a revoked token is
replaced without a restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from buntime.turso import TursoError, TursoService, resolve_config
from tests.support.tursoserver import TursoServer
from tests.turso.test_sync import INTERVAL, count, create_table, insert


class SecretVolume:
    """A directory laid out like a kubelet Secret volume: ``<key>`` -> ``..data/<key>``."""

    def __init__(self, root: Path, key: str = "TURSO_SERVER_TOKEN") -> None:
        self.root = root
        self.key = key
        self.generation = 0
        root.mkdir(parents=True)

    @property
    def path(self) -> str:
        return str(self.root / self.key)

    def write(self, token: str) -> None:
        self.generation += 1
        data = self.root / f"..gen{self.generation}"
        data.mkdir()
        (data / self.key).write_text(token)
        os.symlink(data.name, self.root / "..data_tmp")
        os.replace(self.root / "..data_tmp", self.root / "..data")  # the atomic swap
        if not (self.root / self.key).is_symlink():
            os.symlink(f"..data/{self.key}", self.root / self.key)


def _post(server: TursoServer, path: str, body: Any = None) -> str:
    status, payload = server.admin("POST", path, body)
    assert status in (200, 201), payload
    token: str = payload["token"] if isinstance(payload, dict) and "token" in payload else ""
    return token


def _service(server: TursoServer, volume: SecretVolume, tmp_path: Path) -> TursoService:
    env = {
        "TURSO_SERVER_URL": server.url,
        "TURSO_SERVER_TOKEN_FILE": volume.path,
        "TURSO_LOCAL_PATH": str(tmp_path / "replicas" / "runtime.db"),
        "TURSO_SYNC_INTERVAL": INTERVAL,
    }
    return TursoService(resolve_config(env=env))


async def test_a_wider_token_swapped_into_the_file_opens_a_namespace_that_was_refused(tmp_path: Path) -> None:
    with TursoServer(tmp_path / "turso") as server:
        for name in ("runtime", "ledger"):
            _post(server, f"/v1/namespaces/{name}/create")
        narrow = _post(server, "/v1/tokens", {"namespaces": ["runtime"]})
        wide = _post(server, "/v1/tokens", {"namespaces": ["runtime", "ledger"]})
        volume = SecretVolume(tmp_path / "secret")
        volume.write(narrow)
        service = _service(server, volume, tmp_path)
        try:
            await create_table(service, "runtime")
            await insert(service, "narrow", "runtime")
            with pytest.raises(TursoError):
                await create_table(service, "ledger")  # 403: outside the narrow scope
            volume.write(wide)  # the operator re-minted; the kubelet refreshed the volume
            await create_table(service, "ledger")
            await insert(service, "wide", "ledger")
            await insert(service, "still", "runtime")
            assert await count(service, "ledger") == 1
            assert await count(service, "runtime") == 2
            assert narrow not in repr(service.config) and wide not in repr(service.config)
        finally:
            await service.aclose()


async def test_writes_keep_working_after_the_old_token_is_revoked_and_the_file_replaced(
    tmp_path: Path,
) -> None:
    with TursoServer(tmp_path / "turso") as server:
        _post(server, "/v1/namespaces/ledger/create")
        old = _post(server, "/v1/namespaces/ledger/tokens")
        volume = SecretVolume(tmp_path / "secret")
        volume.write(old)
        service = _service(server, volume, tmp_path)
        try:
            await create_table(service, "ledger")
            await insert(service, "before", "ledger")
            new = _post(server, "/v1/namespaces/ledger/tokens", {"revokeOthers": True})
            with pytest.raises(TursoError):
                await insert(service, "refused", "ledger")  # the old token is revoked: 401
            volume.write(new)
            await insert(service, "after", "ledger")  # lease, pull and push all send the new one
            await insert(service, "again", "ledger")
            assert await count(service, "ledger") == 3
        finally:
            await service.aclose()
        # What the replica acknowledged reached the server: a fresh replica with the new token sees it.
        other = SecretVolume(tmp_path / "other-secret")
        other.write(new)
        fresh = _service(server, other, tmp_path / "fresh")
        try:
            assert await count(fresh, "ledger") == 3
        finally:
            await fresh.aclose()


async def test_health_without_background_sync_sees_a_revoked_token_and_its_replacement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TURSO_SYNC_INTERVAL=0``: no pull tells the replica that its token was revoked. Health's
    own request to turso-server does (401: ``degraded``, every write would fail), and the
    re-minted token in the file makes it ``ok`` again, both without a write."""
    import asyncio

    from buntime.turso import _backends

    monkeypatch.setattr(_backends, "REACH_AGE", 0.3)
    with TursoServer(tmp_path / "turso") as server:
        _post(server, "/v1/namespaces/ledger/create")
        old = _post(server, "/v1/namespaces/ledger/tokens")
        volume = SecretVolume(tmp_path / "secret")
        volume.write(old)
        env = {
            "TURSO_SERVER_URL": server.url,
            "TURSO_SERVER_TOKEN_FILE": volume.path,
            "TURSO_LOCAL_PATH": str(tmp_path / "replicas" / "runtime.db"),
            "TURSO_SYNC_INTERVAL": "0",
        }
        service = TursoService(resolve_config(env=env))
        try:
            await create_table(service, "ledger")
            assert (await service.health()).status == "ok"
            new = _post(server, "/v1/namespaces/ledger/tokens", {"revokeOthers": True})
            await asyncio.sleep(0.4)
            health = await service.health()
            assert health.status == "degraded", health
            assert "refused the token (HTTP 401)" in (health.namespaces["ledger"].last_sync_error or "")
            assert old not in repr(health.as_dict()) and new not in repr(health.as_dict())
            volume.write(new)
            await asyncio.sleep(0.4)
            assert (await service.health()).status == "ok"
            await insert(service, "after", "ledger")
        finally:
            await service.aclose()


async def test_health_of_a_reader_with_a_read_only_token_is_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod that only reads holds an ``ro`` token (TursoNamespace ``access: ro``). Health's probe
    (``GET <ns>/-/lease``) was authorised as a write, so turso-server answered 403 and such a pod was
    ``degraded`` for good without background sync while every read worked. A ``GET`` of the lease
    path now needs a read's rights (it is answered 405 and changes nothing)."""
    import asyncio

    from buntime.turso import _backends

    monkeypatch.setattr(_backends, "REACH_AGE", 0.3)
    with TursoServer(tmp_path / "turso") as server:
        _post(server, "/v1/namespaces/ledger/create")
        writer = TursoService(
            resolve_config(
                env={
                    "TURSO_SERVER_URL": server.url,
                    "TURSO_SERVER_TOKEN": _post(server, "/v1/namespaces/ledger/tokens"),
                    "TURSO_LOCAL_PATH": str(tmp_path / "writer" / "runtime.db"),
                    "TURSO_SYNC_INTERVAL": "0",
                }
            )
        )
        try:
            await create_table(writer, "ledger")
            await insert(writer, "a", "ledger")
        finally:
            await writer.aclose()
        reader = TursoService(
            resolve_config(
                env={
                    "TURSO_SERVER_URL": server.url,
                    "TURSO_SERVER_TOKEN": _post(server, "/v1/namespaces/ledger/tokens", {"access": "ro"}),
                    "TURSO_LOCAL_PATH": str(tmp_path / "reader" / "runtime.db"),
                    "TURSO_SYNC_INTERVAL": "0",
                }
            )
        )
        try:
            assert await count(reader, "ledger") == 1
            for _ in range(3):  # the first call asks at once; the next ones after REACH_AGE
                health = await reader.health()
                assert health.status == "ok", health
                await asyncio.sleep(0.4)
        finally:
            await reader.aclose()
