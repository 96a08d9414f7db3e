"""kopf handlers: the operator's wiring. Handler ids are persisted by kopf: never rename them.

Importing this module registers nothing and reads nothing: :func:`build_registry` registers the
handlers for one :class:`OperatorConfig` (the drift period and whether the webhook exists depend
on it), and ``cli`` runs kopf with that registry and a memo holding the config. The ``configure``
startup handler builds everything loop-bound from it — the admin client, the Kubernetes client
(logged in with kopf's own credentials), the reconciler, the metrics — into an
:class:`OperatorState` in the memo; ``close_clients`` (cleanup) closes them.

* ``reconcile_tursonamespace`` — create / resume / spec update: database, Secret, status.
* ``repair_drift`` — every resync period, for each TursoNamespace (never Pods or Secrets): a loop
  of our own over the ``drift_objects`` index, not a kopf timer, because kopf puts its finalizer
  on every object a timer serves, and a Retain object needs none.
* ``finalize_tursonamespace`` — the finalizer, on ``deletionPolicy: Archive`` objects only:
  archive, Secret removed; the annotation ``turso.buntime.io/skip-archive`` lets it go unarchived.
  A Retain object carries no finalizer (its Secret goes with its owner reference), so it is
  deleted even with the operator gone; kopf drops the finalizer from one that no longer needs it.
* ``inject-turso`` — the mutating webhook on Pod CREATE (only with ``TURSO_WEBHOOK_ENABLED``); it
  reads the TursoNamespace and the key names of the containers' ``envFrom`` objects.
* ``watch_freshness`` — the liveness probe: fails when the watch stream went quiet.
* ``keep_runtime_credentials`` — startup: a task that keeps the release runtime's named
  databases explicit on turso-server and its Secret (tokens scoped to its own databases) written,
  every resync period.
* ``serve_metrics`` — startup: Prometheus ``/metrics`` on ``TURSO_METRICS_PORT`` (``_metrics``);
  ``ready_objects`` — the index that keeps its Ready-objects gauge current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from ._admin import AdminClient
from ._builders import (
    ENV_FROM_KINDS,
    DesiredNamespace,
    EnvSource,
    desired_namespace,
    env_from_sources,
    is_condition_true,
    is_injected,
    mutate_pod_spec,
    scope_permits,
    secret_name,
)
from ._config import OperatorConfig
from ._constants import (
    CONFLICT_RETRY_SECONDS,
    GROUP,
    INJECT_LABEL,
    INJECTED_ANNOTATION,
    INSTANCE_LABEL,
    PLURAL,
    RESERVED_RETRY_SECONDS,
    SKIP_ARCHIVE_ANNOTATION,
    VERSION,
    WEBHOOK_ID,
    ConditionType,
    DeletionPolicy,
    FailurePolicy,
    Reason,
)
from ._errors import (
    AdminRejectedError,
    AdminUnavailableError,
    InjectionRefusedError,
    KubeError,
    OperatorError,
    SpecError,
)
from ._kube import KubeClient
from ._metrics import OperatorMetrics
from ._reconcile import Reconciler

log = logging.getLogger("turso_operator")

#: The memo keys: ``cli`` puts the config in, ``configure`` the state it builds from it.
MEMO_CONFIG = "config"
MEMO_STATE = "operator"


@dataclass
class ObjectGuard:
    """One TursoNamespace's reconcile lock (kopf's handlers and the drift loop take it), how many
    reconciles hold or await it, and until when the drift loop leaves the object alone (see
    :func:`_reconcile`). An idle guard says nothing: :meth:`OperatorState.forget_idle` drops it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    quiet_until: float = 0.0


@dataclass
class OperatorState:
    """What the startup handler builds and the cleanup handler closes; one per operator run."""

    config: OperatorConfig
    metrics: OperatorMetrics
    kube: KubeClient
    reconciler: Reconciler
    last_event: float = 0.0
    credentials_task: asyncio.Task[None] | None = None
    drift_task: asyncio.Task[None] | None = None
    # Per (namespace, name): one reconcile at a time, and the drift loop's quiet time after an event.
    guards: dict[tuple[str, str], ObjectGuard] = field(default_factory=dict)

    @property
    def admin(self) -> AdminClient:
        return self.reconciler.admin

    def forget_idle(self) -> None:
        """Drop every guard no reconcile holds or awaits whose quiet time is over (the drift loop
        calls it each period): those of deleted objects would otherwise stay for the operator's
        life. One of a live object comes back, fresh, with its next reconcile: a lock nobody
        holds or awaits excludes no one, and a quiet time that is over keeps no one away."""
        now = time.monotonic()
        for key in [k for k, guard in self.guards.items() if not guard.users and guard.quiet_until <= now]:
            del self.guards[key]


def operator_memo(config: OperatorConfig) -> kopf.Memo:
    """The root memo ``cli`` gives ``kopf.run``: kopf hands (shallow copies of) it to every handler."""
    return kopf.Memo({MEMO_CONFIG: config})


def _state(memo: kopf.Memo) -> OperatorState:
    state = memo.get(MEMO_STATE)
    if not isinstance(state, OperatorState):  # only before ``configure`` has run
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return state


def _login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In a pod, the service account; elsewhere, the kubeconfig (what kopf would pick itself)."""
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.PermanentError("no service account token and no kubeconfig to log in with")
    return info


# -- lifecycle --------------------------------------------------------------------------------------


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Tune kopf from the config, then build the clients, the reconciler and the metrics."""
    config = memo.get(MEMO_CONFIG)
    if not isinstance(config, OperatorConfig):
        raise kopf.PermanentError("no operator config in the memo: run kopf with operator_memo(config)")
    # Per instance: two operators never share (or remove) each other's finalizer.
    settings.persistence.finalizer = f"{GROUP}/finalizer" + (f"-{config.instance}" if config.instance else "")
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.watching.server_timeout = max(30, int(config.resync_seconds * 2))
    settings.watching.client_timeout = settings.watching.server_timeout + 10
    # kopf's own requests (discovery, the initial list) may wait 5 minutes by default, with no
    # connect timeout: a connection the API server accepts and never answers would stall the
    # operator that long, liveness green since nothing is listed yet. Bound both; kopf retries.
    settings.networking.request_timeout = config.kube_request_timeout
    settings.networking.connect_timeout = min(10.0, config.kube_request_timeout)
    settings.posting.level = logging.INFO
    # At most this many objects are reconciled at once (a restart resumes every object). A worker
    # stays for idle_timeout after its last event, holding its slot: kopf's 5 s made 200 objects
    # applied at once go through in bursts of 64 with 3-5 s gaps.
    settings.queueing.worker_limit = 64
    settings.queueing.idle_timeout = 0.5
    if config.webhook_enabled:
        # The chart renders the MutatingWebhookConfiguration (namespaceSelector, reinvocationPolicy);
        # kopf must serve the endpoint but never manage that object.
        settings.admission.server = kopf.WebhookServer(
            addr="0.0.0.0",
            port=config.webhook_port,
            host=config.webhook_host,
            certfile=config.webhook_cert_file,
            pkeyfile=config.webhook_key_file,
        )
        settings.admission.managed = None
    # The same identity kopf logs in with (the login handler refreshes the token later).
    kube = KubeClient(_login(settings), timeout=config.request_timeout)
    admin = AdminClient(config.admin_url, config.admin_token, timeout=config.request_timeout)
    memo[MEMO_STATE] = OperatorState(
        config=config, metrics=OperatorMetrics(), kube=kube, reconciler=Reconciler(config, admin, kube)
    )
    log.info("turso operator configured: %r", config)


def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials, re-read on every (re-)login; our own client gets the fresh token too."""
    info = _login(settings)
    state = memo.get(MEMO_STATE)
    if isinstance(state, OperatorState):
        state.kube.login(info)
    return info


async def keep_runtime_credentials(memo: kopf.Memo, **_: Any) -> None:
    """Start the loop that keeps the runtime's databases and Secret (when TURSO_RUNTIME_SECRET is set)."""
    state = _state(memo)
    if state.config.runtime_credentials and state.credentials_task is None:
        state.credentials_task = asyncio.create_task(
            _runtime_credentials_loop(state), name="runtime-credentials"
        )


async def _runtime_credentials_loop(state: OperatorState) -> None:
    """Check at once, then every resync period; failures back off (capped, jittered), never stop it."""
    failures = 0
    while True:
        try:
            await state.reconciler.ensure_runtime_credentials()
        except Exception as exc:
            if isinstance(exc, OperatorError):
                log.warning("runtime credentials not written yet: %s", exc)
            else:
                log.exception("runtime credentials check failed")
            delay = state.reconciler.retry_delay(failures)
            failures += 1
        else:
            failures = 0
            delay = state.config.resync_seconds
        await asyncio.sleep(delay)


async def serve_metrics(memo: kopf.Memo, **_: Any) -> None:
    state = _state(memo)
    await state.metrics.serve(state.config.metrics_port)
    log.info("metrics served on :%d/metrics", state.config.metrics_port)


async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    state = memo.pop(MEMO_STATE, None)
    if not isinstance(state, OperatorState):
        return
    await state.metrics.aclose()
    for task in (state.credentials_task, state.drift_task):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await state.admin.aclose()
    await state.kube.aclose()


# -- TursoNamespace ---------------------------------------------------------------------------------


def _desired(state: OperatorState, body: kopf.Body, patch: kopf.Patch) -> DesiredNamespace:
    """The spec with defaults, or ``Ready=False/InvalidSpec`` and a permanent failure."""
    try:
        return desired_namespace(body.spec, body.meta)
    except SpecError as exc:
        state.reconciler.invalid(body, patch, str(exc))
        raise kopf.PermanentError(str(exc)) from exc


Claim = tuple[int, str, str, str]
Claims = kopf.Index[str, Claim]


def _claim(database: str, meta: kopf.Meta, status: kopf.Status) -> Claim:
    """How a resource ranks among the claims on ``database``: one whose token was minted for it
    (``status.credentialsFor``) first, then the oldest, then by name."""
    held = (status.get("credentialsFor") or {}).get("database") == database
    created = str(meta.get("creationTimestamp") or "")
    return (0 if held else 1, created, str(meta.get("namespace")), str(meta.get("name")))


def database_claims(spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status, **_: Any) -> dict[str, Claim]:
    """Which resources claim which database: names are global on turso-server, namespaces are not."""
    database = str(spec.get("database") or meta.get("name"))
    return {database: _claim(database, meta, status)}


def _reserved_for_runtime(config: OperatorConfig, database: str) -> bool:
    """In the release runtime's token scopes: an app given it would share the runtime's data."""
    return bool(config.runtime_credentials) and scope_permits(
        (*config.runtime_scope, *config.worker_scope), database
    )


def _conflicting_owner(database: str, body: kopf.Body, claims: Claims) -> str | None:
    """The resource of this Kubernetes namespace that owns ``database``, if it is not this one.

    Between Kubernetes namespaces turso-server decides (the first create records its owner for
    good, see ``Reconciler.claim``); here only claims from the same namespace are ranked: one
    that already holds a token for the database keeps it, otherwise the oldest wins."""
    me = _claim(database, body.meta, body.status)
    mine = [claim for claim in claims.get(database, []) if claim[2] == me[2]]
    owner = min([*mine, me])
    return None if owner[2:] == me[2:] else f"{owner[2]}/{owner[3]}"


#: Seconds the drift loop leaves an object alone after kopf's handler reconciled it.
DRIFT_QUIET_SECONDS = 10.0


async def _reconcile(
    state: OperatorState, body: kopf.Body, patch: kopf.Patch, claims: Claims, *, drift: bool, attempt: int
) -> None:
    """One reconcile of ``body``, never two of one object at once. kopf writes a handler's status
    patch only after it returns, so for a while the drift loop's copy of the object still shows the
    status from before: checked then, it would mint again, and every mint revokes the token the
    handler just wrote (pods started meanwhile would get 401). So the drift loop skips an object
    for :data:`DRIFT_QUIET_SECONDS` (at most one resync period) after an event-driven reconcile.

    The guard counts this reconcile as its user from before it waits for the lock until it is
    done, so :meth:`OperatorState.forget_idle` never drops a lock that is held or awaited."""
    guard = state.guards.setdefault((str(body.meta.namespace), str(body.meta.name)), ObjectGuard())
    guard.users += 1
    try:
        async with guard.lock:
            if drift and time.monotonic() < guard.quiet_until:
                return
            try:
                await _reconcile_now(state, body, patch, claims, drift=drift, attempt=attempt)
            finally:
                if not drift:
                    quiet = min(DRIFT_QUIET_SECONDS, state.config.resync_seconds)
                    guard.quiet_until = time.monotonic() + quiet
    finally:
        guard.users -= 1


async def _reconcile_now(
    state: OperatorState, body: kopf.Body, patch: kopf.Patch, claims: Claims, *, drift: bool, attempt: int
) -> None:
    desired = _desired(state, body, patch)
    if _reserved_for_runtime(state.config, desired.database):
        state.reconciler.reserved(desired, body, patch)
        raise kopf.TemporaryError(
            f"database {desired.database} is reserved for the runtime", delay=RESERVED_RETRY_SECONDS
        )
    owner = _conflicting_owner(desired.database, body, claims)
    if owner is not None:
        state.reconciler.conflict(desired, body, patch, owner)
        raise kopf.TemporaryError(
            f"database {desired.database} is claimed by {owner}", delay=CONFLICT_RETRY_SECONDS
        )
    await state.reconciler.reconcile(desired, body, patch, drift=drift, attempt=attempt)


async def reconcile_tursonamespace(
    *, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **kwargs: Any
) -> None:
    state = _state(memo)
    with state.metrics.reconcile("reconcile_tursonamespace"):
        await _reconcile(state, body, patch, kwargs["database_claims"], drift=False, attempt=retry)


async def repair_drift(state: OperatorState, raw: dict[str, Any], claims: Claims) -> None:
    """Recreate a database that vanished from the server; re-mint a token revoked on the server;
    restore an edited or deleted Secret. The status patch is written whatever the outcome."""
    body, patch = kopf.Body(cast(kopf.RawBody, raw)), kopf.Patch()
    try:
        with state.metrics.reconcile("repair_drift"):
            await _reconcile(state, body, patch, claims, drift=True, attempt=0)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        log.warning("drift check for %s/%s postponed: %s", body.meta.namespace, body.meta.name, exc)
    except Exception:
        log.exception("drift check for %s/%s failed", body.meta.namespace, body.meta.name)
    if patch.status:
        try:
            await state.kube.patch_tursonamespace_status(
                str(body.meta.namespace), str(body.meta.name), dict(patch.status)
            )
        except KubeError as exc:
            log.warning("drift status of %s/%s not written: %s", body.meta.namespace, body.meta.name, exc)


#: Drift checks running at once (kopf's worker limit bounds the event-driven reconciles alike).
DRIFT_CONCURRENCY = 16


async def _drift_loop(state: OperatorState, objects: kopf.Index[Any, dict[str, Any]], claims: Claims) -> None:
    """Every resync period, a drift check of every TursoNamespace not being deleted.

    Each object's check runs on its own: a slow one (a turso-server call waiting for its timeout)
    delays no other, and its next check starts only once its last one has ended. Each period
    also drops the idle per-object guards (:meth:`OperatorState.forget_idle`), deleted objects'
    among them.
    """
    limit = asyncio.Semaphore(DRIFT_CONCURRENCY)
    running: dict[Any, asyncio.Task[None]] = {}

    async def check(raw: dict[str, Any]) -> None:
        async with limit:
            await repair_drift(state, raw, claims)

    try:
        while True:
            await asyncio.sleep(state.config.resync_seconds)
            state.forget_idle()
            for key in [k for k, task in running.items() if task.done()]:
                del running[key]  # repair_drift logs and swallows its own failures
            for key in list(objects):
                if key in running:  # its last check is still going
                    continue
                for raw in objects.get(key, []):  # one body per (namespace, name)
                    if not (raw.get("metadata") or {}).get("deletionTimestamp"):
                        running[key] = asyncio.create_task(check(raw), name=f"repair-drift {key}")
    finally:
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


async def drift_objects(
    body: kopf.Body, memo: kopf.Memo, **kwargs: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest body of every TursoNamespace, for the drift loop (which it starts once).

    The loop is started from here, inside kopf's processing of an object, so that it inherits
    the context ``kopf.info``/``kopf.warn`` post Events through.
    """
    state = _state(memo)
    if state.drift_task is None:
        state.drift_task = asyncio.create_task(
            _drift_loop(state, kwargs["drift_objects"], kwargs["database_claims"]), name="repair-drift"
        )
    return {(str(body.meta.namespace), str(body.meta.name)): dict(body)}


async def finalize_tursonamespace(
    *, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **kwargs: Any
) -> None:
    state = _state(memo)
    with state.metrics.reconcile("finalize_tursonamespace"):
        await _finalize(state, body, patch, kwargs["database_claims"], attempt=retry)


def _archives(spec: kopf.Spec, **_: Any) -> bool:
    """Whether deleting this object archives its database: only then does it need the finalizer."""
    return str(spec.get("deletionPolicy") or DeletionPolicy.ARCHIVE) == DeletionPolicy.ARCHIVE


def _skips_archive(meta: kopf.Meta) -> bool:
    return str((meta.get("annotations") or {}).get(SKIP_ARCHIVE_ANNOTATION, "")).lower() == "true"


async def _finalize(
    state: OperatorState, body: kopf.Body, patch: kopf.Patch, claims: Claims, *, attempt: int
) -> None:
    desired = _desired(state, body, patch)
    owner = _conflicting_owner(desired.database, body, claims)
    escape = f"annotate it {SKIP_ARCHIVE_ANNOTATION}=true to delete it without archiving"
    try:
        # A resource that never owned its database must not archive the owner's data, and none
        # may archive a database of the release's runtime; the annotation lets the finalizer go.
        archive = (
            owner is None
            and not _reserved_for_runtime(state.config, desired.database)
            and not _skips_archive(body.meta)
        )
        known_for = (body.get("status") or {}).get("credentialsFor")
        await state.reconciler.finalize(desired, archive=archive, known_for=known_for)
    except (AdminUnavailableError, AdminRejectedError) as exc:
        # turso-server down, or refusing (a wrong or rotated admin token: 401/403): retried with the
        # capped backoff, since either heals, and said on the object, since a person may have to act.
        why = "unavailable" if isinstance(exc, AdminUnavailableError) else "refused the archive"
        message = f"turso-server {why}, database {desired.database} not archived yet ({escape}): {exc}"
        kopf.warn(body, reason=Reason.ARCHIVE_FAILED, message=message)
        raise kopf.TemporaryError(message, delay=state.reconciler.retry_delay(attempt)) from exc
    except KubeError as exc:
        raise kopf.TemporaryError(
            f"cannot remove Secret {desired.secret_name}: {exc}", delay=state.reconciler.retry_delay(attempt)
        ) from exc


def observed(name: str, memo: kopf.Memo, **_: Any) -> bool:
    """Every watch event refreshes the liveness clock (the drift loop writes status each period).

    An index rather than an event handler: kopf keeps it current silently, without a log line
    per event, and its size is the number of live objects.
    """
    _state(memo).last_event = time.monotonic()
    return True


def ready_objects(
    namespace: str | None, name: str, meta: kopf.Meta, status: kopf.Status, memo: kopf.Memo, **_: Any
) -> bool:
    """Keep ``buntime_operator_ready_objects`` current from every watch event's ``status``.

    An object being deleted stops counting at once; kopf drops it from the index itself when
    the object is gone.
    """
    ready = is_condition_true(status.get("conditions"), ConditionType.READY)
    _state(memo).metrics.observe_ready(
        f"{namespace}/{name}", None if meta.get("deletionTimestamp") else ready
    )
    return ready


def watch_freshness(memo: kopf.Memo, **kwargs: Any) -> dict[str, Any]:
    """Fail liveness when objects exist but no watch event arrived for three resync periods."""
    state = _state(memo)
    objects = len(kwargs["observed"])
    age = time.monotonic() - state.last_event if state.last_event else None
    limit = 3 * state.config.resync_seconds + state.config.liveness_grace_seconds
    if objects > 0 and age is not None and age > limit:
        raise kopf.PermanentError(f"no TursoNamespace watch event for {age:.0f}s (limit {limit:.0f}s)")
    return {"objects": objects, "lastEventAgeSeconds": None if age is None else round(age, 1)}


# -- pod injection ------------------------------------------------------------------------------------


async def inject_turso(
    spec: kopf.Spec,
    meta: kopf.Meta,
    patch: kopf.Patch,
    warnings: list[str],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    state = _state(memo)
    # The API server sets the object's namespace from the request before admission; kopf gives
    # the handler only the object. Without one, nothing says where to look (never "default").
    namespace = str(meta.get("namespace") or "")
    if namespace in ("kube-system", state.config.operator_namespace) or is_injected(meta.get("annotations")):
        return
    target = str((meta.get("labels") or {}).get(INJECT_LABEL, ""))
    try:
        if not namespace:
            raise InjectionRefusedError("the pod names no namespace to look up its TursoNamespace in")
        lookup = state.config.webhook_timeout / 2  # answered well before the API server gives up
        deadline = time.monotonic() + lookup  # for every read of this request together
        secret = await _ready_secret_name(
            state.kube, namespace, target, timeout=lookup, instance=state.config.instance
        )
        if secret is None:
            return
        keys = await _env_from_keys(state.kube, namespace, spec, deadline=deadline)
        mutated = mutate_pod_spec(spec, secret, keys)
    except InjectionRefusedError as refused:
        if state.config.inject_failure_policy == FailurePolicy.IGNORE:
            warnings.append(f"turso connection not injected: {refused}")
            return
        raise kopf.AdmissionError(f"turso connection cannot be injected: {refused}", code=403) from None
    for part in ("initContainers", "containers", "volumes"):
        if part in mutated:
            patch.spec[part] = mutated[part]
    patch.metadata.setdefault("annotations", {})[INJECTED_ANNOTATION] = target


async def _ready_secret_name(
    kube: KubeClient, namespace: str, target: str, *, timeout: float, instance: str
) -> str | None:
    """The Secret of the Ready TursoNamespace ``target``, read once within ``timeout``; else refused.

    ``None``: ``target`` belongs to another operator instance, whose webhook serves the pod."""
    if not target:
        raise InjectionRefusedError(f"label {INJECT_LABEL} must name a TursoNamespace")
    try:
        tns = await kube.get_tursonamespace(namespace, target, timeout=timeout)
    except KubeError as exc:
        raise InjectionRefusedError(f"cannot read TursoNamespace {namespace}/{target}: {exc}") from exc
    if tns is None:
        raise InjectionRefusedError(f"TursoNamespace {namespace}/{target} does not exist")
    if str(((tns.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL, "")) != instance:
        return None  # another operator instance serves it, and its webhook injects it
    status = tns.get("status") or {}
    if not is_condition_true(status.get("conditions"), ConditionType.READY):
        raise InjectionRefusedError(f"TursoNamespace {namespace}/{target} is not Ready yet")
    return str(status.get("secretName") or secret_name(tns.get("spec") or {}, target))


#: envFrom kind (API path) → how messages name it.
_KIND_LABELS = dict(ENV_FROM_KINDS.values())


async def _env_from_keys(
    kube: KubeClient, namespace: str, spec: kopf.Spec, *, deadline: float
) -> dict[EnvSource, frozenset[str]]:
    """The key names of every ConfigMap and Secret the containers' ``envFrom`` name: one GET each,
    all at once, done by ``deadline``. A missing object gives none, optional or not (a container
    whose non-optional object is missing does not start; the names are read only here, at
    creation). Any other failure (403, an API error, the deadline) refuses the injection, naming
    the object: a guess could leave a container with both a token and its injected file."""
    sources = env_from_sources(spec)
    if not sources:
        return {}
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise InjectionRefusedError("no time left to read the containers' envFrom objects")

    async def read(source: EnvSource, container: str) -> tuple[EnvSource, frozenset[str]]:
        kind, name = source
        try:
            keys = await kube.env_source_keys(kind, namespace, name, timeout=remaining)
        except KubeError as exc:
            raise InjectionRefusedError(
                f"cannot read {_KIND_LABELS[kind]} {namespace}/{name} "
                f"(envFrom of container {container!r}): {exc}"
            ) from exc
        return source, keys or frozenset()

    reads = [asyncio.ensure_future(read(source, container)) for source, container in sources.items()]
    try:
        return dict(await asyncio.gather(*reads))
    finally:
        for task in reads:  # after the first failure, the others are not waited for
            task.cancel()


# -- registration -------------------------------------------------------------------------------------


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """Every handler above, registered for ``config`` in a registry of its own.

    The drift loop's period is ``TURSO_RESYNC_SECONDS`` (it starts with the first object); the
    webhook handler exists only with ``TURSO_WEBHOOK_ENABLED`` (kopf refuses to start a mutating
    handler without a webhook server).
    Handler ids are the function names (``inject-turso`` for the webhook, the URL path the chart's
    MutatingWebhookConfiguration calls): kopf persists them, so they never change.
    """
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)
    # Every TursoNamespace handler and index sees only this instance's objects (TURSO_INSTANCE).
    ours = {INSTANCE_LABEL: config.instance or kopf.ABSENT}
    kopf.on.startup(registry=registry)(configure)
    kopf.on.startup(registry=registry)(keep_runtime_credentials)
    kopf.on.startup(registry=registry)(serve_metrics)
    kopf.on.cleanup(registry=registry)(close_clients)
    kopf.on.login(registry=registry)(login)
    kopf.on.probe(id="watch_freshness", registry=registry)(watch_freshness)
    kopf.index(*resource, labels=ours, registry=registry)(database_claims)
    kopf.index(*resource, labels=ours, registry=registry)(observed)
    kopf.index(*resource, labels=ours, registry=registry)(drift_objects)
    kopf.index(*resource, labels=ours, registry=registry)(ready_objects)
    for decorator in (
        kopf.on.update(*resource, field="spec", labels=ours, registry=registry),
        kopf.on.create(*resource, labels=ours, registry=registry),
        kopf.on.resume(*resource, labels=ours, registry=registry),
    ):
        decorator(reconcile_tursonamespace)
    kopf.on.delete(*resource, labels=ours, when=_archives, registry=registry)(finalize_tursonamespace)
    if config.webhook_enabled:
        kopf.on.mutate(
            "",
            "v1",
            "pods",
            id=WEBHOOK_ID,
            operations=["CREATE"],
            labels={INJECT_LABEL: kopf.PRESENT},
            registry=registry,
        )(inject_turso)
    return registry
