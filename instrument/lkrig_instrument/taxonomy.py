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
