"""Static checks of the Grafana dashboards (no Grafana server runs here).

    python tests/tools/dashboard_check.py [dashboard.json ...]

1. Structure: each dashboard must satisfy @grafana/schema's `Dashboard` type, checked by the
   TypeScript compiler (`export const d = <json> satisfies Dashboard`); this catches misspelt keys,
   wrong types and missing required fields at every level the type describes. @grafana/schema
   leaves a data source's own query fields open; the Prometheus ones (a target's `expr`,
   `legendFormat`, ...; an annotation's `titleFormat`, `tagKeys`, `useValueForTime`, ...) are
   typed here as Grafana's Prometheus data source stores them.
2. Queries: every panel has targets; every target has a non-empty `expr` (a misspelt `expr` key
   would otherwise be a silently empty panel); refIds and panel ids are unique; every variable a
   query uses is defined.
3. Importable anywhere: one `datasource` variable (type datasource, query prometheus), and every
   panel, target, annotation and query variable reads `{"type": "prometheus", "uid":
   "${datasource}"}`; no fixed data source uid anywhere.
4. Variables filter every panel: each filter variable (query, custom, textbox) appears in every
   query of every panel, unless the panel's description has the line
   `Not filtered by: $a, $b (why)`; such a line names only variables some query ignores.
   Workers are named by the scrape's `worker` label: no legend, annotation, variable or query
   mentions `instance` or `__address__`.
5. One fact each: the caller turn-latency panels draw a threshold line at slo/default.yaml's
   `turn_latency_p95_seconds`; `editable` is the provisioning's `allowUiUpdates`.
6. Readable at any zoom: no `increase(...[$__rate_interval])` (a count whose window follows the
   zoom; use a per-minute rate, or bars of `increase(...[$__interval])`).
7. Rows: a collapsed row holds its panels, an expanded one none (Grafana's model).
8. Docs: every link to a file of the repository (`docs/x.md#anchor`) names a file that exists and
   a heading it has; every panel of errors by kind links docs/speech-scheduling.md and names
   `rig explain`.
9. Names: every metric in every query, variable query and annotation is defined in names.py
   (metric_names.py), and every query parses as PromQL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import metric_names
import yaml
from toolpaths import REPO, dashboard_check_dir

DASHBOARD_DIR = REPO / "grafana" / "dashboards"
PROVISIONING_DIR = REPO / "grafana" / "provisioning" / "dashboards"
RULES_DIR = REPO / "prometheus" / "rules"
SLO_FILE = REPO / "slo" / "default.yaml"
# Grafana's own annotations (the built-in "Annotations & Alerts") read Grafana's data source.
GRAFANA_DATASOURCE_UIDS = {"-- Grafana --", "grafana"}
FILTER_VARIABLE_TYPES = {"query", "custom", "textbox"}
NOT_FILTERED = re.compile(r"^Not filtered by:")
NOT_FILTERED_LINE = re.compile(
    r"^Not filtered by: (?P<vars>\$\w+(?:, \$\w+)*)(?: \((?P<why>[^()]*(?:\([^()]*\)[^()]*)*)\))?$"
)
INSTANCE = re.compile(r"\binstance\b|__address__")
# A Markdown link to a file of the repository: [text](docs/x.md#anchor)
DOC_LINK = re.compile(
    r"\]\((?P<file>(?:docs|[A-Za-z0-9_.-]+)/[^)#\s]*\.md|[A-Za-z0-9_.-]+\.md)(?P<anchor>#[^)\s]*)?\)"
)
ERRORS_DOC = "docs/speech-scheduling.md"
VISIBLE_THRESHOLD_STYLES = {"line", "dashed", "line+area", "dashed+area", "area"}


def dashboards(paths: list[Path] | None = None) -> list[Path]:
    return paths if paths else sorted(DASHBOARD_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e


# JSON can only hold the string values of @grafana/schema's string enums (ThresholdsMode,
# FieldColorModeId, ...), and TypeScript does not accept a literal "absolute" for an enum type.
# `${E}` turns a string enum into the union of its values; everything else keeps its type, so
# unknown keys, wrong types and missing fields are still errors.
#
# @grafana/schema types a panel's targets as open records and an annotation's query as a bare
# DataQuery: the fields of the Prometheus data source are its own (Grafana's PromQuery, and the
# fields its annotation editor keeps on the annotation: public/app/plugins/datasource/prometheus,
# annotations.ts). They are typed here, so a misspelt `legendFormat` or `titleFormat` is an error.
JSON_TYPES = """import type { AnnotationQuery, Dashboard, DataQuery, Panel, RowPanel } from '@grafana/schema';
type Json<T> = T extends string ? `${T}`
  : T extends ReadonlyArray<infer U> ? Array<Json<U>>
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;
interface PromQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  exemplar?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  intervalFactor?: number;
  editorMode?: 'code' | 'builder';
}
interface PromAnnotation extends AnnotationQuery<PromQuery> {
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
}
type PromPanel = Omit<Panel, 'targets'> & { targets?: PromQuery[] };
type PromRow = Omit<RowPanel, 'panels'> & { panels: PromPanel[] };
type PromDashboard = Omit<Dashboard, 'panels' | 'annotations'> & {
  panels?: Array<PromPanel | PromRow>;
  annotations?: { list?: PromAnnotation[] };
};
export type DashboardJson = Json<PromDashboard>;
"""


def type_problems(paths: list[Path]) -> list[str]:
    """tsc: each dashboard `satisfies Dashboard` from @grafana/schema (as JSON can spell it)."""
    check_dir = dashboard_check_dir()
    with tempfile.TemporaryDirectory(prefix="dashboard-check-") as tmp:
        work = Path(tmp)
        os.symlink(check_dir / "node_modules", work / "node_modules")
        (work / "json_types.ts").write_text(JSON_TYPES)
        sources = {}
        for i, path in enumerate(paths):
            load(path)  # a JSON syntax error is reported as such, not as a TypeScript one
            ts = work / f"d{i}_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}.ts"
            # The file's own text on line 2 onwards, so tsc's line N is the JSON's line N - 1.
            ts.write_text(
                "import type { DashboardJson } from './json_types';\nexport const dashboard = "
                + path.read_text().rstrip()
                + " satisfies DashboardJson;\n"
            )
            sources[ts.name] = path
        config = json.loads((check_dir / "tsconfig.json").read_text())
        config["include"] = ["json_types.ts", *sources]
        (work / "tsconfig.json").write_text(json.dumps(config))
        r = subprocess.run(
            [str(check_dir / "node_modules" / ".bin" / "tsc"), "-p", str(work)],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=work,
        )
        if r.returncode == 0:
            return []
        lines = []
        for line in (r.stdout + r.stderr).strip().splitlines():
            m = re.match(r"^(?P<file>[^(]+)\((?P<line>\d+),(?P<col>\d+)\): (?P<msg>.*)$", line)
            if m and Path(m["file"]).name in sources:
                src = sources[Path(m["file"]).name]
                lines.append(f"{src}:{int(m['line']) - 1}:{m['col']}: {m['msg']}")
            else:
                lines.append(line)
        report = "\n".join(lines)
        return [f"@grafana/schema type check failed (tsc rc={r.returncode}):\n{report}"]


# --- helpers ---------------------------------------------------------------------------------------
def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list((dashboard.get("templating") or {}).get("list") or [])


def annotations(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list((dashboard.get("annotations") or {}).get("list") or [])


def annotation_expr(a: dict[str, Any]) -> str | None:
    """A Prometheus annotation's query: `target.expr` (Grafana 10+), or the older top-level `expr`."""
    target = a.get("target")
    if isinstance(target, dict) and isinstance(target.get("expr"), str):
        return target["expr"]
    return a.get("expr") if isinstance(a.get("expr"), str) else None


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(metric_names.iter_panels(dashboard.get("panels") or []))


def uses_variable(expr: str, name: str) -> bool:
    return re.search(rf"\$\{{{name}(?::\w+)?\}}|\${name}\b|\[\[{name}(?::\w+)?\]\]", expr) is not None


def where_panel(name: str, p: dict[str, Any]) -> str:
    return f"{name}: panel {p.get('id')} {p.get('title')!r}"


def not_filtered(description: str) -> tuple[set[str], list[str]]:
    """Variables a panel's description says it ignores (`Not filtered by: $a, $b (why)`), problems."""
    names: set[str] = set()
    problems = []
    for line in (description or "").splitlines():
        line = line.strip()
        if not NOT_FILTERED.match(line):
            continue
        m = NOT_FILTERED_LINE.match(line)
        if not m:
            problems.append(f"line {line!r} is not 'Not filtered by: $a, $b (why)'")
            continue
        names |= {v.lstrip("$") for v in m["vars"].split(", ")}
    return names, problems


# --- 2. queries --------------------------------------------------------------------------------------
def query_problems(dashboard: dict[str, Any], name: str) -> list[str]:
    problems = []
    ids: dict[int, str] = {}
    for p in panels(dashboard):
        where = where_panel(name, p)
        if p.get("id") in ids:
            problems.append(f"{where}: id {p.get('id')} also used by panel {ids[p['id']]!r}")
        ids[p.get("id")] = p.get("title")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{where}: has no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or None in refs:
            problems.append(f"{where}: refIds must be present and unique, got {refs}")
        for t in targets:
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{where} target {t.get('refId')}: no 'expr' (keys: {sorted(t)})")
    for a in annotations(dashboard):
        if a.get("builtIn") == 1:
            continue
        expr = annotation_expr(a)
        if not expr or not expr.strip():
            problems.append(f"{name}: annotation {a.get('name')!r}: no query ('target.expr')")
    return problems


# --- 3. data sources -----------------------------------------------------------------------------
def datasource_problems(dashboard: dict[str, Any], name: str) -> list[str]:
    """One `datasource` variable; every panel, target, annotation and query variable reads it."""
    problems = []
    ds_vars = [v for v in variables(dashboard) if v.get("type") == "datasource"]
    if len(ds_vars) != 1:
        return [
            f"{name}: needs exactly one variable of type 'datasource' (query 'prometheus') that every query "
            f"reads, so the dashboard imports into any Grafana; found {len(ds_vars)}"
        ]
    var = ds_vars[0]
    if var.get("query") != "prometheus":
        problems.append(
            f"{name}: variable ${var.get('name')}: query {var.get('query')!r}, expected 'prometheus'"
        )
    if var.get("multi") or var.get("includeAll"):
        problems.append(f"{name}: variable ${var.get('name')}: one data source at a time (no multi, no All)")
    want = {"type": "prometheus", "uid": f"${{{var.get('name')}}}"}

    def ref_problem(where: str, ref: Any, required: bool) -> list[str]:
        if ref is None:
            return [f"{where}: has no datasource; expected {want}"] if required else []
        if ref == want:
            return []
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        return [
            f"{where}: datasource uid {uid!r} is fixed ({ref!r}): use {want} so the dashboard imports into "
            "any Grafana"
        ]

    for p in panels(dashboard):
        where = where_panel(name, p)
        problems += ref_problem(where, p.get("datasource"), p.get("type") != "row")
        for t in p.get("targets") or []:
            problems += ref_problem(f"{where} target {t.get('refId')}", t.get("datasource"), True)
    for a in annotations(dashboard):
        where = f"{name}: annotation {a.get('name')!r}"
        if a.get("builtIn") == 1:
            ds = a.get("datasource") or {}
            grafana = isinstance(ds, dict) and ds.get("type") == "grafana"
            if not (grafana and ds.get("uid") in GRAFANA_DATASOURCE_UIDS):
                problems.append(
                    f"{where}: the built-in annotation reads Grafana's own data source, got {ds!r}"
                )
            continue
        problems += ref_problem(where, a.get("datasource"), True)
        target = a.get("target")
        if isinstance(target, dict) and "datasource" in target:
            problems += ref_problem(f"{where} target", target.get("datasource"), True)
    for v in variables(dashboard):
        if v.get("type") == "query":
            problems += ref_problem(f"{name}: variable ${v.get('name')}", v.get("datasource"), True)
        elif v.get("type") != "datasource" and v.get("datasource") is not None:
            problems += ref_problem(f"{name}: variable ${v.get('name')}", v.get("datasource"), False)
    return problems


# --- 4. variables and worker names -------------------------------------------------------------------
def filter_problems(dashboard: dict[str, Any], name: str) -> list[str]:
    problems = []
    filters = [v.get("name") for v in variables(dashboard) if v.get("type") in FILTER_VARIABLE_TYPES]
    for p in panels(dashboard):
        if p.get("type") == "row":
            continue
        where = where_panel(name, p)
        exempt, line_problems = not_filtered(p.get("description") or "")
        problems += [f"{where}: description: {lp}" for lp in line_problems]
        for v in sorted(exempt - set(filters)):
            problems.append(f"{where}: 'Not filtered by: ${v}' names no filter variable of the dashboard")
        targets = p.get("targets") or []
        exprs = [(t.get("refId"), t["expr"]) for t in targets if isinstance(t.get("expr"), str)]
        for v in filters:
            if v in exempt:
                if exprs and all(uses_variable(e, v) for _, e in exprs):
                    problems.append(
                        f"{where}: its description says 'Not filtered by: ${v}', but every query uses ${v}"
                    )
                continue
            for ref, expr in exprs:
                if not uses_variable(expr, v):
                    problems.append(
                        f"{where} target {ref}: does not filter by ${v}; use it wherever the series has the "
                        f"label, or name it in a description line 'Not filtered by: ${v} (why)'"
                    )
    return problems


def instance_problems(dashboard: dict[str, Any], name: str) -> list[str]:
    """Workers by the scrape's `worker` label, never by address."""
    problems = []
    hint = "name workers by the scrape's `worker` label, not `instance` or `__address__`"
    for p in panels(dashboard):
        where = where_panel(name, p)
        for t in p.get("targets") or []:
            if INSTANCE.search(str(t.get("legendFormat") or "")):
                legend = t.get("legendFormat")
                problems.append(f"{where} target {t.get('refId')}: legendFormat {legend!r}: {hint}")
            if isinstance(t.get("expr"), str) and INSTANCE.search(t["expr"]):
                problems.append(f"{where} target {t.get('refId')}: query uses `instance`: {hint}")
    for v in variables(dashboard):
        if INSTANCE.search(metric_names.variable_query(v)):
            query = metric_names.variable_query(v)
            problems.append(f"{name}: variable ${v.get('name')}: query {query!r}: {hint}")
    for a in annotations(dashboard):
        for key in ("titleFormat", "textFormat", "tagKeys"):
            if INSTANCE.search(str(a.get(key) or "")):
                problems.append(f"{name}: annotation {a.get('name')!r}: {key} {a.get(key)!r}: {hint}")
        if INSTANCE.search(annotation_expr(a) or ""):
            problems.append(f"{name}: annotation {a.get('name')!r}: query uses `instance`: {hint}")
    return problems


# --- 5. one fact each ---------------------------------------------------------------------------------
def slo_turn_latency_p95(slo_file: Path = SLO_FILE) -> float:
    value = (yaml.safe_load(slo_file.read_text()) or {}).get("turn_latency_p95_seconds")
    if not isinstance(value, int | float):
        raise ValueError(f"{slo_file}: no numeric turn_latency_p95_seconds")
    return float(value)


def threshold_problems(dashboard: dict[str, Any], name: str, slo_file: Path = SLO_FILE) -> list[str]:
    """Every panel of the callers' turn latency draws the SLO's p95 limit, and only it."""
    limit = slo_turn_latency_p95(slo_file)
    problems = []
    found = 0
    for p in panels(dashboard):
        exprs = [t.get("expr") or "" for t in p.get("targets") or []]
        if p.get("type") == "row" or not any("lkrig_caller_turn_latency_seconds" in e for e in exprs):
            continue
        found += 1
        where = where_panel(name, p)
        defaults = (p.get("fieldConfig") or {}).get("defaults") or {}
        steps = [s.get("value") for s in (defaults.get("thresholds") or {}).get("steps") or []]
        values = [v for v in steps if v is not None]
        style = ((defaults.get("custom") or {}).get("thresholdsStyle") or {}).get("mode")
        if values != [limit]:
            problems.append(
                f"{where}: turn-latency threshold {values} is not the SLO's turn_latency_p95_seconds "
                f"[{limit:g}] ({slo_file.relative_to(REPO) if slo_file.is_relative_to(REPO) else slo_file})"
            )
        if p.get("type") == "timeseries" and style not in VISIBLE_THRESHOLD_STYLES:
            problems.append(
                f"{where}: thresholdsStyle mode {style!r} does not draw the SLO line (use 'line')"
            )
    if not found:
        problems.append(
            f"{name}: no panel shows the callers' turn latency (lkrig_caller_turn_latency_seconds)"
        )
    return problems


def allow_ui_updates(provisioning_dir: Path = PROVISIONING_DIR) -> set[bool]:
    found = set()
    for f in sorted(provisioning_dir.glob("*.y*ml")):
        for provider in (yaml.safe_load(f.read_text()) or {}).get("providers") or []:
            found.add(bool(provider.get("allowUiUpdates", False)))
    return found


def editable_problems(
    dashboard: dict[str, Any], name: str, provisioning_dir: Path = PROVISIONING_DIR
) -> list[str]:
    allowed = allow_ui_updates(provisioning_dir)
    if len(allowed) > 1:
        return [f"{provisioning_dir}: the dashboard providers disagree on allowUiUpdates"]
    if not allowed:
        return []
    (allow,) = allowed
    if dashboard.get("editable") is not allow:
        return [
            f"{name}: editable is {dashboard.get('editable')!r}, but the provisioning's allowUiUpdates is "
            f"{allow} ({provisioning_dir.name}/): {'an edit' if not allow else 'nothing'} would be lost"
        ]
    return []


# --- 6. counts that do not follow the zoom -------------------------------------------------------------
def _calls(expr: str, fn: str) -> list[str]:
    """The argument text of every call of `fn` in `expr`."""
    out = []
    for m in re.finditer(rf"\b{fn}\s*\(", expr):
        depth, i = 1, m.end()
        while i < len(expr) and depth:
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        out.append(expr[m.end() : i - 1])
    return out


def count_problems(dashboard: dict[str, Any], name: str) -> list[str]:
    problems = []
    for p in panels(dashboard):
        where = where_panel(name, p)
        draw = (((p.get("fieldConfig") or {}).get("defaults") or {}).get("custom") or {}).get("drawStyle")
        for t in p.get("targets") or []:
            for arg in _calls(str(t.get("expr") or ""), "increase"):
                if re.search(r"\[\s*\$\{?__rate_interval\}?\s*\]", arg):
                    problems.append(
                        f"{where} target {t.get('refId')}: increase(...[$__rate_interval]) is a count whose "
                        "window follows the zoom: use rate(...[$__rate_interval]) * 60 ('per minute' in the "
                        "title), or bars of increase(...[$__interval])"
                    )
                elif re.search(r"\[\s*\$\{?__interval\}?\s*\]", arg) and draw != "bars":
                    problems.append(
                        f"{where} target {t.get('refId')}: increase(...[$__interval]) counts per bar: draw "
                        "it as bars (custom.drawStyle 'bars')"
                    )
    return problems


# --- 7. rows ----------------------------------------------------------------------------------------
def row_problems(dashboard: dict[str, Any], name: str) -> list[str]:
    problems = []
    for p in dashboard.get("panels") or []:
        where = where_panel(name, p)
        inner = p.get("panels") or []
        if p.get("type") != "row":
            if inner:
                problems.append(f"{where}: only rows hold panels")
        elif p.get("collapsed") and not inner:
            problems.append(f"{where}: a collapsed row holds its panels in its own 'panels'; it has none")
        elif not p.get("collapsed") and inner:
            problems.append(
                f"{where}: an expanded row's panels follow it in the dashboard's 'panels', not inside it"
            )
    return problems


# --- 8. docs ------------------------------------------------------------------------------------------
def github_anchors(markdown: str) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file (lower case, punctuation dropped,
    spaces to hyphens, -1, -2, ... for repeats)."""
    seen: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m[1].lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def doc_problems(dashboard: dict[str, Any], name: str, repo: Path = REPO) -> list[str]:
    problems = []
    texts: list[tuple[str, str]] = [(f"{name}: description", dashboard.get("description") or "")]
    texts += [(where_panel(name, p), p.get("description") or "") for p in panels(dashboard)]
    texts += [
        (f"{name}: variable ${v.get('name')}", v.get("description") or "") for v in variables(dashboard)
    ]
    links = [
        (f"{name}: link {lk.get('title')!r}", lk.get("url") or "") for lk in dashboard.get("links") or []
    ]
    refs = [(where, m["file"], m["anchor"]) for where, text in texts for m in DOC_LINK.finditer(text)]
    for where, url in links:
        if not re.match(r"^[a-z][a-z0-9+.-]*:|^/", url):  # a file of the repository, by its path
            file, _, anchor = url.partition("#")
            refs.append((where, file, f"#{anchor}" if anchor else None))
    for where, file, anchor in refs:
        path = repo / file
        if not path.is_file():
            problems.append(f"{where}: links {file}, which is not a file of the repository")
        elif anchor and anchor[1:] not in github_anchors(path.read_text()):
            problems.append(f"{where}: {file} has no heading for the anchor {anchor}")
    for p in panels(dashboard):
        if p.get("type") == "row":
            continue
        by_kind = any(
            "speech_scheduling_errors" in str(t.get("expr") or "")
            and (re.search(r"\bkind\b", str(t.get("expr"))) or "{{kind}}" in str(t.get("legendFormat") or ""))
            for t in p.get("targets") or []
        )
        desc = p.get("description") or ""
        if by_kind and (f"]({ERRORS_DOC}#" not in desc or "rig explain" not in desc):
            problems.append(
                f"{where_panel(name, p)}: a panel of errors by kind links {ERRORS_DOC}#<section> in its "
                "description and names `rig explain <agent log>`"
            )
    return problems


# --- 9. names ------------------------------------------------------------------------------------------
def annotation_exprs(dashboard: dict[str, Any], name: str) -> tuple[list[metric_names.Expr], list[str]]:
    values = {**metric_names.GRAFANA_BUILTINS, **{v: ".*" for v in metric_names.variable_names(dashboard)}}
    exprs, problems = [], []
    for a in annotations(dashboard):
        expr = annotation_expr(a)
        if a.get("builtIn") == 1 or not expr:
            continue
        where = f"{name}: annotation {a.get('name')!r}"
        text, unknown = metric_names.substitute(expr, values)
        problems += [
            f"{where}: uses ${u}, which is neither a dashboard variable nor a Grafana builtin"
            for u in sorted(unknown)
        ]
        exprs.append(metric_names.Expr(where, text))
    return exprs, problems


def check(
    paths: list[Path] | None = None,
    rules_dir: Path = RULES_DIR,
    provisioning_dir: Path = PROVISIONING_DIR,
    slo_file: Path = SLO_FILE,
) -> list[str]:
    paths = dashboards(paths)
    if not paths:
        return [f"no dashboards in {DASHBOARD_DIR}"]
    problems = type_problems(paths)
    _, recorded, _ = metric_names.rule_exprs(sorted(rules_dir.glob("*.yml")))
    allowed = metric_names.allowed_names() | recorded
    exprs: list[metric_names.Expr] = []
    for path in paths:
        d = load(path)
        problems += query_problems(d, path.name)
        problems += datasource_problems(d, path.name)
        problems += filter_problems(d, path.name)
        problems += instance_problems(d, path.name)
        problems += threshold_problems(d, path.name, slo_file)
        problems += editable_problems(d, path.name, provisioning_dir)
        problems += count_problems(d, path.name)
        problems += row_problems(d, path.name)
        problems += doc_problems(d, path.name)
        e, p = metric_names.dashboard_exprs(d, path.name)
        exprs += e
        problems += p
        e, p = annotation_exprs(d, path.name)
        exprs += e
        problems += p
    problems += metric_names.name_problems(exprs, allowed)
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or None
    problems = check(paths)
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print(
            f"OK   {', '.join(str(p) for p in dashboards(paths))}: schema types, targets, data source "
            "variable, filters, worker names, SLO threshold, editable, counts, rows, doc links, metric names"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
