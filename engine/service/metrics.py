"""The service's Prometheus metrics, with prometheus_client.

In: events from the request handlers (a valuation, an error of some class, a request's
duration) and the loaded rules. Out: `/metrics` text (exposition format 0.0.4).

With `tiv serve --workers N` every worker is its own process, and a scrape reaches
whichever one accepts it. So `tiv serve` runs prometheus_client in multiprocess mode: it
sets `PROMETHEUS_MULTIPROC_DIR` to a fresh folder before any worker starts, each worker
writes its counters there, and `/metrics` sums them over every worker, alive or gone.
`tiv_process_start_time_seconds` is listed per worker (`pid` label). The rule set gauges
are the answering worker's; every worker loads and reloads the same folder.

Without that variable (the app built in a test, or embedded) the counters are this
process's own, kept in a registry of this `Metrics`, so two apps never share counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from engine.ruleset import RuleSet

__all__ = ["BUCKETS", "MULTIPROC_ENV", "Metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets in seconds: a valuation takes about a millisecond, a batch request
# of a thousand about a second, a request near its time budget up to tens of seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series would double every counter for no use here


class Metrics:
    """The counters of this service; prometheus_client makes them thread-safe."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared = bool(os.environ.get(MULTIPROC_ENV))
        registry = self.registry
        self._valuations = Counter(
            "tiv_valuations",
            "Shipments valued, by pack version and decision.",
            ["pack", "version", "decision"],
            registry=registry,
        )
        self._claims = Counter(
            "tiv_claims", "Losses settled, by pack version.", ["pack", "version"], registry=registry
        )
        self._errors = Counter(
            "tiv_errors", "Requests or shipments refused, by error class.", ["class"],
            registry=registry,
        )  # fmt: skip
        self._requests = Counter(
            "tiv_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self._reloads = Counter(
            "tiv_rules_reloads",
            "Rule reloads, by outcome (ok or refused).",
            ["outcome"],
            registry=registry,
        )
        self._latency = Histogram(
            "tiv_http_request_duration_seconds",
            "Time from request to response, by route.",
            ["route", "method"],
            buckets=BUCKETS,
            registry=registry,
        )
        started = Gauge(
            "tiv_process_start_time_seconds",
            "When this process started (Unix time).",
            registry=registry,
            multiprocess_mode="all",  # one sample per worker, labelled with its pid
        )
        started.set(time.time())

    def valuation(self, pack: str, version: str, decision: str, count: int = 1) -> None:
        """`count` valuations of one pack version with one decision (a batch counts its
        shipments once per kind: in multiprocess mode each increment takes a lock and
        writes to a file, ~1.7 us, which is 2% of a batch request's time)."""
        self._valuations.labels(pack, version, decision).inc(count)

    def claim(self, pack: str, version: str) -> None:
        self._claims.labels(pack, version).inc()

    def error(self, kind: str, count: int = 1) -> None:
        self._errors.labels(kind).inc(count)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.labels(route, method, str(status)).inc()
        self._latency.labels(route, method).observe(seconds)

    def reload(self, outcome: str) -> None:
        self._reloads.labels(outcome).inc()

    def render(self, rules: RuleSet, rules_id: str, loaded_at: float) -> str:
        if self.shared:
            counters = CollectorRegistry()
            MultiProcessCollector(counters)  # type: ignore[no-untyped-call]  # every worker's files, summed
        else:
            counters = self.registry
        described = CollectorRegistry()
        described.register(_RulesCollector(rules, rules_id, loaded_at))
        return (generate_latest(counters) + generate_latest(described)).decode("utf-8")


class _RulesCollector(Collector):
    """The loaded rule set, as info gauges (1 for each thing loaded)."""

    def __init__(self, rules: RuleSet, rules_id: str, loaded_at: float) -> None:
        self.rules = rules
        self.rules_id = rules_id
        self.loaded_at = loaded_at

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "tiv_rules_info",
            "The loaded rule set (1 for the one loaded), by its id.",
            labels=["rules_id", "source"],
        )
        info.add_metric([self.rules_id, self.rules.source], 1)
        yield info
        yield GaugeMetricFamily(
            "tiv_rules_loaded_timestamp_seconds",
            "When the loaded rule set was loaded (Unix time).",
            value=self.loaded_at,
        )
        packs = GaugeMetricFamily(
            "tiv_pack_version_info",
            "Every loaded pack version (1), with its status and window.",
            labels=["pack", "version", "status", "effective_from", "effective_to", "sha256"],
        )
        for versions in self.rules.packs.values():
            for p in versions:
                until = p.effective_to.isoformat() if p.effective_to else ""
                labels = [p.id, p.version, p.status, p.effective_from.isoformat(), until, p.sha256]
                packs.add_metric(labels, 1)
        yield packs
