"""Names the operator shares with the CRD, the chart and the webhook: never inline these strings."""

from __future__ import annotations

from typing import Final

GROUP: Final = "turso.buntime.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "tursonamespaces"
KIND: Final = "TursoNamespace"

#: On a TursoNamespace: the operator instance (``TURSO_INSTANCE``) that serves it. Absent: the
#: default instance (empty ``TURSO_INSTANCE``) serves it. Two operators never serve one object.
INSTANCE_LABEL: Final = "turso.buntime.io/instance"
#: Pods carrying this label (value: a TursoNamespace name) get the connection injected.
INJECT_LABEL: Final = "turso.buntime.io/inject"
#: Set on injected pods; its presence makes a second pass a no-op.
INJECTED_ANNOTATION: Final = "turso.buntime.io/injected"
#: Labels on the Secrets we write.
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "buntime-operator"
OWNER_LABEL: Final = "turso.buntime.io/tursonamespace"
#: On the release runtime's credentials Secret (it has no TursoNamespace owner).
RUNTIME_CREDENTIALS_LABEL: Final = "turso.buntime.io/runtime-credentials"
RUNTIME_CREDENTIALS_VALUE: Final = "true"
#: The owner turso-server records on the runtime's exact-named databases: ``<prefix><operator
#: namespace>``. The ``:`` is never in a Kubernetes namespace name (a DNS label), which is what a
#: TursoNamespace's database records, so no TursoNamespace can ever claim one of them.
RUNTIME_OWNER_PREFIX: Final = "runtime:"
#: Hash of the scopes the runtime Secret's tokens were minted for: a changed scope re-mints.
SCOPE_ANNOTATION: Final = "turso.buntime.io/scope-hash"
#: A token with a lifetime is renewed once less than ``1/RENEW_FRACTION_DIVISOR`` of it is left.
RENEW_FRACTION_DIVISOR: Final = 3
#: On the runtime's Secret: when its tokens expire (RFC 3339 UTC; absent: never).
EXPIRES_ANNOTATION: Final = "turso.buntime.io/expires-at"
#: ``"true"`` on a TursoNamespace lets its finalizer go without archiving the database (the way
#: out when turso-server is gone for good or refuses the admin token).
SKIP_ARCHIVE_ANNOTATION: Final = "turso.buntime.io/skip-archive"
#: The webhook handler id is also the URL path the chart's MutatingWebhookConfiguration uses.
WEBHOOK_ID: Final = "inject-turso"
DATA_DIR: Final = "/data/turso"
DATA_VOLUME: Final = "turso-data"
#: The connection Secret's token keys are mounted read-only here (``<dir>/<key>``), from a volume of
#: this name: the kubelet refreshes the files when the operator re-mints, env would stay frozen.
TOKEN_DIR: Final = "/var/run/secrets/buntime/turso"
TOKEN_VOLUME: Final = "turso-token"
#: A TursoNamespace without ``spec.secretName`` publishes its connection in ``<name><suffix>``.
SECRET_NAME_SUFFIX: Final = "-turso"
#: The Secret type of app Secrets (servicebinding.io: ``type`` entry ``turso``).
SECRET_TYPE: Final = "servicebinding.io/turso"

#: Retries after a failure (turso-server unreachable, a Secret call failed) wait a capped
#: exponential backoff with jitter: INITIAL, twice that, 4 times… up to MAX (or the resync period when
#: shorter: the drift loop looks again by then anyway), each delay drawn from its upper half.
BACKOFF_INITIAL_SECONDS: Final = 1.0
BACKOFF_MAX_SECONDS: Final = 60.0
#: Waits that depend on a person changing something (a conflict, a reserved name): fixed.
CONFLICT_RETRY_SECONDS: Final = 30.0
RESERVED_RETRY_SECONDS: Final = 60.0


class ConditionType:
    """``status.conditions[].type``, in the order they are listed."""

    READY: Final = "Ready"
    PROVISIONED: Final = "Provisioned"
    CREDENTIALS_READY: Final = "CredentialsReady"
    ORDER: Final = (READY, PROVISIONED, CREDENTIALS_READY)


class ConditionStatus:
    """``status.conditions[].status`` (Kubernetes writes booleans as these strings)."""

    TRUE: Final = "True"
    FALSE: Final = "False"


class Reason:
    """``reason`` of a condition, also ``status.phaseReason`` and the reason of its Events."""

    PROVISIONED: Final = "Provisioned"
    RECREATED: Final = "Recreated"
    SERVER_UNAVAILABLE: Final = "ServerUnavailable"
    SERVER_REJECTED: Final = "ServerRejected"
    DATABASE_CONFLICT: Final = "DatabaseConflict"
    INVALID_SPEC: Final = "InvalidSpec"
    SECRET_WRITTEN: Final = "SecretWritten"
    SECRET_RESTORED: Final = "SecretRestored"
    SECRET_FAILED: Final = "SecretFailed"
    SHARED_TOKEN: Final = "SharedToken"
    RESERVED_DATABASE: Final = "ReservedDatabase"
    #: An Event only (no condition): the archive on delete failed (server down or refusing); retried.
    ARCHIVE_FAILED: Final = "ArchiveFailed"
    READY: Final = "Ready"


class Phase:
    """``status.phase``: the one-word summary."""

    PENDING: Final = "Pending"
    READY: Final = "Ready"
    FAILED: Final = "Failed"


class SecretKey:
    SERVER_URL: Final = "TURSO_SERVER_URL"
    SERVER_TOKEN: Final = "TURSO_SERVER_TOKEN"
    NAMESPACE: Final = "TURSO_NAMESPACE"
    DATABASE_URL: Final = "TURSO_DATABASE_URL"
    RUNTIME_SERVER_URL: Final = "RUNTIME_TURSO_SERVER_URL"
    RUNTIME_SERVER_TOKEN: Final = "RUNTIME_TURSO_SERVER_TOKEN"
    # servicebinding.io well-known entries
    TYPE: Final = "type"
    PROVIDER: Final = "provider"
    URI: Final = "uri"


class DeletionPolicy:
    """``spec.deletionPolicy``."""

    ARCHIVE: Final = "Archive"
    RETAIN: Final = "Retain"
    ALL: Final = (ARCHIVE, RETAIN)


class Access:
    """``spec.access``: what the minted token may do."""

    READ_WRITE: Final = "rw"
    READ_ONLY: Final = "ro"
    ALL: Final = (READ_WRITE, READ_ONLY)


class FailurePolicy:
    """``TURSO_INJECT_FAILURE_POLICY``: what the webhook does with a pod it cannot serve."""

    FAIL: Final = "Fail"
    IGNORE: Final = "Ignore"
    ALL: Final = (FAIL, IGNORE)
