"""Every metric name in the rig's rules and dashboards must come from instrument/lkrig_instrument/names.py.

Expressions are parsed by Prometheus's own PromQL parser (tests/tools/promql-names), so a
syntax error is reported here too, before any Prometheus runs the expression.

Allowed in an expression: every sample name of names.ALL (histograms: _bucket, _sum, _count),
names.EXTERNAL, and the names our rule files record. A recorded name must follow
level:metric:operations with `metric` built on a names.py metric (its name without _total).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from toolpaths import REPO, promql_names_bin

NAMES_PY = REPO / "instrument" / "lkrig_instrument" / "names.py"
RECORDED = re.compile(r"^[a-z0-9_]+:(?P<metric>[a-z0-9_]+):[a-z0-9_]+$")

# Grafana's built-in interval variables, as the static checks substitute them.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


@dataclass(frozen=True)
class Expr:
    where: str  # "file: what" for messages
    expr: str


def load_names(path: Path = NAMES_PY) -> ModuleType:
    """names.py of this checkout, loaded by path (not whatever lkrig_instrument is installed)."""
    spec = importlib.util.spec_from_file_location("_lkrig_names_under_test", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def allowed_names(names: ModuleType | None = None) -> set[str]:
    names = names or load_names()
    allowed = {s for m in names.ALL for s in m.samples}
    return allowed | set(names.EXTERNAL)


def metric_bases(names: ModuleType | None = None) -> set[str]:
    names = names or load_names()
    return {m.name.removesuffix("_total") for m in names.ALL}


def parse(exprs: list[Expr]) -> dict[str, tuple[list[str], str | None]]:
    """{where: (metric names, parse error or None)} for every expression."""
    if not exprs:
        return {}
    payload = json.dumps([{"id": e.where, "expr": e.expr} for e in exprs])
    r = subprocess.run([str(promql_names_bin())], input=payload, capture_output=True, text=True, timeout=60)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"promql-names failed (rc={r.returncode}): {r.stderr.strip()}")
    return {o["id"]: (o["names"], o.get("error")) for o in json.loads(r.stdout)}


def name_problems(exprs: list[Expr], allowed: set[str]) -> list[str]:
    problems = []
    for where, (names, error) in parse(exprs).items():
        if error:
            problems.append(f"{where}: PromQL does not parse: {error}")
        for n in names:
            if n not in allowed:
                problems.append(
                    f"{where}: metric {n!r} is not defined in {NAMES_PY.relative_to(REPO)} "
                    "(names.ALL samples, names.EXTERNAL) nor recorded by our rules"
                )
    return problems


# --- rules ------------------------------------------------------------------------------------------
def rule_exprs(rule_files: list[Path]) -> tuple[list[Expr], set[str], list[str]]:
    """(expressions, recorded names, problems) of Prometheus rule files."""
    exprs, recorded, problems = [], set(), []
    for path in rule_files:
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups") or []:
            for i, rule in enumerate(group.get("rules") or []):
                label = rule.get("record") or rule.get("alert") or f"rule {i}"
                exprs.append(
                    Expr(f"{path.name}: group {group.get('name')!r} {label}", str(rule.get("expr", "")))
                )
                if "record" in rule:
                    recorded.add(rule["record"])
    return exprs, recorded, problems


def recorded_name_problems(recorded: set[str], bases: set[str]) -> list[str]:
    problems = []
    for name in sorted(recorded):
        m = RECORDED.match(name)
        if not m:
            problems.append(f"recorded name {name!r} does not follow level:metric:operations")
        elif not any(m["metric"].startswith(b) for b in bases):
            problems.append(f"recorded name {name!r}: {m['metric']!r} is not built on a metric of names.py")
    return problems


# --- dashboards --------------------------------------------------------------------------------
def iter_panels(panels: list[dict[str, Any]]) -> Any:
    for p in panels or []:
        yield p
        yield from iter_panels(p.get("panels") or [])


def variable_names(dashboard: dict[str, Any]) -> set[str]:
    return {v.get("name") for v in (dashboard.get("templating") or {}).get("list") or []}


def substitute(expr: str, values: dict[str, str]) -> tuple[str, set[str]]:
    """Grafana variables replaced by `values` (builtins included); also the names it did not know."""
    unknown: set[str] = set()

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in values:
            return values[name]
        unknown.add(name)
        return m.group(0)

    return VARIABLE.sub(repl, expr), unknown


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$", re.S)


def variable_query(var: dict[str, Any]) -> str:
    q = var.get("query")
    if isinstance(q, dict):
        q = q.get("query", "")
    return str(q or "")


def dashboard_exprs(dashboard: dict[str, Any], name: str) -> tuple[list[Expr], list[str]]:
    """(expressions with variables substituted for a static parse, problems)."""
    variables = variable_names(dashboard)
    # Any value parses inside a label matcher string, which is where our variables go.
    values = {**GRAFANA_BUILTINS, **{v: ".*" for v in variables}}
    exprs, problems = [], []

    def add(where: str, expr: str) -> None:
        text, unknown = substitute(expr, values)
        for u in sorted(unknown):
            problems.append(
                f"{where}: uses ${u}, which is neither a dashboard variable nor a Grafana builtin"
            )
        exprs.append(Expr(where, text))

    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        where = f"{name}: variable ${var.get('name')}"
        m = LABEL_VALUES.match(variable_query(var))
        if not m:
            problems.append(f"{where}: query {variable_query(var)!r} is not label_values([selector,] label)")
        elif m["selector"]:
            add(where, m["selector"])
    for p in iter_panels(dashboard.get("panels") or []):
        for t in p.get("targets") or []:
            if isinstance(t.get("expr"), str):
                add(f"{name}: panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t["expr"])
    return exprs, problems
