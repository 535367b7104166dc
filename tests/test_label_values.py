"""Each metric's closed label values are defined once, beside the metric in names.py, and are the
values the exporters serve from the start: the agent's zero series, the load generator's
prepared run, and the synthetic exporter the dashboard checks scrape."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from lkrig_instrument import hooks, names, prom
from prometheus_client import CollectorRegistry

from loadgen import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))
import synthetic_exporter

SESSION = {"scenario": "seed", "profile": "fast", "agents_version": "1.8.9"}


def values_used(label_sets: list[dict[str, str]], metric: names.Metric) -> dict[str, set[str]]:
    return {label: {s[label] for s in label_sets} for label in metric.values}


def declared(metric: names.Metric) -> dict[str, set[str]]:
    return {label: set(values) for label, values in metric.values.items()}


def test_every_label_is_open_or_lists_its_values() -> None:
    for m in names.ALL:
        for label in m.labels:
            assert (label in names.OPEN_LABELS) != bool(m.values.get(label)), (m.name, label)


@pytest.mark.parametrize(("labels", "values", "says"), [
    (("mood", "scenario"), {}, "lkrig_x_total: label 'mood' has no values"),
    (("mood",), {"mood": ()}, "label 'mood' has no values"),
    (("scenario",), {"scenario": ("a",)}, "label 'scenario' is open"),
    (("mood",), {"mood": ("a", "a")}, "label 'mood' lists a value twice"),
    ((), {"mood": ("a",)}, "values given for 'mood', not one of its labels"),
])
def test_a_metric_with_bad_label_values_is_one_named_error(
        labels: tuple[str, ...], values: dict[str, tuple[str, ...]], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        names.Metric("lkrig_x_total", "counter", "x", labels, values=values)


def test_label_sets_need_every_open_label() -> None:
    with pytest.raises(ValueError, match="lkrig_caller_turns_total: no value given for its open "
                                         "label 'profile'"):
        names.label_sets(names.CALLER_TURNS, {"scenario": "seed"})


def test_the_agent_serves_every_counter_at_zero_for_each_declared_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[names.Metric, dict[str, str], float]] = []
    monkeypatch.setattr(prom, "inc", lambda spec, labels, amount=1.0: served.append(
        (spec, dict(labels), amount)))
    hooks.zero_series(SESSION)
    assert served and all(amount == 0 for _, _, amount in served)
    for m in names.AGENT_METRICS:
        if m.type != "counter":
            continue
        sets = [{k: labels[k] for k in m.labels} for spec, labels, _ in served if spec is m]
        assert sets, f"{m.name}: not served at zero"
        assert values_used(sets, m) == declared(m), m.name
        assert len(sets) == math.prod(len(v) for v in m.values.values()), m.name
        assert all({k: s[k] for k in names.AGENT_LABELS} == SESSION for s in sets), m.name


def served(families: Iterable[Any], metrics_: tuple[names.Metric, ...]) -> dict[str, list[dict[str, str]]]:
    """The label sets each metric's family carries, by metric name."""
    by_family = {m.name.removesuffix("_total") if m.type == "counter" else m.name: m for m in metrics_}
    out: dict[str, list[dict[str, str]]] = {}
    for fam in families:
        if fam.name in by_family:
            m = by_family[fam.name]
            out[m.name] = [{k: s.labels[k] for k in m.labels} for s in fam.samples]
    return out


def test_a_prepared_run_serves_every_caller_series_for_each_declared_value() -> None:
    agg = metrics.Aggregate()
    agg.prepare("seed", "fast")
    got = served(agg.families(), names.CALLER_METRICS)
    assert set(got) == {m.name for m in names.CALLER_METRICS}
    for m in names.CALLER_METRICS:
        assert values_used(got[m.name], m) == declared(m), m.name


def test_the_synthetic_exporter_serves_each_declared_value() -> None:
    registry = CollectorRegistry()
    synthetic_exporter.tick(synthetic_exporter.build(registry))
    got = served(registry.collect(), names.ALL)
    assert set(got) == {m.name for m in names.ALL}
    for m in names.ALL:
        assert values_used(got[m.name], m) == declared(m), m.name
