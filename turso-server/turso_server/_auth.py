"""Bearer authentication for both listeners, and namespace-scoped tokens for the data port.

Global tokens (``TURSO_AUTH_TOKEN``, ``TURSO_ADMIN_TOKEN``) are compared in constant time. Beyond
upstream's single shared token, the admin API mints *scoped* tokens: HS256 JWTs (PyJWT) signed with
``TURSO_TOKEN_SIGNING_KEY`` whose claims name one namespace and an access level, ``rw`` or ``ro``,
with an optional expiry. The data port accepts the global token, or a scoped token whose namespace
is the one in the path (else 403); ``ro`` tokens may only pull (``POST /pull-updates``) or use
safe methods, so a push (``POST /v2/pipeline``) is 403. Missing or bad credentials are 401. Token
values are never logged or echoed in errors. Used by ``_proxy`` and ``_admin``.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

from ._errors import ForbiddenError, UnauthorizedError

BEARER_SCHEME = "bearer"
TOKEN_ALGORITHM = "HS256"
TOKEN_ISSUER = "turso-server"
TOKEN_AUDIENCE = "turso-server/data"
CLAIM_NAMESPACE = "ns"
CLAIM_ACCESS = "access"
PULL_ROUTE = "/pull-updates"
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(StrEnum):
    """What a data-port credential may do."""

    READ_WRITE = "rw"
    READ_ONLY = "ro"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``namespace`` ``None`` means every namespace (global token/no auth)."""

    namespace: str | None
    access: Access

    @property
    def scoped(self) -> bool:
        return self.namespace is not None


GLOBAL_PRINCIPAL = Principal(namespace=None, access=Access.READ_WRITE)


@dataclass(frozen=True)
class MintedToken:
    token: str
    namespace: str
    access: Access
    expires_at: datetime | None


def bearer_token(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header (scheme case-insensitive).

    ``None`` when there is no bearer credential; :class:`UnauthorizedError` when there is one that
    no configured token can be: bytes that were not UTF-8 (aiohttp hands them over as surrogates),
    whitespace or control characters. The same rule as ``TURSO_*_TOKEN`` values (``_config``), so a
    token that passes can be compared and decoded, and the error never quotes it.
    """
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != BEARER_SCHEME or not token:
        return None
    if not token.isprintable() or any(char.isspace() for char in token):
        raise UnauthorizedError("malformed bearer token: it must be printable text without spaces")
    return token


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison (only the length can leak)."""
    return hmac.compare_digest(given.encode(), expected.encode())


class ScopedTokens:
    """Mint and verify namespace-scoped JWTs.

    Usage::

        tokens = ScopedTokens(key)
        minted = tokens.mint("app", Access.READ_ONLY, expires_in=timedelta(hours=1))
        principal = tokens.verify(minted.token)     # UnauthorizedError when bad or expired

    Parameters:

    * ``key`` - the HMAC key (``TURSO_TOKEN_SIGNING_KEY``, at least 32 bytes).
    """

    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def mint(self, namespace: str, access: Access, *, expires_in: timedelta | None = None) -> MintedToken:
        now = datetime.now(UTC).replace(microsecond=0)
        claims: dict[str, object] = {
            "iss": TOKEN_ISSUER,
            "aud": TOKEN_AUDIENCE,
            "sub": namespace,
            CLAIM_NAMESPACE: namespace,
            CLAIM_ACCESS: access.value,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        expires_at = now + expires_in if expires_in else None
        if expires_at is not None:
            claims["exp"] = expires_at
        token = jwt.encode(claims, self._key, algorithm=TOKEN_ALGORITHM)
        return MintedToken(token=token, namespace=namespace, access=access, expires_at=expires_at)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[TOKEN_ALGORITHM],
                audience=TOKEN_AUDIENCE,
                issuer=TOKEN_ISSUER,
                options={"require": ["iss", "aud", "iat", CLAIM_NAMESPACE, CLAIM_ACCESS]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthorizedError("token expired") from None
        except jwt.PyJWTError:
            raise UnauthorizedError("invalid token") from None
        namespace, access = claims.get(CLAIM_NAMESPACE), claims.get(CLAIM_ACCESS)
        if not isinstance(namespace, str) or access not in {a.value for a in Access}:
            raise UnauthorizedError("invalid token claims")
        return Principal(namespace=namespace, access=Access(access))


class DataAuth:
    """Who may use the data port: the global token and/or scoped tokens, or anyone (insecure dev)."""

    def __init__(self, global_token: str, scoped: ScopedTokens | None) -> None:
        self._global = global_token
        self._scoped = scoped

    @property
    def enabled(self) -> bool:
        return bool(self._global or self._scoped)

    def authenticate(self, header: str | None) -> Principal:
        """The caller behind ``header``; :class:`UnauthorizedError` when it does not verify."""
        if not self.enabled:
            return GLOBAL_PRINCIPAL
        token = bearer_token(header)
        if token is None:
            raise UnauthorizedError("missing bearer token")
        if self._global and tokens_match(token, self._global):
            return GLOBAL_PRINCIPAL
        if self._scoped is not None and token.count(".") == 2:
            return self._scoped.verify(token)
        raise UnauthorizedError("invalid token")

    @staticmethod
    def authorize(principal: Principal, namespace: str, method: str, rest: str) -> None:
        """:class:`ForbiddenError` unless ``principal`` may send ``method rest`` to ``namespace``."""
        if principal.namespace is not None and principal.namespace != namespace:
            raise ForbiddenError("token is scoped to another namespace")
        if principal.access is Access.READ_ONLY and not (
            method in READ_ONLY_METHODS or (method == "POST" and rest == PULL_ROUTE)
        ):
            raise ForbiddenError("read-only token may only pull")


class AdminAuth:
    """The admin port accepts exactly ``TURSO_ADMIN_TOKEN`` (or anyone, in insecure dev mode)."""

    def __init__(self, token: str) -> None:
        self._token = token

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def check(self, header: str | None) -> None:
        if not self._token:
            return
        token = bearer_token(header)
        if token is None:
            raise UnauthorizedError("missing bearer token")
        if not tokens_match(token, self._token):
            raise UnauthorizedError("invalid token")
