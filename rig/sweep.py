"""A sweep's grid, each cell's measurement and the sweep's outputs (table, CSV, plots).

A cell is one headless Locust run (scenario x latency profile x network x users) against a stack that
serves every cell. Its counts are differences: the agents' counters settled after the cell minus
settled before it (reconcile.settle), and the cell's own Locust master (a new one per cell: its
stats and its caller metrics start at zero).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lkrig_instrument import names

from rig import headless, reconcile, svgplot
from rig.render import Table, render

KINDS = names.ERROR_KINDS


@dataclass(frozen=True)
class Cell:
    scenario: str
    profile: str
    users: int
    network: str = "perfect"  # the callers' (loadgen/networks)

    @property
    def label(self) -> str:
        return f"{self.scenario}\n{self.profile}, {self.network}, {self.users} users"


def grid(scenarios: list[str], profiles: list[str], users: list[int],
         networks: tuple[str, ...] = ("perfect",)) -> list[Cell]:
    return [Cell(s, p, u, n) for s, p, n, u in itertools.product(scenarios, profiles, networks, users)]


@dataclass
class Measured:
    cell: Cell
    ok: bool
    t0: float
    t1: float
    conversations: dict[str, int]  # by outcome (the caller's verdict)
    turns_locust: int
    turns_locust_failed: int
    turns_agent: float
    errors: dict[str, float]  # by kind, agent-side, over the cell
    turn_latency_p95_s: float | None  # caller-measured, answered turns
    notes: list[str] = field(default_factory=list)
    # Agent speech cut after it was scheduled: barge-ins the script makes, and false ones that
    # a lossy network makes (a caller's utterance heard as two turns).
    interrupted: float = 0.0

    def per_1k(self, kind: str | None = None) -> float | None:
        """Errors of one kind (None: all kinds) per 1000 agent turns; None without a turn."""
        n = sum(self.errors.values()) if kind is None else self.errors.get(kind, 0.0)
        return self.rate(n)

    def rate(self, n: float) -> float | None:
        """n per 1000 agent turns; None without a turn."""
        return 1000.0 * n / self.turns_agent if self.turns_agent > 0 else None


def histogram_quantile(q: float, samples: headless.Samples, metric: str) -> float | None:
    """The q-quantile of a histogram summed over its label sets, interpolated within a bucket
    as Prometheus's histogram_quantile does; None without an observation."""
    by_le: dict[float, float] = {}
    for (name, labels), v in samples.items():
        if name == f"{metric}_bucket":
            le = float(dict(labels)["le"])
            by_le[le] = by_le.get(le, 0.0) + v
    if not by_le or by_le.get(math.inf, 0.0) <= 0:
        return None
    bounds = sorted(by_le)
    rank = q * by_le[math.inf]
    lower, below = 0.0, 0.0
    for le in bounds:
        if by_le[le] >= rank:
            if math.isinf(le):  # in the open bucket: the highest finite bound, like Prometheus
                return lower
            return lower + (le - lower) * (rank - below) / max(by_le[le] - below, 1e-12)
        lower, below = le, by_le[le]
    return lower


def by_label(samples: headless.Samples, metric: str, label: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for (name, labels), v in samples.items():
        if name == metric and v:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0) + round(v)
    return out


def measure(cell: Cell, result: headless.Result, grown: reconcile.AgentTotals, t0: float, t1: float,
            problems: list[str]) -> Measured:
    """A cell's numbers; `grown`: what the agents counted during it (AgentTotals.minus)."""
    caller = result.caller_metrics
    turns, failed = result.requests("turn")
    m = Measured(
        cell=cell, ok=not problems, t0=t0, t1=t1,
        conversations=by_label(caller, names.CALLER_CONVERSATIONS.name, "outcome"),
        turns_locust=turns, turns_locust_failed=failed, turns_agent=grown.turns,
        errors=grown.errors,
        turn_latency_p95_s=histogram_quantile(0.95, caller, names.CALLER_TURN_LATENCY.name),
        notes=list(problems), interrupted=grown.interrupted)
    # The sweep measures rather than gates, but a count two sources disagree on is said.
    conv_locust, _ = result.requests("conversation")
    if sum(m.conversations.values()) != conv_locust:
        m.notes.append(f"conversations: caller metrics {sum(m.conversations.values())},"
                       f" Locust {conv_locust}")
    cut = sum(n for r, n in result.failure_counts("turn").items() if r in reconcile.CUT)
    if not turns - cut <= m.turns_agent <= turns:
        m.notes.append(f"turns: agent {m.turns_agent:g}, Locust {turns}")
    return m


# --- outputs ----------------------------------------------------------------------------------------

def _kinds_shown(cells: list[Measured]) -> list[str]:
    """The kinds any cell counted (the table and the plot); the CSV has every kind."""
    return [k for k in KINDS if any(c.errors.get(k) for c in cells)]


def num(v: float | None, digits: int = 3) -> str:
    """At most `digits` decimals, no trailing zeros; "" for no value."""
    return "" if v is None else f"{v:.{digits}f}".rstrip("0").rstrip(".") if v else "0"


def _outcomes(c: Measured) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.conversations.items(), key=lambda kv: -kv[1]))


LEGEND = ("Errors: agent-side speech scheduling errors per 1000 agent turns (count in"
          " parentheses); interrupted speech: the agents' speech handles cut after they were"
          " scheduled, per 1000 agent turns (the script's barge-ins, and false ones); turn latency:"
          " caller-measured, end of utterance to first agent audio.")


def table(cells: list[Measured]) -> Table:
    """One row per cell: conversations, turns, errors per 1k turns by kind (and count), p95."""
    kinds = _kinds_shown(cells)
    head = ["scenario", "profile", "network", "users", "conversations by outcome", "turns (Locust / agent)",
            *[f"{k} /1k turns" for k in kinds], "all errors /1k turns", "interrupted speech /1k turns",
            "turn latency p95 (s)"]
    rows = []
    for c in cells:
        def rate(n: float, c: Measured = c) -> str:
            r = c.rate(n)
            return "n/a" if r is None else f"{num(r, 1)} ({n:g})"
        p95 = "n/a" if c.turn_latency_p95_s is None else num(c.turn_latency_p95_s, 2)
        cols = [c.cell.scenario, c.cell.profile, c.cell.network, str(c.cell.users), _outcomes(c) or "none",
                f"{c.turns_locust} / {c.turns_agent:g}", *[rate(c.errors.get(k, 0.0)) for k in kinds],
                rate(sum(c.errors.values())), rate(c.interrupted), p95]
        if not c.ok:
            cols[0] += " (FAILED)"
        rows.append(cols)
    return Table("cells", "Cells", head, rows)


def _notes(cells: list[Measured]) -> list[str]:
    return [f"{c.cell.scenario} / {c.cell.profile} / {c.cell.network} / {c.cell.users} users: {n}"
            for c in cells for n in c.notes]


def markdown_table(cells: list[Measured]) -> str:
    """The table, its legend and the cells' notes, as `rig sweep` prints them."""
    return render("sweep_table.md.j2", table=table(cells), legend=LEGEND, notes=_notes(cells))


CSV_FIELDS = ["scenario", "profile", "network", "users", "ok", "t0", "t1", "conversations",
              "conversations_by_outcome", "turns_locust", "turns_locust_failed", "turns_agent",
              *[f"errors_{k}" for k in KINDS], "errors_total", *[f"{k}_per_1k_turns" for k in KINDS],
              "total_per_1k_turns", "speeches_interrupted", "interrupted_per_1k_turns",
              "turn_latency_p95_seconds", "notes"]


def write_csv(cells: list[Measured], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for c in cells:
            row: dict[str, Any] = {
                "scenario": c.cell.scenario, "profile": c.cell.profile, "network": c.cell.network,
                "users": c.cell.users,
                "ok": int(c.ok), "t0": f"{c.t0:.3f}", "t1": f"{c.t1:.3f}",
                "conversations": sum(c.conversations.values()),
                "conversations_by_outcome": ";".join(f"{k}={v}" for k, v in sorted(c.conversations.items())),
                "turns_locust": c.turns_locust, "turns_locust_failed": c.turns_locust_failed,
                "turns_agent": f"{c.turns_agent:g}", "errors_total": f"{sum(c.errors.values()):g}",
                "total_per_1k_turns": num(c.per_1k(), 6), "speeches_interrupted": f"{c.interrupted:g}",
                "interrupted_per_1k_turns": num(c.rate(c.interrupted), 6),
                "turn_latency_p95_seconds": num(c.turn_latency_p95_s, 4), "notes": "; ".join(c.notes)}
            for k in KINDS:
                row[f"errors_{k}"] = f"{c.errors.get(k, 0.0):g}"
                row[f"{k}_per_1k_turns"] = num(c.per_1k(k), 6)
            w.writerow(row)


def error_plot(cells: list[Measured]) -> str:
    kinds = _kinds_shown(cells)
    series = [(k, [c.per_1k(k) for c in cells]) for k in kinds]
    series = series or [("all kinds", [c.per_1k() for c in cells])]
    svg, _ = svgplot.bar_plot([c.cell.label for c in cells], series,
                              svgplot.Axis("scheduling errors per 1k agent turns"))
    return svg


def latency_plot(cells: list[Measured]) -> str:
    svg, _ = svgplot.bar_plot([c.cell.label for c in cells],
                              [("turn latency p95", [c.turn_latency_p95_s for c in cells])],
                              svgplot.Axis("caller turn latency p95 (s)"))
    return svg


def write_outputs(cells: list[Measured], out: Path, params: dict[str, Any]) -> dict[str, Path]:
    """sweep.md, sweep.csv, sweep.svg (errors by kind), sweep.html (the table and both plots),
    sweep.json (every number, each cell's time range for `rig report`)."""
    out.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(params.get("started", time.time())))
    paths = {k: out / f"sweep.{k}" for k in ("md", "csv", "svg", "html", "json")}
    page = {"when": when, "command": params.get("command", "rig sweep"), "table": table(cells),
            "legend": LEGEND, "notes": _notes(cells)}
    paths["md"].write_text(render("sweep.md.j2", **page))
    write_csv(cells, paths["csv"])
    errors_svg = error_plot(cells)
    paths["svg"].write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + errors_svg + "\n")
    paths["html"].write_text(render("sweep.html.j2", **page, errors_svg=errors_svg,
                                    latency_svg=latency_plot(cells)))
    paths["json"].write_text(json.dumps(
        {"params": params, "cells": [{**asdict(c), "cell": asdict(c.cell)} for c in cells]}, indent=2))
    return paths
