"""kopf handlers: the operator's wiring. Handler ids are persisted by kopf: never rename them.

* ``reconcile_tursonamespace`` — create / resume / spec update: database, Secret, status.
* ``repair_drift`` — a timer on TursoNamespace only (never on Pods or Secrets).
* ``finalize_tursonamespace`` — the finalizer: Archive or Retain, Secret removed.
* ``inject-turso`` — the mutating webhook on Pod CREATE.
* ``watch_freshness`` — the liveness probe: fails when the watch stream went quiet.
* ``keep_runtime_credentials`` — startup: a task that keeps the release runtime's Secret
  (tokens scoped to its own databases) written, every resync period.
* ``serve_metrics`` — startup: Prometheus ``/metrics`` on ``TURSO_METRICS_PORT`` (``_metrics``);
  ``ready_objects`` — the index that keeps its Ready-objects gauge current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import kopf

from ._admin import AdminClient
from ._builders import SpecError, desired_namespace, is_injected, mutate_pod_spec, scope_permits
from ._config import OperatorConfig
from ._constants import GROUP, INJECT_LABEL, INJECTED_ANNOTATION, PLURAL, VERSION, WEBHOOK_ID, ConditionType
from ._errors import AdminError, AdminUnavailableError, KubeError
from ._kube import KubeClient
from ._metrics import OperatorMetrics
from ._reconcile import Reconciler

log = logging.getLogger("turso_operator")
CONFIG = OperatorConfig.from_env()


@dataclass
class _State:
    connection: kopf.ConnectionInfo | None = None
    reconciler: Reconciler | None = None
    last_event: float = 0.0
    credentials_task: asyncio.Task[None] | None = None


STATE = _State()
#: Not loop-bound (plain counters), so built at import; its HTTP server starts in ``serve_metrics``.
METRICS = OperatorMetrics()


def reconciler() -> Reconciler:
    if STATE.reconciler is None:
        if STATE.connection is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        admin = AdminClient(CONFIG.admin_url, CONFIG.admin_token, timeout=CONFIG.request_timeout)
        STATE.reconciler = Reconciler(
            CONFIG, admin, KubeClient(STATE.connection, timeout=CONFIG.request_timeout)
        )
    return STATE.reconciler


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere, the kubeconfig. Kept for our own API calls."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    STATE.connection = info
    return info


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.watching.server_timeout = max(30, int(CONFIG.resync_seconds * 2))
    settings.watching.client_timeout = settings.watching.server_timeout + 10
    # kopf's own requests (discovery, the initial list) may wait 5 minutes by default, with no
    # connect timeout: a connection the API server accepts and never answers would stall the
    # operator that long, liveness green since nothing is listed yet. Bound both; kopf retries.
    settings.networking.request_timeout = CONFIG.kube_request_timeout
    settings.networking.connect_timeout = min(10.0, CONFIG.kube_request_timeout)
    settings.posting.level = logging.INFO
    # At most this many objects are reconciled at once (a restart resumes every object). A worker
    # stays for idle_timeout after its last event, holding its slot: kopf's 5 s made 200 objects
    # applied at once go through in bursts of 64 with 3-5 s gaps.
    settings.queueing.worker_limit = 64
    settings.queueing.idle_timeout = 0.5
    if CONFIG.webhook_enabled:
        # The chart renders the MutatingWebhookConfiguration (namespaceSelector, reinvocationPolicy);
        # kopf must serve the endpoint but never manage that object.
        settings.admission.server = kopf.WebhookServer(
            addr="0.0.0.0",
            port=CONFIG.webhook_port,
            host=CONFIG.webhook_host,
            certfile=CONFIG.webhook_cert_file,
            pkeyfile=CONFIG.webhook_key_file,
        )
        settings.admission.managed = None
    log.info("turso operator configured: %r", CONFIG)


@kopf.on.startup()
async def keep_runtime_credentials(**_: Any) -> None:
    """Start the loop that keeps the runtime's Secret written (when TURSO_RUNTIME_SECRET is set)."""
    if CONFIG.runtime_credentials and STATE.credentials_task is None:
        STATE.credentials_task = asyncio.create_task(_runtime_credentials_loop(), name="runtime-credentials")


async def _runtime_credentials_loop() -> None:
    """Check at once, then every resync period; failures are retried sooner and never stop it."""
    while True:
        delay = CONFIG.resync_seconds
        if STATE.connection is None:  # kopf logs in after the startup handlers
            delay = 1.0
        else:
            try:
                await reconciler().ensure_runtime_credentials()
            except (AdminError, KubeError) as exc:
                log.warning("runtime credentials not written yet: %s", exc)
                delay = min(CONFIG.resync_seconds, 10.0)
            except Exception:
                log.exception("runtime credentials check failed")
                delay = min(CONFIG.resync_seconds, 10.0)
        await asyncio.sleep(delay)


@kopf.on.startup()
async def serve_metrics(**_: Any) -> None:
    await METRICS.serve(CONFIG.metrics_port)
    log.info("metrics served on :%d/metrics", CONFIG.metrics_port)


@kopf.on.cleanup()
async def close_clients(**_: Any) -> None:
    await METRICS.aclose()
    if STATE.credentials_task is not None:
        STATE.credentials_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await STATE.credentials_task
        STATE.credentials_task = None
    if STATE.reconciler is not None:
        await STATE.reconciler.admin.aclose()
        await STATE.reconciler.kube.aclose()
        STATE.reconciler = None


def _desired(spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch) -> Any:
    try:
        return desired_namespace(spec, meta)
    except SpecError as exc:
        patch.status["phase"] = "Failed"
        patch.status["phaseReason"] = "InvalidSpec"
        raise kopf.PermanentError(str(exc)) from exc


Claims = kopf.Index[str, tuple[str, str, str]]


@kopf.index(GROUP, VERSION, PLURAL)
def database_claims(spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> dict[str, tuple[str, str, str]]:
    """Which resources claim which database: names are global on turso-server, namespaces are not."""
    database = str(spec.get("database") or meta.get("name"))
    created = str(meta.get("creationTimestamp") or "")
    return {database: (created, str(meta.get("namespace")), str(meta.get("name")))}


def _reserved_for_runtime(database: str) -> bool:
    """In the release runtime's token scopes: an app given it would share the runtime's data."""
    return bool(CONFIG.runtime_credentials) and scope_permits(
        (*CONFIG.runtime_scope, *CONFIG.worker_scope), database
    )


def _conflicting_owner(database: str, meta: kopf.Meta, claims: Claims) -> str | None:
    """The older resource that owns ``database``, if it is not this one (oldest claim wins)."""
    me = (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace")), str(meta.get("name")))
    owner = min([*claims.get(database, []), me])
    return None if owner[1:] == me[1:] else f"{owner[1]}/{owner[2]}"


async def _reconcile(
    spec: kopf.Spec, meta: kopf.Meta, body: kopf.Body, patch: kopf.Patch, claims: Claims, *, drift: bool
) -> None:
    desired = _desired(spec, meta, patch)
    if _reserved_for_runtime(desired.database):
        reconciler().reserved(desired, body, patch)
        raise kopf.TemporaryError(f"database {desired.database} is reserved for the runtime", delay=60)
    owner = _conflicting_owner(desired.database, meta, claims)
    if owner is not None:
        reconciler().conflict(desired, body, patch, owner)
        raise kopf.TemporaryError(f"database {desired.database} is claimed by {owner}", delay=30)
    await reconciler().reconcile(desired, body, patch, drift=drift)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_tursonamespace(
    spec: kopf.Spec, meta: kopf.Meta, body: kopf.Body, patch: kopf.Patch, **kwargs: Any
) -> None:
    with METRICS.reconcile("reconcile_tursonamespace"):
        await _reconcile(spec, meta, body, patch, kwargs["database_claims"], drift=False)


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds)
async def repair_drift(
    spec: kopf.Spec, meta: kopf.Meta, body: kopf.Body, patch: kopf.Patch, **kwargs: Any
) -> None:
    """Recreate a database that vanished from the server; restore an edited or deleted Secret."""
    try:
        with METRICS.reconcile("repair_drift"):
            await _reconcile(spec, meta, body, patch, kwargs["database_claims"], drift=True)
    except kopf.TemporaryError as exc:
        log.warning("drift check for %s/%s postponed: %s", meta.get("namespace"), meta.get("name"), exc)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def finalize_tursonamespace(spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch, **kwargs: Any) -> None:
    with METRICS.reconcile("finalize_tursonamespace"):
        await _finalize(spec, meta, patch, kwargs["database_claims"])


async def _finalize(spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch, claims: Claims) -> None:
    desired = _desired(spec, meta, patch)
    owner = _conflicting_owner(desired.database, meta, claims)
    try:
        # A resource that never owned its database must not archive the owner's data, and none
        # may archive a database of the release's runtime.
        archive = owner is None and not _reserved_for_runtime(desired.database)
        await reconciler().finalize(desired, archive=archive)
    except AdminUnavailableError as exc:
        raise kopf.TemporaryError(f"turso-server unavailable, archive postponed: {exc}", delay=10) from exc


@kopf.index(GROUP, VERSION, PLURAL)
def observed(name: str, **_: Any) -> bool:
    """Every watch event refreshes the liveness clock (the drift timer writes status each period).

    An index rather than an event handler: kopf keeps it current silently, without a log line
    per event, and its size is the number of live objects.
    """
    STATE.last_event = time.monotonic()
    return True


@kopf.index(GROUP, VERSION, PLURAL)
def ready_objects(namespace: str | None, name: str, meta: kopf.Meta, status: kopf.Status, **_: Any) -> bool:
    """Keep ``buntime_operator_ready_objects`` current from every watch event's ``status``.

    An object being deleted stops counting at once; kopf drops it from the index itself when
    the object is gone.
    """
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == ConditionType.READY and c.get("status") == "True" for c in conditions)
    METRICS.observe_ready(f"{namespace}/{name}", None if meta.get("deletionTimestamp") else ready)
    return ready


@kopf.on.probe(id="watch_freshness")
def watch_freshness(**kwargs: Any) -> dict[str, Any]:
    """Fail liveness when objects exist but no watch event arrived for three resync periods."""
    objects = len(kwargs["observed"])
    age = time.monotonic() - STATE.last_event if STATE.last_event else None
    limit = 3 * CONFIG.resync_seconds + CONFIG.liveness_grace_seconds
    if objects > 0 and age is not None and age > limit:
        raise kopf.PermanentError(f"no TursoNamespace watch event for {age:.0f}s (limit {limit:.0f}s)")
    return {"objects": objects, "lastEventAgeSeconds": None if age is None else round(age, 1)}


def _is_skipped_namespace(namespace: str | None) -> bool:
    return namespace in ("kube-system", CONFIG.operator_namespace)


async def inject_turso(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    patch: kopf.Patch,
    warnings: list[str],
    **kwargs: Any,
) -> None:
    namespace = meta.get("namespace") or kwargs.get("namespace")
    if _is_skipped_namespace(namespace) or is_injected(meta.get("annotations")):
        return
    target = str((meta.get("labels") or {}).get(INJECT_LABEL, ""))
    try:
        secret_name = await _ready_secret_name(str(namespace or "default"), target)
    except _InjectionRefused as refused:
        if CONFIG.inject_failure_policy == "Ignore":
            warnings.append(f"turso connection not injected: {refused}")
            return
        raise kopf.AdmissionError(f"turso connection cannot be injected: {refused}", code=403) from None
    mutated = mutate_pod_spec(spec, secret_name)
    patch.spec["containers"] = mutated.get("containers")
    if "volumes" in mutated:
        patch.spec["volumes"] = mutated["volumes"]
    patch.metadata.setdefault("annotations", {})[INJECTED_ANNOTATION] = target


if CONFIG.webhook_enabled:
    # Registered only with a webhook server to serve it: kopf refuses to start otherwise.
    kopf.on.mutate(
        "", "v1", "pods", id=WEBHOOK_ID, operations=["CREATE"], labels={INJECT_LABEL: kopf.PRESENT}
    )(inject_turso)


class _InjectionRefused(Exception):
    """Why a labelled pod cannot get its connection."""


async def _ready_secret_name(namespace: str, target: str) -> str:
    """The Secret of the Ready TursoNamespace ``target``, read once; refused otherwise."""
    if not target:
        raise _InjectionRefused(f"label {INJECT_LABEL} must name a TursoNamespace")
    try:
        tns = await reconciler().kube.get_tursonamespace(namespace, target)
    except KubeError as exc:
        raise _InjectionRefused(f"cannot read TursoNamespace {namespace}/{target}: {exc}") from exc
    if tns is None:
        raise _InjectionRefused(f"TursoNamespace {namespace}/{target} does not exist")
    status = tns.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == ConditionType.READY and c.get("status") == "True" for c in conditions)
    if not ready:
        raise _InjectionRefused(f"TursoNamespace {namespace}/{target} is not Ready yet")
    return str(status.get("secretName") or f"{target}-turso")
