"""Static checks of the Grafana dashboards (no Grafana server runs here).

    python tests/tools/dashboard_check.py [dashboard.json ...]

1. Structure: each dashboard must satisfy @grafana/schema's `Dashboard` type, checked by the
   TypeScript compiler (`export const d = <json> satisfies Dashboard`); this catches misspelt keys,
   wrong types and missing required fields at every level the type describes.
2. Queries: every panel has targets; every target has a non-empty `expr` (a misspelt `expr` key
   would otherwise be a silently empty panel); refIds and panel ids are unique; datasources are
   the provisioned ones; every variable a query uses is defined.
3. Names: every metric in every query and variable query is defined in names.py (metric_names.py),
   and every query parses as PromQL.
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
DATASOURCE_DIR = REPO / "grafana" / "provisioning" / "datasources"
RULES_DIR = REPO / "prometheus" / "rules"
# Datasource uids Grafana always has.
BUILTIN_DATASOURCES = {"-- Grafana --", "grafana"}


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
JSON_TYPES = """import type { Dashboard } from '@grafana/schema';
type Json<T> = T extends string ? `${T}`
  : T extends ReadonlyArray<infer U> ? Array<Json<U>>
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;
export type DashboardJson = Json<Dashboard>;
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


def provisioned_datasource_uids(ds_dir: Path = DATASOURCE_DIR) -> set[str]:
    uids = set()
    for f in sorted(ds_dir.glob("*.y*ml")):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources") or []:
            if ds.get("uid"):
                uids.add(ds["uid"])
    return uids


def query_problems(dashboard: dict[str, Any], name: str, datasource_uids: set[str]) -> list[str]:
    problems = []
    known_ds = datasource_uids | BUILTIN_DATASOURCES
    ids: dict[int, str] = {}
    for p in metric_names.iter_panels(dashboard.get("panels") or []):
        where = f"{name}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            problems.append(f"{where}: id {p.get('id')} also used by panel {ids[p['id']]!r}")
        ids[p.get("id")] = p.get("title")
        ds = (p.get("datasource") or {}).get("uid")
        if ds is not None and ds not in known_ds:
            problems.append(f"{where}: datasource uid {ds!r} is not provisioned ({sorted(datasource_uids)})")
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
            tds = (t.get("datasource") or {}).get("uid")
            if tds is not None and tds not in known_ds:
                problems.append(f"{where} target {t.get('refId')}: datasource uid {tds!r} is not provisioned")
    for var in (dashboard.get("templating") or {}).get("list") or []:
        ds = (var.get("datasource") or {}).get("uid")
        if ds is not None and ds not in known_ds:
            problems.append(f"{name}: variable ${var.get('name')}: datasource uid {ds!r} is not provisioned")
    return problems


def check(
    paths: list[Path] | None = None, rules_dir: Path = RULES_DIR, datasource_dir: Path = DATASOURCE_DIR
) -> list[str]:
    paths = dashboards(paths)
    if not paths:
        return [f"no dashboards in {DASHBOARD_DIR}"]
    problems = type_problems(paths)
    _, recorded, _ = metric_names.rule_exprs(sorted(rules_dir.glob("*.yml")))
    allowed = metric_names.allowed_names() | recorded
    uids = provisioned_datasource_uids(datasource_dir)
    exprs: list[metric_names.Expr] = []
    for path in paths:
        d = load(path)
        problems += query_problems(d, path.name, uids)
        e, p = metric_names.dashboard_exprs(d, path.name)
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
        print(f"OK   {', '.join(str(p) for p in dashboards(paths))}: schema types, targets, metric names")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
