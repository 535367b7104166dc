"""docs/scaling.md against bench/sizing.py, which holds every coefficient once.

Every generated block of the page is the script's output for the command its marker names (the
faults table of docs/soak-and-faults.md is kept the same way, tests/test_faults.py). Then, not
trusting the script: the sizing table is recomputed here from the coefficients as the page states
them, the series per label set are recounted from names.py through names.label_sets, and the
page's prose numbers that follow from the coefficients are checked. Offline, well under 2 s.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lkrig_instrument import names

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "scaling.md"
SCRIPT = REPO / "bench" / "sizing.py"

_spec = importlib.util.spec_from_file_location("lkrig_bench_sizing", SCRIPT)
assert _spec and _spec.loader
sizing = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sizing  # dataclasses look their module up there
_spec.loader.exec_module(sizing)


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _blocks() -> dict[tuple[str, ...], str]:
    return {tuple(m["args"].split()): m["body"] for m in sizing.BLOCK.finditer(_doc())}


def _rows(block: str) -> list[list[str]]:
    """The cells of a markdown table's body rows (header and rule left out)."""
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _number(cell: str) -> float:
    return float(re.match(r"[\d,.]+", cell.strip("`")).group(0).replace(",", ""))


def test_every_generated_block_is_the_scripts_output() -> None:
    blocks = _blocks()
    assert {("--coefficients",), ("--table",), ("--series",)} <= set(blocks), sorted(blocks)
    assert _doc().count("<!-- generated:") == len(blocks) == _doc().count("<!-- end generated -->")
    for args, body in blocks.items():
        assert body == sizing.render(list(args)), (
            f"docs/scaling.md is stale: run `.venv/bin/python bench/sizing.py --update-doc` "
            f"(block {' '.join(args)})")


def _stated_coefficients() -> dict[str, float]:
    return {row[0].strip("`"): _number(row[1]) for row in _rows(_blocks()[("--coefficients",)])}


def test_the_table_follows_from_the_coefficients_the_page_states() -> None:
    k = _stated_coefficients()
    tracks_per_call = int(re.search(r"\((\d+) per call\)", _blocks()[("--coefficients",)]).group(1))
    for args in (("--table",), ("--table", "--worker-cores", "4")):
        block = _blocks()[args]
        header = re.search(r"agent workers \((\d+) cores?, (\d+) sessions each\)", block)
        cores, per = map(int, header.groups())
        assert per == math.floor((cores / k["headroom"] - k["agent_base"]) / k["agent_per_session"])
        rows = _rows(block)
        assert [_number(r[0]) for r in rows] == [100, 1_000, 10_000]
        for r in rows:
            calls = int(_number(r[0]))
            workers = math.ceil(calls / per)
            drivers = math.ceil(calls / k["callers_per_core"])
            locust = math.ceil(calls / k["callers_per_locust_worker"])
            nodes = max(1, math.ceil(calls * tracks_per_call * k["headroom"] / k["livekit_tracks_per_node"]))
            memory_gb = (workers * k["agent_idle_mb"] + calls * k["agent_mb_per_session"]) / 1000
            assert _number(r[1]) == workers and _number(r[2]) == workers * cores, r
            # the page rounds the MB coefficients; the memory may move by that rounding only
            assert _number(r[3]) == pytest.approx(memory_gb, rel=0.01, abs=0.5), r
            assert r[4] == f"{drivers + locust:,} ({drivers:,} + {locust:,})" and _number(r[5]) == locust, r
            assert _number(r[6]) == nodes, r


def test_the_series_are_names_py_recounted() -> None:
    def per_label_set(metrics: tuple[names.Metric, ...], open_values: dict[str, str]) -> int:
        total = 0
        for m in metrics:
            samples = len(m.buckets) + 1 + 2 if m.type == "histogram" else 1  # buckets, +Inf, sum, count
            total += len(names.label_sets(m, open_values)) * samples
        return total

    agent_open = {"scenario": "seed", "profile": "fast", "agents_version": "1.8.9"}
    s = sizing.series()
    with_labels = tuple(m for m in names.AGENT_METRICS if "scenario" in m.labels)
    role_only = tuple(m for m in names.AGENT_METRICS if "scenario" not in m.labels)
    assert s.agent_per_label_set == per_label_set(with_labels, agent_open)
    assert s.agent_per_worker == per_label_set(role_only, {})
    assert s.caller_per_label_set == per_label_set(
        names.CALLER_METRICS, {"scenario": "seed", "profile": "fast", "network": "perfect"})
    units = {row[0]: row[1] for row in _rows(_blocks()[("--series",)].split("\n\n", 1)[1])}
    assert units["agent worker, per (scenario, profile, agents_version) it ran"].startswith(
        f"{s.agent_per_label_set} + ")
    callers = units["callers, per (scenario, profile, network), on the Locust master"]
    assert callers == str(s.caller_per_label_set)
    # one worker, one node, one label set: every part once
    one = (s.agent_per_label_set + s.agent_per_worker + sizing.LK_AGENTS_SERIES_PER_WORKER
           + s.rules_per_worker + s.rules_per_worker_label_set + sizing.LIVEKIT_SERIES_PER_NODE
           + sizing.PROMETHEUS_SELF_SERIES + s.caller_per_label_set + s.rules_per_label_set + s.run_fixed
           + sizing.SCRAPE_SERIES_PER_TARGET * 4)
    assert sizing.series_total(1, 1) == one
    # the recording rules the count comes from are still the ones in prometheus/rules
    assert s.rules_per_label_set == 3 * len(names.ERROR_KINDS) + 1 + 3 + 2 * len(names.TURN_STAGES)
    assert s.rules_per_worker == len(names.PROCESS_ROLES)
    assert s.rules_per_worker_label_set == len(names.TASK_PHASES)


def test_the_prose_agrees_with_the_coefficients() -> None:
    doc = " ".join(_doc().split())
    c2, c4 = sizing.coefficients(2), sizing.coefficients(4)
    assert f"a 2-core worker at two-thirds busy holds {sizing.sessions_per_worker(c2)}," in doc
    assert f"4-core agent workers ({sizing.sessions_per_worker(c4)} sessions each" in doc
    ratio = round(c2.agent_per_session / c2.cpu_per_caller)
    assert re.findall(r"about (\d+) (?:times a caller's CPU|callers' CPU)", doc) == [str(ratio)] * 2
    assert f"H = {c2.headroom:g}:" in doc
    # the loadgen coefficient is the row loadgen/README.md tabulates
    row = sizing.loadgen_row()
    readme = (REPO / "loadgen" / "README.md").read_text(encoding="utf-8")
    assert f"| {row['callers']} ({row['drivers']}) | {row['cpu_pct_per_caller']:.2f} % |" in readme


def test_the_script_runs_as_documented() -> None:
    ok = subprocess.run([sys.executable, str(SCRIPT), "--calls", "250", "2500", "--worker-cores", "4"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert [r[0] for r in _rows(ok.stdout)] == ["250", "2,500"]
    bad = subprocess.run([sys.executable, str(SCRIPT), "--worker-cores", "0"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "positive" in bad.stderr
