"""rig.errorlines: each ERROR line of the agents' logs is accounted for by a counted
speech-scheduling error or by a fault that cuts calls, or is listed; `rig run`'s check fails on a
listed one. The lines are livekit-agents' JSON log records, as its production logging writes them;
the live soak (tests/test_run_soak.py) runs the same check on a real run's logs."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from rig import errorlines, reconcile


def record(at: float, level: str, name: str, message: str, room: str | None = None) -> str:
    """One line as livekit-agents' JSON formatter writes it (the fields rig.errorlines reads)."""
    return json.dumps({"message": message, "level": level, "name": name, "pid": 1,
                       **({"room": room} if room else {}),
                       "timestamp": datetime.fromtimestamp(at, UTC).isoformat()})


T0 = 1_800_000_000.0
FAULTS = [  # FaultScheduler.records of a kill and of a slow provider (which cuts no call)
    {"at": T0 + 100, "name": "kill-agent", "detail": "agent-0 SIGKILL", "target": "agent-0"},
    {"at": T0 + 105, "name": "kill-agent:restarted", "detail": "healthy", "target": "agent-0"},
    {"at": T0 + 200, "name": "slow-provider", "detail": "llm_ttft x4", "target": "all-agents"},
    {"at": T0 + 260, "name": "slow-provider:end", "detail": "", "target": "all-agents"},
]
# as livekit's Rust SDK logs it through livekit.rtc when the server closes the agent's connection
CLOSED = ("livekit::rtc_engine::rtc_session:704:livekit::rtc_engine::rtc_session - publisher data"
          " channel '_reliable' closed unexpectedly")
RESUME = "livekit::rtc_engine:1036:livekit::rtc_engine - resuming connection... attempt: 1"
RESUME_REFUSED = ("livekit::rtc_engine:1063:livekit::rtc_engine - resuming connection failed: signal failure:"
                  " server sent leave during reconnect: reason=StateMismatch, action=Reconnect")
RESTART = "livekit::rtc_engine:990:livekit::rtc_engine - restarting connection... attempt: 2"
FLUSH_FAILED = ("livekit_signaling:683:livekit_signaling - failed to send queued signal: failed to send"
                " message to the server")
TOOL_RAISED = ("exception occurred while executing tool\nTraceback (most recent call last):\n"
               "RuntimeError: AgentTask collect_age_gender is cancelled")
DRAINING = ("Error in _pipeline_reply_task\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
            "RuntimeError: cannot schedule new speech, the speech scheduling is draining/pausing")


def test_each_error_line_is_accounted_for_or_listed_once_by_logger_and_message() -> None:
    lines = [
        record(T0 + 10, "INFO", "livekit.agents", "registered worker"),
        record(T0 + 11, "WARNING", "livekit.agents", "failed to send session event"),
        record(T0 + 20, "ERROR", "livekit.agents", DRAINING, "room-a"),
        record(T0 + 21, "ERROR", "livekit.agents", TOOL_RAISED, "room-a"),
        # the room's job ends 2 s later: the room closed under the agent
        record(T0 + 30, "ERROR", "livekit", CLOSED, "room-a"),
        record(T0 + 32, "INFO", "livekit.agents", "process exiting", "room-a"),
        # the signal stream closed before the server's Leave was read (the caller's DeleteRoom):
        # the SDK's resume is refused, its restart rejoins a room the job leaves 2 s later, and
        # the signals it queued meanwhile cannot be sent on the stream the closing room shuts
        record(T0 + 50, "ERROR", "livekit", RESUME, "room-d"),
        record(T0 + 50.1, "ERROR", "livekit", RESUME_REFUSED, "room-d"),
        record(T0 + 50.2, "ERROR", "livekit", RESTART, "room-d"),
        record(T0 + 50.9, "ERROR", "livekit", FLUSH_FAILED, "room-d"),
        record(T0 + 52, "INFO", "livekit.agents", "process exiting", "room-d"),
        # mid-call (the room lives on for a minute): a failure, not the end of a call
        record(T0 + 40, "ERROR", "livekit", CLOSED, "room-b"),
        record(T0 + 41, "ERROR", "livekit", RESUME, "room-b"),
        record(T0 + 100, "INFO", "livekit.agents", "process exiting", "room-b"),
        record(T0 + 102, "ERROR", "livekit", "resuming connection failed", "room-c"),
        record(T0 + 105 + errorlines.FAULT_SETTLE_S - 1, "ERROR", "livekit", "signal connection lost"),
        record(T0 + 105 + errorlines.FAULT_SETTLE_S + 1, "ERROR", "livekit", "signal connection lost"),
        record(T0 + 230, "ERROR", "agent.worker", "bad job metadata\nmore"),
        record(T0 + 240, "CRITICAL", "agent.worker", "bad job metadata\nother"),
        "--- rig: agent-0 restarted at 1800000105.000 ---",
        "Traceback (most recent call last):",
    ]
    found, last_seen = errorlines.error_lines(lines)
    assert [(e.logger, e.message) for e in found] == [
        ("livekit.agents", "Error in _pipeline_reply_task"),
        ("livekit.agents", "exception occurred while executing tool"),
        ("livekit", CLOSED), ("livekit", RESUME), ("livekit", RESUME_REFUSED), ("livekit", RESTART),
        ("livekit", FLUSH_FAILED),
        ("livekit", CLOSED), ("livekit", RESUME),
        ("livekit", "resuming connection failed"),
        ("livekit", "signal connection lost"), ("livekit", "signal connection lost"),
        ("agent.worker", "bad job metadata"), ("agent.worker", "bad job metadata"),
        ("stderr", "Traceback (most recent call last):")]
    assert last_seen == {"room-a": T0 + 32, "room-d": T0 + 52, "room-b": T0 + 100, "room-c": T0 + 102}
    result = errorlines.account(found, last_seen, FAULTS)
    assert result["accounted"] == {"counted error draining": 1, "counted error tool_error_other": 1,
                                   "during kill-agent (agent-0)": 2,
                                   errorlines.ROOM_ENDED: 5}
    assert [(g["logger"], g["message"], g["count"]) for g in result["unexplained"]] == [
        ("agent.worker", "bad job metadata", 2),  # a slow provider cuts no call: not accounted for
        ("livekit", CLOSED, 1), ("livekit", RESUME, 1), ("livekit", "signal connection lost", 1),
        ("stderr", "Traceback (most recent call last):", 1)]
    assert result["unexplained"][0]["first_at"] == T0 + 230
    verdict = errorlines.check(result)
    assert not verdict.ok and "'bad job metadata' x2" in verdict.detail, verdict


def test_a_run_whose_errors_are_all_accounted_for_passes_the_check() -> None:
    lines = [record(T0 + 20, "ERROR", "livekit.agents", DRAINING),
             record(T0 + 101, "ERROR", "livekit", "resuming connection failed")]
    verdict = errorlines.check(errorlines.account(*errorlines.error_lines(lines), FAULTS))
    assert verdict == reconcile.Check(
        "agent logs: every ERROR line accounted for", True,
        "accounted for: counted error draining 1, during kill-agent (agent-0) 1")


def test_the_json_lines_are_those_livekit_agents_writes() -> None:
    """The fields read (level, name, message, timestamp) are the ones livekit-agents' JSON
    formatter writes, not ones this test made up."""
    from livekit.agents.cli.log import JsonFormatter

    rec = logging.LogRecord("livekit", logging.ERROR, __file__, 1, "data channel closed", None, None)
    rec.created = T0 + 102
    line = JsonFormatter().format(rec)
    [e], _ = errorlines.error_lines([line])
    assert (e.logger, e.message) == ("livekit", "data channel closed")
    assert abs((e.at or 0) - (T0 + 102)) < 1e-3, line


def _formatted(name: str, message: str, exc: BaseException, at: float) -> str:
    """A record with its traceback, through livekit-agents' own JSON formatter."""
    from livekit.agents.cli.log import JsonFormatter

    try:
        raise exc
    except BaseException:
        rec = logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, sys.exc_info())
    rec.created = at
    return JsonFormatter().format(rec)


def test_livekit_agents_failures_on_a_starved_host_are_accounted_for_by_their_traceback() -> None:
    """The three failures the 20-minute soak's agents logged out of any fault (worker.py's
    job_request_fnc with AssignmentTimeoutError, ipc/proc_pool.py's process initialization, the
    loop watchdog's sampling bug); the same first lines with another cause stay unexplained."""
    from livekit.agents._exceptions import AssignmentTimeoutError

    watchdog = AttributeError("'function' object has no attribute 'f_lineno'")
    init = TimeoutError()
    init.add_note("await proc.initialize()")  # where proc_pool.py's traceback points
    lines = [
        _formatted("livekit.agents", "job_request_fnc failed", AssignmentTimeoutError(), T0 + 500),
        _formatted("livekit.agents", "event loop watchdog failed", watchdog, T0 + 501),
        _formatted("livekit.agents", "error initializing process", init, T0 + 501.5),
        _formatted("livekit.agents", "job_request_fnc failed", ValueError("bad metadata"), T0 + 502),
        _formatted("livekit.agents", "event loop watchdog failed", OSError("other"), T0 + 503),
    ]
    found, last_seen = errorlines.error_lines(lines)
    assert "AssignmentTimeoutError" in found[0].text and "bad metadata" in found[3].text
    result = errorlines.account(found, last_seen, FAULTS)
    assert result["accounted"] == {errorlines.STARVED: 3}
    assert [(g["message"], g["count"]) for g in result["unexplained"]] == [
        ("job_request_fnc failed", 1), ("event loop watchdog failed", 1)]
