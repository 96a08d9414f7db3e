"""Pure builders: spec → desired objects (Secret, conditions, pod mutation). No I/O here."""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._constants import (
    DATA_DIR,
    DATA_VOLUME,
    EXPIRES_ANNOTATION,
    INJECTED_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    RENEW_FRACTION_DIVISOR,
    RUNTIME_CREDENTIALS_LABEL,
    RUNTIME_CREDENTIALS_VALUE,
    RUNTIME_OWNER_PREFIX,
    SCOPE_ANNOTATION,
    SECRET_NAME_SUFFIX,
    SECRET_TYPE,
    TOKEN_DIR,
    TOKEN_VOLUME,
    Access,
    ConditionStatus,
    ConditionType,
    DeletionPolicy,
    SecretKey,
)
from ._durations import duration_seconds, format_duration
from ._errors import InjectionRefusedError, SpecError

DATABASE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RESERVED_DATABASES = frozenset({"healthz", "readyz"})  # turso-server's bare probe paths


@dataclass(frozen=True)
class DesiredNamespace:
    """A TursoNamespace spec with its defaults applied."""

    name: str
    namespace: str
    database: str
    deletion_policy: str
    ttl: str
    locked: bool
    secret_name: str
    access: str


def secret_name(spec: Mapping[str, Any], name: str) -> str:
    """The Secret a TursoNamespace ``name`` publishes its connection in: ``spec.secretName`` or
    ``<name>-turso``. The one place that default is built (reconcile and the webhook ask here)."""
    return str(spec.get("secretName") or f"{name}{SECRET_NAME_SUFFIX}")


def desired_namespace(spec: Mapping[str, Any], meta: Mapping[str, Any]) -> DesiredNamespace:
    name = str(meta["name"])
    database = str(spec.get("database") or name)
    if not DATABASE_PATTERN.fullmatch(database):
        raise SpecError(f"database name {database!r} does not match {DATABASE_PATTERN.pattern}")
    if database in RESERVED_DATABASES:
        raise SpecError(f"database name {database!r} is reserved for turso-server's health endpoints")
    policy = str(spec.get("deletionPolicy") or DeletionPolicy.ARCHIVE)
    if policy not in DeletionPolicy.ALL:
        raise SpecError(f"deletionPolicy must be {' or '.join(DeletionPolicy.ALL)} (got {policy!r})")
    ttl = str(spec.get("ttl") or "")
    if ttl:
        try:
            seconds = duration_seconds(ttl)
        except ValueError as exc:
            raise SpecError(f"spec.ttl: {exc}") from None
        if seconds <= 0:
            raise SpecError("spec.ttl must be greater than 0 (leave it out for no lifetime)")
    access = str(spec.get("access") or Access.READ_WRITE)
    if access not in Access.ALL:
        raise SpecError(f"access must be {' or '.join(Access.ALL)} (got {access!r})")
    return DesiredNamespace(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        database=database,
        deletion_policy=policy,
        ttl=ttl,
        locked=bool(spec.get("locked", False)),
        secret_name=secret_name(spec, name),
        access=access,
    )


def database_url(server_url: str, database: str) -> str:
    return f"{server_url.rstrip('/')}/{database}"


def token_hash(token: str) -> str:
    """What status keeps to notice a changed token without ever storing the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def credentials_for(
    desired: DesiredNamespace, created_at: str, token_generation: int, token_lifetime: float = 0.0
) -> dict[str, Any]:
    """What the Secret's token is minted for (``status.credentialsFor``): the database as created at
    ``created_at`` and in token generation ``token_generation`` (turso-server binds a token to both),
    the access level and, with ``TURSO_TOKEN_LIFETIME`` set, that lifetime (``tokenLifetime``;
    absent for tokens that never expire, as before the setting). When this changes (``spec.access``
    edited, the database re-created, its tokens revoked, the lifetime changed), the token is
    minted again."""
    wanted: dict[str, Any] = {
        "database": desired.database,
        "databaseCreatedAt": created_at,
        "tokenGeneration": token_generation,
        "access": desired.access,
    }
    if token_lifetime:
        wanted["tokenLifetime"] = format_duration(token_lifetime)
    return wanted


def renewal_due(expires_at: object, lifetime: float, now: datetime.datetime | None = None) -> bool:
    """Whether a token of ``lifetime`` seconds expiring at ``expires_at`` (turso-server's
    ``expiresAt``) has less than a third of its lifetime left, or no known expiry at all."""
    if not lifetime:
        return False
    try:
        expiry = datetime.datetime.fromisoformat(str(expires_at))
    except ValueError:
        return True
    if expiry.tzinfo is None:
        return True
    left = expiry - (now or datetime.datetime.now(datetime.UTC))
    return left.total_seconds() < lifetime / RENEW_FRACTION_DIVISOR


def recorded_credentials_for(recorded: object) -> object:
    """``status.credentialsFor`` as :func:`credentials_for` would build it. One written before
    token generations has no ``tokenGeneration``: its token carries none either, which
    turso-server reads as generation 0, so it is recorded as 0 (not re-minted for that alone).
    A null ``tokenLifetime`` (what the reconcile writes to remove one) is no lifetime."""
    if not isinstance(recorded, Mapping):
        return recorded
    known = {key: value for key, value in recorded.items() if not (key == "tokenLifetime" and value is None)}
    if "tokenGeneration" not in known:
        known["tokenGeneration"] = 0
    return known


def secret_data(desired: DesiredNamespace, server_url: str, token: str) -> dict[str, str]:
    url = database_url(server_url, desired.database)
    return {
        SecretKey.SERVER_URL: server_url,
        SecretKey.SERVER_TOKEN: token,
        SecretKey.NAMESPACE: desired.database,
        SecretKey.DATABASE_URL: url,
        SecretKey.RUNTIME_SERVER_URL: server_url,
        SecretKey.RUNTIME_SERVER_TOKEN: token,
        SecretKey.TYPE: "turso",
        SecretKey.PROVIDER: "buntime",
        SecretKey.URI: url,
    }


def secret_body(desired: DesiredNamespace, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": desired.secret_name,
            "namespace": desired.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, OWNER_LABEL: desired.name},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def scope_permits(scope: Sequence[str], database: str) -> bool:
    """Whether a scope (names and ``prefix*`` entries, read as turso-server does) opens ``database``."""
    return any(
        database.startswith(entry[:-1]) if entry.endswith("*") else database == entry for entry in scope
    )


def runtime_databases(*scopes: Sequence[str]) -> tuple[str, ...]:
    """The exact names in the runtime's scopes, each once, in order: the databases the operator
    creates. A ``prefix*`` entry names databases to come, so it has none to create."""
    return tuple(dict.fromkeys(entry for scope in scopes for entry in scope if not entry.endswith("*")))


def runtime_owner(operator_namespace: str) -> str:
    """The owner of the runtime's databases on turso-server (see :data:`RUNTIME_OWNER_PREFIX`)."""
    return f"{RUNTIME_OWNER_PREFIX}{operator_namespace}"


def scope_hash(
    runtime_scope: Sequence[str],
    worker_scope: Sequence[str],
    token_lifetime: float = 0.0,
    owner: str | None = None,
) -> str:
    """Names the scopes, the token lifetime (when set) and the tokens' owner a runtime Secret was
    minted for, so a changed scope or lifetime re-mints its tokens, and so does a Secret minted
    without the owner by an earlier operator."""
    text = ",".join(sorted(runtime_scope)) + "|" + ",".join(sorted(worker_scope))
    if token_lifetime:
        text += "|" + format_duration(token_lifetime)
    if owner is not None:
        text += "|owner=" + owner
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def runtime_secret_body(
    name: str, namespace: str, data: Mapping[str, str], scopes_hash: str, expires_at: str | None = None
) -> dict[str, Any]:
    """The release runtime's credentials: ``TURSO_SERVER_TOKEN`` and ``RUNTIME_TURSO_SERVER_TOKEN``;
    ``expires_at``, when its tokens expire (the earlier of the two), beside the scope hash."""
    annotations = {SCOPE_ANNOTATION: scopes_hash}
    if expires_at:
        annotations[EXPIRES_ANNOTATION] = expires_at
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, RUNTIME_CREDENTIALS_LABEL: RUNTIME_CREDENTIALS_VALUE},
            "annotations": annotations,
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


# -- conditions ---------------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_condition_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    """Whether condition ``type_`` is present with status ``True``."""
    return any(c.get("type") == type_ and c.get("status") == ConditionStatus.TRUE for c in conditions or ())


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    *,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> tuple[list[dict[str, Any]], bool]:
    """Return the new list and whether the condition's status or reason changed."""
    value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    result = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    changed = old is None or old.get("status") != value or old.get("reason") != reason
    transition = now_iso() if old is None or old.get("status") != value else old.get("lastTransitionTime")
    entry: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or now_iso(),
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    result.append(entry)
    order = {type_: index for index, type_ in enumerate(ConditionType.ORDER)}
    result.sort(key=lambda c: order.get(str(c.get("type")), len(order)))
    return result, changed


# -- pod injection --------------------------------------------------------------------------------


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


#: The token variables: each is injected as ``<name>_FILE``, the file of its Secret key under
#: :data:`TOKEN_DIR`, unless the container already sets the variable or its ``_FILE``.
TOKEN_KEYS: tuple[str, ...] = (SecretKey.RUNTIME_SERVER_TOKEN, SecretKey.SERVER_TOKEN)


def token_file(key: str) -> str:
    return f"{TOKEN_DIR}/{key}"


def injected_env(secret_name: str) -> list[dict[str, Any]]:
    """Every variable the webhook may inject (a container setting one keeps its own)."""
    return [
        _secret_env("RUNTIME_TURSO_SERVER_URL", secret_name, SecretKey.RUNTIME_SERVER_URL),
        {
            "name": f"{SecretKey.RUNTIME_SERVER_TOKEN}_FILE",
            "value": token_file(SecretKey.RUNTIME_SERVER_TOKEN),
        },
        {"name": "RUNTIME_TURSO_DIR", "value": DATA_DIR},
        _secret_env("TURSO_SERVER_URL", secret_name, SecretKey.SERVER_URL),
        {"name": f"{SecretKey.SERVER_TOKEN}_FILE", "value": token_file(SecretKey.SERVER_TOKEN)},
        # The database the token is scoped to: a runtime in this pod keeps all its data there.
        _secret_env("TURSO_NAMESPACE", secret_name, SecretKey.NAMESPACE),
    ]


def token_volume(secret_name: str) -> dict[str, Any]:
    """The read-only Secret volume holding only the token keys (``<TOKEN_DIR>/<key>``)."""
    items = [{"key": key, "path": key} for key in TOKEN_KEYS]
    return {"name": TOKEN_VOLUME, "secret": {"secretName": secret_name, "items": items}}


#: An object a container's ``envFrom`` names: (``configmaps`` or ``secrets``, name), in the pod's
#: namespace.
EnvSource = tuple[str, str]
#: The kind of each ``envFrom`` reference, as the API path and as messages say it.
ENV_FROM_KINDS: Mapping[str, tuple[str, str]] = {
    "configMapRef": ("configmaps", "ConfigMap"),
    "secretRef": ("secrets", "Secret"),
}
#: A ConfigMap's or Secret's name (an RFC 1123 subdomain): the API server refuses a pod whose
#: ``envFrom`` names anything else, so such a reference is never read (nor put in a URL).
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _env_from(container: Mapping[str, Any]) -> list[tuple[EnvSource, str]]:
    """The objects ``container``'s ``envFrom`` names, each with its ``prefix``."""
    refs: list[tuple[EnvSource, str]] = []
    for entry in container.get("envFrom") or []:
        for field, (kind, _label) in ENV_FROM_KINDS.items():
            name = (entry.get(field) or {}).get("name")
            if isinstance(name, str) and len(name) <= 253 and _OBJECT_NAME.fullmatch(name):
                refs.append(((kind, name), str(entry.get("prefix") or "")))
    return refs


def env_from_sources(spec: Mapping[str, Any]) -> dict[EnvSource, str]:
    """Every object the containers' and init containers' ``envFrom`` name, each once, with the
    first container naming it (for messages): what the webhook reads before :func:`mutate_pod_spec`."""
    sources: dict[EnvSource, str] = {}
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            for source, _prefix in _env_from(container):
                sources.setdefault(source, str(container.get("name")))
    return sources


def _container_env(
    container: Mapping[str, Any],
    env: Sequence[Mapping[str, Any]],
    env_from_keys: Mapping[EnvSource, frozenset[str]],
) -> list[dict[str, Any]]:
    """What ``container`` lacks of ``env``: a token's ``_FILE`` only when neither it nor the token is
    set. A variable counts as set when ``env`` names it or an ``envFrom`` object has its key
    (after the ``prefix``)."""
    present = {e.get("name") for e in container.get("env") or []}
    for source, prefix in _env_from(container):
        if source not in env_from_keys:
            raise ValueError(f"envFrom {source[0]}/{source[1]} was not read: pass its key names")
        present |= {f"{prefix}{key}" for key in env_from_keys[source]}
    present |= {f"{key}_FILE" for key in TOKEN_KEYS if key in present}
    return [dict(e) for e in env if e["name"] not in present]


def mutate_pod_spec(
    spec: Mapping[str, Any],
    secret_name: str,
    env_from_keys: Mapping[EnvSource, frozenset[str]] | None = None,
) -> dict[str, Any]:
    """The pod spec with the connection in every container and init container.

    Variables a container already sets are left alone (the app's own value wins; a token counts as
    set when the token or its ``_FILE`` is), in its ``env`` or through its ``envFrom``:
    ``env_from_keys`` holds the key names of every object of :func:`env_from_sources` (a missing
    object's are empty; a ``ValueError`` says one was left out). A container given a token file
    gets the read-only token volume at :data:`TOKEN_DIR`; a data volume is added where nothing is
    mounted at ``/data/turso`` yet (paths compared normalised, ``/data/turso/`` counts). Idempotent:
    an injected spec comes back unchanged (given the same ``env_from_keys``). A pod already using
    the token volume's name for another volume, or :data:`TOKEN_DIR` for another mount, is refused
    (:class:`InjectionRefusedError`): the token files would not be where the variables say.
    """
    new = copy.deepcopy(dict(spec))
    env = injected_env(secret_name)
    needs_data = needs_token = False
    for field in ("initContainers", "containers"):
        for container in new.get(field) or []:
            added = _container_env(container, env, env_from_keys or {})
            if added:
                container["env"] = [*(container.get("env") or []), *added]
            mounts = container.get("volumeMounts") or []
            if not any(_mount_path(m) == DATA_DIR for m in mounts):
                mounts = [*mounts, {"name": DATA_VOLUME, "mountPath": DATA_DIR}]
                needs_data = True
            if any(e["name"].endswith("_FILE") for e in added):
                taken = next((m for m in mounts if _mount_path(m) == TOKEN_DIR), None)
                if taken is None:
                    mounts = [*mounts, {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}]
                    needs_token = True
                elif taken.get("name") != TOKEN_VOLUME:
                    raise InjectionRefusedError(
                        f"container {container.get('name')!r} already mounts {TOKEN_DIR}, where the token "
                        f"files go (volume {taken.get('name')!r})"
                    )
            if mounts:
                container["volumeMounts"] = mounts
    volumes = new.get("volumes") or []
    if needs_data and not any(v.get("name") == DATA_VOLUME for v in volumes):
        volumes = [*volumes, {"name": DATA_VOLUME, "emptyDir": {}}]
    if needs_token:
        taken = next((v for v in volumes if v.get("name") == TOKEN_VOLUME), None)
        if taken is None:
            volumes = [*volumes, token_volume(secret_name)]
        elif (taken.get("secret") or {}).get("secretName") != secret_name:
            raise InjectionRefusedError(
                f"the pod already has a volume named {TOKEN_VOLUME!r}, the name of the token volume"
            )
    if volumes:
        new["volumes"] = volumes
    return new


def _mount_path(mount: Mapping[str, Any]) -> str:
    """A volume mount's path as the container sees it: ``/data/turso/``, ``//data/turso`` and
    ``/data/./turso`` are all :data:`DATA_DIR` (the API server compares mount paths as written)."""
    path = str(mount.get("mountPath") or "")
    if not path:
        return ""
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal


def is_injected(annotations: Mapping[str, str] | None) -> bool:
    return bool(annotations and INJECTED_ANNOTATION in annotations)
