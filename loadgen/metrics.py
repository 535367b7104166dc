"""Caller-side Prometheus metrics, aggregated across Locust worker processes by the master.

Workers never serve /metrics. Each keeps a `Recorder` (plain counts, no prometheus_client
state) and hands its deltas to Locust's own worker report (`events.report_to_master`, every
few seconds and once more when the worker stops); the master merges them in an `Aggregate`
that a custom collector serves on one port. This works across hosts, needs one scrape target
and matches Locust's own totals (measured: at the end of a two-worker run, the master's
histogram count equalled Locust's request count). A standalone (`LocalRunner`) Locust feeds
its Recorder into the Aggregate directly.

Names, types, labels and buckets come from lkrig_instrument.names only.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator
from typing import Any

from lkrig_instrument import names
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

BUCKETS = names.LATENCY_BUCKETS
# A worker reports every 3 s; one silent for this long has died: its gauges stop counting.
GAUGE_STALE_S = 30.0
REPORT_KEY = "lkrig_caller_metrics"  # the key in Locust's worker report

_BY_NAME = {m.name: m for m in names.CALLER_METRICS}
# A histogram's state: one count per bucket (the finite bounds, then +Inf), the sum, the count.
_HLEN = len(BUCKETS) + 3

Labels = tuple[str, ...]


class Recorder:
    """What one Locust process observed since the last drain()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hist: dict[tuple[str, Labels], list[float]] = {}  # bucket counts..., sum, count
        self._counts: dict[tuple[str, Labels], float] = {}
        self._gauges: dict[tuple[str, Labels], float] = {}  # absolute, never drained

    @staticmethod
    def _key(metric: names.Metric, labels: dict[str, str]) -> tuple[str, Labels]:
        if set(labels) != set(metric.labels):
            raise ValueError(f"{metric.name}: labels {sorted(labels)} != {sorted(metric.labels)}")
        return metric.name, tuple(labels[k] for k in metric.labels)

    def observe(self, metric: names.Metric, value: float, **labels: str) -> None:
        key = self._key(metric, labels)
        with self._lock:
            h = self._hist.setdefault(key, [0.0] * _HLEN)
            h[bisect.bisect_left(BUCKETS, value)] += 1  # le semantics: value <= bound
            h[-2] += value
            h[-1] += 1

    def inc(self, metric: names.Metric, amount: float = 1.0, **labels: str) -> None:
        key = self._key(metric, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + amount

    def gauge_add(self, metric: names.Metric, amount: float, **labels: str) -> None:
        key = self._key(metric, labels)
        with self._lock:
            self._gauges[key] = self._gauges.get(key, 0.0) + amount

    def drain(self) -> dict[str, Any]:
        """JSON-able deltas (histograms, counters) plus the current gauge values."""
        with self._lock:
            out = {
                "h": [[n, list(lv), h] for (n, lv), h in self._hist.items()],
                "c": [[n, list(lv), v] for (n, lv), v in self._counts.items()],
                "g": [[n, list(lv), v] for (n, lv), v in self._gauges.items()],
            }
            self._hist = {}
            self._counts = {}
        return out


class Aggregate:
    """The master's view: the sum of every worker's deltas; gauges summed over live workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hist: dict[tuple[str, Labels], list[float]] = {}
        self._counts: dict[tuple[str, Labels], float] = {}
        self._gauges: dict[str, dict[tuple[str, Labels], float]] = {}  # source -> values
        self._seen: dict[str, float] = {}  # source -> time.monotonic() of its last report
        self._local: Recorder | None = None
        self._prepared: set[tuple[str, str, str]] = set()  # (scenario, profile, network)

    def prepare(self, scenario: str, profile: str, network: str = "perfect") -> None:
        """Serve every caller series of this run at zero from now on, before any call reports.

        A series born with its first observation already counted hides that observation from
        rate() and increase() (no earlier sample to difference against): a short or small run
        would show an empty latency panel and no dead air, while the counts say otherwise.
        """
        with self._lock:
            self._prepared.add((scenario, profile, network))

    def attach_local(self, recorder: Recorder) -> None:
        """A standalone Locust: pull this recorder's deltas at every collect."""
        self._local = recorder

    def merge(self, source: str, delta: dict[str, Any]) -> None:
        with self._lock:
            for name, lv, h in delta.get("h", []):
                if name not in _BY_NAME:
                    continue  # a newer worker's metric this master does not know: skip, not crash
                cur = self._hist.setdefault((name, tuple(lv)), [0.0] * _HLEN)
                for i, v in enumerate(h):
                    cur[i] += v
            for name, lv, v in delta.get("c", []):
                if name in _BY_NAME:
                    key = (name, tuple(lv))
                    self._counts[key] = self._counts.get(key, 0.0) + v
            if "g" in delta:
                self._gauges[source] = {(n, tuple(lv)): v for n, lv, v in delta["g"] if n in _BY_NAME}
                self._seen[source] = time.monotonic()

    def forget(self, source: str) -> None:
        """A worker left: its gauges no longer count (its counts stay, they happened)."""
        with self._lock:
            self._gauges.pop(source, None)
            self._seen.pop(source, None)

    def _live_gauges(self) -> list[dict[tuple[str, Labels], float]]:
        stale = time.monotonic() - GAUGE_STALE_S
        return [g for src, g in self._gauges.items() if self._seen.get(src, 0.0) >= stale]

    def value(self, metric: names.Metric, **labels: str) -> float:
        """Counter total, gauge sum or histogram count for one label set (0 if never seen)."""
        self._pull_local()
        key = (metric.name, tuple(labels[k] for k in metric.labels))
        with self._lock:
            if metric.type == "histogram":
                return self._hist.get(key, [0.0])[-1]
            if metric.type == "gauge":
                return sum(g.get(key, 0.0) for g in self._live_gauges())
            return self._counts.get(key, 0.0)

    def _pull_local(self) -> None:
        if self._local is not None:
            self.merge("local", self._local.drain())

    def families(self) -> Iterator[Any]:
        self._pull_local()
        with self._lock:
            hist = {k: list(v) for k, v in self._hist.items()}
            counts = dict(self._counts)
            gauges: dict[tuple[str, Labels], float] = {}
            for g in self._live_gauges():
                for k, v in g.items():
                    gauges[k] = gauges.get(k, 0.0) + v
            for key in _zero_keys(self._prepared):
                store: dict[tuple[str, Labels], Any] = {"histogram": hist, "counter": counts,
                                                        "gauge": gauges}[_BY_NAME[key[0]].type]
                if key not in store:
                    store[key] = [0.0] * _HLEN if store is hist else 0.0
        for m in names.CALLER_METRICS:
            if m.type == "histogram":
                fam = HistogramMetricFamily(m.name, m.help, labels=m.labels)
                for (n, lv), h in sorted(hist.items()):
                    if n != m.name:
                        continue
                    cum, buckets = 0.0, []
                    for bound, c in zip((*BUCKETS, float("inf")), h[: len(BUCKETS) + 1], strict=True):
                        cum += c
                        buckets.append((_le(bound), cum))
                    fam.add_metric(list(lv), buckets, h[-2])
            elif m.type == "counter":
                # The family name drops `_total`; the exposition adds it back.
                fam = CounterMetricFamily(m.name.removesuffix("_total"), m.help, labels=m.labels)
                for (n, lv), v in sorted(counts.items()):
                    if n == m.name:
                        fam.add_metric(list(lv), v)
            else:
                fam = GaugeMetricFamily(m.name, m.help, labels=m.labels)
                for (n, lv), v in sorted(gauges.items()):
                    if n == m.name:
                        fam.add_metric(list(lv), v)
            yield fam


def _zero_keys(prepared: set[tuple[str, str, str]]) -> Iterator[tuple[str, Labels]]:
    """Every caller series of each prepared run, closed labels taking each value names.py lists."""
    for scenario, profile, network in sorted(prepared):
        for m in names.CALLER_METRICS:
            for labels in names.label_sets(m, {"scenario": scenario, "profile": profile, "network": network}):
                yield m.name, tuple(labels[k] for k in m.labels)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class AggregateCollector(Collector):
    """The master's merged caller metrics, for loadgen.exporter."""

    def __init__(self, aggregate: Aggregate) -> None:
        self._aggregate = aggregate

    def collect(self) -> Iterator[Any]:
        yield from self._aggregate.families()


# ---- what a call contributes -------------------------------------------------------------------


class CallerMetrics:
    """Turns driver messages into observations; one per Locust process. `network` is the run's
    network profile (loadgen/networks)."""

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder

    def joined(self, join: dict[str, Any], scenario: str, profile: str, network: str = "perfect") -> None:
        lab = {"scenario": scenario, "profile": profile, "network": network}
        if join.get("dispatch_to_join_s") is not None:
            self.rec.observe(names.CALLER_DISPATCH_TO_JOIN, join["dispatch_to_join_s"], **lab)
        if join.get("outcome") == "no_agent" and join.get("reason") == "agent_join_timeout":
            self.rec.inc(names.CALLER_ROOMS_WITHOUT_AGENT, **lab)
        if join.get("outcome") == "ok":
            self.rec.gauge_add(names.CALLERS_ACTIVE, 1, **lab)

    def left(self, scenario: str, profile: str, network: str = "perfect") -> None:
        self.rec.gauge_add(names.CALLERS_ACTIVE, -1, scenario=scenario, profile=profile, network=network)

    def turn(self, result: dict[str, Any], scenario: str, profile: str, network: str = "perfect") -> None:
        lab = {"scenario": scenario, "profile": profile, "network": network}
        outcome = result["outcome"]
        self.rec.inc(names.CALLER_TURNS, outcome=outcome, **lab)
        if outcome == "dead_air":
            self.rec.inc(names.CALLER_DEAD_AIR, **lab)
        if result.get("latency_s") is not None:
            self.rec.observe(names.CALLER_TURN_LATENCY, result["latency_s"], **lab)
        for gap in result.get("gaps_s") or []:
            self.rec.observe(names.CALLER_SILENCE_GAP, gap, **lab)

    def conversation(self, outcome: str, scenario: str, profile: str, network: str = "perfect") -> None:
        self.rec.inc(names.CALLER_CONVERSATIONS, outcome=outcome, scenario=scenario, profile=profile,
                     network=network)
