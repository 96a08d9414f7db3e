"""The buntime operator: ``TursoNamespace`` → a database on turso-server, a Secret, pod injection.

Layers: ``_constants`` and ``_builders`` (pure) → ``_reconcile`` (steps) → ``_admin`` / ``_kube``
(I/O) ; ``_handlers`` wires them into kopf. The operator talks to turso-server only through
:class:`AdminClient`.
"""

from ._admin import AdminClient, NamespaceView
from ._builders import DesiredNamespace, desired_namespace, mutate_pod_spec, secret_data
from ._config import OperatorConfig, OperatorConfigError
from ._constants import GROUP, INJECT_LABEL, INJECTED_ANNOTATION, KIND, PLURAL, VERSION, WEBHOOK_ID

__all__ = [
    "GROUP",
    "INJECTED_ANNOTATION",
    "INJECT_LABEL",
    "KIND",
    "PLURAL",
    "VERSION",
    "WEBHOOK_ID",
    "AdminClient",
    "DesiredNamespace",
    "NamespaceView",
    "OperatorConfig",
    "OperatorConfigError",
    "desired_namespace",
    "mutate_pod_spec",
    "secret_data",
]
