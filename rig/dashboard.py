"""The Grafana dashboard's queries, as the run report reads them: the PromQL of a panel looked up
by its title, Grafana's variables resolved as Grafana opens the dashboard ("All" selected), and a
series named by the panel's legend format. The report and the dashboard thus cannot disagree on
what a number means.

The dashboard reads one Prometheus through its data source variable (`{"type": "prometheus",
"uid": "${datasource}"}` on every panel and target); the report asks the run's Prometheus in its
place, so a panel that names any other data source is refused rather than read from the wrong one.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from rig.promapi import Prometheus

# $name, ${name}, ${name:format} and the older [[name]] / [[name:format]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class DashboardError(ValueError):
    """The dashboard cannot be read, or lacks a panel the report takes its queries from."""


def _panels(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for p in dashboard.get("panels") or []:
        for q in [p, *(p.get("panels") or [])]:  # collapsed rows keep their panels inside
            if q.get("title"):
                found[q["title"]] = q
    return found


def datasource_refs(dashboard: dict[str, Any]) -> set[str]:
    """How a panel names the dashboard's Prometheus variable (`${datasource}`, `$datasource`)."""
    uids = set()
    for v in (dashboard.get("templating") or {}).get("list") or []:
        if v.get("type") == "datasource" and v.get("query") == "prometheus":
            uids |= {f"${{{v['name']}}}", f"${v['name']}"}
    return uids


class Dashboard:
    def __init__(self, path: Path) -> None:
        try:
            self.path = path
            board = json.loads(path.read_text(encoding="utf-8"))
            self.panels = _panels(board)
            self.datasource_uids = datasource_refs(board)
        except (OSError, ValueError) as e:
            raise DashboardError(
                f"{path}: cannot read the dashboard the report takes its queries from ({e})"
            ) from e

    def _check_datasource(self, title: str, ref: Any) -> None:
        if ref is None:  # a target without one reads its panel's
            return
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        if uid not in self.datasource_uids:
            raise DashboardError(
                f"{self.path}: panel {title!r} reads data source {ref!r}, not the dashboard's Prometheus "
                f"variable ({', '.join(sorted(self.datasource_uids)) or 'none defined'}); the report asks "
                "only the run's Prometheus"
            )

    def targets(self, title: str) -> list[tuple[str, str]]:
        """[(expr, legendFormat)] of the panel titled `title`."""
        panel = self.panels.get(title)
        if panel is None:
            raise DashboardError(f"{self.path}: no panel titled {title!r} (the report reads its queries)")
        self._check_datasource(title, panel.get("datasource"))
        out = []
        for t in panel.get("targets") or []:
            if t.get("expr"):
                self._check_datasource(title, t.get("datasource"))
                out.append((t["expr"], t.get("legendFormat") or ""))
        return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variables: built-ins ($__rate_interval, $__range) take `values`; the dashboard's
    filter variables ($scenario, $profile, $agents_version, $worker: label matchers) become "All"
    (.*). The data source variable never appears in a query: Dashboard.targets checks it."""

    def repl(m: re.Match[str]) -> str:
        name = m[1] or m[2] or m[3]
        return values.get(name, ".*")

    return _VARIABLE.sub(repl, expr)


def legend(fmt: str, labels: dict[str, str], fallback: str) -> str:
    """A series' name by the panel's legend format (`{{label}}`), else by its labels."""
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or fallback
    return _LEGEND.sub(lambda m: labels.get(m[1], ""), fmt)


def rate_interval(step: float, scrape: float) -> str:
    """Grafana's $__rate_interval: max(step + scrape interval, 4 x scrape interval)."""
    return f"{math.ceil(max(step + scrape, 4 * scrape))}s"


def scrape_interval(prom: Prometheus) -> float:
    """Prometheus's global scrape interval in seconds, from its running configuration."""
    try:
        cfg = yaml.safe_load(prom.config()) or {}
        text = str((cfg.get("global") or {}).get("scrape_interval", "1m"))
    except (AttributeError, yaml.YAMLError):
        text = "1m"  # Prometheus's own default
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]] if m else 60.0
