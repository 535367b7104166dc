"""prometheus_client objects for the metrics in names.py, created once per process.

In a livekit-agents worker with PROMETHEUS_MULTIPROC_DIR set, job subprocesses write to that
directory and the worker's /metrics aggregates them, so counts survive the job's exit.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from . import names

_made: dict[str, Any] = {}


def metric(spec: names.Metric) -> Any:
    if spec.name not in _made:
        if spec.type == "counter":
            _made[spec.name] = Counter(spec.name, spec.help, spec.labels)
        elif spec.type == "gauge":
            _made[spec.name] = Gauge(spec.name, spec.help, spec.labels, multiprocess_mode="livesum")
        else:
            _made[spec.name] = Histogram(
                spec.name, spec.help, spec.labels, buckets=spec.buckets
            )
    return _made[spec.name]


def inc(spec: names.Metric, labels: dict[str, str], amount: float = 1.0) -> None:
    metric(spec).labels(**{k: labels[k] for k in spec.labels}).inc(amount)


def observe(spec: names.Metric, labels: dict[str, str], value: float) -> None:
    metric(spec).labels(**{k: labels[k] for k in spec.labels}).observe(value)


def gauge_add(spec: names.Metric, labels: dict[str, str], amount: float) -> None:
    metric(spec).labels(**{k: labels[k] for k in spec.labels}).inc(amount)


def gauge_set(spec: names.Metric, labels: dict[str, str], value: float) -> None:
    metric(spec).labels(**{k: labels[k] for k in spec.labels}).set(value)
