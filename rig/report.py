"""The run report: one self-contained HTML page and a Markdown summary of a time range.

Plots come from Prometheus range queries (and Locust's CSV when given); totals from instant
queries at the end of the range. The PromQL is the Grafana dashboard's own
(grafana/dashboards/speech-scheduling.json, looked up by panel title, its variables set to "All"),
so the report and the dashboard cannot disagree on what a number means. `write_report` gathers
everything in memory first: a failing query or an unreachable Prometheus writes nothing.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import yaml
from lkrig_instrument import names

from rig import locustcsv, svgplot
from rig.promapi import Prometheus, Series
from rig.svgplot import Axis, Line, Marker

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "dashboards" / "speech-scheduling.json"
MAX_POINTS = 300  # per series: enough for a 920 px plot, small enough for a quick HTML page
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class ReportError(ValueError):
    """Bad input for a report (time range, dashboard, files): the message says what and where."""


# --- the dashboard's queries ------------------------------------------------------------------------


def _panels(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for p in dashboard.get("panels") or []:
        for q in [p, *(p.get("panels") or [])]:  # collapsed rows keep their panels inside
            if q.get("title"):
                found[q["title"]] = q
    return found


class Dashboard:
    def __init__(self, path: Path = DASHBOARD) -> None:
        try:
            self.path = path
            self.panels = _panels(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ReportError(
                f"{path}: cannot read the dashboard the report takes its queries from ({e})"
            ) from e

    def targets(self, title: str) -> list[tuple[str, str]]:
        """[(expr, legendFormat)] of the panel titled `title`."""
        panel = self.panels.get(title)
        if panel is None:
            raise ReportError(f"{self.path}: no panel titled {title!r} (the report reads its queries)")
        return [(t["expr"], t.get("legendFormat") or "") for t in panel.get("targets") or [] if t.get("expr")]


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variables: dashboard selectors become "All" (.*), built-ins take `values`."""

    def repl(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        return values.get(name, ".*")

    return _VARIABLE.sub(repl, expr)


def legend(fmt: str, labels: dict[str, str], fallback: str) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or fallback
    return _LEGEND.sub(lambda m: labels.get(m[1], ""), fmt)


# --- what the report shows --------------------------------------------------------------------------


@dataclass
class PanelSpec:
    key: str  # the HTML section id is panel-<key>
    title: str
    left: Axis
    queries: Callable[[Dashboard], list[tuple[str, str, bool]]]  # (expr, legend, right axis)
    right: Axis | None = None
    note: str = ""


def _from(title: str, right_from: int | None = None) -> Callable[[Dashboard], list[tuple[str, str, bool]]]:
    """The targets of one dashboard panel; targets from index `right_from` on go on the right axis."""

    def get(d: Dashboard) -> list[tuple[str, str, bool]]:
        return [
            (e, lg, right_from is not None and i >= right_from) for i, (e, lg) in enumerate(d.targets(title))
        ]

    return get


def _errors_vs_sessions(d: Dashboard) -> list[tuple[str, str, bool]]:
    errors = d.targets("Errors vs active callers")[0]
    sessions, _ = d.targets("Agent sessions per worker")[0]
    return [(errors[0], errors[1], False), (f"sum({sessions})", "active agent sessions", True)]


# Soak signals per worker and job process (issue 6 item 3), defined in names.py by another part
# of the rig; looked up leniently so the report still renders in a checkout without them.
MEMORY_METRIC: str | None = getattr(getattr(names, "PROCESS_RESIDENT_MEMORY", None), "name", None)
FDS_METRIC: str | None = getattr(getattr(names, "PROCESS_OPEN_FDS", None), "name", None)


def _by_role(metric: str) -> Callable[[Dashboard], list[tuple[str, str, bool]]]:
    def get(_: Dashboard) -> list[tuple[str, str, bool]]:
        return [(f"sum by (role, instance) ({metric})", "{{role}} {{instance}}", False)]

    return get


PANELS: list[PanelSpec] = [
    PanelSpec(
        "errors", "Scheduling errors by kind", Axis("errors / min"), _from("Scheduling errors by kind")
    ),
    PanelSpec(
        "errors-per-1k",
        "Scheduling errors per 1k turns, by kind",
        Axis("errors per 1k turns"),
        _from("Scheduling errors per 1k turns, by kind"),
    ),
    PanelSpec(
        "errors-vs-callers",
        "Errors against load: active callers",
        Axis("errors / min"),
        _from("Errors vs active callers", right_from=1),
        Axis("active callers"),
    ),
    PanelSpec(
        "errors-vs-sessions",
        "Errors against load: active agent sessions",
        Axis("errors / min"),
        _errors_vs_sessions,
        Axis("active agent sessions"),
    ),
    PanelSpec(
        "errors-vs-latency",
        "Errors against injected LLM / TTS latency",
        Axis("errors / min"),
        _from("Errors vs injected LLM / TTS latency", right_from=1),
        Axis("injected latency p95 (s)"),
    ),
    PanelSpec(
        "turn-latency",
        "Caller turn latency (p50 / p95 / p99)",
        Axis("seconds"),
        _from("Caller turn latency (p50 / p95 / p99)"),
        note="End of the caller's utterance to the first agent audio, as the caller measured it.",
    ),
    PanelSpec(
        "silence-gap",
        "Silence gap: filler end to answer (p50 / p95)",
        Axis("seconds"),
        _from("Silence gap: filler end to answer (p50 / p95)"),
    ),
    PanelSpec(
        "conversations",
        "Conversations by outcome",
        Axis("conversations / min"),
        _from("Conversations by outcome"),
    ),
]
if MEMORY_METRIC is not None:
    PANELS.append(
        PanelSpec(
            "memory",
            "Worker memory (resident set, by process role)",
            Axis("MiB", 2**20),
            _by_role(MEMORY_METRIC),
        )
    )
if FDS_METRIC is not None:
    PANELS.append(
        PanelSpec("open-fds", "Open file descriptors (by process role)", Axis("fds"), _by_role(FDS_METRIC))
    )

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
    notes: list[str]


def _step(t0: float, t1: float) -> float:
    return float(max(1, math.ceil((t1 - t0) / MAX_POINTS)))


def rate_interval(step: float, scrape: float) -> str:
    """Grafana's $__rate_interval: max(step + scrape interval, 4 x scrape interval)."""
    return f"{math.ceil(max(step + scrape, 4 * scrape))}s"


def scrape_interval(prom: Prometheus) -> float:
    try:
        cfg = yaml.safe_load(prom.config()) or {}
        text = str((cfg.get("global") or {}).get("scrape_interval", "1m"))
    except (AttributeError, yaml.YAMLError):
        text = "1m"  # Prometheus's own default
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]] if m else 60.0


def _validate(faults: Sequence[dict[str, Any]], slo: Sequence[dict[str, Any]] | None) -> None:
    for i, f in enumerate(faults):
        if not isinstance(f, dict) or not isinstance(f.get("at"), int | float) or not f.get("name"):
            raise ReportError(
                f"faults[{i}]: expected {{'at': unix seconds, 'name': ..., 'detail': ...}}, got {f!r}"
            )
    for i, s in enumerate(slo or []):
        if not isinstance(s, dict) or not s.get("name") or not isinstance(s.get("ok"), bool):
            raise ReportError(
                f"slo[{i}]: expected {{'name', 'limit', 'value', 'ok': bool, 'detail'}}, got {s!r}"
            )


def gather(
    prom_url: str,
    t0: float,
    t1: float,
    *,
    locust_csv_prefix: Path | None = None,
    run_info: dict[str, Any] | None = None,
    faults: list[dict[str, Any]] | None = None,
    slo: list[dict[str, Any]] | None = None,
    dashboard: Path = DASHBOARD,
) -> Report:
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise ReportError(f"empty time range: the end ({_utc(t1)}) is not after the start ({_utc(t0)})")
    faults = sorted(faults or [], key=lambda f: f.get("at", 0) if isinstance(f, dict) else 0)
    _validate(faults, slo)
    locust = locustcsv.load(locust_csv_prefix) if locust_csv_prefix is not None else None
    dash = Dashboard(dashboard)
    prom = Prometheus(prom_url)
    prom.check()
    step = _step(t0, t1)
    values = {
        "__rate_interval": rate_interval(step, scrape_interval(prom)),
        "__range": f"{math.ceil(t1 - t0)}s",
    }
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
        svg, has_data = svgplot.time_plot(lines, t0, t1, spec.left, spec.right, markers)
        plots.append(
            Plot(spec.key, spec.title, svg, svgplot.legend(lines), has_data, lines, spec.note, queries)
        )
    notes = []
    if MEMORY_METRIC is None:
        notes.append(
            "Worker memory is not plotted: this checkout's lkrig_instrument.names defines no "
            "PROCESS_RESIDENT_MEMORY gauge."
        )
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
    return Report(
        t0,
        t1,
        prom.url,
        plots,
        totals,
        stats,
        dict(run_info or {}),
        faults,
        list(slo) if slo is not None else None,
        locust,
        notes,
    )


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
    out = []
    for key, title, lines, left, right, note in (
        (
            "locust-load",
            "Locust: users and requests",
            load,
            Axis("per second"),
            Axis("users"),
            "From Locust's stats history CSV.",
        ),
        (
            "locust-turns",
            "Locust: turn response time (p50 / p95)",
            latency,
            Axis("milliseconds"),
            None,
            "Per-turn rows need `locust --csv-full-history`.",
        ),
    ):
        svg, has = svgplot.time_plot(lines, t0, t1, left, right, markers)
        out.append(Plot(key, title, svg, svgplot.legend(lines), has, lines, note))
    return out


# --- rendering --------------------------------------------------------------------------------------


def _utc(t: float) -> str:
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


@dataclass
class Table:
    id: str
    title: str
    header: list[str]
    rows: list[list[str]]
    empty: str = "none"


def tables(r: Report) -> list[Table]:
    out = []
    if r.slo is not None:
        out.append(
            Table(
                "slo",
                "SLO verdicts",
                ["SLO", "limit", "value", "verdict", "detail"],
                [
                    [
                        str(s["name"]),
                        num(s.get("limit")),
                        num(s.get("value")),
                        "PASS" if s["ok"] else "FAIL",
                        str(s.get("detail") or ""),
                    ]
                    for s in r.slo
                ],
                "no SLOs were given",
            )
        )
    out.append(
        Table(
            "faults",
            "Faults injected",
            ["at (UTC)", "offset", "fault", "detail"],
            [
                [_utc(f["at"]), f"+{f['at'] - r.t0:.0f} s", str(f["name"]), str(f.get("detail") or "")]
                for f in r.faults
            ],
            "no faults were injected",
        )
    )
    by_key = {key: (title, by) for key, title, by in TOTALS}
    rows = []
    for key, values in r.totals.items():
        title, _ = by_key[key]
        if not values:
            rows.append([title, "", "no data"])
        rows += [[title, v_label or "all", count(v)] for v_label, v in values]
    out.append(Table("totals", "Totals over the range (Prometheus)", ["what", "by", "count"], rows))
    out.append(
        Table(
            "stats",
            "Rates over the range (dashboard stat panels)",
            ["what", "series", "value"],
            [
                [what, label, num(v)]
                for what, values in r.stats
                for label, v in (values or [("no data", math.nan)])
            ],
        )
    )
    if r.locust is not None:
        out.append(
            Table(
                "locust-totals",
                "Locust totals (whole Locust run, from _stats.csv)",
                ["type", "name", "requests", "failures", "median ms", "95% ms"],
                [
                    [
                        row.get("Type", ""),
                        row.get("Name", ""),
                        row.get("Request Count", ""),
                        row.get("Failure Count", ""),
                        row.get("Median Response Time", ""),
                        row.get("95%", ""),
                    ]
                    for row in r.locust.stats
                ],
                "no requests",
            )
        )
        out.append(
            Table(
                "locust-failures",
                "Locust failures",
                ["name", "error", "occurrences"],
                [
                    [row.get("Name", ""), row.get("Error", ""), row.get("Occurrences", "")]
                    for row in r.locust.failures
                ],
                "no failures",
            )
        )
    if r.run_info:
        out.append(
            Table(
                "run-info",
                "Run parameters and versions",
                ["parameter", "value"],
                [[k, v] for k, v in flatten(r.run_info)],
            )
        )
    return out


def verdict(r: Report) -> str:
    if r.slo is None:
        return "no SLOs were evaluated"
    failed = [str(s["name"]) for s in r.slo if not s["ok"]]
    return f"FAIL ({', '.join(failed)})" if failed else f"PASS ({len(r.slo)} SLOs)"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right}.FAIL{color:#b00;font-weight:bold}.PASS{color:#070}
.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px}
.swatch{display:inline-block;width:22px;margin-right:5px;vertical-align:middle}
.note{color:#555;font-size:12px}details{font-size:12px;color:#555}code{font-size:12px}
"""


def _html_tables(h: list[str], ts: list[Table]) -> None:
    for t in ts:
        h.append(f'<section id="{t.id}"><h2>{escape(t.title)}</h2>')
        if not t.rows:
            h.append(f"<p>{escape(t.empty)}</p></section>")
            continue
        h.append("<table><tr>" + "".join(f"<th>{escape(c)}</th>" for c in t.header) + "</tr>")
        for row in t.rows:
            cells = []
            for c in row:
                cls = f' class="{c}"' if c in ("PASS", "FAIL") else ""
                cells.append(f"<td{cls}>{escape(c)}</td>")
            h.append("<tr>" + "".join(cells) + "</tr>")
        h.append("</table></section>")


def render_html(r: Report) -> str:
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Self-contained on purpose: the page may load nothing, not even by accident.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>lkrig report {escape(_utc(r.t0))}</title><style>{_CSS}</style></head><body>",
        "<h1>Load run report</h1>",
        f'<p id="range">{escape(_utc(r.t0))} to {escape(_utc(r.t1))} ({r.t1 - r.t0:.0f} s), '
        f"Prometheus {escape(r.source)}. SLO verdict: <b>{escape(verdict(r))}</b></p>",
    ]
    h += [f'<p class="note">{escape(n)}</p>' for n in r.notes]
    first = ("slo", "faults", "totals", "stats")  # the verdict and counts before the plots
    all_tables = tables(r)
    _html_tables(h, [t for t in all_tables if t.id in first])
    for p in r.plots:
        h.append(f'<section id="panel-{p.key}" class="panel{"" if p.has_data else " no-data"}">')
        h.append(f"<h2>{escape(p.title)}</h2>")
        if p.note:
            h.append(f'<p class="note">{escape(p.note)}</p>')
        h.append(p.svg)
        h.append(p.legend)
        if p.queries:
            h.append(
                "<details><summary>PromQL</summary>"
                + "".join(f"<pre><code>{escape(q)}</code></pre>" for q in p.queries)
                + "</details>"
            )
        h.append("</section>")
    _html_tables(h, [t for t in all_tables if t.id not in first])
    h.append("</body></html>")
    return "\n".join(h)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(r: Report) -> str:
    md = [
        "# Load run report",
        "",
        f"Range: {_utc(r.t0)} to {_utc(r.t1)} ({r.t1 - r.t0:.0f} s); Prometheus {r.source}.",
        "",
        f"SLO verdict: **{verdict(r)}**",
        "",
    ]
    md += [f"Note: {n}\n" for n in r.notes]
    for t in tables(r):
        md += [f"## {t.title}", ""]
        if not t.rows:
            md += [t.empty, ""]
            continue
        md.append("| " + " | ".join(t.header) + " |")
        md.append("|" + "---|" * len(t.header))
        md += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
        md.append("")
    md += ["## Plots (in report.html)", "", "| plot | series | mean | max |", "|---|---|---|---|"]
    for p in r.plots:
        if not p.has_data:
            md.append(f"| {_md_cell(p.title)} | no data in range | | |")
            continue
        for ln in p.lines:
            vals = [v for t, v in ln.points if r.t0 <= t <= r.t1 and math.isfinite(v)]
            if vals:
                md.append(
                    f"| {_md_cell(p.title)} | {_md_cell(ln.label)} | {num(sum(vals) / len(vals))} | "
                    f"{num(max(vals))} |"
                )
    md.append("")
    return "\n".join(md)


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
) -> Path:
    """Write out_dir/report.html and out_dir/report.md; the HTML's path.

    Raises ReportError (bad input), locustcsv.LocustCsvError, promapi.PrometheusUnreachable or
    promapi.QueryError before anything is written.
    """
    r = gather(
        prom_url, t0, t1, locust_csv_prefix=locust_csv_prefix, run_info=run_info, faults=faults, slo=slo
    )
    html, md = render_html(r), render_markdown(r)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "report.html"
    for path, text in ((html_path, html), (out_dir / "report.md", md)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return html_path


__all__ = ["ReportError", "Series", "write_report"]
