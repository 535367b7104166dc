"""Issue #14's dashboard checks, driven by Playwright in Debian's Chromium, with the dashboard JSON and
a real Prometheus (tests/tools/dashboard_browser.py; Grafana's query side is the stand-in page in
tests/tools/grafana-standin/, whose header says what it does and what differs from Grafana):

  - every fault of the run has an annotation query that returns it;
  - no legend shows an IP;
  - every variable appears in every query of the panels it claims to filter, and choosing one
    value changes each such query in the browser.

A real Prometheus (1 s scrapes) scrapes a fixture exporter defined here: two agent workers
(targets labelled worker="agent-1" / "agent-2", as the rig's agent scrape job labels them) with a
few lkrig_* series carrying scenario, profile and agents_version, and the run's exporter with
lkrig_fault_timestamp_seconds{fault="kill-agent",target="agent-1",phase="start"} (served from the
fault time on, valued at it) and lkrig_run_timestamp_seconds{phase="start"}. Each check passes on a
minimal dashboard built here and on grafana/dashboards/speech-scheduling.json, and fails on one
deliberately broken copy of the minimal dashboard.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stackutil
import yaml

from rig import binaries

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))
import dashboard_browser as db

REAL_DASHBOARD = stackutil.REPO / "grafana" / "dashboards" / "speech-scheduling.json"
WORKERS = ("agent-1", "agent-2")
COMMON = 'scenario="seed",profile="fast",agents_version="1.8.9"'
SCRAPE_S = 1.0

pytestmark = pytest.mark.timeout(600)


# --- the fixture exporter and its Prometheus ----------------------------------------------------------
class _Exporter(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, body: Any) -> None:
        self.body = body  # () -> the exposition text
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data = self.server.body().encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Fixture:
    url: str
    t0: float  # when the exporters started
    fault_time: float  # Unix time of the kill-agent fault on agent-1
    run_start: float
    start: float  # the range every render uses
    end: float


def _worker_body(t0: float, n: int) -> str:
    turns = int((time.time() - t0) * 2) + 10 * n
    return "\n".join([
        "# TYPE lkrig_agent_turns_total counter",
        f"lkrig_agent_turns_total{{{COMMON}}} {turns}",
        "# TYPE lkrig_speech_scheduling_errors_total counter",
        f'lkrig_speech_scheduling_errors_total{{kind="draining",{COMMON}}} {turns // 2}',
        "# TYPE lkrig_agent_sessions_active gauge",
        f"lkrig_agent_sessions_active{{{COMMON}}} {n + 1}",
        "# TYPE lk_agents_worker_load gauge",
        f"lk_agents_worker_load {0.25 * (n + 1)}",
        "",
    ])


def _run_body(run_start: float, fault_time: float) -> str:
    lines = [
        "# TYPE lkrig_run_timestamp_seconds gauge",
        f'lkrig_run_timestamp_seconds{{phase="start"}} {run_start:.3f}',
        "# TYPE lkrig_callers_active gauge",
        'lkrig_callers_active{scenario="seed",profile="fast"} 4',
    ]
    if time.time() >= fault_time:  # a fault's series appears when the fault happens
        labels = 'fault="kill-agent",target="agent-1",phase="start"'
        lines += ["# TYPE lkrig_fault_timestamp_seconds gauge",
                  f"lkrig_fault_timestamp_seconds{{{labels}}} {fault_time:.3f}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    tmp = tmp_path_factory.mktemp("dashboard-browser")
    t0 = time.time()
    run_start, fault_time = round(t0 + 1.0, 3), round(t0 + 4.0, 3)  # whole ms, as exported
    workers = [_Exporter(lambda n=n: _worker_body(t0, n)) for n in range(len(WORKERS))]
    run = _Exporter(lambda: _run_body(run_start, fault_time))
    servers = [*workers, run]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    port = _free_port()
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": f"{SCRAPE_S:g}s"},
        "scrape_configs": [
            {"job_name": "agent", "static_configs": [
                {"targets": [f"127.0.0.1:{w.server_address[1]}"], "labels": {"worker": name}}
                for w, name in zip(workers, WORKERS, strict=True)]},
            {"job_name": "loadgen", "static_configs": [{"targets": [f"127.0.0.1:{run.server_address[1]}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [str(binaries.resolve_prometheus()), f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        stackutil.wait_until(lambda: stackutil.listening(port), 30, "Prometheus to listen")

        def ready() -> bool:
            try:
                fault = stackutil.prom_query(url, "lkrig_fault_timestamp_seconds")
                rates = stackutil.prom_query(url, "rate(lkrig_agent_turns_total[4s])")
            except AssertionError:
                return False
            return bool(fault) and len(rates) == len(WORKERS)

        stackutil.wait_until(ready, 60, "Prometheus to scrape the fault and two workers' rates")
        time.sleep(2 * SCRAPE_S)
        yield Fixture(url, t0, fault_time, run_start, start=t0 - 30, end=time.time() + 1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for s in servers:
            s.shutdown()
            s.server_close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _datasource() -> dict[str, str]:
    # The provisioned datasource, with the scrape interval of this test's Prometheus.
    return {**db.provisioned_datasource(), "timeInterval": f"{SCRAPE_S:g}s"}


# --- the minimal dashboard ------------------------------------------------------------------------------
DS = {"type": "prometheus", "uid": "${datasource}"}
AGENT_FILTER = ('scenario=~"$scenario", profile=~"$profile", agents_version=~"$agents_version", '
                'worker=~"$worker"')


def _query_var(name: str, query: str, **extra: Any) -> dict[str, Any]:
    return {"type": "query", "name": name, "datasource": DS, "query": query, "refresh": 2, "sort": 1,
            "includeAll": True, "multi": True, "current": {"text": "All", "value": "$__all"}, **extra}


def minimal_dashboard() -> dict[str, Any]:
    return {
        "uid": "lkrig-browser-test", "title": "Browser check", "schemaVersion": 39, "timezone": "utc",
        "time": {"from": "now-15m", "to": "now"},
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
             "hide": True, "name": "Annotations & Alerts", "type": "dashboard"},
            {"datasource": DS, "enable": True, "name": "Faults",
             "target": {"refId": "Anno", "expr": 'lkrig_fault_timestamp_seconds{phase="start"} * 1000'},
             "titleFormat": "{{fault}} {{target}}", "tagKeys": "fault,target", "useValueForTime": True},
            # the legacy form (expr and step at the top level), which Grafana moves into a target
            {"datasource": DS, "enable": True, "name": "Load", "expr": "lkrig_run_timestamp_seconds * 1000",
             "step": "1s", "titleFormat": "load {{phase}}", "tagKeys": "phase", "useValueForTime": True},
        ]},
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "query": "prometheus"},
            _query_var("scenario", "label_values(lkrig_agent_turns_total, scenario)", allValue=".*"),
            _query_var("profile", 'label_values(lkrig_agent_turns_total{scenario=~"$scenario"}, profile)',
                       allValue=".*"),
            _query_var("agents_version", 'label_values(lkrig_agent_turns_total{scenario=~"$scenario", '
                       'profile=~"$profile"}, agents_version)', allValue=".*"),
            _query_var("worker", "label_values(lk_agents_worker_load, worker)"),  # All = (agent-1|agent-2)
            {"type": "interval", "name": "window", "query": "1m,5m",
             "current": {"text": "1m", "value": "1m"}},
        ]},
        "panels": [
            {"type": "row", "id": 1, "title": "Agents", "collapsed": False,
             "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}},
            {"type": "timeseries", "id": 2, "title": "Errors by kind and worker", "datasource": DS,
             "gridPos": {"x": 0, "y": 1, "w": 12, "h": 8},
             "targets": [{"refId": "A", "legendFormat": "{{worker}} {{kind}}",
                          "expr": "sum by (kind, worker) (rate(lkrig_speech_scheduling_errors_total"
                                  f"{{{AGENT_FILTER}}}[$__rate_interval]))"}]},
            {"type": "stat", "id": 3, "title": "Turns (selected range)", "datasource": DS,
             "gridPos": {"x": 12, "y": 1, "w": 6, "h": 8},
             "targets": [{"refId": "A", "instant": True, "range": False, "legendFormat": "turns",
                          "expr": f"sum(increase(lkrig_agent_turns_total{{{AGENT_FILTER}}}[$__range]))"}]},
            {"type": "timeseries", "id": 4, "title": "Worker load", "datasource": DS,
             "gridPos": {"x": 18, "y": 1, "w": 6, "h": 8},
             "description": "Load per worker.\nNot filtered by: $scenario, $profile, $agents_version "
                            "(livekit-agents' own series have no such label)",
             "targets": [{"refId": "A", "legendFormat": "__auto",
                          "expr": 'max by (worker) (lk_agents_worker_load{worker=~"$worker"})'}]},
            {"type": "row", "id": 5, "title": "Callers", "collapsed": True,
             "gridPos": {"x": 0, "y": 9, "w": 24, "h": 1},
             "panels": [
                 {"type": "timeseries", "id": 6, "title": "Active callers", "datasource": DS,
                  "gridPos": {"x": 0, "y": 10, "w": 24, "h": 8},
                  "description": "Not filtered by: $worker, $agents_version "
                                 "(the callers' series have no such label)",
                  "targets": [{"refId": "A", "legendFormat": "",
                               "expr": 'sum by (scenario) (lkrig_callers_active{scenario=~"$scenario", '
                                       'profile=~"$profile"})'}]},
             ]},
        ],
    }


def _panel(rendered: dict[str, Any], panel_id: int) -> dict[str, Any]:
    return next(p for p in rendered["panels"] if p["id"] == panel_id)


# --- the passing path: a minimal dashboard --------------------------------------------------------------
def test_minimal_dashboard_renders_as_grafana_would(prom: Fixture, tmp_path: Path) -> None:
    shot = tmp_path / "minimal.png"
    r = db.render(minimal_dashboard(), prom.url, prom.start, prom.end, datasource=_datasource(),
                  screenshot=shot)
    assert shot.stat().st_size > 0
    assert r["variables"]["worker"] == ["$__all"]
    worker = next(v for v in r["variable_details"] if v["name"] == "worker")
    assert [o["value"] for o in worker["options"]] == ["$__all", "agent-1", "agent-2"]

    p2 = _panel(r, 2)
    q = p2["queries"][0]
    # includeAll without allValue: every value as a regex; $__rate_interval = max(1 s + 1 s, 4 * 1 s)
    assert 'worker=~"(agent-1|agent-2)"' in q["expr_interpolated"]
    assert 'scenario=~".*"' in q["expr_interpolated"]
    assert q["expr_interpolated"].endswith("[4s]))") and q["rate_interval_ms"] == 4000, q
    assert sorted(p2["legends"]) == ["agent-1 draining", "agent-2 draining"], p2

    p3 = _panel(r, 3)
    assert p3["queries"][0]["type"] == "instant"
    assert f"[{round(prom.end - prom.start)}s]" in p3["queries"][0]["expr_interpolated"]
    assert p3["legends"] == ["turns"]

    # "__auto" with one label left by the aggregation: the frontend shows that label's value
    assert sorted(_panel(r, 4)["legends"]) == ["agent-1", "agent-2"]
    # a panel inside a collapsed row runs too; an empty legendFormat is the default {label="value"} name
    p6 = _panel(r, 6)
    assert p6["row"] == "Callers" and p6["collapsed_row"] is True
    assert p6["legends"] == ['{scenario="seed"}']

    faults = [a for a in r["annotations"] if a["name"] == "Faults"]
    assert [(a["title"], a["tags"]) for a in faults] == [("kill-agent agent-1", ["kill-agent", "agent-1"])]
    assert abs(faults[0]["time_ms"] - prom.fault_time * 1000) <= 1  # the value in ms, floored
    load = [a for a in r["annotations"] if a["name"] == "Load"]
    assert [a["title"] for a in load] == ["load start"]
    assert abs(load[0]["time_ms"] - prom.run_start * 1000) <= 1

    # choosing one worker in the browser, as Grafana's var-worker=agent-1 URL does
    one = db.render(minimal_dashboard(), prom.url, prom.start, prom.end, {"worker": "agent-1"},
                    datasource=_datasource())
    assert 'worker=~"agent-1"' in _panel(one, 2)["queries"][0]["expr_interpolated"]
    assert _panel(one, 2)["legends"] == ["agent-1 draining"]


def test_minimal_dashboard_passes_the_three_checks(prom: Fixture) -> None:
    d = minimal_dashboard()
    r = db.render(d, prom.url, prom.start, prom.end, datasource=_datasource())
    assert db.faults_annotated(r, [("kill-agent", "agent-1", prom.fault_time)],
                               scrape_interval=SCRAPE_S) == []
    assert db.ip_legends(r) == []
    probes = db.probe_variables(d, prom.url, prom.start, prom.end, datasource=_datasource())
    assert set(probes["by_variable"]) == {"scenario", "profile", "agents_version", "worker"}
    assert probes["by_variable"]["worker"]["value"] == "agent-1"
    assert db.unfiltered_queries(d, probes) == []


# --- the passing path: the real dashboard ---------------------------------------------------------------
def test_real_dashboard_passes_the_three_checks(prom: Fixture) -> None:
    d = json.loads(REAL_DASHBOARD.read_text())
    r = db.render(REAL_DASHBOARD, prom.url, prom.start, prom.end, datasource=_datasource())
    errors = [f"panel {p['id']} {p['title']!r}: {p['error'] or q['error']}"
              for p in r["panels"] for q in (p["queries"] or [{"error": None}]) if p["error"] or q["error"]]
    assert errors == []
    assert sum(len(p["legends"]) for p in r["panels"]) > 0  # some panels drew series from the fixture
    assert db.faults_annotated(r, [("kill-agent", "agent-1", prom.fault_time)],
                               scrape_interval=SCRAPE_S) == []
    assert db.ip_legends(r) == []
    probes = db.probe_variables(REAL_DASHBOARD, prom.url, prom.start, prom.end, datasource=_datasource())
    assert db.unfiltered_queries(d, probes) == []


# --- each check can fail ----------------------------------------------------------------------------
def test_a_fault_without_an_annotation_is_caught(prom: Fixture) -> None:
    r = db.render(minimal_dashboard(), prom.url, prom.start, prom.end, datasource=_datasource())
    late = db.faults_annotated(r, [("kill-agent", "agent-1", prom.fault_time + 120)],
                               scrape_interval=SCRAPE_S)
    assert len(late) == 1 and "no annotation within 1 s" in late[0] and "kill-agent agent-1" in late[0], late
    other = db.faults_annotated(r, [("drain-agent", "agent-2", prom.fault_time)], scrape_interval=SCRAPE_S)
    assert len(other) == 1 and "closest carrying it: none" in other[0], other

    # An annotation that forgets Grafana's unit for "series value as timestamp" (ms): the fault
    # lands in January 1970, and the check says so.
    seconds = minimal_dashboard()
    seconds["annotations"]["list"][1]["target"]["expr"] = 'lkrig_fault_timestamp_seconds{phase="start"}'
    r = db.render(seconds, prom.url, prom.start, prom.end, datasource=_datasource())
    (fault,) = [a for a in r["annotations"] if a["name"] == "Faults"]
    assert fault["time_ms"] == int(prom.fault_time)  # seconds read as milliseconds
    problems = db.faults_annotated(r, [("kill-agent", "agent-1", prom.fault_time)], scrape_interval=SCRAPE_S)
    assert len(problems) == 1 and "kill-agent" in problems[0], problems


def test_an_ip_in_a_legend_is_caught(prom: Fixture) -> None:
    bad = minimal_dashboard()
    bad["panels"][3]["targets"][0]["legendFormat"] = "{{instance}}"
    bad["panels"][3]["targets"][0]["expr"] = 'max by (instance) (lk_agents_worker_load{worker=~"$worker"})'
    r = db.render(bad, prom.url, prom.start, prom.end, datasource=_datasource())
    problems = db.ip_legends(r)
    assert len(problems) == 2, problems
    assert all("panel 4 'Worker load'" in p and "'127.0.0.1'" in p for p in problems), problems


def test_address_detection() -> None:
    for text, found in [
        ("127.0.0.1:9100", "127.0.0.1"), ('{instance="10.0.0.7:9100", job="agent"}', "10.0.0.7"),
        ("[::1]:9100", "::1"), ("fe80::1 agent", "fe80::1"), ("2001:db8::42", "2001:db8::42"),
        ("agent-1:9100", "agent-1:9100"), ("localhost:9090 load", "localhost:9090"),
    ]:
        assert db.address_in(text) == found, text
    for text in ["agent-1", "agent-1 draining", "seed / fast / 1.8.9: draining", "p95 seed / fast", "1.8.9",
                 '{scenario="seed"}', "errors / min", "load start", "10:30"]:
        assert db.address_in(text) is None, text


def test_a_query_that_drops_a_variable_is_caught(prom: Fixture) -> None:
    bad = minimal_dashboard()
    target = bad["panels"][1]["targets"][0]
    target["expr"] = target["expr"].replace(', worker=~"$worker"', "")
    assert "$worker" not in target["expr"]
    static = db.unfiltered_queries(bad)
    assert static == [
        "panel 2 'Errors by kind and worker' query A: does not use $worker "
        "(add it, or name it in a description line 'Not filtered by: $worker (why)')"
    ]
    probes = db.probe_variables(bad, prom.url, prom.start, prom.end, datasource=_datasource())
    dynamic = [p for p in db.unfiltered_queries(bad, probes) if p not in static]
    assert len(dynamic) == 1, dynamic
    assert "choosing worker=agent-1 in the browser leaves the query unchanged" in dynamic[0], dynamic

    # A "Not filtered by" line exempts the panel; one naming an unknown variable is an error.
    bad["panels"][1]["description"] = "Not filtered by: $worker (test)\nNot filtered by: $nosuch (typo)"
    assert db.unfiltered_queries(bad) == [
        "panel 2 'Errors by kind and worker': 'Not filtered by' names $nosuch, which is not a filterable "
        "variable of the dashboard"
    ]


def test_not_filtered_by_parsing() -> None:
    described = "Load.\nNot filtered by: $scenario, ${profile} (why: $x)"
    assert db.not_filtered_by(described) == {"scenario", "profile"}
    assert db.not_filtered_by("nothing here") == set()
    assert db.uses_variable('x{w=~"${worker:regex}"}', "worker")
    assert db.uses_variable("x{w=~\"[[worker]]\"}", "worker")
    assert not db.uses_variable('x{w=~"$workers"}', "worker")


# --- the stand-in's arithmetic against Grafana's own test vectors -----------------------------------
# pkg/promlib/models/query_test.go (TestParse, TestRateInterval, TestAlignTimeRange): the page's port
# of the Go backend must give the same step and interpolated expression. Each case: range (ms),
# the query's min step ("interval"), its intervalMs, the DataQuery's Interval (ms), maxDataPoints,
# intervalFactor, the datasource's scrape interval, the expression; the step and expression Grafana's
# test expects (None: not asserted there).
H48, H1, M5 = 48 * 3600_000, 3600_000, 300_000
GO_VECTORS = [
    (12 * 3600_000, "", 0, 60_000, 0, 0, "15s", "go_goroutines", 30_000, None),
    (H1, "", 0, 60_000, 0, 1, "15s", "go_goroutines", 15_000, None),
    (H48, "", 0, 60_000, 0, 10, "15s", "go_goroutines", 1_200_000, None),
    (H48, "", 0, 60_000, 0, 1, "15s", "go_goroutines", 120_000, None),
    (H48, "", 0, 60_000, 0, 1, "240s", "go_goroutines", 240_000, None),
    (H48, "", 60_000, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [$__interval]})', 120_000,
     'rate(ALERTS{job="test" [2m]})'),
    (H48, "1m", 60_000, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [${__interval}]})', None,
     'rate(ALERTS{job="test" [2m]})'),
    (H48, "", 60_000, 60_000, 0, 1, "15s",
     'rate(ALERTS{job="test" [$__interval_s]}) + rate(ALERTS{job="test" [$__interval]})', None,
     'rate(ALERTS{job="test" [120]}) + rate(ALERTS{job="test" [2m]})'),
    (H48, "", 60_000, 60_000, 0, 1, "15s",
     'rate(ALERTS{job="test" [${__interval_ms}]}) + rate(ALERTS{job="test" [${__interval}]})', None,
     'rate(ALERTS{job="test" [120000]}) + rate(ALERTS{job="test" [2m]})'),
    (H48, "", 0, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [$__range]})', None,
     'rate(ALERTS{job="test" [172800s]})'),
    (H48, "", 0, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [${__range_s}s]})', None,
     'rate(ALERTS{job="test" [172800s]})'),
    (40, "", 0, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [$__range_s]})', None,
     'rate(ALERTS{job="test" [0]})'),
    (800, "", 0, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [$__range_s]})', None,
     'rate(ALERTS{job="test" [1]})'),
    (20, "", 0, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [$__range_ms]})', None,
     'rate(ALERTS{job="test" [20]})'),
    (M5, "5m", 0, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [$__rate_interval]})', None,
     'rate(ALERTS{job="test" [20m0s]})'),
    (M5, "$__rate_interval", 0, 60_000, 0, 1, "15s", 'rate(ALERTS{job="test" [$__rate_interval]})', 60_000,
     'rate(ALERTS{job="test" [1m0s]})'),
    (H48, "", 0, 120_000, 0, 1, "15s",
     'rate(ALERTS{job="test" [$__rate_interval_s]}) + rate(ALERTS{job="test" [$__rate_interval]})', None,
     'rate(ALERTS{job="test" [135]}) + rate(ALERTS{job="test" [2m15s]})'),
    (H48, "", 0, 120_000, 0, 1, "15s",
     'rate(ALERTS{job="test" [${__rate_interval_ms}]}) + rate(ALERTS{job="test" [${__rate_interval}]})', None,
     'rate(ALERTS{job="test" [135000]}) + rate(ALERTS{job="test" [2m15s]})'),
    (H1, "150s", 100_000, 100_000, 12384, 1, "30s", "rate(x[$__rate_interval])", 150_000, "rate(x[10m0s])"),
    (H1, "150s", 120_000, 120_000, 12384, 1, "30s", "rate(x[$__rate_interval])", 150_000, "rate(x[10m0s])"),
    (H1, "120s", 120_000, 120_000, 12384, 1, "30s", "rate(x[$__rate_interval])", 120_000, "rate(x[8m0s])"),
    (H1, "30s", 30_000, 30_000, 12384, 1, "30s", "rate(x[$__rate_interval])", 30_000, "rate(x[2m0s])"),
    (H1, "$__rate_interval", 30_000, 30_000, 12384, 1, "30s", "rate(x[$__rate_interval])", 120_000,
     "rate(x[2m0s])"),
    (H48, "$__rate_interval", 120_000, 120_000, 12384, 1, "30s", "rate(x[$__rate_interval])", 150_000,
     "rate(x[2m30s])"),
    (H48, "$__interval", 120_000, 120_000, 12384, 1, "15s", "rate(x[$__rate_interval])", 120_000,
     "rate(x[8m0s])"),
    (H1, "", 30_000, 30_000, 1613, 0, "30s", "sum(rate(p[$__rate_interval]))", 30_000, "sum(rate(p[2m0s]))"),
    (M5, "", 15_000, 15_000, 1055, 0, "15s", "sum(rate(c[$__rate_interval]))", 15_000, "sum(rate(c[1m0s]))"),
]
ALIGN_VECTORS = [  # (t ms, step ms, utcOffsetSec, want ms)
    (1664816826_000, 10_000, 0, 1664816820_000),
    (1664816825_005, 10, 0, 1664816825_000),
    (1664816825_005, 2_000, -3, 1664816825_000),
    (1704672000_000, 604800_000, 0, 1704326400_000),  # a Monday, a 1w step: the Thursday before
]
VM_HARNESS = r"""
const fs = require('fs'), vm = require('vm');
const el = () => ({ setAttribute() {}, appendChild() {}, querySelector: () => el(), textContent: '',
  dataset: {} });
const window = {};
const ctx = { window, location: { search: '' }, document: { querySelector: () => el() }, URLSearchParams,
  fetch: () => Promise.reject(new Error('no network here')), requestAnimationFrame: (f) => f(), console };
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(process.argv[1], 'utf8'), ctx);
const s = window.__standinInternals;
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const out = { go: input.go.map(([range, interval, intervalMs, queryInterval, maxDP, factor, ds, expr]) => {
  const step = s.calculatePrometheusInterval(interval, ds, intervalMs, factor, range, maxDP);
  return [step, s.interpolateBuiltins(expr, queryInterval, step, interval, ds, range).expr];
}), align: input.align.map(([t, step, off]) => s.alignTime(t, step, off)) };
process.stdout.write(JSON.stringify(out));
"""


def test_stand_in_arithmetic_matches_grafanas_test_vectors() -> None:
    import shutil

    node = shutil.which("node")
    assert node, "node is not on PATH"
    standin = Path(__file__).resolve().parent / "tools" / "grafana-standin" / "standin.js"
    cases = {"go": [v[:8] for v in GO_VECTORS], "align": [v[:3] for v in ALIGN_VECTORS]}
    r = subprocess.run([node, "-e", VM_HARNESS, str(standin)], capture_output=True, text=True, timeout=60,
                       input=json.dumps(cases))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    wrong = []
    for v, (step, expr) in zip(GO_VECTORS, got["go"], strict=True):
        if (v[8] is not None and step != v[8]) or (v[9] is not None and expr != v[9]):
            wrong.append(f"{v}: step {step}, expr {expr!r}")
    for v, t in zip(ALIGN_VECTORS, got["align"], strict=True):
        if t != v[3]:
            wrong.append(f"align {v}: {t}")
    assert wrong == []
