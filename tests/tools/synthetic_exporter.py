"""Test support for check_panels_live: an exporter of every names.py metric, live-updating.

    python tests/tools/synthetic_exporter.py PORT

Serves every metric in names.ALL with its declared labels (each closed label with every value
names.py lists for it, each open one with one value) and the livekit-server / livekit-agents
series the dashboards read (names.EXTERNAL), except livekit_packet_loss_total: livekit-server
creates that counter only at the first lost packet, so the dashboard must cope without it.
Counters and histograms keep moving so rates and quantiles have data. Not part of the rig; the
real exporters are the agent's and the loadgen's.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from typing import Any

import metric_names
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

NAMES = metric_names.load_names()
# One value for each open label (names.OPEN_LABELS); label_sets says which one is missing.
OPEN_VALUES = {"scenario": "seed", "profile": "fast", "network": "perfect", "agents_version": "1.8.9",
               "target": "agent-0"}


def build(registry: CollectorRegistry) -> list[tuple[Any, list[dict[str, str]], str]]:
    out = []
    for m in NAMES.ALL:
        kind = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[m.type]
        kwargs = {"buckets": NAMES.LATENCY_BUCKETS} if m.type == "histogram" else {}
        name = m.name.removesuffix("_total") if m.type == "counter" else m.name
        sets = NAMES.label_sets(m, OPEN_VALUES)
        out.append((kind(name, m.help, m.labels, registry=registry, **kwargs), sets, m.type))
    node = {"node_id": ["ND_synthetic"], "node_type": ["SERVER"]}
    ext: list[tuple[Any, dict[str, list[str]], str]] = [
        (Gauge("livekit_room_total", "rooms", list(node), registry=registry), node, "gauge"),
        (Gauge("livekit_participant_total", "participants", list(node), registry=registry), node, "gauge"),
        (
            Counter(
                "livekit_packet",
                "packets",
                [*node, "direction", "transmission", "country"],
                registry=registry,
            ),
            {**node, "direction": ["incoming", "outgoing"], "transmission": ["transmit"], "country": [""]},
            "counter",
        ),
        (
            Histogram(
                "livekit_jitter_us",
                "jitter",
                [*node, "direction", "source", "type", "country"],
                buckets=(1000, 10000, 30000, 50000, 70000, 100000, 300000, 600000, 1000000),
                registry=registry,
            ),
            {**node, "direction": ["incoming"], "source": ["MICROPHONE"], "type": ["AUDIO"], "country": [""]},
            "histogram_us",
        ),
        (
            Gauge("lk_agents_active_job_count", "jobs", ["nodename"], registry=registry),
            {"nodename": ["w1"]},
            "gauge",
        ),
        (
            Gauge("lk_agents_worker_load", "load", ["nodename"], registry=registry),
            {"nodename": ["w1"]},
            "gauge",
        ),
        (
            Histogram(
                "lk_agents_proc_initialize_duration_seconds",
                "process initialize time",
                ["nodename"],
                buckets=(0.1, 0.5, 1, 2, 5, 10),
                registry=registry,
            ),
            {"nodename": ["w1"]},
            "histogram",
        ),
    ]
    for metric, labels, kind in ext:
        sets: list[dict[str, str]] = [{}]
        for label, values in labels.items():
            sets = [{**s, label: v} for s in sets for v in values]
        out.append((metric, sets, kind))
    return out


def tick(metrics: list[tuple[Any, list[dict[str, str]], str]]) -> None:
    for metric, sets, kind in metrics:
        for labels in sets:
            child = metric.labels(**labels) if labels else metric
            if kind == "counter":
                child.inc(random.randint(1, 3))
            elif kind == "gauge":
                child.set(random.uniform(0.1, 0.9))
            elif kind == "histogram_us":
                child.observe(random.uniform(2000, 40000))
            else:
                child.observe(random.uniform(0.05, 2.0))


def main(argv: list[str]) -> int:
    port = int(argv[0])
    registry = CollectorRegistry()
    metrics = build(registry)
    tick(metrics)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    stop = threading.Event()
    while not stop.wait(0.2):
        tick(metrics)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        time.sleep(0)
