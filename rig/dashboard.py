"""The Grafana dashboard's queries, as the run report reads them: the PromQL of a panel looked up
by its title, Grafana's variables resolved as Grafana opens the dashboard ("All" selected), and a
series named by the panel's legend format. The report and the dashboard thus cannot disagree on
what a number means.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from rig.promapi import Prometheus

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
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


class Dashboard:
    def __init__(self, path: Path) -> None:
        try:
            self.path = path
            self.panels = _panels(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise DashboardError(
                f"{path}: cannot read the dashboard the report takes its queries from ({e})"
            ) from e

    def targets(self, title: str) -> list[tuple[str, str]]:
        """[(expr, legendFormat)] of the panel titled `title`."""
        panel = self.panels.get(title)
        if panel is None:
            raise DashboardError(f"{self.path}: no panel titled {title!r} (the report reads its queries)")
        return [(t["expr"], t.get("legendFormat") or "") for t in panel.get("targets") or [] if t.get("expr")]


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variables: dashboard selectors become "All" (.*), built-ins take `values`."""

    def repl(m: re.Match[str]) -> str:
        name = m[1] or m[2]
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
