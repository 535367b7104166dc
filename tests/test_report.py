"""`rig report` against a real Prometheus scraping an exporter of the rig's metrics.

Prometheus (Debian's binary, resolved as `rig up --native` does) scrapes
tests/tools/synthetic_exporter.py for ~35 s while Locust's real CSV writer records a run of
tests/tools/csv_locustfile.py; then `rig report` runs over that range as a user would, and the
page is opened in headless Chromium. Port offset 7500 (Prometheus 16590, exporter 16591).
Run by hand, alone on a shared machine (under its shared flock).
"""

from __future__ import annotations

import calendar
import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lkrig_instrument import names
from stackutil import synthetic_prometheus

from rig import paths, ports, report, report_cmd
from rig.promapi import Prometheus

PORT_OFFSET = 7500
PROM_PORT = ports.PROMETHEUS_PORT + PORT_OFFSET
EXPORTER_PORT = PROM_PORT + 1
TOOLS = Path(__file__).resolve().parent / "tools"
SCRAPE_SECONDS = 35
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def rig_report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rig.cli", "report", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=paths.REPO,
    )


def _wait_port_free(port: int) -> None:
    # A Prometheus left from an earlier run on our offset would answer for us.
    answer = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert not answer.strip(), f"port {port} (offset {PORT_OFFSET}) is taken: {answer}"


@dataclass
class Run:
    prom: str
    t0: float
    t1: float
    out: Path
    locust_csv: Path
    faults: list[dict]
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("report")
    for port in (PROM_PORT, EXPORTER_PORT):
        _wait_port_free(port)
    with synthetic_prometheus(tmp, PROM_PORT, EXPORTER_PORT) as prom:
        t_start = time.time()
        locust = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "locust"),
                "-f",
                str(TOOLS / "csv_locustfile.py"),
                "--headless",
                "-u",
                "3",
                "-r",
                "3",
                "-t",
                "20s",
                "--csv",
                str(tmp / "locust"),
                "--csv-full-history",
                "--only-summary",
                "--exit-code-on-error",
                "0",
            ],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "locust.log", "w"),
        )
        try:
            deadline = time.monotonic() + 30
            while True:  # until Prometheus has scraped the exporter
                try:
                    if Prometheus(prom).query(f"sum({names.TURNS.name})", time.time()):
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline, (tmp / "prometheus.log").read_text()[-2000:]
                time.sleep(0.5)
            t0 = time.time()
            time.sleep(max(0.0, t_start + SCRAPE_SECONDS - time.time()))
            assert locust.wait(timeout=30) == 0, (tmp / "locust.log").read_text()[-2000:]
            t1 = time.time() - 1  # evaluated after the last scrape of the range
            faults = [
                {"at": t0 + 8, "name": "kill-agent", "detail": "SIGKILL agent-1"},
                {"at": t0 + 18, "name": "restart-livekit", "detail": "restart"},
            ]
            run_json = tmp / "run.json"
            run_json.write_text(
                json.dumps(
                    {
                        "run_info": {"users": 3, "scenario": "seed", "versions": {"livekit-agents": "1.8.9"}},
                        "faults": faults,
                        "slo": [
                            {"name": "turn latency p95", "limit": 2.0, "value": 1.2, "ok": True,
                             "detail": "s"},
                            {
                                "name": "draining per 1k turns",
                                "limit": 0,
                                "value": 12.5,
                                "ok": False,
                                "detail": "",
                            },
                        ],
                    }
                )
            )
            result = rig_report(
                "--from",
                f"{t0:.3f}",
                "--to",
                f"{t1:.3f}",
                "--out",
                str(tmp / "out"),
                "--prometheus",
                prom,
                "--locust-csv",
                str(tmp / "locust"),
                "--run-json",
                str(run_json),
            )
            yield Run(prom, t0, t1, tmp / "out", tmp / "locust", faults, result)
        finally:
            if locust.poll() is None:
                locust.kill()
            locust.wait()


def _open(html: Path) -> tuple[dict, list[str]]:
    """What Chromium rendered: per section, its SVG series and markers; and every request made."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html.as_uri())
            page.wait_for_load_state("load")
            seen = page.evaluate("""() => Object.fromEntries(
              [...document.querySelectorAll('section')].map(s => [s.id, {
                  text: s.innerText,
                  svgs: [...s.querySelectorAll('svg.plot')].map(svg => ({
                    width: svg.getBoundingClientRect().width,
                    series: [...svg.querySelectorAll('path.series')].map(p => ({
                      label: p.dataset.label, points: (p.getAttribute('d').match(/[ML]/g) || []).length,
                      length: p.getTotalLength()})),
                    markers: [...svg.querySelectorAll('g.fault-marker line')].map(l => l.getBBox().height),
                    noData: svg.querySelector('text.no-data') !== null,
                  })),
                }]))""")
        finally:
            browser.close()
    return seen, [u for u in requests if u != html.as_uri()]


def test_report_renders_every_plot_in_chromium(run: Run) -> None:
    assert run.result.returncode == 0, run.result.stderr
    seen, external = _open(run.out / "report.html")
    assert external == [], f"the report made requests: {external}"
    expected = [f"panel-{p.key}" for p in report.PANELS] + ["panel-locust-load", "panel-locust-turns"]
    for section in [
        "slo",
        "faults",
        "totals",
        "stats",
        "locust-totals",
        "locust-failures",
        "run-info",
        *expected,
    ]:
        assert section in seen, f"section {section} missing; have {sorted(seen)}"
    for key in expected:
        (svg,) = seen[key]["svgs"]
        assert svg["width"] > 500, key
        assert not svg["noData"], f"{key}: no data in range"
        drawn = [s for s in svg["series"] if s["points"] >= 10 and s["length"] > 0]
        assert drawn, f"{key}: no series drawn: {svg['series']}"
        assert len(svg["markers"]) == len(run.faults) and all(h > 100 for h in svg["markers"]), key
    errors = {s["label"] for s in seen["panel-errors"]["svgs"][0]["series"]}
    live = Prometheus(run.prom).query(f"count by (kind) ({names.SPEECH_SCHEDULING_ERRORS.name})", run.t1)
    assert errors == {labels["kind"] for labels, _ in live} and len(errors) >= 3
    latency = {s["label"] for s in seen["panel-turn-latency"]["svgs"][0]["series"]}
    # the dashboard's recorded quantiles: one line per quantile and recorded scenario, profile
    # and network, whatever label values the exporter serves
    recorded = Prometheus(run.prom).query(
        "count by (scenario, profile, network) "
        "(scenario_profile_network:lkrig_caller_turn_latency_seconds:quantile_rate5m)",
        run.t1,
    )
    assert recorded and latency == {
        f"{q} {labels['scenario']} / {labels['profile']} / {labels['network']}"
        for q in ("p50", "p95", "p99")
        for labels, _ in recorded
    }
    assert "FAIL" in seen["slo"]["text"] and "draining per 1k turns" in seen["slo"]["text"]
    assert "kill-agent" in seen["faults"]["text"] and "+8 s" in seen["faults"]["text"]
    assert "livekit-agents" in seen["run-info"]["text"] and "1.8.9" in seen["run-info"]["text"]
    if report.MEMORY_METRIC is None:
        assert "Worker memory is not plotted" in (run.out / "report.md").read_text()


def _md_table(md: str, title: str) -> list[list[str]]:
    block = md.split(f"## {title}\n", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def _growth(prom: Prometheus, metric: str, label: str | None, t0: float, t1: float) -> dict[str, float]:
    """Each series' last raw sample at or before t1 minus its last at or before t0, summed by label."""
    data = prom._call("/api/v1/query", {"query": f"{metric}[{round(t1 - t0) + 600}s]", "time": f"{t1:.3f}"})
    out: dict[str, float] = {}
    for s in data["result"]:
        points = [(float(t), float(v)) for t, v in s["values"]]
        at = [v for t, v in points if t <= t1]
        before = [v for t, v in points if t <= t0]
        key = s["metric"].get(label, "") if label else ""
        out[key] = out.get(key, 0.0) + (at[-1] if at else 0.0) - (before[-1] if before else 0.0)
    return out


def test_markdown_totals_equal_prometheus_instant_queries(run: Run) -> None:
    assert run.result.returncode == 0, run.result.stderr
    md = (run.out / "report.md").read_text()
    rows = _md_table(md, "Totals over the range (Prometheus)")
    got = {(what, by): float(n) for what, by, n in rows}
    prom = Prometheus(run.prom)
    expected: dict[tuple[str, str], float] = {}
    for title, metric, label in (
        ("Scheduling errors by kind", names.SPEECH_SCHEDULING_ERRORS.name, "kind"),
        ("Caller turns by outcome", names.CALLER_TURNS.name, "outcome"),
        ("Conversations by outcome", names.CALLER_CONVERSATIONS.name, "outcome"),
        ("Turns the agent committed", names.TURNS.name, None),
    ):
        for key, v in _growth(prom, metric, label, run.t0, run.t1).items():
            expected[(title, key or "all")] = v
    assert set(got) == set(expected)
    for key, v in expected.items():
        assert got[key] == v, key  # exact counts: the scraped samples at both ends, no extrapolation
    # Counts, not rates: over ~30 s the exporter adds 1-3 per 0.2 s to every series.
    assert all(v > 50 for v in expected.values()), expected
    # Locust's own totals, as its CSV has them.
    with open(f"{run.locust_csv}_stats.csv", newline="") as f:
        locust = {(r["Type"], r["Name"]): (r["Request Count"], r["Failure Count"]) for r in csv.DictReader(f)}
    rows = _md_table(md, "Locust totals (whole Locust run, from _stats.csv)")
    assert {(t, n): (req, fail) for t, n, req, fail, *_ in rows} == locust
    assert int(locust[("turn", "ask_programs")][0]) > 50
    assert "FAIL (draining per 1k turns)" in md


def test_a_range_without_data_renders_explicit_empty_panels(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    r = rig_report(
        "--from",
        f"{run.t0 - 7200:.0f}",
        "--to",
        f"{run.t0 - 3600:.0f}",
        "--out",
        str(out),
        "--prometheus",
        run.prom,
    )
    assert r.returncode == 0, r.stderr
    seen, external = _open(out / "report.html")
    assert external == []
    for p in report.PANELS:
        (svg,) = seen[f"panel-{p.key}"]["svgs"]
        assert svg["noData"] and svg["series"] == [], p.key
    assert "no data in range" in (out / "report.md").read_text()


def test_bad_input_fails_with_one_named_error_and_writes_nothing(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["--out", str(out)]
    cases = [
        (["--from", "now", "--to", "-10m", "--prometheus", run.prom], 2, "must be after --from"),
        (["--from", "yesterday", "--prometheus", run.prom], 2, "'yesterday' is not a time"),
        (["--from", "-5m", "--prometheus", f"http://127.0.0.1:{PROM_PORT + 9}"], 1, "did not answer"),
        (
            ["--from", "-5m", "--prometheus", run.prom, "--locust-csv", str(tmp_path / "nope")],
            2,
            "nope_stats.csv: no such file",
        ),
        (["--from", "-5m", "--run-dir", str(tmp_path)], 2, "no native stack state"),
    ]
    for args, code, message in cases:
        r = rig_report(*args, *base)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert not out.exists(), args


def test_time_forms() -> None:
    now = 1_800_000_000.0
    assert report_cmd.parse_time("now", now) == now
    assert report_cmd.parse_time("-30m", now) == now - 1800
    assert report_cmd.parse_time("-2h", now) == now - 7200
    assert report_cmd.parse_time("1799999000.5", now) == 1799999000.5
    utc = calendar.timegm((2027, 1, 15, 8, 0, 0))
    assert report_cmd.parse_time("2027-01-15T08:00:00Z", now) == utc
    assert report_cmd.parse_time("2027-01-15T09:00:00+01:00", now) == utc
    assert report_cmd.parse_time("2027-01-15T08:00:00", now) == utc  # no zone: UTC
    with pytest.raises(ValueError, match="not a time"):
        report_cmd.parse_time("-30x", now)
    assert (report.count(12.04), report.count(12.5)) == ("12", "12.5")


def test_the_report_reads_the_dashboards_prometheus_variable_only(tmp_path: Path) -> None:
    """rig/dashboard.py: panels read the dashboard's `datasource` variable, which the report
    answers with the run's Prometheus; a panel naming any other data source is refused."""
    from rig.dashboard import Dashboard, DashboardError, substitute

    board = json.loads(report.DASHBOARD.read_text())
    d = Dashboard(report.DASHBOARD)
    assert d.datasource_uids == {"${datasource}", "$datasource"}
    for spec in report.PANELS:
        spec.queries(d)  # every panel the report shows reads the variable
    (expr, legend), *_ = d.targets("Stuck sessions per minute")
    assert legend == "{{worker}}" and 'worker=~"$worker"' in expr
    values = {"__rate_interval": "20s"}
    assert substitute('x{worker=~"${worker:regex}", a=~"[[scenario]]"}[$__rate_interval]', values) == (
        'x{worker=~".*", a=~".*"}[20s]'
    )
    panel = next(p for p in board["panels"] if p.get("title") == "Scheduling errors by kind")
    panel["targets"][0]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    path = tmp_path / "fixed-uid.json"
    path.write_text(json.dumps(board))
    with pytest.raises(DashboardError, match=r"reads data source .*'prometheus'.* the report asks only"):
        Dashboard(path).targets("Scheduling errors by kind")


def test_the_explained_errors_table_is_rig_explains_reading_of_the_agents_logs() -> None:
    """`rig run` puts rig explain's findings from the agents' logs into run.json and the report:
    on a user's report (tests/test_explain.py), one row per distinct error, with the pattern, the
    fix, the doc section and the traceback's innermost frames; an empty log explains nothing."""
    from test_explain import USER_REPORT

    from rig import run_cmd
    from rig.explain_table import CIRCULAR_FRAMEWORK, SHORT_MESSAGE, spec

    found = run_cmd.explain_logs(USER_REPORT.splitlines())
    table = report.explained_table(found)
    assert [row[0] for row in table.rows] == [f["kind"] for f in found] == ["draining", "circular_wait"]
    draining, circular = table.rows
    # the short message (no suffix) and the framework's pause path date the log, as rig explain says
    assert (draining[2], circular[2]) == (spec(SHORT_MESSAGE), spec(CIRCULAR_FRAMEWORK)), table.rows
    assert "create_task" in draining[4] and draining[6].startswith("docs/speech-scheduling.md#")
    assert "on_enter" in draining[5] and "at least 1.4.3" in draining[5] and "\n" not in draining[5]
    assert draining[7].endswith("cannot schedule new speech, the speech scheduling is draining/pausing")
    assert "_interrupt_paused_speech" in circular[7] and circular[3].startswith("framework")
    assert run_cmd.explain_logs([]) == [] and report.explained_table([]).rows == []
    with pytest.raises(report.ReportError, match=r"explained\[0\]"):
        report.validate([], None, [{"kind": "draining"}])


def test_the_error_lines_table_lists_the_unexplained_first_with_a_sample() -> None:
    """`rig run`'s accounting of the agents' ERROR lines (rig.errorlines) in the report: each
    unexplained group with its logger, count, first time and sample, then each reason's count."""
    from test_errorlines import FAULTS, T0, record

    from rig import errorlines

    lines = [record(T0 + 101, "ERROR", "livekit", "resuming connection failed"),
             record(T0 + 230, "ERROR", "agent.worker", "bad job metadata\nTraceback: the rest")]
    result = errorlines.account(*errorlines.error_lines(lines), FAULTS)
    table = report.error_lines_table(result)
    assert table.rows == [
        ["unexplained", "agent.worker", "bad job metadata", "1", report.utc(T0 + 230),
         "bad job metadata\nTraceback: the rest"],
        ["accounted for", "", "during kill-agent (agent-0)", "1", "", ""]]
    assert report.error_lines_table({"accounted": {}, "unexplained": []}).rows == []
    with pytest.raises(report.ReportError, match="error_lines: expected"):
        report.validate([], None, None, {"accounted": {}, "unexplained": [{"logger": "x"}]})
