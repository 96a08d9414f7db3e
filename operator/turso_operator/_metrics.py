"""The operator's Prometheus metrics and the ``/metrics`` endpoint that serves them.

Called by ``_handlers``: every reconcile handler runs inside :meth:`OperatorMetrics.reconcile`,
the TursoNamespace index keeps :meth:`OperatorMetrics.observe_ready` current, and a startup
handler serves the registry on ``TURSO_METRICS_PORT`` (kopf's liveness server cannot carry a
second path). Names start with ``buntime_operator_`` (the runtime's are ``buntime_*``,
turso-server's ``turso_server_*``):

* ``buntime_operator_reconciles_total{handler,outcome}`` — ``outcome`` is ``success``, ``retry``
  (``kopf.TemporaryError``: not ready yet, conflict, reserved), ``failed``
  (``kopf.PermanentError``: an invalid spec) or ``error`` (anything else; kopf retries);
* ``buntime_operator_reconcile_errors_total{handler,error}`` — every outcome but ``success``, by
  exception class (a bounded set: the operator's own and kopf's);
* ``buntime_operator_reconcile_duration_seconds{handler}`` — a histogram of handler run time;
* ``buntime_operator_ready_objects`` — TursoNamespace objects whose ``Ready`` condition is ``True``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

METRICS_PATH = "/metrics"
OUTCOME_SUCCESS = "success"
OUTCOME_RETRY = "retry"
OUTCOME_FAILED = "failed"
OUTCOME_ERROR = "error"


class OperatorMetrics:
    """The operator's registry. Usage::

    metrics = OperatorMetrics()
    with metrics.reconcile("reconcile_tursonamespace"):
        ...                                   # counted, timed, errors classified
    metrics.observe_ready("ns/name", True)
    runner = await metrics.serve(9090)        # GET /metrics; ``await runner.cleanup()``
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "buntime_operator_reconciles",
            "TursoNamespace handler runs, by handler and outcome.",
            ["handler", "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "buntime_operator_reconcile_errors",
            "TursoNamespace handler runs that raised, by handler and exception class.",
            ["handler", "error"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "buntime_operator_reconcile_duration_seconds",
            "TursoNamespace handler run time, by handler.",
            ["handler"],
            registry=self.registry,
        )
        self._ready: dict[str, bool] = {}
        self.ready_objects = Gauge(
            "buntime_operator_ready_objects",
            "TursoNamespace objects whose Ready condition is True.",
            registry=self.registry,
        )
        self.ready_objects.set_function(lambda: sum(self._ready.values()))
        self._runner: web.AppRunner | None = None

    @contextmanager
    def reconcile(self, handler: str) -> Iterator[None]:
        """Count, time and classify one handler run; the exception propagates unchanged."""
        started = time.perf_counter()
        outcome = OUTCOME_SUCCESS
        try:
            yield
        except kopf.TemporaryError as exc:
            outcome = OUTCOME_RETRY
            self.errors.labels(handler=handler, error=type(exc).__name__).inc()
            raise
        except kopf.PermanentError as exc:
            outcome = OUTCOME_FAILED
            self.errors.labels(handler=handler, error=type(exc).__name__).inc()
            raise
        except Exception as exc:
            outcome = OUTCOME_ERROR
            self.errors.labels(handler=handler, error=type(exc).__name__).inc()
            raise
        finally:
            self.duration.labels(handler=handler).observe(time.perf_counter() - started)
            self.reconciles.labels(handler=handler, outcome=outcome).inc()

    def observe_ready(self, key: str, ready: bool | None) -> None:
        """Record whether object ``key`` is Ready; ``None`` forgets it (deleted)."""
        if ready is None:
            self._ready.pop(key, None)
        else:
            self._ready[key] = ready

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve ``GET /metrics`` on ``host:port`` (once; again after :meth:`aclose`)."""
        if self._runner is not None:
            return

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get(METRICS_PATH, metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def aclose(self) -> None:
        """Stop serving; the counters stay."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
