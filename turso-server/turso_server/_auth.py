"""Bearer authentication for both listeners, and namespace-scoped tokens for the data port.

Global tokens (``TURSO_AUTH_TOKEN``, ``TURSO_ADMIN_TOKEN``) are compared in constant time. Beyond
upstream's single shared token, the admin API mints *scoped* tokens: HS256 JWTs (PyJWT) signed with
``TURSO_TOKEN_SIGNING_KEY`` whose claims name their namespaces and an access level, ``rw`` or
``ro``, with an optional expiry. A token names either one namespace (claim ``ns``, the original
shape, still minted per namespace) or a list (claim ``nss``) of exact names and prefixes written
``team-*``, which open every namespace starting with ``team-``. A single-namespace token is bound to
one *incarnation* of its namespace (claim ``nsCreatedAt``, the namespace's ``createdAt``): once the
namespace is deleted or archived, the token opens nothing, not even a namespace created later under
the same name (401). It also carries the namespace's *token generation* (claim ``nsGeneration``):
the admin API revokes a namespace's tokens by raising its generation, after which every token minted
before is refused (401). A list or prefix token cannot be bound either way (it names namespaces to
come) and opens every namespace its scope permits, whenever it was created. A list or prefix token
may also name an *owner* (claim ``nsOwner``, a signed claim like the rest): it opens nothing more,
but a namespace it auto-provisions is created explicit + locked with that owner (as an admin
``create`` with that owner would), and an ``auto`` namespace with no owner that it reaches is
promoted so, its data kept (``_supervisor.Supervisor.claim``); so the GC never idles out a database
its holder's owner made. The data port accepts the global
token, or a scoped token whose scope contains the namespace in the path (else 403); ``ro`` tokens
may only pull (``POST /pull-updates``) or use safe methods, so a push (``POST /v2/pipeline``) is
403. ``TURSO_METRICS_TOKEN`` opens ``GET /metrics`` on the admin port and nothing else (403
elsewhere), so a scraper never holds a credential that can delete databases. Missing or bad
credentials are 401. Token values are never logged or echoed in errors. Used by ``_proxy`` and
``_admin``.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

from ._errors import ForbiddenError, InvalidBodyError, UnauthorizedError
from ._names import is_valid_name, is_valid_owner

BEARER_SCHEME = "bearer"
TOKEN_ALGORITHM = "HS256"
TOKEN_ISSUER = "turso-server"
TOKEN_AUDIENCE = "turso-server/data"
CLAIM_NAMESPACE = "ns"
CLAIM_NAMESPACES = "nss"
#: The ``createdAt`` of the namespace a single-namespace token was minted for (its incarnation).
CLAIM_NAMESPACE_CREATED = "nsCreatedAt"
#: The namespace's token generation when a single-namespace token was minted; absent means 0 (a
#: token minted before generations existed, valid until the namespace's tokens are first revoked).
CLAIM_NAMESPACE_GENERATION = "nsGeneration"
CLAIM_ACCESS = "access"
#: The owner a list or prefix token records on the namespaces it auto-provisions.
CLAIM_OWNER = "nsOwner"
PREFIX_WILDCARD = "*"
#: Entries in one multi-namespace scope: a scope is a short list written by an operator, not data.
MAX_SCOPE_ENTRIES = 64
PULL_ROUTE = "/pull-updates"
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(StrEnum):
    """What a data-port credential may do."""

    READ_WRITE = "rw"
    READ_ONLY = "ro"


@dataclass(frozen=True)
class Scope:
    """The namespaces a scoped token opens: exact names and prefixes (``team-*``).

    Usage::

        scope = Scope.parse(["runtime", "keyval", "worker-*"])   # InvalidBodyError when malformed
        scope.permits("worker-orders")                         # True
        scope.entries                                          # ("keyval", "runtime", "worker-*")

    A prefix is a valid namespace start followed by ``*``; a bare ``*`` (every namespace, which is
    what the global token is for) and reserved or malformed names are refused.
    """

    names: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def parse(cls, entries: Iterable[object]) -> Scope:
        names: set[str] = set()
        prefixes: set[str] = set()
        for entry in entries:
            if not isinstance(entry, str):
                raise InvalidBodyError("every scope entry must be a string")
            if entry.endswith(PREFIX_WILDCARD):
                prefix = entry[: -len(PREFIX_WILDCARD)]
                # "<prefix>x" is a valid name exactly when the prefix can start one.
                if not prefix or not is_valid_name(prefix + "x"):
                    raise InvalidBodyError(f"scope prefix {entry!r} must start like a namespace name")
                prefixes.add(prefix)
            elif is_valid_name(entry):
                names.add(entry)
            else:
                raise InvalidBodyError(f"scope entry {entry!r} is not a namespace name or a prefix*")
        if not names and not prefixes:
            raise InvalidBodyError("a scope needs at least one namespace or prefix")
        if len(names) + len(prefixes) > MAX_SCOPE_ENTRIES:
            raise InvalidBodyError(f"a scope has at most {MAX_SCOPE_ENTRIES} entries")
        return cls(names=frozenset(names), prefixes=tuple(sorted(prefixes)))

    @classmethod
    def single(cls, namespace: str) -> Scope:
        return cls(names=frozenset({namespace}), prefixes=())

    @property
    def entries(self) -> tuple[str, ...]:
        """Sorted names, then sorted prefixes with their ``*``: the ``nss`` claim."""
        return (*sorted(self.names), *(prefix + PREFIX_WILDCARD for prefix in self.prefixes))

    def permits(self, namespace: str) -> bool:
        return namespace in self.names or any(namespace.startswith(p) for p in self.prefixes)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``scope`` ``None`` means every namespace (global token/no auth).

    ``incarnation`` is the ``createdAt`` a single-namespace token was minted for and ``generation``
    the namespace's token generation then; ``incarnation`` is ``None`` for the global token and
    list or prefix tokens, which are bound to neither. ``owner`` is a list or prefix token's
    ``nsOwner``: recorded on the namespaces it creates; it never widens ``scope``.
    """

    scope: Scope | None
    access: Access
    incarnation: str | None = None
    generation: int = 0
    owner: str | None = None

    @property
    def scoped(self) -> bool:
        return self.scope is not None

    @property
    def namespace(self) -> str | None:
        """The one namespace of a single-namespace token; ``None`` for the global token or a list."""
        if self.scope is not None and not self.scope.prefixes and len(self.scope.names) == 1:
            return next(iter(self.scope.names))
        return None


GLOBAL_PRINCIPAL = Principal(scope=None, access=Access.READ_WRITE)


@dataclass(frozen=True)
class MintedToken:
    token: str
    namespaces: tuple[str, ...]
    access: Access
    expires_at: datetime | None
    owner: str | None = None

    @property
    def namespace(self) -> str:
        """The first scope entry: *the* namespace of a single-namespace token."""
        return self.namespaces[0]


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
        minted = tokens.mint("app", created_at, 3, Access.READ_ONLY, expires_in=timedelta(hours=1))
        principal = tokens.verify(minted.token)     # UnauthorizedError when bad or expired
        (principal.incarnation, principal.generation) == (created_at, 3)  # checked by DataAuth

    Parameters:

    * ``key`` - the HMAC key (``TURSO_TOKEN_SIGNING_KEY``, at least 32 bytes).
    """

    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def mint(
        self,
        namespace: str,
        created_at: str,
        generation: int,
        access: Access,
        *,
        expires_in: timedelta | None = None,
    ) -> MintedToken:
        """A token for exactly ``namespace`` (claim ``ns``) as created at ``created_at`` (the
        namespace's ``createdAt``, claim ``nsCreatedAt``): it opens no later namespace of that name;
        and in token generation ``generation`` (claim ``nsGeneration``): a later one revokes it."""
        claims: dict[str, object] = {
            "sub": namespace,
            CLAIM_NAMESPACE: namespace,
            CLAIM_NAMESPACE_CREATED: created_at,
            CLAIM_NAMESPACE_GENERATION: generation,
        }
        return self._encode(claims, (namespace,), access, expires_in)

    def mint_scope(
        self,
        scope: Scope,
        access: Access,
        *,
        expires_in: timedelta | None = None,
        owner: str | None = None,
    ) -> MintedToken:
        """A token for every namespace ``scope`` permits (claim ``nss``); ``owner`` (claim
        ``nsOwner``, a valid owner string) is recorded on the namespaces it auto-provisions."""
        entries = scope.entries
        claims: dict[str, object] = {CLAIM_NAMESPACES: list(entries)}
        if owner is not None:
            if not is_valid_owner(owner):
                raise InvalidBodyError("'owner' is not a valid owner")
            claims[CLAIM_OWNER] = owner
        minted = self._encode(claims, entries, access, expires_in)
        return MintedToken(minted.token, minted.namespaces, minted.access, minted.expires_at, owner)

    def _encode(
        self,
        scope_claims: dict[str, object],
        entries: tuple[str, ...],
        access: Access,
        expires_in: timedelta | None,
    ) -> MintedToken:
        now = datetime.now(UTC).replace(microsecond=0)
        claims: dict[str, object] = {
            "iss": TOKEN_ISSUER,
            "aud": TOKEN_AUDIENCE,
            **scope_claims,
            CLAIM_ACCESS: access.value,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        expires_at = now + expires_in if expires_in else None
        if expires_at is not None:
            claims["exp"] = expires_at
        token = jwt.encode(claims, self._key, algorithm=TOKEN_ALGORITHM)
        return MintedToken(token=token, namespaces=entries, access=access, expires_at=expires_at)

    def verify(self, token: str) -> Principal:
        if not token.isascii():  # a JWT is base64url and dots; PyJWT would raise encoding it (a 500)
            raise UnauthorizedError("invalid token")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[TOKEN_ALGORITHM],
                audience=TOKEN_AUDIENCE,
                issuer=TOKEN_ISSUER,
                options={"require": ["iss", "aud", "iat", CLAIM_ACCESS]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthorizedError("token expired") from None
        except jwt.PyJWTError:
            raise UnauthorizedError("invalid token") from None
        access = claims.get(CLAIM_ACCESS)
        if access not in {a.value for a in Access}:
            raise UnauthorizedError("invalid token claims")
        scope, incarnation, generation = _claimed_scope(claims)
        owner = _claimed_owner(claims, incarnation)
        return Principal(
            scope=scope, access=Access(access), incarnation=incarnation, generation=generation, owner=owner
        )


def _claimed_owner(claims: dict[str, object], incarnation: str | None) -> str | None:
    """``nsOwner``: absent, or a valid owner string on a list or prefix token (never on one bound
    to a namespace's incarnation); anything else does not verify."""
    if CLAIM_OWNER not in claims:
        return None
    owner = claims[CLAIM_OWNER]
    if incarnation is not None or not isinstance(owner, str) or not is_valid_owner(owner):
        raise UnauthorizedError("invalid token claims")
    return owner


def _claimed_scope(claims: dict[str, object]) -> tuple[Scope, str | None, int]:
    """Exactly one of ``ns`` (a name, with its ``nsCreatedAt`` and ``nsGeneration``) and ``nss`` (a
    list, with neither); anything else does not verify. An ``ns`` token without ``nsCreatedAt``
    (minted before tokens were bound to an incarnation) is refused too: it would open any later
    namespace of its name. One without ``nsGeneration`` is of generation 0."""
    namespace, namespaces = claims.get(CLAIM_NAMESPACE), claims.get(CLAIM_NAMESPACES)
    created = claims.get(CLAIM_NAMESPACE_CREATED)
    generation = claims.get(CLAIM_NAMESPACE_GENERATION, 0)
    if (namespace is None) == (namespaces is None):
        raise UnauthorizedError("invalid token claims")
    if isinstance(namespace, str):
        if not isinstance(created, str) or not created:
            raise UnauthorizedError("invalid token claims: no namespace incarnation; mint a new token")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise UnauthorizedError("invalid token claims")
        return Scope.single(namespace), created, generation
    if not isinstance(namespaces, list) or created is not None or CLAIM_NAMESPACE_GENERATION in claims:
        raise UnauthorizedError("invalid token claims")
    try:
        return Scope.parse(namespaces), None, 0
    except InvalidBodyError:
        raise UnauthorizedError("invalid token claims") from None


class DataAuth:
    """Who may use the data port: the global token and/or scoped tokens, or anyone (insecure dev).

    ``binding`` gives a stored namespace's ``createdAt`` (as minted into ``nsCreatedAt``) and its
    current token generation (``nsGeneration``), or ``None`` when there is no such namespace: a
    single-namespace token verifies only while both match, so deleting a namespace revokes its
    tokens for good, and raising its generation revokes every token minted before.
    """

    def __init__(
        self,
        global_token: str,
        scoped: ScopedTokens | None,
        *,
        binding: Callable[[str], tuple[str, int] | None],
    ) -> None:
        self._global = global_token
        self._scoped = scoped
        self._binding = binding

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
            principal = self._scoped.verify(token)
            # Checked before the namespace can be auto-provisioned: a revoked token creates nothing.
            self.check_binding(principal)
            return principal
        raise UnauthorizedError("invalid token")

    def check_binding(self, principal: Principal) -> None:
        """:class:`UnauthorizedError` (a revoked token) unless ``principal``'s namespace is still the
        incarnation and token generation it was minted for; a principal bound to none always passes.

        ``authenticate`` checks it when a request starts and ``_proxy`` once more right before the
        request goes to the child: a body that takes minutes to arrive, or a wait for the lease or
        the child, must not carry a request past a delete (and a create for another owner) or a
        revocation that happened meanwhile.
        """
        if principal.incarnation is None:
            return
        namespace = principal.namespace
        current = self._binding(namespace) if namespace is not None else None
        if current is None or current[0] != principal.incarnation:
            raise UnauthorizedError("token revoked: its namespace was deleted since it was minted")
        if current[1] != principal.generation:
            raise UnauthorizedError("token revoked: its namespace's tokens were revoked since it was minted")

    @staticmethod
    def authorize(principal: Principal, namespace: str, method: str, rest: str) -> None:
        """:class:`ForbiddenError` unless ``principal`` may send ``method rest`` to ``namespace``."""
        if principal.scope is not None and not principal.scope.permits(namespace):
            raise ForbiddenError("token is scoped to other namespaces")
        if principal.access is Access.READ_ONLY and not (
            method in READ_ONLY_METHODS or (method == "POST" and rest == PULL_ROUTE)
        ):
            raise ForbiddenError("read-only token may only pull")


class AdminAuth:
    """The admin port accepts ``TURSO_ADMIN_TOKEN`` (or anyone, in insecure dev mode).

    ``metrics_token`` *(optional)*, ``TURSO_METRICS_TOKEN``, opens ``GET /metrics`` only: on every
    other route it is 403, so a scraper's credential can read counters and change nothing.
    """

    def __init__(self, token: str, *, metrics_token: str = "") -> None:
        self._token = token
        self._metrics_token = metrics_token

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def check(self, header: str | None, *, metrics: bool = False) -> None:
        """Raise unless ``header`` opens this request; ``metrics``: it is ``GET /metrics``."""
        if not self._token:
            return
        token = bearer_token(header)
        if token is None:
            raise UnauthorizedError("missing bearer token")
        if tokens_match(token, self._token):
            return
        if self._metrics_token and tokens_match(token, self._metrics_token):
            if metrics:
                return
            raise ForbiddenError("the metrics token may only read /metrics")
        raise UnauthorizedError("invalid token")
