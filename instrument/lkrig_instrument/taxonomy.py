"""Which kind of speech-scheduling error a message or log record is.

The texts are the ones livekit-agents raises or logs (1.3.12 and 1.8.9; see
docs/speech-scheduling.md for the source lines). Matching is on stable fragments so that the
suffix added in 1.4.3 (", the speech will be cancelled") does not matter.
"""

from __future__ import annotations

DRAINING = "cannot schedule new speech, the speech scheduling is draining/pausing"
CLOSING = "AgentSession is closing, cannot use say()"
CIRCULAR = "wait_for_playout()"  # "... cannot call SpeechHandle.wait_for_playout() ... circular wait"
CIRCULAR_ALT = "circular wait"
NOT_RUNNING = "the scheduling_task is not running"
TASK_UNFINISHED = "The asyncio.Task finished before"
FILLER_DROPPED = "filler stopped on an error"
TOOL_FAILED = "exception occurred while executing tool"
# livekit-agents voice/remote_session.py, when a session event cannot be written to the room
SESSION_EVENT_UNSENT = "failed to send session event"
# ends the draining and the not-running messages from 1.4.3 on, when refused speech started to be
# interrupted (see rig/explain_table.py for the lines); its absence dates a message
CANCELLED_SUFFIX = ", the speech will be cancelled"


def kind_of_error_text(text: str) -> str | None:
    """The kind named by an exception's message, or None if it is not a scheduling error."""
    if DRAINING in text:
        return "draining"
    if CLOSING in text:
        return "closing"
    if CIRCULAR_ALT in text or (CIRCULAR in text and "cannot call" in text):
        return "circular_wait"
    return None


def kind_of_log_message(message: str) -> str | None:
    """The kind a livekit-agents log line reports by itself (no exception attached)."""
    if NOT_RUNNING in message:
        return "scheduler_not_running"
    if TASK_UNFINISHED in message:
        return "task_unfinished"
    return None


def filler_kind(error_kind: str | None) -> str:
    """What a with_filler drop counts as, given the kind of the error that stopped the filler: the
    refusal is the drop (one `filler_dropped`), any other error keeps its own kind."""
    return "filler_dropped" if error_kind in (None, "draining", "closing") else error_kind


def kind_of_record(message: str, error_text: str | None = None) -> str | None:
    """The kind of one log record: its message and the text of the exception it carries.

    with_filler's "filler stopped on an error" carries the refusal that stopped the filler; the
    record is one `filler_dropped` (the refusal is the drop, not a second error), as the ledger
    counts it."""
    error_kind = kind_of_error_text(error_text) if error_text else None
    if FILLER_DROPPED in message:
        return filler_kind(error_kind)
    return error_kind or kind_of_error_text(message) or kind_of_log_message(message)
