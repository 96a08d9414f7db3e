"""Reconcile steps for one TursoNamespace: database on the server, then the Secret, then status.

Also the release runtime's credentials (:meth:`Reconciler.ensure_runtime_credentials`): its
exact-named databases made explicit ones on turso-server (so they are never auto-provisioned, nor
archived as idle), then a Secret beside the operator with tokens scoped to the runtime's own
databases, minted through the admin API, so neither the admin token nor the global data token
reaches a runtime pod.

Every step is safe to repeat (get-or-create; the server's create is idempotent), so a restart
mid-reconcile creates nothing twice. Status changes are collected in a :class:`StatusPatch` and
written by kopf in one patch; transitions become Events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from ._admin import NOT_OWNED, AdminClient, NamespaceView
from ._backoff import backoff_delay
from ._builders import (
    DesiredNamespace,
    credentials_for,
    database_url,
    is_condition_true,
    now_iso,
    recorded_credentials_for,
    renewal_due,
    runtime_databases,
    runtime_owner,
    runtime_secret_body,
    scope_hash,
    secret_body,
    secret_data,
    set_condition,
    token_hash,
)
from ._config import OperatorConfig
from ._constants import (
    BACKOFF_INITIAL_SECONDS,
    BACKOFF_MAX_SECONDS,
    CONFLICT_RETRY_SECONDS,
    EXPIRES_ANNOTATION,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_LABEL,
    RUNTIME_CREDENTIALS_LABEL,
    RUNTIME_CREDENTIALS_VALUE,
    SCOPE_ANNOTATION,
    Access,
    ConditionStatus,
    ConditionType,
    DeletionPolicy,
    Phase,
    Reason,
    SecretKey,
)
from ._durations import format_duration
from ._errors import (
    AdminRejectedError,
    AdminUnavailableError,
    DatabaseChangedError,
    DatabaseNotOwnedError,
    KubeConflictError,
    KubeError,
)
from ._kube import KubeClient, decode_secret_data

log = logging.getLogger("turso_operator")


@dataclass
class StatusPatch:
    """Conditions and fields to write, plus the events their transitions deserve."""

    body: kopf.Body
    generation: int | None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, body: kopf.Body) -> StatusPatch:
        status = body.get("status") or {}
        return cls(body, body.meta.get("generation"), [dict(c) for c in status.get("conditions") or []])

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self.conditions, changed = set_condition(
            self.conditions, type_, status=ok, reason=reason, message=message, generation=self.generation
        )
        if changed:
            emit = kopf.info if ok else kopf.warn
            emit(self.body, reason=reason, message=f"{type_}={ok}: {message}")

    def is_true(self, type_: str) -> bool:
        """Whether condition ``type_`` is currently ``True`` (as collected so far)."""
        return is_condition_true(self.conditions, type_)

    def not_ready(self, patch: kopf.Patch, reason: str, message: str, phase: str) -> None:
        """``Ready=False`` with ``reason``, the matching phase, and the whole status written."""
        self.condition(ConditionType.READY, False, reason, message)
        self.fields.update(phase=phase, phaseReason=reason)
        self.apply(patch)

    def apply(self, patch: kopf.Patch) -> None:
        patch.status["conditions"] = self.conditions
        for key, value in self.fields.items():
            patch.status[key] = value


@dataclass
class Reconciler:
    config: OperatorConfig
    admin: AdminClient
    kube: KubeClient

    async def ensure_database(
        self, desired: DesiredNamespace, status: StatusPatch, *, check_exists: bool, known_for: object = None
    ) -> NamespaceView:
        """Create (idempotent) as this Kubernetes namespace's, then converge lock and ttl;
        ``Recreated`` when drift removed it.

        Returns the server's view of the database (its ``createdAt`` says which database it is).
        :class:`DatabaseNotOwnedError` when turso-server keeps it for another owner, or has it
        with no owner and ``known_for`` (``status.credentialsFor``) does not say this resource
        provisioned that very database (:meth:`claim`)."""
        recreated = check_exists and await self.admin.get(desired.database) is None
        view = await self.claim(desired, known_for)
        if view.locked != desired.locked:
            await self.admin.set_locked(desired.database, desired.locked)
        if view.ttl != desired.ttl:
            await self.admin.set_ttl(desired.database, desired.ttl)
        if recreated:
            status.condition(
                ConditionType.PROVISIONED,
                True,
                Reason.RECREATED,
                f"database {desired.database} was missing on turso-server and has been recreated",
            )
        else:
            status.condition(
                ConditionType.PROVISIONED,
                True,
                _keep_reason(status, ConditionType.PROVISIONED, Reason.PROVISIONED),
                f"database {desired.database} exists on turso-server",
            )
        return view

    async def claim(self, desired: DesiredNamespace, known_for: object) -> NamespaceView:
        """``admin.create`` with owner = the resource's Kubernetes namespace: the first create of a
        database records that owner on turso-server for good, so a later claim from another
        namespace is refused (``owner mismatch``) whatever the order the operator sees them in.

        A database with no owner (made before owners, by hand, or auto-provisioned) is adopted
        only when ``known_for`` says this resource's token was minted for that very database
        (its name and ``createdAt``): a TursoNamespace provisioned by an operator without owners.
        Anything else needs an admin's ``POST /v1/namespaces/{name}/owner``.
        """
        database, owner = desired.database, desired.namespace
        try:
            view = await self.admin.create(database, owner=owner)
        except DatabaseNotOwnedError as exc:
            if exc.code != NOT_OWNED:
                raise
            current = await self.admin.get(database)
            if current is None:  # gone meanwhile: create it afresh
                return await self.claim(desired, known_for)
            if not provisioned(known_for, database, current):
                raise DatabaseNotOwnedError(
                    f"database {database} exists on turso-server with no owner (made by hand, "
                    "auto-provisioned, or kept by an earlier server); an admin gives it to Kubernetes "
                    f"namespace {owner} with POST /v1/namespaces/{database}/owner",
                    status=exc.status,
                    code=exc.code,
                ) from None
            log.info("database %s has no owner and was provisioned by %s: adopted", database, owner)
            view = await self.admin.create(database, owner=owner, adopt=True)
        if view.owner != owner:  # a server without owners ignores ours: it cannot keep tenants apart
            raise AdminRejectedError(
                f"turso-server did not record {owner} as the owner of database {database}; "
                "upgrade turso-server (it needs database owners)"
            )
        return view

    async def ensure_secret(
        self,
        desired: DesiredNamespace,
        status: StatusPatch,
        known_hash: str | None,
        *,
        known_for: object,
        minted_for: dict[str, Any],
        known_expires: object = None,
    ) -> tuple[str, dict[str, Any], str | None]:
        """Write (or restore) the Secret; return the hash of the token it holds, what that token
        was minted for (the new ``credentialsFor``) and when it expires (``credentialsExpiresAt``,
        ``None``: never).

        The token is minted again when the Secret has none, when it is not the one status knows
        (``known_hash``: edited), or when it was minted for something else: ``known_for`` (the
        status' ``credentialsFor``) differs from ``minted_for`` (:func:`credentials_for`: the
        database's incarnation, its token generation and ``spec.access``), e.g. an ``rw`` token
        after ``access: ro``, or one whose database's tokens were revoked on the server.

        Every mint but a renewal (below) revokes the database's earlier tokens (``revokeOthers``):
        the Secret's token is the only namespace token that opens it, so the ``rw`` token a pod read
        before ``access: ro`` is refused, and so is one minted by a run that stopped before it wrote
        the Secret (status still says what was wanted, so the next run mints, and revokes, again).

        With ``TURSO_TOKEN_LIFETIME`` set every mint sends it as ``expiresIn``, and a token that is
        otherwise current but has less than a third of its lifetime left (``known_expires``: status'
        ``credentialsExpiresAt``) is renewed: minted again WITHOUT ``revokeOthers``, because running
        pods keep reading the old token from their Secret volume until the kubelet refreshes it;
        the old one stops working when it expires.
        """
        current = await self.kube.get_secret(desired.namespace, desired.secret_name)
        if current is not None and not _owned_by(current, desired):
            raise KubeConflictError(
                f"Secret {desired.secret_name} exists and is not managed by this TursoNamespace; "
                "choose another spec.secretName"
            )
        current_data = decode_secret_data(current) if current else {}
        token = current_data.get(SecretKey.SERVER_TOKEN)
        retargeted = recorded_credentials_for(known_for) != minted_for
        lifetime = self.config.token_lifetime
        expires_at = str(known_expires) if lifetime and known_expires else None
        stale = not token or token_hash(token) != known_hash or retargeted
        # No recorded expiry: a token that never expires (or the shared one) has nothing to renew.
        renew = not stale and bool(expires_at) and renewal_due(expires_at, lifetime)
        if not token or stale or renew:
            # New Secret, an edited token, or one minted for another access level, an earlier
            # database of this name or a revoked generation: mint a fresh scoped token that
            # revokes every other (or use the shared one).
            # For the database the create just checked (its owner, its createdAt) or none: one
            # deleted and created again for another owner meanwhile is not this resource's.
            minted = await self.admin.mint_token(
                desired.database,
                desired.access,
                revoke_others=not renew,
                owner=desired.namespace,
                created_at=minted_for.get("databaseCreatedAt") or None,
                expires_in=format_duration(lifetime) if lifetime else None,
            )
            if minted is None:
                token, expires_at = self._shared_token(desired, status), None
            else:
                token, expires_at = minted.token, minted.expires_at
                if minted.generation is None:
                    log.warning(
                        "turso-server reports no token generation for %s: it cannot revoke, so the "
                        "database's previous token stays valid; upgrade turso-server",
                        desired.database,
                    )
                else:
                    minted_for = {**minted_for, "tokenGeneration": minted.generation}
        wanted = secret_data(desired, self.config.server_url, token)
        body = secret_body(desired, wanted)
        kopf.adopt(body, owner=status.body)  # owner reference: the Secret goes with the resource
        if current is None:
            try:
                await self.kube.create_secret(desired.namespace, body)
            except KubeConflictError:
                # Created meanwhile (e.g. by a previous run of ours): converge with a replace.
                await self.kube.replace_secret(desired.namespace, desired.secret_name, body)
            if status.is_true(ConditionType.CREDENTIALS_READY):  # it was there before: say it came back
                kopf.info(
                    status.body,
                    reason=Reason.SECRET_RESTORED,
                    message=f"Secret {desired.secret_name} was missing and has been recreated",
                )
            # A first write has no event of its own: CredentialsReady turning True says it.
        elif current_data != wanted or _drifted_metadata(current, body):
            body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            await self.kube.replace_secret(desired.namespace, desired.secret_name, body)
            if renew:
                kopf.info(
                    status.body,
                    reason=Reason.SECRET_WRITTEN,
                    message=f"Secret {desired.secret_name}: token renewed before it expires "
                    f"(the previous one stays valid until {known_expires})",
                )
            elif retargeted and token_hash(current_data.get(SecretKey.SERVER_TOKEN) or "") == known_hash:
                kopf.info(
                    status.body,
                    reason=Reason.SECRET_WRITTEN,
                    message=f"Secret {desired.secret_name}: token minted again for database "
                    f"{desired.database} (access {desired.access})",
                )
            else:
                kopf.info(
                    status.body,
                    reason=Reason.SECRET_RESTORED,
                    message=f"Secret {desired.secret_name} restored",
                )
        status.condition(
            ConditionType.CREDENTIALS_READY,
            True,
            Reason.SECRET_WRITTEN,
            f"connection published in Secret {desired.secret_name}",
        )
        return token_hash(token), minted_for, expires_at

    def _shared_token(self, desired: DesiredNamespace, status: StatusPatch) -> str:
        """turso-server mints no scoped tokens: the shared data token, which opens every database,
        only when the operator was given one (``TURSO_SERVER_TOKEN``: the chart's
        ``scopedTokens=false``), with a warning and a Warning Event; otherwise refused
        (``ServerRejected``), so a tenant never gets it by accident."""
        if not self.config.data_token:
            raise AdminRejectedError(
                f"turso-server mints no scoped token for database {desired.database} (no signing key, "
                "an older server, or something else answering on the admin URL) and TURSO_SERVER_TOKEN "
                "is not set: no token handed out"
            )
        message = (
            f"Secret {desired.secret_name} holds the shared data token, which opens every database: "
            "turso-server mints no scoped tokens"
        )
        log.warning("%s/%s: %s", desired.namespace, desired.name, message)
        kopf.warn(status.body, reason=Reason.SHARED_TOKEN, message=message)
        return self.config.data_token

    def retry_delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` of a failed step: capped exponential, jittered.

        Capped at the resync period when that is shorter than :data:`BACKOFF_MAX_SECONDS`: the
        drift timer reconciles every object that often anyway.
        """
        cap = min(BACKOFF_MAX_SECONDS, max(BACKOFF_INITIAL_SECONDS, self.config.resync_seconds))
        return backoff_delay(attempt, cap=cap)

    async def reconcile(
        self, desired: DesiredNamespace, body: kopf.Body, patch: kopf.Patch, *, drift: bool, attempt: int = 0
    ) -> None:
        """Database, Secret, then ``Ready``; a failure sets ``Ready=False`` with its reason and
        raises kopf's retry class, ``attempt`` (kopf's ``retry``) choosing the backoff step."""
        status = StatusPatch.start(body)
        known = body.get("status") or {}
        known_hash = known.get("credentialsHash")
        url = database_url(self.config.server_url, desired.database)
        status.fields.update(
            database=desired.database,
            databaseUrl=url,
            secretName=desired.secret_name,
            lastCheckedAt=now_iso(),
        )
        try:
            known_for = known.get("credentialsFor")
            view = await self.ensure_database(desired, status, check_exists=drift, known_for=known_for)
            wanted_for = credentials_for(
                desired, view.created_at, view.token_generation, self.config.token_lifetime
            )
            credentials_hash, minted_for, expires_at = await self.ensure_secret(
                desired,
                status,
                known_hash,
                known_for=known_for,
                minted_for=wanted_for,
                known_expires=known.get("credentialsExpiresAt"),
            )
            status.fields.update(
                credentialsHash=credentials_hash,
                # Status is written as a merge patch: a null removes the lifetime an earlier token
                # was minted with (absent would keep it, and every pass would mint again).
                credentialsFor={"tokenLifetime": None, **minted_for},
                credentialsExpiresAt=expires_at,
            )
        except DatabaseNotOwnedError as exc:
            message = f"database {desired.database} is not this Kubernetes namespace's: {exc}"
            await self._withdraw_secret(desired, status)
            status.not_ready(patch, Reason.DATABASE_CONFLICT, message, Phase.FAILED)
            raise kopf.TemporaryError(message, delay=CONFLICT_RETRY_SECONDS) from exc
        except DatabaseChangedError as exc:
            # Deleted and created again between the create that checked it and the mint: nothing
            # minted; the next reconcile checks the new database's owner first.
            message = f"database {desired.database} changed on turso-server while its token was minted: {exc}"
            status.not_ready(patch, Reason.DATABASE_CONFLICT, message, Phase.PENDING)
            raise kopf.TemporaryError(message, delay=self.retry_delay(attempt)) from exc
        except AdminUnavailableError as exc:
            message = f"turso-server unavailable: {exc}"
            status.not_ready(patch, Reason.SERVER_UNAVAILABLE, message, Phase.PENDING)
            raise kopf.TemporaryError(message, delay=self.retry_delay(attempt)) from exc
        except AdminRejectedError as exc:
            message = f"turso-server rejected the database: {exc}"
            status.not_ready(patch, Reason.SERVER_REJECTED, message, Phase.FAILED)
            raise kopf.PermanentError(message) from exc
        except KubeError as exc:
            message = f"cannot write Secret {desired.secret_name}: {exc}"
            status.condition(ConditionType.CREDENTIALS_READY, False, Reason.SECRET_FAILED, message)
            status.not_ready(patch, Reason.SECRET_FAILED, message, Phase.PENDING)
            raise kopf.TemporaryError(message, delay=self.retry_delay(attempt)) from exc
        status.condition(
            ConditionType.READY, True, Reason.READY, f"database {desired.database} is ready at {url}"
        )
        status.fields.update(
            phase=Phase.READY, phaseReason=Reason.READY, observedGeneration=status.generation
        )
        status.apply(patch)

    async def ensure_runtime_credentials(self) -> bool:
        """Write the runtime's Secret when missing, incomplete or minted for other scopes.

        ``TURSO_SERVER_TOKEN`` opens ``config.runtime_scope`` (the plugins' databases) and
        ``RUNTIME_TURSO_SERVER_TOKEN``, present only with a ``worker_scope``, opens the worker
        apps' databases. ``True`` when it wrote the Secret. With ``TURSO_TOKEN_LIFETIME`` set both
        expire, the Secret's ``turso.buntime.io/expires-at`` annotation says when (the earlier), and
        both are minted again once less than a third of the lifetime is left (scope tokens are
        never revoked: the old ones work until they expire). A Secret of that name that is not ours
        is never touched (:class:`KubeConflictError`).

        Every pass first makes sure the scopes' exact-named databases exist as explicit ones
        (:meth:`ensure_runtime_databases`), also when the Secret is current: one written by an
        earlier operator, or a database deleted since, is converged too.
        """
        cfg = self.config
        if not cfg.runtime_credentials or not cfg.operator_namespace:
            return False
        await self.ensure_runtime_databases()
        namespace, name = cfg.operator_namespace, cfg.runtime_credentials
        wanted_hash = scope_hash(
            cfg.runtime_scope, cfg.worker_scope, cfg.token_lifetime, owner=runtime_owner(namespace)
        )
        wanted_keys = {SecretKey.SERVER_TOKEN} | (
            {SecretKey.RUNTIME_SERVER_TOKEN} if cfg.worker_scope else set()
        )
        current = await self.kube.get_secret(namespace, name)
        if current is not None:
            metadata = current.get("metadata") or {}
            labels = metadata.get("labels") or {}
            if (
                labels.get(MANAGED_BY_LABEL) != MANAGED_BY
                or labels.get(RUNTIME_CREDENTIALS_LABEL) != RUNTIME_CREDENTIALS_VALUE
            ):
                raise KubeConflictError(
                    f"Secret {namespace}/{name} exists and is not the runtime's credentials"
                )
            data = decode_secret_data(current)
            annotations = metadata.get("annotations") or {}
            if (
                annotations.get(SCOPE_ANNOTATION) == wanted_hash
                and set(data) == wanted_keys
                and all(data.values())
                and not (
                    EXPIRES_ANNOTATION in annotations
                    and renewal_due(annotations[EXPIRES_ANNOTATION], cfg.token_lifetime)
                )
            ):
                return False
        token, expires_at = await self._runtime_token(cfg.runtime_scope)
        tokens = {SecretKey.SERVER_TOKEN: token}
        if cfg.worker_scope:
            tokens[SecretKey.RUNTIME_SERVER_TOKEN], worker_expires = await self._runtime_token(
                cfg.worker_scope
            )
            if worker_expires and (expires_at is None or worker_expires < expires_at):
                expires_at = worker_expires
        body = runtime_secret_body(name, namespace, tokens, wanted_hash, expires_at)
        if current is None:
            try:
                await self.kube.create_secret(namespace, body)
            except KubeConflictError:
                await self.kube.replace_secret(namespace, name, body)  # created meanwhile: converge
        else:
            body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            await self.kube.replace_secret(namespace, name, body)
        log.info(
            "runtime credentials written to Secret %s/%s (scopes %s; workers %s)",
            namespace,
            name,
            ",".join(cfg.runtime_scope),
            ",".join(cfg.worker_scope) or "none",
        )
        return True

    async def ensure_runtime_databases(self) -> tuple[NamespaceView, ...]:
        """Create the runtime's exact-named databases (both scopes; not ``prefix*`` entries) as
        explicit, locked databases owned by :func:`runtime_owner`; returns their views.

        Auto-provisioned on first use instead, they would be ``origin=auto``: archived by the GC once
        idle past ``TURSO_AUTO_IDLE_DURATION`` (the next open then starts an empty database), and
        never created at all with auto-provisioning off. An existing database with no owner (auto-
        provisioned by an earlier runtime, or made by hand) is adopted: the admin create promotes it
        to explicit + locked and records the owner, its data untouched. Those names are the
        runtime's by configuration (its token opens them, and no TursoNamespace may claim them).
        One recorded as another owner's (a TursoNamespace's from before the name was reserved, or
        another release's runtime) is :class:`DatabaseNotOwnedError`, and nothing is changed.
        """
        cfg = self.config
        if not cfg.runtime_credentials or not cfg.operator_namespace:
            return ()
        owner = runtime_owner(cfg.operator_namespace)
        views = []
        for database in runtime_databases(cfg.runtime_scope, cfg.worker_scope):
            try:
                views.append(await self.admin.create(database, owner=owner, adopt=True))
            except DatabaseNotOwnedError as exc:
                raise DatabaseNotOwnedError(
                    f"database {database} of the runtime's scopes is another owner's on turso-server "
                    f"({exc}); an admin gives it to the runtime with POST /v1/namespaces/{database}/owner "
                    f'{{"owner":"{owner}"}}, or the name is dropped from the scope',
                    status=exc.status,
                    code=exc.code,
                ) from exc
        return tuple(views)

    async def _runtime_token(self, scope: tuple[str, ...]) -> tuple[str, str | None]:
        """A token for ``scope`` and when it expires (``None``: never)."""
        lifetime = self.config.token_lifetime
        # Recorded on a database only a prefix (worker-*) names, created by its first request.
        owner = runtime_owner(ns) if (ns := self.config.operator_namespace) else None
        minted = await self.admin.mint_scope(
            scope, Access.READ_WRITE, expires_in=format_duration(lifetime) if lifetime else None, owner=owner
        )
        if minted:
            return minted.token, minted.expires_at
        # A server without a signing key (the chart's tursoServer.auth.scopedTokens=false, an
        # explicit opt-out) mints nothing: the shared data token is all there is, as for apps.
        if self.config.data_token:
            return self.config.data_token, None
        raise AdminRejectedError("turso-server mints no scoped tokens and TURSO_SERVER_TOKEN is unset")

    def reserved(self, desired: DesiredNamespace, body: kopf.Body, patch: kopf.Patch) -> None:
        """The database is in the release runtime's scope: serving it to an app would share it."""
        status = StatusPatch.start(body)
        message = (
            f"database {desired.database} is reserved for the release's runtime "
            "(TURSO_RUNTIME_NAMESPACES / TURSO_RUNTIME_WORKER_NAMESPACES): choose another spec.database"
        )
        status.fields["database"] = desired.database
        status.not_ready(patch, Reason.RESERVED_DATABASE, message, Phase.FAILED)

    def invalid(self, body: kopf.Body, patch: kopf.Patch, message: str) -> None:
        """The spec cannot be reconciled (validation bypassed): ``Ready=False/InvalidSpec``, Failed."""
        StatusPatch.start(body).not_ready(patch, Reason.INVALID_SPEC, message, Phase.FAILED)

    def conflict(self, desired: DesiredNamespace, body: kopf.Body, patch: kopf.Patch, owner: str) -> None:
        """Another, older resource owns this database: say so and touch nothing."""
        status = StatusPatch.start(body)
        message = f"database {desired.database} is already claimed by TursoNamespace {owner}"
        status.fields["database"] = desired.database
        status.not_ready(patch, Reason.DATABASE_CONFLICT, message, Phase.FAILED)

    async def _withdraw_secret(self, desired: DesiredNamespace, status: StatusPatch) -> None:
        """A claim turso-server refused keeps no token of the database: our Secret (if any, e.g.
        after an admin gave the database to another owner) is removed, and status forgets it."""
        try:
            current = await self.kube.get_secret(desired.namespace, desired.secret_name)
            if current is not None and _owned_by(current, desired):
                await self.kube.delete_secret(desired.namespace, desired.secret_name)
        except KubeError as exc:
            log.warning("cannot remove Secret %s/%s: %s", desired.namespace, desired.secret_name, exc)
            return
        if current is not None or status.is_true(ConditionType.CREDENTIALS_READY):
            status.condition(
                ConditionType.CREDENTIALS_READY,
                False,
                Reason.DATABASE_CONFLICT,
                f"no Secret: database {desired.database} is not this Kubernetes namespace's",
            )
        status.fields.update(credentialsHash=None, credentialsFor=None, credentialsExpiresAt=None)

    async def finalize(
        self, desired: DesiredNamespace, *, archive: bool = True, known_for: object = None
    ) -> None:
        """On delete: archive (or retain) the database, and always remove the Secret.

        Only a database this resource owns on turso-server is archived: recorded as its Kubernetes
        namespace's, or with no owner and provisioned by it (``known_for``, as in :meth:`claim`)."""
        if archive and desired.deletion_policy == DeletionPolicy.ARCHIVE:
            view = await self.admin.get(desired.database)
            if view is None:
                log.info("database %s was already gone", desired.database)
            elif view.owner != desired.namespace and not (
                view.owner is None and provisioned(known_for, desired.database, view)
            ):
                log.info("database %s is not %s's: left as is", desired.database, desired.namespace)
            else:
                archived = await self.admin.delete(desired.database)
                log.info("database %s %s", desired.database, "archived" if archived else "was already gone")
        current = await self.kube.get_secret(desired.namespace, desired.secret_name)
        if current is not None and _owned_by(current, desired):  # never delete someone else's Secret
            await self.kube.delete_secret(desired.namespace, desired.secret_name)


def provisioned(known_for: object, database: str, view: NamespaceView) -> bool:
    """Whether ``status.credentialsFor`` says a token was minted for this very database (its name
    and ``createdAt``): what an operator before database owners left on what it provisioned."""
    return (
        isinstance(known_for, Mapping)
        and bool(view.created_at)
        and known_for.get("database") == database
        and known_for.get("databaseCreatedAt") == view.created_at
    )


def _keep_reason(status: StatusPatch, type_: str, default: str) -> str:
    """Keep ``Recreated`` visible once set, instead of flipping back on the next pass."""
    for condition in status.conditions:
        if condition.get("type") == type_ and condition.get("status") == ConditionStatus.TRUE:
            return str(condition.get("reason") or default)
    return default


def _owned_by(secret: dict[str, Any], desired: DesiredNamespace) -> bool:
    """Ours by our labels, or by an owner reference to this resource (labels may have been edited)."""
    metadata = secret.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(OWNER_LABEL) == desired.name:
        return True
    refs = metadata.get("ownerReferences") or []
    return any(r.get("kind") == KIND and r.get("name") == desired.name for r in refs)


def _drifted_metadata(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    labels = (current.get("metadata") or {}).get("labels") or {}
    return any(labels.get(k) != v for k, v in wanted["metadata"]["labels"].items())
