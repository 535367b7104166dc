"""The run's own series, served by the Locust master beside the caller metrics: when the load
started and stopped, when each fault of `rig run --fault` started and ended, and Locust's users,
workers and failure ratio. The dashboard's annotations and Locust panels read them from
Prometheus, so they work on any Grafana.

Faults reach the master as `POST /events` on its metrics port (rig.faults posts them; natively the
master is headless and has no web UI to post to). Every label value is checked against the closed
sets in lkrig_instrument.names, so a bad post cannot grow the series.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from lkrig_instrument import names
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# A target is an agent worker's name ("agent-2", "lkrig-agent-providers-1") or "livekit".
TARGET = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# Post bodies are a few dozen bytes; anything larger is not ours.
MAX_EVENT_BYTES = 4096


class EventError(ValueError):
    """A posted event the master refuses; the message names the field."""


class RunState(Collector):
    """What the master knows of the run. Locust's runner is read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[tuple[str, str, str], float] = {}  # (fault, target, phase) -> time
        self._fault_counts = {s["fault"]: 0.0 for s in names.label_sets(names.FAULTS, {})}
        self._runs: dict[str, float] = {}  # phase -> time
        self.runner: Any = None  # locust.runners.Runner, once Locust has one

    def run_event(self, phase: str, at: float | None = None) -> None:
        if phase not in names.RUN_PHASES:
            raise EventError(f"run phase {phase!r}: expected one of {', '.join(names.RUN_PHASES)}")
        with self._lock:
            self._runs[phase] = time.time() if at is None else at

    def fault_event(self, event: dict[str, Any]) -> None:
        """{"fault": kind, "target": name, "phase": "start"|"end", "at": unix seconds}."""
        if not isinstance(event, dict):
            raise EventError("an event is a JSON object")
        fault, target, phase, at = (event.get(k) for k in ("fault", "target", "phase", "at"))
        if fault not in names.FAULT_KINDS:
            raise EventError(f"fault {fault!r}: expected one of {', '.join(names.FAULT_KINDS)}")
        if not isinstance(target, str) or not TARGET.fullmatch(target):
            raise EventError(f"target {target!r}: expected a worker name or 'livekit'")
        if phase not in names.EVENT_PHASES:
            raise EventError(f"phase {phase!r}: expected one of {', '.join(names.EVENT_PHASES)}")
        if not isinstance(at, int | float) or isinstance(at, bool) or not 0 < at < 2**33:
            raise EventError(f"at {at!r}: expected Unix time in seconds")
        with self._lock:
            self._faults[(fault, target, phase)] = float(at)
            if phase == "start":
                self._fault_counts[fault] += 1

    def collect(self) -> Iterator[Any]:
        with self._lock:
            faults, counts, runs = dict(self._faults), dict(self._fault_counts), dict(self._runs)
        ts = GaugeMetricFamily(names.FAULT_TIMESTAMP.name, names.FAULT_TIMESTAMP.help,
                               labels=names.FAULT_TIMESTAMP.labels)
        for labels, at in sorted(faults.items()):
            ts.add_metric(list(labels), at)
        yield ts
        total = CounterMetricFamily(names.FAULTS.name.removesuffix("_total"), names.FAULTS.help,
                                    labels=names.FAULTS.labels)
        for fault, n in counts.items():
            total.add_metric([fault], n)
        yield total
        run = GaugeMetricFamily(names.RUN_TIMESTAMP.name, names.RUN_TIMESTAMP.help,
                                labels=names.RUN_TIMESTAMP.labels)
        for phase, at in sorted(runs.items()):
            run.add_metric([phase], at)
        yield run
        yield from self._locust()

    def _locust(self) -> Iterator[Any]:
        runner = self.runner
        if runner is None:
            return
        workers = getattr(runner, "worker_count", 1)  # a LocalRunner is its own single worker
        stats = getattr(runner, "stats", None)
        fail_ratio = stats.total.fail_ratio if stats is not None else 0.0
        for metric, value in ((names.LOCUST_USERS, runner.user_count),
                              (names.LOCUST_WORKERS, workers),
                              (names.LOCUST_FAIL_RATIO, fail_ratio)):
            yield GaugeMetricFamily(metric.name, metric.help, value=float(value))
