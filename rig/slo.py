"""SLO files for `rig run --slo FILE`: load, validate, evaluate against the run's Prometheus.

    version: 1
    description: what this gate is for            # optional
    scheduling_errors_per_1k_turns:               # agent-side errors per 1000 agent turns
      draining: 0                                 # by kind (names.ERROR_KINDS) ...
      total: 5                                    # ... and/or over all kinds
    turn_latency_p95_seconds: 2.5                 # caller-measured, end of utterance to audio
    dead_air_rate: 0.02                           # caller turns with dead air / caller turns
    rooms_without_agent: 0                        # rooms the agent never joined
    stuck_sessions: 0                             # agent sessions counted stuck
    session_events_unsent: 0                      # "failed to send session event" (agent log)
    memory_growth_per_worker_bytes: 100_000_000   # worker RSS, end of run minus start, max

Every key but `version` is optional; each given limit is a maximum. A value with no data (no
turns, no memory samples) fails its SLO: no evidence is not a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lkrig_instrument import names

from rig.promapi import Prometheus

KEYS = ("scheduling_errors_per_1k_turns", "turn_latency_p95_seconds", "dead_air_rate",
        "rooms_without_agent", "stuck_sessions", "session_events_unsent",
        "memory_growth_per_worker_bytes")


class SloError(ValueError):
    """An SLO file that does not load; the message is `file:field: what`."""


@dataclass(frozen=True)
class Slo:
    path: Path
    errors_per_1k: dict[str, float]  # kind or "total" -> limit
    limits: dict[str, float]  # the other keys -> limit


def _limit(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SloError(f"{where}: expected a number >= 0, got {value!r}")
    return float(value)


def load(path: Path) -> Slo:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SloError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SloError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SloError(f"{path}: expected a mapping of SLO names to limits")
    if data.get("version") != 1:
        raise SloError(f"{path}:version: expected 1, got {data.get('version')!r}")
    unknown = sorted(set(data) - {"version", "description", *KEYS})
    if unknown:
        raise SloError(f"{path}:{unknown[0]}: unknown field; fields are {', '.join(KEYS)}")
    errors: dict[str, float] = {}
    by_kind = data.get("scheduling_errors_per_1k_turns", {})
    if not isinstance(by_kind, dict):
        raise SloError(f"{path}:scheduling_errors_per_1k_turns: expected a mapping of kind to limit")
    for kind, value in by_kind.items():
        where = f"{path}:scheduling_errors_per_1k_turns.{kind}"
        if kind not in (*names.ERROR_KINDS, "total"):
            raise SloError(f"{where}: unknown kind; kinds are {', '.join(names.ERROR_KINDS)}, total")
        errors[kind] = _limit(value, where)
    limits = {k: _limit(data[k], f"{path}:{k}") for k in KEYS[1:] if k in data}
    if not errors and not limits:
        raise SloError(f"{path}: no SLO given; fields are {', '.join(KEYS)}")
    return Slo(path, errors, limits)


def evaluate(slo: Slo, prom: Prometheus, t0: float, t1: float) -> list[dict[str, Any]]:
    """One verdict per limit: {"name", "limit", "value", "ok", "detail"}."""
    verdicts: list[dict[str, Any]] = []

    def verdict(name: str, limit: float, value: float | None, detail: str) -> None:
        ok = value is not None and value <= limit
        verdicts.append({"name": name, "limit": limit, "value": value, "ok": ok,
                         "detail": detail if value is not None else f"no data: {detail}"})

    turns = prom.counter_delta(names.TURNS.name, t0, t1).get("", 0.0)
    if slo.errors_per_1k:
        errors = prom.counter_delta(names.SPEECH_SCHEDULING_ERRORS.name, t0, t1, by="kind")
        for kind, limit in slo.errors_per_1k.items():
            n = sum(errors.values()) if kind == "total" else errors.get(kind, 0.0)
            verdict(f"scheduling_errors_per_1k_turns.{kind}", limit,
                    1000.0 * n / turns if turns else None, f"{n:g} errors in {turns:g} agent turns")
    window = max(1, round(t1 - t0))
    lim = slo.limits
    if "turn_latency_p95_seconds" in lim:
        got = prom.query(f"histogram_quantile(0.95, sum by (le) (increase("
                         f"{names.CALLER_TURN_LATENCY.name}_bucket[{window}s])))", t1)
        p95 = got[0][1] if got and got[0][1] == got[0][1] else None  # NaN: no answered turn
        verdict("turn_latency_p95_seconds", lim["turn_latency_p95_seconds"], p95,
                "caller-measured, over the run")
    caller_turns = prom.counter_delta(names.CALLER_TURNS.name, t0, t1).get("", 0.0)
    counts: list[tuple[str, str, Callable[[float], float | None], str]] = [
        ("dead_air_rate", names.CALLER_DEAD_AIR.name,
         lambda n: n / caller_turns if caller_turns else None, f"of {caller_turns:g} caller turns"),
        ("rooms_without_agent", names.CALLER_ROOMS_WITHOUT_AGENT.name, lambda n: n, "rooms"),
        ("stuck_sessions", names.STUCK_SESSIONS.name, lambda n: n, "sessions"),
        ("session_events_unsent", names.SESSION_EVENTS_UNSENT.name, lambda n: n, "session events"),
    ]
    for key, metric, value, what in counts:
        if key in lim:
            n = prom.counter_delta(metric, t0, t1).get("", 0.0)
            verdict(key, lim[key], value(n), f"{n:g} {what}")
    if "memory_growth_per_worker_bytes" in lim:
        growth, detail = memory_growth(prom, t0, t1)
        verdict("memory_growth_per_worker_bytes", lim["memory_growth_per_worker_bytes"], growth, detail)
    return verdicts


def memory_growth(prom: Prometheus, t0: float, t1: float) -> tuple[float | None, str]:
    """Largest growth of a worker process's RSS: its mean over the last tenth of the run minus
    its mean over the first tenth (at least 30 s each; the first tenth includes warm-up)."""
    w = max(30, round((t1 - t0) / 10))
    rss = f'{names.PROCESS_RESIDENT_MEMORY.name}{{role="worker"}}'
    end = {s.get("worker", "?"): v for s, v in prom.query(f"avg_over_time({rss}[{w}s])", t1)}
    start = {s.get("worker", "?"): v for s, v in prom.query(f"avg_over_time({rss}[{w}s])", t0 + w)}
    both = sorted(set(end) & set(start))
    if not both:
        return None, f"{names.PROCESS_RESIDENT_MEMORY.name} has no samples at both ends of the run"
    growth = {k: end[k] - start[k] for k in both}
    worst = max(growth, key=lambda k: growth[k])
    return growth[worst], f"{worst} {growth[worst] / 1e6:+.1f} MB (" + ", ".join(
        f"{k} {v / 1e6:+.1f}" for k, v in growth.items()) + ")"
