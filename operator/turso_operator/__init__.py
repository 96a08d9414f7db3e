"""The buntime operator: ``TursoNamespace`` → a database on turso-server, a Secret, pod injection.

Layers: ``_constants``, ``_builders`` and ``_backoff`` (pure) → ``_reconcile`` (steps) →
``_admin`` / ``_kube`` (I/O); ``_handlers`` wires them into kopf; every error is in ``_errors``.
The operator talks to turso-server only through :class:`AdminClient`.
"""

from ._admin import AdminClient, NamespaceView
from ._builders import DesiredNamespace, desired_namespace, mutate_pod_spec, secret_data
from ._config import OperatorConfig
from ._constants import GROUP, INJECT_LABEL, INJECTED_ANNOTATION, KIND, PLURAL, VERSION, WEBHOOK_ID
from ._errors import (
    AdminError,
    AdminNotFoundError,
    AdminRejectedError,
    AdminUnavailableError,
    InjectionRefusedError,
    KubeConflictError,
    KubeError,
    KubeNotFoundError,
    KubeUnavailableError,
    OperatorConfigError,
    OperatorError,
    SpecError,
)

__all__ = [
    "GROUP",
    "INJECTED_ANNOTATION",
    "INJECT_LABEL",
    "KIND",
    "PLURAL",
    "VERSION",
    "WEBHOOK_ID",
    "AdminClient",
    "AdminError",
    "AdminNotFoundError",
    "AdminRejectedError",
    "AdminUnavailableError",
    "DesiredNamespace",
    "InjectionRefusedError",
    "KubeConflictError",
    "KubeError",
    "KubeNotFoundError",
    "KubeUnavailableError",
    "NamespaceView",
    "OperatorConfig",
    "OperatorConfigError",
    "OperatorError",
    "SpecError",
    "desired_namespace",
    "mutate_pod_spec",
    "secret_data",
]
