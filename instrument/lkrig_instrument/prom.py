"""prometheus_client objects for the metrics in names.py, created once per process.

In a livekit-agents worker with PROMETHEUS_MULTIPROC_DIR set, job subprocesses write to that
directory and the worker's /metrics aggregates them, so counts survive the job's exit. Job
processes take turns in a bounded set of files (mpslots), so that the cost of a scrape does not
grow with the number of jobs a worker has run.

Each labelled child is looked up once and kept: the calls below run on every speech, turn and
injected delay, and `.labels()` validates and converts the label values each time.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from . import mpslots, names

mpslots.install()

_made: dict[str, Any] = {}
_children: dict[tuple[str, tuple[str, ...]], Any] = {}


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


def child(spec: names.Metric, labels: dict[str, str]) -> Any:
    """The series of `spec` with these labels (extra keys in `labels` are ignored)."""
    key = (spec.name, tuple(str(labels[k]) for k in spec.labels))
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric(spec).labels(*key[1])
    return found


def inc(spec: names.Metric, labels: dict[str, str], amount: float = 1.0) -> None:
    child(spec, labels).inc(amount)


def observe(spec: names.Metric, labels: dict[str, str], value: float) -> None:
    child(spec, labels).observe(value)


def gauge_add(spec: names.Metric, labels: dict[str, str], amount: float) -> None:
    child(spec, labels).inc(amount)


def gauge_set(spec: names.Metric, labels: dict[str, str], value: float) -> None:
    child(spec, labels).set(value)
