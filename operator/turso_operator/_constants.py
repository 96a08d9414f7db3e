"""Names the operator shares with the CRD, the chart and the webhook: never inline these strings."""

from __future__ import annotations

from typing import Final

GROUP: Final = "turso.buntime.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "tursonamespaces"
KIND: Final = "TursoNamespace"

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
#: Hash of the scopes the runtime Secret's tokens were minted for: a changed scope re-mints.
SCOPE_ANNOTATION: Final = "turso.buntime.io/scope-hash"
#: The webhook handler id is also the URL path the chart's MutatingWebhookConfiguration uses.
WEBHOOK_ID: Final = "inject-turso"
DATA_DIR: Final = "/data/turso"
DATA_VOLUME: Final = "turso-data"


class ConditionType:
    READY: Final = "Ready"
    PROVISIONED: Final = "Provisioned"
    CREDENTIALS_READY: Final = "CredentialsReady"


class Reason:
    PROVISIONED: Final = "Provisioned"
    RECREATED: Final = "Recreated"
    SERVER_UNAVAILABLE: Final = "ServerUnavailable"
    SERVER_REJECTED: Final = "ServerRejected"
    DATABASE_CONFLICT: Final = "DatabaseConflict"
    INVALID_SPEC: Final = "InvalidSpec"
    SECRET_WRITTEN: Final = "SecretWritten"
    SECRET_RESTORED: Final = "SecretRestored"
    SECRET_FAILED: Final = "SecretFailed"
    RESERVED_DATABASE: Final = "ReservedDatabase"
    WAITING: Final = "WaitingForProvisioning"
    READY: Final = "Ready"


class Phase:
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
