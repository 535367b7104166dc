"""The run report: one self-contained HTML page and a Markdown summary of a time range.

Plots come from Prometheus range queries (and Locust's CSV when given); totals from instant
queries at the end of the range. The PromQL is the Grafana dashboard's own
(grafana/dashboards/speech-scheduling.json, read through rig/dashboard.py), so the report and the
dashboard cannot disagree on what a number means. `write_report` gathers everything in memory
first: a failing query or an unreachable Prometheus writes nothing. The pages themselves are
rig/templates/report.*.j2 (rig/render.py).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lkrig_instrument import names

from rig import locustcsv, svgplot
from rig.dashboard import Dashboard, legend, rate_interval, scrape_interval, substitute
from rig.paths import REPO
from rig.promapi import Prometheus, Series
from rig.render import Table, render
from rig.svgplot import Axis, Line, Marker

DASHBOARD = REPO / "grafana" / "dashboards" / "speech-scheduling.json"
MAX_POINTS = 300  # per series: enough for a 920 px plot, small enough for a quick HTML page


class ReportError(ValueError):
    """Bad input for a report (time range, files): the message says what and where."""


# --- what the report shows --------------------------------------------------------------------------

Queries = Callable[[Dashboard], list[tuple[str, str, bool]]]  # -> [(expr, legend, right axis)]


@dataclass
class PanelSpec:
    key: str  # the HTML section id is panel-<key>
    title: str
    left: Axis
    queries: Queries
    right: Axis | None = None
    note: str = ""


def _from(title: str, right_from: int | None = None) -> Queries:
    """The targets of one dashboard panel; targets from index `right_from` on go on the right axis."""

    def get(d: Dashboard) -> list[tuple[str, str, bool]]:
        targets = enumerate(d.targets(title))
        return [(e, lg, right_from is not None and i >= right_from) for i, (e, lg) in targets]

    return get


def _errors_vs_sessions(d: Dashboard) -> list[tuple[str, str, bool]]:
    errors = d.targets("Errors vs active callers")[0]
    sessions, _ = d.targets("Agent sessions per worker")[0]
    return [(errors[0], errors[1], False), (f"sum({sessions})", "active agent sessions", True)]


# The agent's soak signals, per process role (worker, job) and agent worker, by its name.
MEMORY_METRIC = names.PROCESS_RESIDENT_MEMORY.name
FDS_METRIC = names.PROCESS_OPEN_FDS.name


def _by_role(metric: str) -> Queries:
    def get(_: Dashboard) -> list[tuple[str, str, bool]]:
        return [(f"sum by (role, worker) ({metric})", "{{role}} {{worker}}", False)]

    return get


PANELS: list[PanelSpec] = [
    PanelSpec("errors", "Scheduling errors by kind", Axis("errors / min"),
              _from("Scheduling errors by kind")),
    PanelSpec("errors-per-1k", "Scheduling errors per 1k turns, by kind", Axis("errors per 1k turns"),
              _from("Scheduling errors per 1k turns, by kind")),
    PanelSpec("errors-vs-callers", "Errors against load: active callers", Axis("errors / min"),
              _from("Errors vs active callers", right_from=1), Axis("active callers")),
    PanelSpec("errors-vs-sessions", "Errors against load: active agent sessions", Axis("errors / min"),
              _errors_vs_sessions, Axis("active agent sessions")),
    PanelSpec("errors-vs-latency", "Errors against injected LLM / TTS latency", Axis("errors / min"),
              _from("Errors vs injected LLM / TTS latency", right_from=1),
              Axis("injected latency p95 (s)")),
    PanelSpec("turn-latency", "Caller turn latency (p50 / p95 / p99)", Axis("seconds"),
              _from("Caller turn latency (p50 / p95 / p99)"),
              note="End of the caller's utterance to the first agent audio, as the caller measured it."),
    PanelSpec("silence-gap", "Silence gap: filler end to answer (p50 / p95)", Axis("seconds"),
              _from("Silence gap: filler end to answer (p50 / p95)")),
    PanelSpec("conversations", "Conversations by outcome", Axis("conversations / min"),
              _from("Conversations by outcome")),
    PanelSpec("memory", "Worker memory (resident set, by process role)", Axis("MiB", 2**20),
              _by_role(MEMORY_METRIC)),
    PanelSpec("open-fds", "Open file descriptors (by process role)", Axis("fds"), _by_role(FDS_METRIC)),
]

# Totals over the whole range: exact counter growth between its two ends (Prometheus.counter_delta,
# as `rig run`'s SLO gate and reconciliation count), so they agree with Locust and the agents' logs.
TOTALS: list[tuple[str, str, str]] = [  # (key, title, label the rows are split by)
    ("errors", "Scheduling errors by kind", "kind"),
    ("agent_turns", "Turns the agent committed", ""),
    ("caller_turns", "Caller turns by outcome", "outcome"),
    ("conversations", "Conversations by outcome", "outcome"),
]
TOTAL_METRICS = {
    "errors": names.SPEECH_SCHEDULING_ERRORS.name,
    "agent_turns": names.TURNS.name,
    "caller_turns": names.CALLER_TURNS.name,
    "conversations": names.CALLER_CONVERSATIONS.name,
}

# Single numbers of the dashboard's "(selected range)" stat panels.
STATS = [
    ("Errors per 1k turns (selected range)", "scheduling errors per 1k turns"),
    ("Dead-air share of turns (selected range)", "dead-air share of caller turns"),
    ("Rooms without an agent (selected range)", "rooms without an agent"),
    ("Stuck sessions (selected range)", "stuck agent sessions"),
]


@dataclass
class Plot:
    key: str
    title: str
    svg: str
    legend: str
    has_data: bool
    lines: list[Line]
    note: str = ""
    queries: list[str] = field(default_factory=list)


@dataclass
class Report:
    t0: float
    t1: float
    source: str
    plots: list[Plot]
    totals: dict[str, list[tuple[str, float]]]  # key -> [(label value, number)]
    stats: list[tuple[str, list[tuple[str, float]]]]
    run_info: dict[str, Any]
    faults: list[dict[str, Any]]
    slo: list[dict[str, Any]] | None
    locust: locustcsv.LocustCsv | None
    explained: list[dict[str, Any]] | None = None  # rig.explain findings (to_json) from the agents' logs
    error_lines: dict[str, Any] | None = None  # rig.errorlines.account of the agents' logs


# --- gathering --------------------------------------------------------------------------------------


def _step(t0: float, t1: float) -> float:
    return float(max(1, math.ceil((t1 - t0) / MAX_POINTS)))


def validate(faults: Sequence[dict[str, Any]], slo: Sequence[dict[str, Any]] | None,
             explained: Sequence[dict[str, Any]] | None = None,
             error_lines: dict[str, Any] | None = None) -> None:
    for i, f in enumerate(faults):
        if not isinstance(f, dict) or not isinstance(f.get("at"), int | float) or not f.get("name"):
            raise ReportError(
                f"faults[{i}]: expected {{'at': unix seconds, 'name': ..., 'detail': ...}}, got {f!r}")
    for i, s in enumerate(slo or []):
        if not isinstance(s, dict) or not s.get("name") or not isinstance(s.get("ok"), bool):
            raise ReportError(
                f"slo[{i}]: expected {{'name', 'limit', 'value', 'ok': bool, 'detail'}}, got {s!r}")
    for i, f in enumerate(explained or []):
        if not isinstance(f, dict) or not {"kind", "count", "origin", "message"} <= set(f):
            raise ReportError(
                f"explained[{i}]: expected a `rig explain --json` finding (kind, count, origin, "
                f"message, ...), got {f!r}")
    groups = error_lines.get("unexplained") if error_lines is not None else []
    if error_lines is not None and not (
            isinstance(error_lines.get("accounted"), dict) and isinstance(groups, list)
            and all(isinstance(g, dict) and {"logger", "message", "count"} <= set(g) for g in groups)):
        raise ReportError(f"error_lines: expected {{'accounted': {{reason: count}}, 'unexplained':"
                          f" [{{'logger', 'message', 'count', ...}}]}}, got {error_lines!r}")


def _plot(key: str, title: str, lines: list[Line], t0: float, t1: float, left: Axis, right: Axis | None,
          markers: list[Marker], note: str = "", queries: list[str] | None = None) -> Plot:
    svg, has_data = svgplot.time_plot(lines, t0, t1, left, right, markers)
    return Plot(key, title, svg, svgplot.legend(lines), has_data, lines, note, queries or [])


def gather(
    prom_url: str,
    t0: float,
    t1: float,
    *,
    locust_csv_prefix: Path | None = None,
    run_info: dict[str, Any] | None = None,
    faults: list[dict[str, Any]] | None = None,
    slo: list[dict[str, Any]] | None = None,
    explained: list[dict[str, Any]] | None = None,
    error_lines: dict[str, Any] | None = None,
    dashboard: Path = DASHBOARD,
) -> Report:
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise ReportError(f"empty time range: the end ({utc(t1)}) is not after the start ({utc(t0)})")
    faults = sorted(faults or [], key=lambda f: f.get("at", 0) if isinstance(f, dict) else 0)
    validate(faults, slo, explained, error_lines)
    locust = locustcsv.load(locust_csv_prefix) if locust_csv_prefix is not None else None
    dash = Dashboard(dashboard)
    prom = Prometheus(prom_url)
    prom.check()
    step = _step(t0, t1)
    values = {"__rate_interval": rate_interval(step, scrape_interval(prom)),
              "__range": f"{math.ceil(t1 - t0)}s"}
    markers = [Marker(float(f["at"]), str(f["name"])) for f in faults]
    plots = []
    for spec in PANELS:
        lines: list[Line] = []
        queries = []
        for expr, fmt, right in spec.queries(dash):
            expr = substitute(expr, values)
            queries.append(" ".join(expr.split()))
            for s in sorted(prom.query_range(expr, t0, t1, step), key=lambda s: sorted(s.labels.items())):
                lines.append(Line(legend(fmt, s.labels, spec.title), s.points, right))
        plots.append(
            _plot(spec.key, spec.title, lines, t0, t1, spec.left, spec.right, markers, spec.note, queries))
    if locust is not None:
        plots += _locust_plots(locust, t0, t1, markers)
    totals = {
        key: sorted(prom.counter_delta(TOTAL_METRICS[key], t0, t1, by or None).items(), key=str)
        for key, _, by in TOTALS
    }
    stats = []
    for title, what in STATS:
        for expr, fmt in dash.targets(title):
            rows = [(legend(fmt, labels, what), v) for labels, v in prom.query(substitute(expr, values), t1)]
            stats.append((what, sorted(rows)))
    return Report(t0, t1, prom.url, plots, totals, stats, dict(run_info or {}), faults,
                  list(slo) if slo is not None else None, locust, explained, error_lines)


def _locust_plots(data: locustcsv.LocustCsv, t0: float, t1: float, markers: list[Marker]) -> list[Plot]:
    agg = ("", "Aggregated")  # Locust's all-requests row: empty Type, Name "Aggregated"
    load = [
        Line("requests/s", data.series("Requests/s", *agg, t0, t1)),
        Line("failures/s", data.series("Failures/s", *agg, t0, t1)),
        Line("users", data.series("User Count", *agg, t0, t1), right=True),
    ]
    # Per-turn response times need --csv-full-history; without it only the aggregate exists,
    # which mixes whole conversations with single turns and is left out.
    latency = [
        Line(f"turn {name} {q}", data.series(q, "turn", name, t0, t1))
        for name in data.names("turn")[:5]
        for q in ("50%", "95%")
    ]
    return [
        _plot("locust-load", "Locust: users and requests", load, t0, t1, Axis("per second"), Axis("users"),
              markers, "From Locust's stats history CSV."),
        _plot("locust-turns", "Locust: turn response time (p50 / p95)", latency, t0, t1, Axis("milliseconds"),
              None, markers, "Per-turn rows need `locust --csv-full-history`."),
    ]


# --- the report's words and numbers ------------------------------------------------------------------


def utc(t: float) -> str:
    if not math.isfinite(t):
        return str(t)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 10)} UTC"


def count(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.0f}" if abs(v - round(v)) < 0.05 else f"{v:.1f}"


def num(v: Any) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return svgplot.fmt(float(v)) if math.isfinite(v) else "-"
    return "-" if v is None else str(v)


def flatten(info: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in info.items():
        if isinstance(v, dict):
            rows += flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v if isinstance(v, str) else json.dumps(v)))
    return rows


def tables(r: Report) -> list[Table]:
    out = []
    if r.slo is not None:
        out.append(Table(
            "slo", "SLO verdicts", ["SLO", "limit", "value", "verdict", "detail"],
            [[str(s["name"]), num(s.get("limit")), num(s.get("value")), "PASS" if s["ok"] else "FAIL",
              str(s.get("detail") or "")] for s in r.slo],
            "no SLOs were given"))
    if r.explained is not None:
        out.append(explained_table(r.explained))
    if r.error_lines is not None:
        out.append(error_lines_table(r.error_lines))
    out.append(Table(
        "faults", "Faults injected", ["at (UTC)", "offset", "fault", "detail"],
        [[utc(f["at"]), f"+{f['at'] - r.t0:.0f} s", str(f["name"]), str(f.get("detail") or "")]
         for f in r.faults],
        "no faults were injected"))
    titles = {key: title for key, title, _ in TOTALS}
    rows = []
    for key, values in r.totals.items():
        if not values:
            rows.append([titles[key], "", "no data"])
        rows += [[titles[key], v_label or "all", count(v)] for v_label, v in values]
    out.append(Table("totals", "Totals over the range (Prometheus)", ["what", "by", "count"], rows))
    out.append(Table(
        "stats", "Rates over the range (dashboard stat panels)", ["what", "series", "value"],
        [[what, label, num(v)]
         for what, values in r.stats for label, v in (values or [("no data", math.nan)])]))
    if r.locust is not None:
        columns = ("Type", "Name", "Request Count", "Failure Count", "Median Response Time", "95%")
        out.append(Table(
            "locust-totals", "Locust totals (whole Locust run, from _stats.csv)",
            ["type", "name", "requests", "failures", "median ms", "95% ms"],
            [[row.get(c, "") for c in columns] for row in r.locust.stats], "no requests"))
        out.append(Table(
            "locust-failures", "Locust failures", ["name", "error", "occurrences"],
            [[row.get(c, "") for c in ("Name", "Error", "Occurrences")] for row in r.locust.failures],
            "no failures"))
    if r.run_info:
        out.append(Table("run-info", "Run parameters and versions", ["parameter", "value"],
                         [[k, v] for k, v in flatten(r.run_info)]))
    return out


SAMPLE_FRAMES = 4  # the innermost frames of a sample traceback: the tool's line and the raise


def short_fix(fix: str | None) -> str:
    """A fix in a table cell: its first paragraph, and the upgrade if it has one; the code is in
    the doc section and in `rig explain`."""
    if not fix:
        return "this is the fix"
    paragraphs = [" ".join(p.split()) for p in fix.split("\n\n")]
    last = paragraphs[-1]
    upgrade = [last.split(":")[0] + "."] if len(paragraphs) > 1 and last.startswith("Upgrade") else []
    return " ".join([paragraphs[0].rstrip(":") + ".", *upgrade])


def explained_table(findings: list[dict[str, Any]]) -> Table:
    """Each distinct speech-scheduling error in the agents' logs, as `rig explain` reads it: the
    versions its wording implies, whose code raised it, the pattern, the fix and the doc section,
    with a sample of its traceback."""
    rows = []
    for f in findings:
        row = f.get("row") or {}
        frames = [f"{fr['function']} ({fr['file'].rsplit('/', 1)[-1]}:{fr['line']})"
                  for fr in (f.get("frames") or [])[-SAMPLE_FRAMES:]]
        rows.append([
            str(f["kind"]), str(f["count"]), str(f.get("version_range") or "any"),
            f"{f['origin']}: {f['origin_detail']}" if f.get("origin_detail") else str(f["origin"]),
            str(row.get("pattern") or "no matching row"), short_fix(f.get("fix")),
            str(f.get("doc") or ""),
            " → ".join(frames) + (f" → {f['message']}" if frames else str(f["message"]))])
    return Table(
        "errors-explained", "Speech-scheduling errors explained (the agents' logs, as `rig explain`)",
        ["kind", "count", "versions", "raised by", "pattern", "fix", "doc", "sample traceback"],
        rows, "no speech-scheduling error in the agents' logs")


def error_lines_table(result: dict[str, Any]) -> Table:
    """The agents' ERROR lines: the unexplained ones first, each group with a sample, then how
    many each reason accounts for (rig.errorlines)."""
    rows = [["unexplained", str(g["logger"]), str(g["message"]), str(g["count"]),
             utc(g["first_at"]) if isinstance(g.get("first_at"), int | float) else "",
             str(g.get("sample") or "")] for g in result["unexplained"]]
    rows += [["accounted for", "", why, str(n), "", ""] for why, n in sorted(result["accounted"].items())]
    return Table("error-lines", "ERROR lines in the agents' logs",
                 ["verdict", "logger", "message or reason", "lines", "first at (UTC)", "sample"],
                 rows, "no ERROR line in the agents' logs")


def plot_summary(r: Report) -> Table:
    """Each plotted series' mean and maximum over the range, for the Markdown summary."""
    rows = []
    for p in r.plots:
        if not p.has_data:
            rows.append([p.title, "no data in range", "", ""])
            continue
        for ln in p.lines:
            vals = [v for t, v in ln.points if r.t0 <= t <= r.t1 and math.isfinite(v)]
            if vals:
                rows.append([p.title, ln.label, num(sum(vals) / len(vals)), num(max(vals))])
    return Table("plots", "Plots (in report.html)", ["plot", "series", "mean", "max"], rows)


def verdict(r: Report) -> str:
    if r.slo is None:
        return "no SLOs were evaluated"
    failed = [str(s["name"]) for s in r.slo if not s["ok"]]
    return f"FAIL ({', '.join(failed)})" if failed else f"PASS ({len(r.slo)} SLOs)"


def pages(r: Report) -> tuple[str, str]:
    """(report.html, report.md) of a gathered report."""
    head = {"start": utc(r.t0), "end": utc(r.t1), "seconds": f"{r.t1 - r.t0:.0f}", "source": r.source,
            "verdict": verdict(r)}
    all_tables = tables(r)
    return (render("report.html.j2", **head, all_tables=all_tables, plots=r.plots),
            render("report.md.j2", **head, all_tables=[*all_tables, plot_summary(r)]))


def write_report(
    prom_url: str,
    t0: float,
    t1: float,
    out_dir: Path,
    *,
    locust_csv_prefix: Path | None = None,
    run_info: dict[str, Any] | None = None,
    faults: list[dict[str, Any]] | None = None,
    slo: list[dict[str, Any]] | None = None,
    explained: list[dict[str, Any]] | None = None,
    error_lines: dict[str, Any] | None = None,
) -> Path:
    """Write out_dir/report.html and out_dir/report.md; the HTML's path.

    Raises ReportError or DashboardError (bad input), locustcsv.LocustCsvError,
    promapi.PrometheusUnreachable or promapi.QueryError before anything is written.
    """
    r = gather(prom_url, t0, t1, locust_csv_prefix=locust_csv_prefix, run_info=run_info, faults=faults,
               slo=slo, explained=explained, error_lines=error_lines)
    html, md = pages(r)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "report.html"
    for path, text in ((html_path, html), (out_dir / "report.md", md)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return html_path


__all__ = ["ReportError", "Series", "write_report"]
