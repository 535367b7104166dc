"""The agents' ERROR lines over a run, each accounted for or listed: a soak's logs may hold no
error that the rig cannot name.

A line is accounted for when it is
  * an error the agent counts (lkrig_instrument.taxonomy reads its message and traceback, as the
    ledger does: a scheduling error, a dropped filler, a tool's exception): the reconciliation
    checks that count against its counted line;
  * inside a fault that cuts calls (rig.faults, `cuts_calls`, or a drain that ran out of grace
    and was SIGKILLed: `forced` in its record), from the fault's start to
    FAULT_SETTLE_S after its end: what a killed worker, a restarted server or a cut network
    costs, named by the fault;
  * the LiveKit SDK (logger `livekit`) failing on a connection whose room's job ended within
    ROOM_END_S after the line: livekit-server disconnects the agent as the call's room closes
    (the caller's DeleteRoom, or the server closing a room its caller left). The SDK reports the
    data channels the agent was still using as "closed unexpectedly", an event it can no longer
    hand to the closed session ("failed to send dc_event"), and, when the signal stream closes
    before it has read the server's Leave, tries to resume and then restart the connection
    ("resuming connection", "restarting connection"), which the server refuses (StateMismatch)
    or which rejoins a room the job leaves at once; a resume or restart that got through sends
    the signals it queued meanwhile and fails on the stream the closing room shuts
    ("failed to send queued signal": signal_client flush_queue, called last in both).
  * one of livekit-agents' own failures under a starved host (HOST_STARVED), each logged with
    its traceback and costing no call that the run does not count elsewhere: a job the worker
    accepted but livekit-server did not assign within ASSIGNMENT_TIMEOUT (worker.py, "job_request_fnc
    failed" with AssignmentTimeoutError: the room goes to another worker or is counted among rooms
    without an agent), a prewarmed job process that did not initialize in time (ipc/proc_pool.py,
    "error initializing process": the pool starts another, no job was on it), and the event-loop
    watchdog failing as it samples a lagging loop's stack (telemetry/loop_monitor.py, a framework
    bug: AttributeError from traceback.walk_stack).
Every other ERROR or CRITICAL line, and any raw text that is not a log record but looks like a
failure (a traceback or a panic printed to stderr), is unexplained: grouped by logger and first
message line, counted, with a sample, for `rig run`'s check, run.json and the report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lkrig_instrument import taxonomy

from rig import faults
from rig.reconcile import Check

LEVELS = ("ERROR", "CRITICAL")
# After a fault ends (a service healthy again, a network joined), rooms it broke still close
# (livekit-server's empty-room timeout is 30 s, its departure timeout 10 s: livekit/livekit.yaml)
# and the SDK's reconnection attempts to them still fail (seen up to 15 s after a restart).
FAULT_SETTLE_S = 60.0
ROOM_END_S = 15.0
# livekit's Rust SDK (livekit/src/rtc_engine/{rtc_session,mod}.rs), through livekit.rtc's log forwarding
ROOM_ENDING = re.compile(r"publisher data channel '\w+' closed unexpectedly|failed to send dc_event"
                         r"|(resuming|restarting) connection|failed to send queued signal")
_RAW_FAILURE = re.compile(r"^Traceback \(most recent call last\)|panicked at|^Fatal Python error")
SAMPLE_CHARS = 600
ROOM_ENDED = "the LiveKit SDK's connection errors as the call's room ended"
# livekit-agents 1.8.9: (first message line, what its traceback must hold)
HOST_STARVED = (("job_request_fnc failed", "AssignmentTimeoutError"),
                ("error initializing process", "proc.initialize()"),
                ("event loop watchdog failed",
                 "AttributeError: 'function' object has no attribute 'f_lineno'"))
STARVED = ("livekit-agents' own failures on a starved host (a job not assigned in time, a job"
           " process slow to start, its loop watchdog)")


@dataclass(frozen=True)
class ErrorLine:
    at: float | None  # unix seconds, when the record says
    logger: str
    room: str | None
    message: str  # its first line
    text: str  # all of it, traceback included


def error_lines(lines: Iterable[str]) -> tuple[list[ErrorLine], dict[str, float]]:
    """The ERROR and CRITICAL records in log lines (livekit-agents' JSON lines), and raw failure
    text outside any record; and each room's last record (its job ending)."""
    found: list[ErrorLine] = []
    last_seen: dict[str, float] = {}
    for line in lines:
        record = None
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                pass
        if isinstance(record, dict):
            text, at = str(record.get("message", "")), _when(record.get("timestamp"))
            exc = str(record.get("exc_info") or "")
            if exc and exc not in text:  # livekit-agents' formatter keeps the traceback apart
                text += "\n" + exc
            room = str(record["room"]) if record.get("room") else None
            if room and at is not None:
                last_seen[room] = max(at, last_seen.get(room, at))
            if str(record.get("level", "")).upper() in LEVELS:
                found.append(ErrorLine(at, str(record.get("name", "?")), room,
                                       text.strip().split("\n", 1)[0], text))
        elif _RAW_FAILURE.search(line):
            found.append(ErrorLine(None, "stderr", None, line.strip(), line))
    return found, last_seen


def _when(stamp: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return None


def fault_windows(records: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(start, end + settle, what) of each fault that cuts calls, from FaultScheduler.records;
    a fault with no end record lasts to the end of the run."""
    windows = []
    for i, r in enumerate(records):
        kind, _, phase = str(r["name"]).partition(":")
        if phase or kind not in faults.KINDS or not (faults.KINDS[kind].cuts_calls or r.get("forced")):
            continue
        end = next((e["at"] for e in records[i + 1:] if str(e["name"]).startswith(kind + ":")
                    and e.get("target") == r.get("target")), float("inf"))
        windows.append((float(r["at"]), end + FAULT_SETTLE_S, f"{kind} ({r.get('target', '?')})"))
    return windows


def account(found: list[ErrorLine], last_seen: dict[str, float],
            records: list[dict[str, Any]]) -> dict[str, Any]:
    """{"accounted": {reason: lines}, "unexplained": [{"logger", "message", "count", "first_at",
    "sample"}]}, for run.json and the report."""
    windows = fault_windows(records)
    accounted: dict[str, int] = {}
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for e in found:
        kind = taxonomy.kind_of_record(e.message, e.text) or (
            "tool_error_other" if taxonomy.TOOL_FAILED in e.message else None)  # as the ledger counts it
        during = next((what for start, end, what in windows
                       if e.at is not None and start <= e.at <= end), None)
        closing = (e.logger == "livekit" and ROOM_ENDING.search(e.message) is not None
                   and e.room in last_seen and e.at is not None and last_seen[e.room] - e.at <= ROOM_END_S)
        starved = e.logger == "livekit.agents" and any(
            e.message == first and held in e.text for first, held in HOST_STARVED)
        reason = (f"counted error {kind}" if kind else f"during {during}" if during else
                  ROOM_ENDED if closing else STARVED if starved else None)
        if reason:
            accounted[reason] = accounted.get(reason, 0) + 1
            continue
        group = groups.setdefault((e.logger, e.message), {
            "logger": e.logger, "message": e.message, "count": 0, "first_at": e.at,
            "sample": e.text[:SAMPLE_CHARS]})
        group["count"] += 1
    return {"accounted": accounted, "unexplained": sorted(groups.values(), key=lambda g: -g["count"])}


def check(result: dict[str, Any]) -> Check:
    """The reconciliation's verdict on an `account` result: no unexplained line."""
    accounted = ", ".join(f"{why} {n}" for why, n in sorted(result["accounted"].items())) or "none"
    unexplained = "; ".join(f"{g['logger']} {g['message'][:120]!r} x{g['count']}"
                            for g in result["unexplained"])
    return Check("agent logs: every ERROR line accounted for", not result["unexplained"],
                 f"accounted for: {accounted}" + (f"; unexplained: {unexplained}" if unexplained else ""))
