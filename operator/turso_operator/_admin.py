"""Client of turso-server's admin API: the only way the operator touches databases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from ._errors import (
    AdminNotFoundError,
    AdminRejectedError,
    AdminUnavailableError,
    DatabaseChangedError,
    DatabaseNotOwnedError,
)

#: turso-server's codes for a create refused over its owner (docs/turso-server.md, Owners).
OWNER_MISMATCH = "owner mismatch"
NOT_OWNED = "not owned"
#: turso-server's code for a mint whose ``namespaceCreatedAt`` names an earlier database.
NAMESPACE_CHANGED = "namespace changed"


@dataclass(frozen=True)
class NamespaceView:
    """What turso-server reports about one database."""

    name: str
    locked: bool
    ttl: str
    origin: str
    #: Which database of this name it is: a namespace token is bound to it, so a re-created
    #: database (a new ``createdAt``) needs a new token.
    created_at: str = ""
    #: The database's token generation: only tokens minted in it open the database, so a higher
    #: one than a token was minted in means that token was revoked.
    token_generation: int = 0
    #: Who the database belongs to on turso-server (the operator records the Kubernetes namespace
    #: of the TursoNamespace that created it); ``None``: nobody (or a server without owners).
    owner: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NamespaceView:
        return cls(
            name=str(data.get("name", "")),
            locked=bool(data.get("locked", False)),
            ttl=str(data.get("ttl") or ""),
            origin=str(data.get("origin", "")),
            created_at=str(data.get("createdAt") or ""),
            token_generation=_whole_number(data.get("tokenGeneration")) or 0,
            owner=str(data["owner"]) if data.get("owner") else None,
        )


@dataclass(frozen=True)
class MintedToken:
    """A namespace token and the token generation it was minted in (``None``: the server does not
    say, so it has no generations and revokes nothing). The token stays out of ``repr``."""

    token: str = field(repr=False)
    generation: int | None
    #: When it stops opening anything (turso-server's ``expiresAt``, RFC 3339 UTC); ``None``: never.
    expires_at: str | None = None


class AdminClient:
    """Async admin client. Usage::

    async with AdminClient("http://turso-admin:8081", token) as admin:
        view = await admin.create("orders")
    """

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        url = f"{self._base}{path}"
        try:
            async with self._session.request(method, url, json=body) as resp:
                text = await resp.text()
                payload: Any = None
                if text:
                    try:
                        payload = await resp.json(content_type=None)
                    except ValueError:
                        payload = {"detail": text[:200]}
                if resp.status >= 500:
                    raise AdminUnavailableError(
                        f"turso-server {method} {path} failed with {resp.status}: {_detail(payload)}",
                        status=resp.status,
                    )
                if resp.status == 404:
                    raise AdminNotFoundError(f"{path}: not found", status=404, code=_code(payload))
                if resp.status >= 400:
                    raise AdminRejectedError(
                        f"turso-server refused {method} {path} ({resp.status}): {_detail(payload)}",
                        status=resp.status,
                        code=_code(payload),
                    )
                return payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdminUnavailableError(f"turso-server admin API unreachable at {self._base}: {exc}") from exc

    @staticmethod
    def _path(name: str, action: str = "") -> str:
        suffix = f"/{action}" if action else ""
        return f"/v1/namespaces/{quote(name, safe='')}{suffix}"

    async def get(self, name: str) -> NamespaceView | None:
        try:
            return NamespaceView.from_json(await self._request("GET", self._path(name)) or {})
        except AdminNotFoundError:
            return None

    async def create(self, name: str, *, owner: str | None = None, adopt: bool = False) -> NamespaceView:
        """Idempotent: an existing database is returned as it is, when it is ``owner``'s.

        With ``owner`` a new database records it, for good; an existing one recorded as another
        owner's, or with no owner (unless ``adopt``, which records ``owner``), raises
        :class:`DatabaseNotOwnedError` and changes nothing.
        """
        body: dict[str, Any] | None = None
        if owner is not None:
            body = {"owner": owner, "adopt": True} if adopt else {"owner": owner}
        try:
            payload = await self._request("POST", self._path(name, "create"), body)
        except AdminRejectedError as exc:
            if exc.status == 409 and exc.code in (OWNER_MISMATCH, NOT_OWNED):
                raise DatabaseNotOwnedError(str(exc), status=exc.status, code=exc.code) from None
            raise
        return NamespaceView.from_json(payload or {})

    async def set_locked(self, name: str, locked: bool) -> None:
        await self._request("POST", self._path(name, "lock" if locked else "unlock"))

    async def set_ttl(self, name: str, ttl: str) -> None:
        await self._request("POST", self._path(name, "ttl"), {"ttl": ttl})

    async def delete(self, name: str) -> bool:
        """Archive the database; ``False`` when it was already gone."""
        try:
            await self._request("DELETE", self._path(name))
        except AdminNotFoundError:
            return False
        return True

    async def mint_token(
        self,
        name: str,
        access: str,
        *,
        revoke_others: bool = False,
        owner: str | None = None,
        created_at: str | None = None,
        expires_in: str | None = None,
    ) -> MintedToken | None:
        """A namespace-scoped token, or ``None`` when this server does not mint tokens (the caller
        decides whether the shared data token may stand in: it opens every database).

        turso-server binds it to the database as it exists now (its ``createdAt``): once the
        database is deleted, the token opens nothing, not even a database re-created under that name.
        With ``revoke_others`` every token minted for the database before is revoked (401) by the
        time this returns: the server persists that before it answers.

        ``owner`` and ``created_at`` are preconditions the server checks with the mint: a database
        of that name that is another owner's raises :class:`DatabaseNotOwnedError`, one created at
        another time (deleted and created again since the caller looked) :class:`DatabaseChangedError`;
        neither mints or revokes anything.

        ``expires_in`` (a duration) makes the token expire; the answer says when (``expires_at``).
        """
        body: dict[str, Any] = {"access": access}
        if expires_in:
            body["expiresIn"] = expires_in
        if revoke_others:
            body["revokeOthers"] = True
        if owner is not None:
            body["owner"] = owner
        if created_at:
            body["namespaceCreatedAt"] = created_at
        try:
            payload = await self._request("POST", self._path(name, "tokens"), body)
        except AdminRejectedError as exc:
            if exc.status == 409 and exc.code == OWNER_MISMATCH:
                raise DatabaseNotOwnedError(str(exc), status=exc.status, code=exc.code) from None
            if exc.status == 409 and exc.code == NAMESPACE_CHANGED:
                raise DatabaseChangedError(str(exc), status=exc.status, code=exc.code) from None
            # 404 without an error code: a server without the route; 409: one without a signing
            # key. Either way it mints no scoped tokens.
            if exc.status in (405, 409, 501) or (exc.status == 404 and exc.code is None):
                return None
            raise
        if not isinstance(payload, dict) or not payload.get("token"):
            return None
        return MintedToken(
            str(payload["token"]), _whole_number(payload.get("tokenGeneration")), _expires_at(payload)
        )

    async def mint_scope_token(
        self, namespaces: Sequence[str], access: str, *, owner: str | None = None
    ) -> str | None:
        """A token for several namespaces and prefixes (``team-*``); ``None`` without scoped tokens."""
        minted = await self.mint_scope(namespaces, access, owner=owner)
        return minted.token if minted else None

    async def mint_scope(
        self,
        namespaces: Sequence[str],
        access: str,
        *,
        expires_in: str | None = None,
        owner: str | None = None,
    ) -> MintedToken | None:
        """:meth:`mint_scope_token` with its expiry: ``expires_in`` (a duration) or none.

        ``owner`` is signed into the token: a database it auto-provisions (one only a prefix names)
        is created explicit, locked and that owner's, so turso-server's GC never idles it out.
        """
        body: dict[str, Any] = {"namespaces": list(namespaces), "access": access}
        if expires_in:
            body["expiresIn"] = expires_in
        if owner is not None:
            body["owner"] = owner
        try:
            payload = await self._request("POST", "/v1/tokens", body)
        except AdminRejectedError as exc:
            if exc.status in (405, 409, 501) or (exc.status == 404 and exc.code is None):
                return None
            raise
        token = payload.get("token") if isinstance(payload, dict) else None
        return MintedToken(str(token), None, _expires_at(payload)) if token else None


def _expires_at(payload: dict[str, Any]) -> str | None:
    value = payload.get("expiresAt")
    return str(value) if value else None


def _whole_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _detail(payload: Any) -> str:
    if isinstance(payload, dict):
        return str(payload.get("detail") or payload.get("error") or payload)
    return str(payload)


def _code(payload: Any) -> str | None:
    return str(payload["code"]) if isinstance(payload, dict) and payload.get("code") else None
