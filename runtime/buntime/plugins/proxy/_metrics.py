"""``buntime_proxy_requests_total{pattern,outcome}``, built from the current rules at scrape time.

Called by ``_proxy`` (which counts) and registered in the host's metrics registry. Counts are
kept per rule id, but a series exists only for a rule that is in the rule set when Prometheus
scrapes: a rule deleted here or by another pod (gone from the cache after the next pull) takes
its series with it, instead of leaving one behind per rule that ever existed.

The label is the rule's ``pattern``, chosen deliberately over the two alternatives: the ``id`` of
a dynamic rule is a UUID minted at each ``POST /rules``, so a rule recreated by a deploy script
gets a new series every time and dashboards can't name it in advance; ``name`` is optional and
need not be unique. The pattern is what the rule matches, it is the same on every pod, and the
number of series is bounded by the number of rules. Rules sharing a pattern share a series (only
the first enabled one can match anyway).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ._rules import ProxyRule

REQUESTS_METRIC = "buntime_proxy_requests"


class RuleRequests(Collector):
    """Requests a rule proxied or redirected; ``rules()`` is read at every scrape.

    Usage::

        requests = RuleRequests(lambda: proxy.rules)
        registry.register(requests)
        requests.inc(rule, "proxied")
    """

    def __init__(self, rules: Callable[[], tuple[ProxyRule, ...]]) -> None:
        self._rules = rules
        self._counts: Counter[tuple[str, str]] = Counter()  # (rule id, outcome) -> requests

    def inc(self, rule: ProxyRule, outcome: str) -> None:
        self._counts[(rule.id, outcome)] += 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            REQUESTS_METRIC,
            "Requests handled by a proxy rule, by the rule's pattern and the outcome.",
            labels=["pattern", "outcome"],
        )
        current = {rule.id: rule.pattern for rule in self._rules()}
        for key in [key for key in self._counts if key[0] not in current]:
            del self._counts[key]  # the rule is gone: so is its count
        by_series: Counter[tuple[str, str]] = Counter()
        for (rule_id, outcome), count in self._counts.items():
            by_series[(current[rule_id], outcome)] += count
        for (pattern, outcome), count in sorted(by_series.items()):
            family.add_metric([pattern, outcome], count)
        yield family
