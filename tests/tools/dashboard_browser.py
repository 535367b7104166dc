"""Render a Grafana dashboard in a real browser against a real Prometheus, and check what it shows.

    render(dashboard_path, prometheus_url, start, end, variables=None) -> dict

Grafana cannot be had on this machine (no image, no package), so a stand-in does its query side:
tests/tools/grafana-standin/ is a static page (standin.js, plain JS) that, given the dashboard JSON,
a Prometheus base URL and a time range, does in Debian's Chromium what Grafana's Prometheus
datasource does with that dashboard, calling Prometheus's HTTP API from the page; driver.mjs
(playwright-core, /usr/bin/chromium) serves the page on 127.0.0.1, waits until it has rendered and
reads panels, queries, legends, annotations and variables from the DOM. Issue #14's three checks
work on what it returns:

    faults_annotated(rendered, faults)   each fault (kind, target, Unix time) has an annotation
                                          within one scrape interval whose title or tags carry
                                          the kind and the target
    ip_legends(rendered)                 no legend shows an IPv4/IPv6 address or a host:port
    unfiltered_queries(dashboard, probes) every query/custom/textbox variable (not datasource,
                                          interval, constant, adhoc) is in every query of every
                                          panel, unless the panel's description says
                                          "Not filtered by: $a, $b (...)"; with probes
                                          (probe_variables), setting the variable to one value
                                          must also change every such panel's interpolated query
                                          in the browser

What the stand-in implements, following Grafana's code (packages/grafana-prometheus and
pkg/promlib, @grafana/data rangeutil and fieldState, the TemplateSrv):
  - variables in dashboard order: query (label_values(metric, label), label_values(label) via
    /api/v1/label/<l>/values?match[]=, label_names(), metrics(), query_result(), a bare selector
    via /api/v1/series; regex with text/value groups; sort; refresh=0 uses saved options), custom,
    constant, textbox, datasource, interval; multi-value and includeAll (allValue raw, else the
    regex (a|b) of every value); URL-style values (var-name=value), kept when not among the options;
  - $var, ${var}, ${var:format}, [[var]] with the Prometheus datasource's escaping (single value:
    \\ and ' escaped; multi/All: regex-escaped); repeated panels and collapsed repeated rows;
  - $__interval, $__rate_interval (max($__interval + scrape, 4 * scrape)), $__range and the
    others as the Go backend computes them, from maxDataPoints (the panel's measured width or its
    maxDataPoints), the panel min interval and the datasource's timeInterval; the step, range
    alignment to the step, instant queries at the range's end, "range and instant" targets;
  - legends: legendFormat {{label}}, "__auto", the default name{label="v", ...}, an empty name as
    the expression, then the frontend display name over all of a panel's series and
    fieldConfig displayName (defaults and byName/byRegexp/byFrameRefID overrides);
  - every panel, those nested in collapsed rows too (run as if the row were expanded);
  - annotations as Grafana 10+ runs Prometheus ones: a legacy expr/step moved into the target,
    the query run like a panel's with maxDataPoints = window width, events from active samples
    (or the value as the time in ms with useValueForTime) grouped by the executed step,
    titleFormat/textFormat rendering and the tagKeys labels' values as tags.

What differs from Grafana: nothing is drawn (no panel plugins, units, thresholds, mappings,
colours, reductions); a panel's legend is the display name of every series its queries returned,
even when the panel hides its legend (recorded as legend_hidden; names still show in tooltips);
transformations are ignored (listed per panel as ignored_transformations); table and heatmap
formats are kept as plain series; only the Prometheus datasource (other datasources, library
panels, expressions and Grafana's own annotation store are reported unsupported); no ad hoc
filters, exemplars, query cache or splitting; no dashboard schema migration; variables resolved
once, in order; panel widths from a 1920 px page without a navigation menu (so maxDataPoints and
the step can differ from a given Grafana window); absolute time ranges only, step alignment in
UTC. The page's own header (standin.js) has the full list.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from toolpaths import REPO, ToolMissing, chromium_bin, grafana_standin_dir

DATASOURCE_DIR = REPO / "grafana" / "provisioning" / "datasources"
# Variable types that filter series (the ones dashboard_check.py's static check also takes); left
# out: datasource and interval (they pick a datasource or a step), constant (one value), adhoc and
# groupby (they change every query by themselves).
FILTER_VARIABLE_TYPES = {"query", "custom", "textbox"}
NOT_FILTERED_RE = re.compile(r"^\s*Not filtered by:\s*(?P<names>[^(\n]*)", re.MULTILINE)


class RenderError(RuntimeError):
    """The stand-in could not render the dashboard (the driver or the page failed)."""


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    time: float  # Unix seconds


def provisioned_datasource(ds_dir: Path = DATASOURCE_DIR) -> dict[str, str]:
    """The provisioned Prometheus datasource: uid, name, timeInterval, httpMethod."""
    for f in sorted(ds_dir.glob("*.y*ml")):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources") or []:
            if ds.get("type") == "prometheus":
                jd = ds.get("jsonData") or {}
                return {
                    "uid": ds.get("uid") or "prometheus",
                    "name": ds.get("name") or "Prometheus",
                    "timeInterval": str(jd.get("timeInterval") or ""),
                    "httpMethod": str(jd.get("httpMethod") or "POST"),
                }
    return {"uid": "prometheus", "name": "Prometheus", "timeInterval": "", "httpMethod": "POST"}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise ToolMissing("node is not on PATH (the stand-in's driver runs on it): install Node.js 20+")
    return node


def render_many(
    dashboard: Path | str | Mapping[str, Any],
    prometheus_url: str,
    start: float,
    end: float,
    runs: Sequence[Mapping[str, Sequence[str] | str] | None],
    *,
    datasource: Mapping[str, str] | None = None,
    max_data_points: int | None = None,
    screenshot: Path | None = None,
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """Render the dashboard once per entry of `runs` (each a {variable: value(s)} mapping, or None
    for the dashboard's defaults) in one browser; start and end are Unix seconds."""
    standin = grafana_standin_dir()
    with tempfile.TemporaryDirectory(prefix="dashboard-browser-") as tmp:
        if isinstance(dashboard, Mapping):
            path = Path(tmp) / "dashboard.json"
            path.write_text(json.dumps(dashboard))
        else:
            path = Path(dashboard)
        config = {
            "dashboard": str(path.resolve()),
            "prometheus": prometheus_url.rstrip("/"),
            "from_ms": int(start * 1000),
            "to_ms": int(end * 1000),
            "datasource": dict(datasource or provisioned_datasource()),
            "runs": [
                {"variables": {k: ([v] if isinstance(v, str) else list(v)) for k, v in (r or {}).items()}}
                for r in runs
            ],
            "max_data_points": max_data_points,
            "chromium": str(chromium_bin()),
            "timeout_ms": int(timeout * 1000 / 2),
            "screenshot": str(screenshot) if screenshot else None,
        }
        try:
            r = subprocess.run(
                [_node(), str(standin / "driver.mjs")],
                input=json.dumps(config), capture_output=True, text=True, timeout=timeout, cwd=standin,
            )
        except subprocess.TimeoutExpired as e:
            raise RenderError(f"the stand-in driver did not finish in {timeout:.0f} s") from e
    if r.returncode != 0:
        raise RenderError(f"the stand-in driver failed (rc={r.returncode}):\n{r.stderr.strip()[-4000:]}")
    out = json.loads(r.stdout)
    rendered = []
    for run in out["runs"]:
        run["browser"] = out["browser"]
        if run.get("state") != "done":
            raise RenderError(
                f"the stand-in page failed: {run.get('error')}\nbrowser log: {out['browser']['log']}"
            )
        if run.get("consistency_problems"):
            raise RenderError(f"the page's DOM and window.__standin disagree: {run['consistency_problems']}")
        rendered.append(run)
    return rendered


def render(
    dashboard_path: Path | str | Mapping[str, Any],
    prometheus_url: str,
    start: float,
    end: float,
    variables: Mapping[str, Sequence[str] | str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """{panels: [{id, title, queries: [{refId, expr_interpolated, ...}], legends: [...], error}],
    annotations: [{name, time_ms, title, tags, ...}], variables: {name: [values]}, ...}.

    `dashboard_path` may also be the dashboard as a dict; start and end are Unix seconds;
    `variables` sets variables as Grafana's URL does (var-NAME=VALUE; "All" selects All)."""
    return render_many(dashboard_path, prometheus_url, start, end, [variables], **kwargs)[0]


# ----------------------------------------------------------------------------------------------
# Check 1: every fault of the run has an annotation that returns it
# ----------------------------------------------------------------------------------------------
def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration.strip())
    if not m:
        raise ValueError(f"duration {duration!r}: expected e.g. 5s, 1m")
    return float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def _fault(f: Fault | Mapping[str, Any] | Sequence[Any]) -> Fault:
    if isinstance(f, Fault):
        return f
    if isinstance(f, Mapping):
        return Fault(str(f["kind"]), str(f.get("target", "")), float(f["time"]))
    kind, target, t = f
    return Fault(str(kind), str(target), float(t))


def faults_annotated(
    rendered: Mapping[str, Any],
    faults: Iterable[Fault | Mapping[str, Any] | Sequence[Any]],
    scrape_interval: float | None = None,
) -> list[str]:
    """Problems: each fault needs an annotation event no further than one scrape interval from
    its time whose title words or tags include the fault's kind and its target (if given). The scrape interval
    defaults to the datasource's timeInterval (Grafana's notion of it)."""
    if scrape_interval is None:
        scrape_interval = _seconds((rendered.get("datasource") or {}).get("timeInterval") or "15s")
    events = rendered.get("annotations") or []
    problems = []
    for f in map(_fault, faults):
        carries = [e for e in events if all(
            word in (e.get("title") or "").split() or word in (e.get("tags") or [])
            for word in (f.kind, f.target) if word)]
        near = [e for e in carries if abs(e["time_ms"] / 1000 - f.time) <= scrape_interval]
        if near:
            continue
        closest = sorted(carries, key=lambda e: abs(e["time_ms"] / 1000 - f.time))[:3]
        seen = ", ".join(f"{e['name']!r} {e['title']!r} at {e['time_ms'] / 1000:.3f} "
                         f"({e['time_ms'] / 1000 - f.time:+.1f} s)" for e in closest) or "none"
        problems.append(
            f"fault {f.kind} on {f.target or '?'} at {f.time:.3f}: no annotation within "
            f"{scrape_interval:g} s whose title or tags carry {f.kind!r} (closest carrying it: {seen}; "
            f"{len(events)} annotation events in all)"
        )
    for q in rendered.get("annotation_queries") or []:
        if q.get("state") == "error":
            problems.append(f"annotation {q['name']!r} failed: {q.get('error')}")
    return problems


# ----------------------------------------------------------------------------------------------
# Check 2: no legend shows an IP
# ----------------------------------------------------------------------------------------------
IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6_CANDIDATE_RE = re.compile(r"\[?([0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*)\]?")
HOST_PORT_RE = re.compile(r"(?<![\w.:/-])([A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\]):(\d{1,5})(?![\w:])")


def address_in(text: str) -> str | None:
    """The first IPv4 or IPv6 address or host:port in `text`, or None."""
    for m in IPV4_RE.finditer(text):
        try:
            ipaddress.IPv4Address(m.group(0))
            return m.group(0)
        except ValueError:
            continue
    for m in IPV6_CANDIDATE_RE.finditer(text):
        candidate = m.group(1).split("%")[0]
        if candidate.count(":") >= 2:
            try:
                ipaddress.IPv6Address(candidate)
                return candidate
            except ValueError:
                pass
    for m in HOST_PORT_RE.finditer(text):
        host, port = m.group(1), int(m.group(2))
        if 0 < port <= 65535 and (re.search(r"[A-Za-z]", host) or "." in host or host.startswith("[")):
            return m.group(0)
    return None


def ip_legends(rendered: Mapping[str, Any]) -> list[str]:
    """Problems: every legend entry (series display name) that shows an address."""
    problems = []
    for p in rendered.get("panels") or []:
        for name in p.get("legends") or []:
            found = address_in(name)
            if found:
                problems.append(
                    f"panel {p['id']} {p['title']!r}: legend {name!r} shows the address {found!r}"
                )
    return problems


# ----------------------------------------------------------------------------------------------
# Check 3: every variable filters every query of the panels that claim it
# ----------------------------------------------------------------------------------------------
def _iter_panels(panels: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for p in panels:
        yield p
        yield from _iter_panels(p.get("panels") or [])


def not_filtered_by(description: str) -> set[str]:
    """The variables a panel description's "Not filtered by: $a, $b (why)" lines name."""
    names: set[str] = set()
    for m in NOT_FILTERED_RE.finditer(description or ""):
        names |= set(re.findall(r"\$\{?(\w+)", m.group("names")))
    return names


def uses_variable(text: str, name: str) -> bool:
    """$name, ${name}, ${name:fmt}, ${name.path}, [[name]] or [[name:fmt]] in `text`."""
    n = re.escape(name)
    return re.search(rf"\$(?:{n}(?!\w)|\{{{n}(?=[}}:.]))|\[\[{n}(?=[\]:])", text or "") is not None


def filterable_variables(dashboard: Mapping[str, Any]) -> list[str]:
    return [v["name"] for v in (dashboard.get("templating") or {}).get("list") or []
            if v.get("type", "query") in FILTER_VARIABLE_TYPES]


def probe_variables(
    dashboard: Path | str | Mapping[str, Any],
    prometheus_url: str,
    start: float,
    end: float,
    values: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Render the dashboard with its defaults, then once per filterable variable set to one value
    (`values`, else the variable's first option other than All); for unfiltered_queries."""
    d = _load(dashboard)
    names = filterable_variables(d)
    baseline = render(dashboard, prometheus_url, start, end, **kwargs)
    chosen: dict[str, str] = {}
    for name in names:
        if values and name in values:
            chosen[name] = values[name]
            continue
        detail = next((v for v in baseline["variable_details"] if v["name"] == name), None)
        options = [o["value"] for o in (detail or {}).get("options") or [] if o["value"] != "$__all"]
        chosen[name] = options[0] if options else "__lkrig_probe__"
    runs: list[dict[str, Any]] = []
    if chosen:
        settings = [{n: v} for n, v in chosen.items()]
        runs = render_many(dashboard, prometheus_url, start, end, settings, **kwargs)
    by_variable = {n: {"value": chosen[n], "rendered": r} for n, r in zip(chosen, runs, strict=True)}
    return {"baseline": baseline, "by_variable": by_variable}


def _load(dashboard: Path | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(dashboard, Mapping):
        return dict(dashboard)
    return json.loads(Path(dashboard).read_text())


def unfiltered_queries(
    dashboard_json: Path | str | Mapping[str, Any], probes: Mapping[str, Any] | None = None
) -> list[str]:
    """Problems: a panel query that lacks a filterable variable its panel does not declare in a
    "Not filtered by:" line; with `probes` (probe_variables), also a claimed variable whose one
    value left a panel's interpolated query unchanged in the browser."""
    d = _load(dashboard_json)
    names = filterable_variables(d)
    problems = []
    claims: dict[Any, set[str]] = {}
    for p in _iter_panels(d.get("panels") or []):
        if p.get("type") == "row":
            continue
        exempt = not_filtered_by(p.get("description") or "")
        for unknown in sorted(exempt - set(names)):
            problems.append(f"panel {p.get('id')} {p.get('title')!r}: 'Not filtered by' names ${unknown}, "
                            "which is not a filterable variable of the dashboard")
        claims[p.get("id")] = set(names) - exempt
        for t in p.get("targets") or []:
            if t.get("hide"):
                continue
            for name in names:
                if name not in exempt and not uses_variable(t.get("expr") or "", name):
                    problems.append(
                        f"panel {p.get('id')} {p.get('title')!r} query {t.get('refId')}: "
                        f"does not use ${name} (add it, or name it in a description line "
                        f"'Not filtered by: ${name} (why)')"
                    )
    if probes:
        base = {(p["id"], q["refId"]): q["expr_interpolated"]
                for p in probes["baseline"]["panels"] for q in p["queries"]}
        for name, probe in probes["by_variable"].items():
            for p in probe["rendered"]["panels"]:
                if name not in claims.get(p["id"], set()):
                    continue
                for q in p["queries"]:
                    before = base.get((p["id"], q["refId"]))
                    if q.get("error") and not q.get("expr_interpolated"):
                        problems.append(f"panel {p['id']} {p['title']!r} query {q['refId']}: {q['error']}")
                    elif before is not None and before == q["expr_interpolated"]:
                        problems.append(
                            f"panel {p['id']} {p['title']!r} query {q['refId']}: choosing {name}="
                            f"{probe['value']} in the browser leaves the query unchanged: "
                            f"{q['expr_interpolated']}"
                        )
    return problems
