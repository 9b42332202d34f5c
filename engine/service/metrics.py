"""Counters and histograms of one service process, rendered in Prometheus' text format.

In: events from the request handlers (a valuation, an error of some class, a request's
duration) and the loaded rules. Out: `/metrics` text (exposition format 0.0.4).

Written by hand rather than with prometheus-client: the service needs three counters,
two histograms and an info gauge, which is less code than configuring the client, and
the client's multi-process mode (for uvicorn --workers) needs a shared directory and
cleanup of its own. Each process reports its own figures; scrape each replica (see the
README on scaling).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping

from engine.ruleset import RuleSet

# Latency buckets in seconds: a valuation takes about a millisecond, a batch request
# of a thousand about a second, a request near its time budget up to tens of seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]


def _labels(pairs: Labels) -> str:
    if not pairs:
        return ""
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + text + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class Metrics:
    """Thread-safe: handlers run on the event loop and in the valuation threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self._valuations: dict[Labels, int] = defaultdict(int)
        self._claims: dict[Labels, int] = defaultdict(int)
        self._errors: dict[Labels, int] = defaultdict(int)
        self._requests: dict[Labels, int] = defaultdict(int)
        self._latency: dict[Labels, _Histogram] = defaultdict(_Histogram)
        self._reloads: dict[Labels, int] = defaultdict(int)

    def valuation(self, pack: str, version: str, decision: str) -> None:
        with self._lock:
            self._valuations[(("pack", pack), ("version", version), ("decision", decision))] += 1

    def claim(self, pack: str, version: str) -> None:
        with self._lock:
            self._claims[(("pack", pack), ("version", version))] += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self._errors[(("class", kind),)] += 1

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (("route", route), ("method", method))
        with self._lock:
            self._requests[(*key, ("status", str(status)))] += 1
            self._latency[key].observe(seconds)

    def reload(self, outcome: str) -> None:
        with self._lock:
            self._reloads[(("outcome", outcome),)] += 1

    def render(self, rules: RuleSet, rules_id: str, loaded_at: float) -> str:
        with self._lock:
            out: list[str] = []
            _counter(
                out,
                "tiv_valuations",
                "Shipments valued, by pack version and decision.",
                self._valuations,
            )
            _counter(out, "tiv_claims", "Losses settled, by pack version.", self._claims)
            _counter(
                out, "tiv_errors", "Requests or shipments refused, by error class.", self._errors
            )
            _counter(
                out,
                "tiv_http_requests",
                "HTTP requests answered, by route and status.",
                self._requests,
            )
            _counter(
                out, "tiv_rules_reloads", "Rule reloads, by outcome (ok or refused).", self._reloads
            )
            name = "tiv_http_request_duration_seconds"
            out.append(f"# HELP {name} Time from request to response, by route.")
            out.append(f"# TYPE {name} histogram")
            for labels, hist in sorted(self._latency.items()):
                cumulative = 0
                for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    out.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {cumulative}")
                out.append(f"{name}_sum{_labels(labels)} {_number(hist.total)}")
                out.append(f"{name}_count{_labels(labels)} {cumulative}")
        _gauge(
            out,
            "tiv_rules_info",
            "The loaded rule set (1 for the one loaded), by its id.",
            {(("rules_id", rules_id), ("source", rules.source)): 1},
        )
        _gauge(
            out,
            "tiv_rules_loaded_timestamp_seconds",
            "When the loaded rule set was loaded (Unix time).",
            {(): loaded_at},
        )
        _gauge(
            out,
            "tiv_pack_version_info",
            "Every loaded pack version (1), with its status and window.",
            {
                (
                    ("pack", p.id),
                    ("version", p.version),
                    ("status", p.status),
                    ("effective_from", p.effective_from.isoformat()),
                    ("effective_to", p.effective_to.isoformat() if p.effective_to else ""),
                    ("sha256", p.sha256),
                ): 1
                for versions in rules.packs.values()
                for p in versions
            },
        )
        _gauge(
            out,
            "tiv_process_start_time_seconds",
            "When this process started (Unix time).",
            {(): self.started},
        )
        return "\n".join(out) + "\n"


def _counter(out: list[str], name: str, help_text: str, values: Mapping[Labels, int]) -> None:
    out.append(f"# HELP {name}_total {help_text}")
    out.append(f"# TYPE {name}_total counter")
    for labels, count in sorted(values.items()):
        out.append(f"{name}_total{_labels(labels)} {count}")


def _gauge(out: list[str], name: str, help_text: str, values: Mapping[Labels, float | int]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} gauge")
    for labels, value in sorted(values.items()):
        out.append(f"{name}{_labels(labels)} {_number(value)}")


def parse(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    """Read exposition text back (name, labels, value): for tests and the load test."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, number = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels: dict[str, str] = {}
        if rest:
            for part in _split_labels(rest.rstrip("}")):
                key, _, raw = part.partition("=")
                labels[key] = raw[1:-1].replace('\\"', '"').replace("\\n", "\n")
        yield name, labels, float(number)


def _split_labels(text: str) -> list[str]:
    parts, current, quoted, escaped = [], "", False, False
    for char in text:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            current += char
            escaped = True
        elif char == '"':
            current += char
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts
