"""Per-operation metrics of the Kv store: counts, errors and latency histograms (Prometheus).

The collectors live in a registry of their own (served by ``/keyval/api/metrics/prometheus``)
and are also registered in the host's shared registry, which the runtime server exports on
``/metrics``. Nothing goes to prometheus_client's global ``REGISTRY``, so several hosts (tests)
never collide. Called by the storage core around every public operation.

**Persisted metrics** (``kv_metrics``, upstream's ``metrics.persistent``): :meth:`KvMetrics.pending`
gives what was counted since the last flush, the Kv store adds it to the stored rows with
:data:`PERSIST_SQL` (``count = count + excluded.count``) in one write transaction and then calls
:meth:`KvMetrics.mark_flushed`. Every pod adds only its own increments, so the rows are totals
over every pod and restart; a flush that fails leaves its increments pending for the next one
(one whose outcome is unknown counts as flushed: the same increments are never added twice).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ._errors import KeyValError, translate_storage_error

#: Upstream's millisecond buckets (1 ms … 5 s), in seconds.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
INTERNAL_ERROR_CODE = "INTERNAL_ERROR"
#: Add one operation's increments to its ``kv_metrics`` row (latency in milliseconds, as upstream).
PERSIST_SQL = (
    "INSERT INTO kv_metrics(id, operation, count, errors, latency_sum, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET count = count + excluded.count, "
    "errors = errors + excluded.errors, latency_sum = latency_sum + excluded.latency_sum, "
    "updated_at = excluded.updated_at"
)
READ_PERSISTED_SQL = "SELECT operation, count, errors, latency_sum, updated_at FROM kv_metrics ORDER BY id"

#: Housekeeping, not client activity: never persisted, so a store nobody uses writes nothing (a
#: refresh follows every pull, and another pod's flush is a write that pod B pulls: persisting
#: refreshes would have two idle pods flush each other's flushes forever).
HOUSEKEEPING = frozenset(
    {
        "open",
        "refresh",
        "ttl_sweep",
        "queue_requeue_stale",
        "queue_next_ready",
        "queue_lease_left",
        "storage_stats",
    }
)

#: One operation's increments since the last flush: (operation, count, errors, latency ms).
Delta = tuple[str, int, int, float]


class KvMetrics:
    """The collectors plus :meth:`track`, which times one operation and maps storage errors.

    Parameters:

    * **registry** *(optional)* — a shared registry to register in as well (the host's).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry()
        self.operations = Counter(
            "buntime_keyval_operations_total",
            "KeyVal operations, by operation.",
            ["operation"],
            registry=None,
        )
        self.errors = Counter(
            "buntime_keyval_operation_errors_total",
            "KeyVal operations that raised, by operation and error code.",
            ["operation", "code"],
            registry=None,
        )
        self.latency = Histogram(
            "buntime_keyval_operation_duration_seconds",
            "KeyVal operation latency, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.check_failures = Counter(
            "buntime_keyval_atomic_check_failures_total",
            "Atomic commits refused because a versionstamp check failed.",
            registry=None,
        )
        self.trigger_failures = Counter(
            "buntime_keyval_trigger_failures_total",
            "Trigger handlers that raised (the write they followed is committed).",
            registry=None,
        )
        self.entries = Gauge(
            "buntime_keyval_entries",
            "Live KeyVal entries, as of the last storage statistics read.",
            registry=None,
        )
        self.storage_bytes = Gauge(
            "buntime_keyval_storage_bytes",
            "Bytes of the live KeyVal entries' keys and values, as of the last storage statistics read.",
            registry=None,
        )
        self.queue_messages = Gauge(
            "buntime_keyval_queue_messages",
            "KeyVal queue messages by state (pending, processing, dlq), as of the last queue stats read.",
            ["state"],
            registry=None,
        )
        self._collectors = (
            self.queue_messages,
            self.operations,
            self.errors,
            self.latency,
            self.check_failures,
            self.trigger_failures,
            self.entries,
            self.storage_bytes,
        )
        for collector in self._collectors:
            self.registry.register(collector)
            if registry is not None:
                registry.register(collector)
        self._shared = registry
        # labels() takes a lock and a dict lookup per call; keep each operation's children.
        self._children: dict[str, tuple[Any, Any]] = {}
        self._flushed: dict[str, tuple[int, int, float]] = {}  # totals already in kv_metrics

    def unregister(self) -> None:
        """Leave the shared registry (on shutdown), so a restarted plugin can register again."""
        if self._shared is not None:
            for collector in self._collectors:
                with contextlib.suppress(KeyError):
                    self._shared.unregister(collector)
            self._shared = None

    def track(self, operation: str, check: Callable[[], None] | None = None) -> Tracked:
        """A context manager that counts and times the block, counts its error by code and
        translates Turso errors; ``check`` runs first (e.g. "is the store open?")."""
        children = self._children.get(operation)
        if children is None:
            children = (self.operations.labels(operation), self.latency.labels(operation))
            self._children[operation] = children
        return Tracked(self, operation, children, check)

    def count_error(self, operation: str, code: str) -> None:
        self.errors.labels(operation, code).inc()

    def set_storage(self, entries: int, size_bytes: int) -> None:
        self.entries.set(entries)
        self.storage_bytes.set(size_bytes)

    def set_queue(self, pending: int, processing: int, dlq: int) -> None:
        self.queue_messages.labels("pending").set(pending)
        self.queue_messages.labels("processing").set(processing)
        self.queue_messages.labels("dlq").set(dlq)

    def pending(self) -> list[Delta]:
        """Each client operation's increments since the last :meth:`mark_flushed` (none: empty;
        :data:`HOUSEKEEPING` is left out)."""
        out: list[Delta] = []
        for op, stats in self.snapshot().items():
            if op in HOUSEKEEPING:
                continue
            count, errors, latency = self._flushed.get(op, (0, 0, 0.0))
            delta = (op, stats["count"] - count, stats["errors"] - errors, stats["latencySumMs"] - latency)
            if delta[1] or delta[2]:
                out.append(delta)
        return out

    def mark_flushed(self, deltas: list[Delta]) -> None:
        """``deltas`` (from :meth:`pending`) are in ``kv_metrics`` now."""
        for op, count, errors, latency in deltas:
            was = self._flushed.get(op, (0, 0, 0.0))
            self._flushed[op] = (was[0] + count, was[1] + errors, was[2] + latency)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{operation: {count, errors, avgLatencyMs, latencySumMs, latencyAvgMs}}`` for the JSON
        endpoint (``avgLatencyMs`` is the upstream client's ``KvOperationMetrics`` field)."""
        out: dict[str, dict[str, Any]] = {}

        def entry(op: str) -> dict[str, Any]:
            return out.setdefault(op, {"count": 0, "errors": 0, "latencySumMs": 0.0, "latencyAvgMs": 0.0})

        for family in self.operations.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    entry(sample.labels["operation"])["count"] = int(sample.value)
        for family in self.errors.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    entry(sample.labels["operation"])["errors"] += int(sample.value)
        for family in self.latency.collect():
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    entry(sample.labels["operation"])["latencySumMs"] = round(sample.value * 1000, 3)
        for stats in out.values():
            if stats["count"]:
                stats["latencyAvgMs"] = round(stats["latencySumMs"] / stats["count"], 3)
            stats["avgLatencyMs"] = stats["latencyAvgMs"]  # the upstream client's name for it
        return out


class Tracked:
    """One tracked operation (a plain class: cheaper per call than a generator context manager)."""

    __slots__ = ("_check", "_children", "_metrics", "_operation", "_start")

    def __init__(
        self, metrics: KvMetrics, operation: str, children: tuple[Any, Any], check: Callable[[], None] | None
    ) -> None:
        self._metrics = metrics
        self._operation = operation
        self._children = children
        self._check = check
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()
        if self._check is not None:
            try:
                self._check()
            except KeyValError as exc:
                self.__exit__(type(exc), exc, None)
                raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        count, latency = self._children
        count.inc()
        latency.observe(time.perf_counter() - self._start)
        if exc is None:
            return
        mapped = translate_storage_error(exc)
        if mapped is not None:
            self._metrics.count_error(self._operation, mapped.code)
            raise mapped from exc
        if isinstance(exc, KeyValError):
            self._metrics.count_error(self._operation, exc.code)
        elif isinstance(exc, Exception):
            self._metrics.count_error(self._operation, INTERNAL_ERROR_CODE)
