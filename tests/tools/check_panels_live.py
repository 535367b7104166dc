"""Run every dashboard panel's query against a live Prometheus; fail on errors or empty results.

    python tests/tools/check_panels_live.py --prometheus http://127.0.0.1:9090 \
        [--rate-interval 1m] [--range 10m] [--time UNIX_TS] [--var scenario=seed ...] [dashboard.json ...]

Template variables are resolved as Grafana does with the dashboard's defaults: each query
variable's values are looked up live (label_values([selector,] label), chained on the variables
before it); a variable with no live value is a failure, since every panel would be empty. An
"All" variable becomes its allValue (or a regex of its values), and --var NAME=V[,V...] pins
values, which must exist live. The data source variable (type datasource, query prometheus) is
the Prometheus given: a panel, target or annotation that reads any other data source is a
failure, since this check cannot ask it. $__rate_interval, $__range and $__interval take the
given durations. A result whose every value is NaN (a quantile over no observations) counts as
empty. Panels in collapsed rows are checked like the others.

The dashboard's Prometheus annotations (faults, load start and stop, firing alerts) run too: each
must be a query Prometheus accepts, but may be empty (no fault, no alert in the window).

Exit status: 0 all panels returned data, 1 some did not (each is listed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import metric_names

from rig.dashboard import datasource_refs

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"


class PrometheusUnreachable(RuntimeError):
    """The Prometheus URL did not answer like a Prometheus HTTP API."""


@dataclass
class QueryResult:
    dashboard: str
    panel: str
    ref: str
    expr: str
    series: int = 0
    error: str | None = None
    need_data: bool = True  # False: an annotation, which may well be empty

    @property
    def ok(self) -> bool:
        return self.error is None and (self.series > 0 or not self.need_data)

    def line(self) -> str:
        status = "OK  " if self.ok else "FAIL"
        what = self.error or (f"{self.series} series" if self.series else "no data")
        expr = " ".join(self.expr.split())
        return f"{status} {self.dashboard}: {self.panel} {self.ref}: {what}\n       {expr}"


@dataclass
class LiveReport:
    variables: dict[str, dict[str, str]] = field(default_factory=dict)  # dashboard -> var -> value
    results: list[QueryResult] = field(default_factory=list)
    annotations: list[QueryResult] = field(default_factory=list)  # may be empty, must not fail
    problems: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return (
            self.problems
            + [r.line() for r in self.results if not r.ok]
            + [r.line() for r in self.annotations if not r.ok]
        )

    @property
    def ok(self) -> bool:
        return not self.failures


def query(prom_url: str, expr: str, at: float | None = None, timeout: float = 15.0) -> dict[str, Any]:
    """POST /api/v1/query; the decoded JSON, including Prometheus's own error answers."""
    data = {"query": expr}
    if at is not None:
        data["time"] = f"{at:.3f}"
    req = urllib.request.Request(
        prom_url.rstrip("/") + "/api/v1/query", data=urllib.parse.urlencode(data).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # 400/422/503 carry {"status": "error", ...}
        try:
            return json.load(e)
        except ValueError:
            raise PrometheusUnreachable(f"{prom_url}: HTTP {e.code} without a Prometheus error body") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise PrometheusUnreachable(f"{prom_url}: {e}") from e


def _series_with_data(answer: dict[str, Any]) -> int:
    data = answer.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar":
        return 0 if math.isnan(float(result[1])) else 1
    if data.get("resultType") == "matrix":
        return sum(1 for s in result if any(not math.isnan(float(v)) for _, v in s.get("values", [])))
    return sum(1 for s in result or [] if not math.isnan(float(s["value"][1])))


def _regex_of(values: list[str]) -> str:
    escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def resolve_variables(
    prom_url: str,
    dashboard: dict[str, Any],
    builtins: dict[str, str],
    pinned: dict[str, list[str]],
    at: float | None,
) -> tuple[dict[str, str], list[str]]:
    """{variable: text to substitute}, problems."""
    values: dict[str, str] = dict(builtins)
    problems = []
    for var in (dashboard.get("templating") or {}).get("list") or []:
        name = var.get("name")
        if var.get("type") == "datasource":
            # The Prometheus this check asks stands for whichever one Grafana's user picks.
            if var.get("query") != "prometheus":
                problems.append(
                    f"variable ${name}: a data source of type {var.get('query')!r}, not prometheus"
                )
            values[name] = prom_url
            continue
        if var.get("type") in ("constant", "custom", "textbox"):
            cur = (var.get("current") or {}).get("value") or var.get("query") or ""
            values[name] = cur if isinstance(cur, str) else _regex_of(list(cur))
            continue
        if var.get("type") != "query":
            problems.append(f"variable ${name}: type {var.get('type')!r} is not supported by this check")
            continue
        m = metric_names.LABEL_VALUES.match(metric_names.variable_query(var))
        if not m:
            problems.append(
                f"variable ${name}: query {metric_names.variable_query(var)!r} is not "
                "label_values([selector,] label)"
            )
            continue
        label = m["label"]
        selector, _ = metric_names.substitute(m["selector"] or f'{{{label}!=""}}', values)
        answer = query(prom_url, f"count by ({label}) ({selector})", at)
        if answer.get("status") != "success":
            problems.append(f"variable ${name}: {answer.get('error')}")
            continue
        live = sorted({s["metric"].get(label, "") for s in answer["data"]["result"]} - {""})
        queried = re.findall(r'"expr": ("(?:[^"\\]|\\.)*")', json.dumps(dashboard.get("panels") or []))
        if not live and not any(f in e for e in queried for f in (f"${name}", f"${{{name}", f"[[{name}")):
            values[name] = ".*"  # no query checked here reads it (agent panels, a stack without callers)
        elif not live:
            problems.append(f"variable ${name}: no live values of label {label!r} in {selector}")
            values[name] = "__no_value__"
        elif name in pinned:
            missing = [v for v in pinned[name] if v not in live]
            if missing:
                problems.append(f"variable ${name}: pinned {missing} not among live values {live}")
            values[name] = _regex_of(pinned[name])
        elif var.get("includeAll"):
            values[name] = var.get("allValue") or _regex_of(live)
        else:
            values[name] = live[0]
    return values, problems


def _foreign_datasource(ref: Any, ours: set[str]) -> str | None:
    """Why `ref` is not the Prometheus this check asks, or None (absent refs inherit the panel's)."""
    if ref is None:
        return None
    uid = ref.get("uid") if isinstance(ref, dict) else ref
    if uid in ours:
        return None
    return (
        f"reads data source {ref!r}, not the dashboard's Prometheus variable; this check only asks "
        "the Prometheus given"
    )


def check_panels_live(
    prom_url: str,
    dashboards: list[Path] | None = None,
    *,
    rate_interval: str = "1m",
    range_: str = "5m",
    interval: str = "15s",
    at: float | None = None,
    variables: dict[str, list[str]] | None = None,
) -> LiveReport:
    """Run every panel target of `dashboards` (default: grafana/dashboards/*.json) against `prom_url`.

    Raises PrometheusUnreachable if `prom_url` does not answer; everything else is in the report.
    """
    paths = dashboards or sorted(DASHBOARD_DIR.glob("*.json"))
    builtins = {
        "__rate_interval": rate_interval,
        "__range": range_,
        "__interval": interval,
        "__range_s": str(_seconds(range_)),
        "__range_ms": str(_seconds(range_) * 1000),
        "__interval_ms": str(_seconds(interval) * 1000),
    }
    report = LiveReport()
    if not paths:
        report.problems.append(f"no dashboards in {DASHBOARD_DIR}")
    for path in paths:
        d = json.loads(path.read_text())
        values, problems = resolve_variables(prom_url, d, builtins, variables or {}, at)
        report.variables[path.name] = {k: v for k, v in values.items() if not k.startswith("__")}
        report.problems += [f"{path.name}: {p}" for p in problems]
        ours = datasource_refs(d)
        for p in metric_names.iter_panels(d.get("panels") or []):
            if p.get("type") == "row":
                continue
            panel = f"panel {p.get('id')} {p.get('title')!r}"
            foreign = _foreign_datasource(p.get("datasource"), ours)
            if foreign:
                report.problems.append(f"{path.name}: {panel} {foreign}")
            targets = p.get("targets") or []
            if not targets:
                report.problems.append(f"{path.name}: {panel} has no targets")
            for t in targets:
                ref = t.get("refId") or "?"
                if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                    report.results.append(
                        QueryResult(path.name, panel, ref, "", error="target has no 'expr'")
                    )
                    continue
                r = _run(prom_url, path.name, panel, ref, t["expr"], values, at)
                r.error = r.error or _foreign_datasource(t.get("datasource"), ours)
                report.results.append(r)
        for a in (d.get("annotations") or {}).get("list") or []:
            target = a.get("target") if isinstance(a.get("target"), dict) else {}
            expr = target.get("expr") or a.get("expr")
            if a.get("builtIn") == 1 or not isinstance(expr, str) or not expr.strip():
                continue
            r = _run(prom_url, path.name, f"annotation {a.get('name')!r}", target.get("refId") or "Anno",
                     expr, values, at)
            r.error = r.error or _foreign_datasource(a.get("datasource"), ours)
            r.need_data = False
            report.annotations.append(r)
    return report


def _run(
    prom_url: str, dashboard: str, what: str, ref: str, expr: str, values: dict[str, str], at: float | None
) -> QueryResult:
    text, unknown = metric_names.substitute(expr, values)
    r = QueryResult(dashboard, what, ref, text)
    if unknown:
        r.error = f"undefined variables {sorted(unknown)}"
        return r
    answer = query(prom_url, text, at)
    if answer.get("status") != "success":
        r.error = f"{answer.get('errorType')}: {answer.get('error')}"
    else:
        r.series = _series_with_data(answer)
    return r


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)(s|m|h|d)", duration)
    if not m:
        raise ValueError(f"duration {duration!r}: expected e.g. 30s, 5m, 1h")
    return int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def wait_until_ok(prom_url: str, timeout: float, **kwargs: Any) -> LiveReport:
    """Re-run the check until every panel has data or `timeout` seconds pass; the last report."""
    deadline = time.monotonic() + timeout
    while True:
        report = check_panels_live(prom_url, **kwargs)
        if report.ok or time.monotonic() >= deadline:
            return report
        time.sleep(1.0)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--rate-interval", default="1m", help="value of $__rate_interval (default 1m)")
    ap.add_argument("--range", dest="range_", default="5m", help="value of $__range (default 5m)")
    ap.add_argument("--interval", default="15s", help="value of $__interval (default 15s)")
    ap.add_argument("--time", type=float, default=None, help="evaluate at this Unix time (default: now)")
    ap.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=V[,V...]",
        help="pin a template variable to these live values",
    )
    ap.add_argument("--wait", type=float, default=0.0, help="retry for up to this many seconds")
    ap.add_argument("dashboards", nargs="*", type=Path)
    args = ap.parse_args(argv)
    pinned = {}
    for v in args.var:
        name, sep, vals = v.partition("=")
        if not sep or not name or not vals:
            print(f"--var {v!r}: expected NAME=VALUE[,VALUE...]", file=sys.stderr)
            return 2
        pinned[name] = vals.split(",")
    for p in args.dashboards:
        if not p.is_file():
            print(f"dashboard {p}: no such file", file=sys.stderr)
            return 2
    try:
        _seconds(args.rate_interval), _seconds(args.range_), _seconds(args.interval)
        report = wait_until_ok(
            args.prometheus,
            args.wait,
            dashboards=args.dashboards or None,
            rate_interval=args.rate_interval,
            range_=args.range_,
            interval=args.interval,
            at=args.time,
            variables=pinned,
        )
    except (PrometheusUnreachable, ValueError) as e:
        print(f"check_panels_live: {e}", file=sys.stderr)
        return 2
    for name, values in report.variables.items():
        print(f"{name}: variables {values}")
    for r in report.results:
        print(r.line())
    for r in report.annotations:  # empty is fine: no fault or alert in the window
        print(r.line())
    for p in report.problems:
        print(f"FAIL {p}")
    n_ok = sum(r.ok for r in report.results)
    n_failed = len(report.results) - n_ok + len(report.problems) + sum(not r.ok for r in report.annotations)
    print(f"{n_ok} passed, {n_failed} failed")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
