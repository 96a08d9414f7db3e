"""Prometheus metrics, in a registry of their own, served by the admin port's ``GET /metrics``.

A private :class:`CollectorRegistry` (not the process-global one) keeps two servers in one process
(tests) apart. Label values are bounded: routes are a fixed set, and the ``namespace`` label is only
ever a *stored* namespace (anything else is counted as ``UNKNOWN_NAMESPACE``), so hostile or
mistyped names cannot blow up cardinality. Namespace states and each stored namespace's bytes on
disk are computed at scrape time from the supervisor (the sizes by the ``/metrics`` handler, off
the event loop, just before it renders). Created in ``_app``; fed by ``_proxy``, ``_admin``,
``_supervisor``, ``_gc``, ``_backup``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

UNKNOWN_NAMESPACE = "_unknown"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _NamespaceStateCollector:
    """``turso_server_namespaces{state}``, read from the supervisor on every scrape."""

    def __init__(self, source: Callable[[], Mapping[str, int]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "turso_server_namespaces", "Stored namespaces by child state.", labels=["state"]
        )
        for state, count in sorted(self._source().items()):
            family.add_metric([state], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _NamespaceBytesCollector:
    """``turso_server_namespace_disk_bytes{namespace}``: the database file and its companions.

    tursodb's sync server never checkpoints, so the ``-wal`` grows with every commit
    (docs/turso-server.md, *Disk growth*): this is the figure to alert on."""

    def __init__(self, source: Callable[[], Mapping[str, int]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "turso_server_namespace_disk_bytes",
            "Bytes on disk of each stored namespace's database file and its -wal/-shm companions.",
            labels=["namespace"],
        )
        for name, size in sorted(self._source().items()):
            family.add_metric([name], size)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Metrics:
    """The server's metric objects; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.data_requests = Counter(
            "turso_server_data_requests",
            "Data-port requests by namespace, upstream route and status.",
            ["namespace", "route", "status"],
            registry=self.registry,
        )
        self.admin_requests = Counter(
            "turso_server_admin_requests",
            "Admin-port requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.proxy_latency = Histogram(
            "turso_server_proxy_duration_seconds",
            "Time to answer a proxied request, including waiting for the child.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cursor_reads = Counter(
            "turso_server_push_cursor_reads",
            "Sync clients' cursor reads, answered from memory (hit) or by tursodb (miss).",
            ["result"],
            registry=self.registry,
        )
        self.child_restarts = Counter(
            "turso_server_child_restarts",
            "tursodb children restarted after an unexpected exit or a kill for not answering in time.",
            ["namespace"],
            registry=self.registry,
        )
        self.child_start_failures = Counter(
            "turso_server_child_start_failures",
            "tursodb spawns that did not come up.",
            registry=self.registry,
        )
        self.gc_archived = Counter(
            "turso_server_gc_archived",
            "Namespaces archived by the GC, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.archives_purged = Counter(
            "turso_server_archives_purged",
            "Archive directories deleted after the retention period.",
            registry=self.registry,
        )
        self.backups = Counter(
            "turso_server_backups",
            "Backups served, by result.",
            ["result"],
            registry=self.registry,
        )
        #: Bytes on disk by stored namespace, set by the ``/metrics`` handler before it renders.
        self.namespace_bytes: Mapping[str, int] = {}
        self.registry.register(_NamespaceBytesCollector(lambda: self.namespace_bytes))

    def watch_namespaces(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Register the scrape-time namespace-state gauge (called once the supervisor exists)."""
        self.registry.register(_NamespaceStateCollector(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)
