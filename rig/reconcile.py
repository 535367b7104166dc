"""End-of-run reconciliation: every count the rig reports must agree with its other sources.

    turns      Locust's turn requests == the master's lkrig_caller_turns_total == Prometheus's
               == the agents' lkrig_agent_turns_total (scraped from each worker) == Prometheus's
    errors     per kind: the agents' log lines "speech scheduling error counted: KIND" (one per
               counted error, lkrig_instrument.ledger) == their counter == Prometheus's

One exception, bounded rather than waived: a turn whose call lost its agent or its server
mid-turn may or may not have been committed by the agent before the loss. Such turns fail as
agent_lost, or, after a kill or a LiveKit restart (a killed agent stays in the room until the
server times it out), as dead_air or agent_cut_off; they are counted, and the agent's count
must lie between Locust's minus them and Locust's.

One loss is accounted for exactly rather than bounded: a job process counts an error in its
file (which survives a kill) and then logs the line through its worker process (livekit-agents'
ipc/log_queue.py: a queue and a thread in the job, a socket, a thread in the worker), so a
SIGKILL of the worker loses the lines still in flight. When a fault stops an agent, the rig
reads what its folder counted and what its log holds (`log_gap`); the error check adds those
lines, and fails if a log holds a line its folder never counted.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lkrig_instrument import carry, names

from rig import headless, promapi
from rig.promapi import Prometheus

LOG_LINE = "speech scheduling error counted: "
_KIND = re.compile(re.escape(LOG_LINE) + r"([a-z_]+)")
# Turn outcomes after which the agent may or may not have committed the turn.
CUT = ("agent_lost",)
CUT_BY_FAULT = ("agent_lost", "dead_air", "agent_cut_off")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class AgentTotals:
    turns: float
    errors: dict[str, float]
    sessions_active: float
    interrupted: float = 0.0  # speech handles interrupted after they were scheduled

    def minus(self, before: AgentTotals) -> AgentTotals:
        """The growth since `before` (a stack that counted before the run)."""
        errors = {k: v - before.errors.get(k, 0.0) for k, v in self.errors.items()}
        return AgentTotals(self.turns - before.turns, {k: v for k, v in errors.items() if v},
                           self.sessions_active, self.interrupted - before.interrupted)


def agent_totals(metrics_urls: list[str]) -> AgentTotals:
    turns = active = interrupted = 0.0
    errors: Counter[str] = Counter()
    for url in metrics_urls:
        m = promapi.scrape(url)
        turns += promapi.total(m, names.TURNS.name)
        active += promapi.total(m, names.SESSIONS_ACTIVE.name)
        interrupted += promapi.total(m, names.SPEECHES_DONE.name, outcome="interrupted")
        errors.update(errors_of(m))
    return AgentTotals(turns, dict(errors), active, interrupted)


def errors_of(samples: promapi.Samples) -> dict[str, float]:
    """Counted errors by kind in one worker's samples."""
    name = names.SPEECH_SCHEDULING_ERRORS.name
    found = {k: promapi.total(samples, name, kind=k) for k in names.ERROR_KINDS}
    return {k: v for k, v in found.items() if v}


def settle(metrics_urls: list[str], quiet: float = 6.0, timeout: float = 90.0) -> AgentTotals:
    """The agents' counts once no session runs and nothing moved for `quiet` seconds (a session
    commits and counts after its caller's last reply, and flushes refusals when it closes)."""
    last, since = agent_totals(metrics_urls), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = agent_totals(metrics_urls)
        if now != last:
            last, since = now, time.monotonic()
        elif now.sessions_active <= 0 and time.monotonic() - since >= quiet:
            break
    return last


def logged_errors(logs: list[Path]) -> dict[str, int]:
    """Counted errors by kind from the agents' log files."""
    found: Counter[str] = Counter()
    for path in logs:
        with open(path, errors="replace") as f:
            found.update(logged_errors_in(f))
    return dict(found)


def logged_errors_in(lines: Iterable[str]) -> dict[str, int]:
    """Counted errors by kind in log lines (JSON lines from livekit-agents, or text)."""
    found: Counter[str] = Counter()
    for line in lines:
        if LOG_LINE not in line:
            continue
        kind = None
        if line.startswith("{"):
            try:
                kind = json.loads(line).get("lkrig_kind")
            except ValueError:
                pass
        if kind is None and (m := _KIND.search(line)):
            kind = m.group(1)
        if kind:
            found[kind] += 1
    return dict(found)


def errors_in_folder(directory: Path) -> dict[str, float]:
    """Counted errors by kind in a stopped worker's multiprocess folder, its stash included, as
    its /metrics would serve them (a fold the kill cut short is finished first, as the worker's
    next start would)."""
    carry.recover(directory)
    return errors_of(promapi.samples_of(carry.Collector(directory).collect()))


def log_gap(counted: dict[str, float], logged: dict[str, int]) -> dict[str, float]:
    """By kind, how many counted errors a stopped worker's log lacks (lines in flight when it
    died); negative: log lines its folder never counted."""
    gap = {k: counted.get(k, 0.0) - logged.get(k, 0) for k in set(counted) | set(logged)}
    return {k: v for k, v in gap.items() if v}


def reconcile(run: headless.Result, agents: AgentTotals, logged: dict[str, int], prom: Prometheus,
              t0: float, t1: float, calls_cut: bool = False,
              lost_lines: dict[str, float] | None = None) -> list[Check]:
    """calls_cut: a fault cut calls (a worker killed, livekit-server restarted). lost_lines: by
    kind, the counted errors whose log lines died with a stopped worker (log_gap, summed)."""
    checks: list[Check] = []

    def equal(name: str, **values: float) -> None:
        ok = len({round(v, 6) for v in values.values()}) == 1
        checks.append(Check(name, ok, ", ".join(f"{k} {v:g}" for k, v in values.items())))

    turns, _ = run.requests("turn")
    equal("turns: Locust == caller metrics (master) == Prometheus", locust=turns,
          master=promapi.total(run.caller_metrics, names.CALLER_TURNS.name),
          prometheus=prom.counter_delta(names.CALLER_TURNS.name, t0, t1).get("", 0.0))
    reasons = CUT_BY_FAULT if calls_cut else CUT
    cut = sum(n for reason, n in run.failure_counts("turn").items() if reason in reasons)
    if cut:
        ok = turns - cut <= agents.turns <= turns
        checks.append(Check("turns: agent == Locust (within turns cut by a lost agent)", ok,
                            f"agent {agents.turns:g}, Locust {turns:g}, of which {cut} cut"
                            f" ({', '.join(reasons)}): the agent committed"
                            f" {agents.turns - (turns - cut):g} of those"))
    else:
        equal("turns: agent == Locust", agent=agents.turns, locust=turns)
    equal("turns: agent == Prometheus", agent=agents.turns,
          prometheus=prom.counter_delta(names.TURNS.name, t0, t1).get("", 0.0))
    in_prom = prom.counter_delta(names.SPEECH_SCHEDULING_ERRORS.name, t0, t1, by="kind")
    return checks + error_checks(logged, agents.errors, in_prom, lost_lines or {})


def error_checks(logged: dict[str, int], counted: dict[str, float], in_prom: dict[str, float],
                 lost_lines: dict[str, float]) -> list[Check]:
    """Per kind: the agents' log lines (plus `lost_lines`, those that died with a stopped worker)
    == their counter == Prometheus's."""
    checks = []
    for kind in sorted(set(logged) | set(counted) | {k for k, v in in_prom.items() if v} | set(lost_lines)):
        lines, lost = logged.get(kind, 0), lost_lines.get(kind, 0.0)
        sources = {round(v, 6) for v in (lines + lost, counted.get(kind, 0.0), in_prom.get(kind, 0.0))}
        said = (f" + {lost:g} in flight when a fault stopped their worker" if lost > 0 else
                f" (of which {-lost:g} in a stopped worker's log that its folder never counted)"
                if lost < 0 else "")
        checks.append(Check(f"errors {kind}: agent logs == agent counter == Prometheus",
                            lost >= 0 and len(sources) == 1,
                            f"logs {lines:g}{said}, counter {counted.get(kind, 0.0):g},"
                            f" prometheus {in_prom.get(kind, 0.0):g}"))
    return checks
