"""What the rig's callers and the agents say to each other in a room: JSON data packets on two
topics. Both sides build and read the messages here, so their shapes cannot drift apart.

* TRANSCRIPT_TOPIC, caller -> agent, just before each utterance: `{"turn", "text"}` (the rig's
  scripted STT answers with that text; the agent reports the turn id back).
* EVENT_TOPIC, agent -> caller: `{"event": kind, ...}`, one of the constructors below. The caller
  keeps every event of a turn in its result (loadgen/results.py, TurnResult.events).

Stdlib only: the load generator imports it without livekit-agents.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("lkrig.instrument")

TRANSCRIPT_TOPIC = "lkrig.transcript"
EVENT_TOPIC = "lkrig.event"

# Event kinds (the "event" field).
ERROR = "error"  # a scheduling error counted for this session: the caller's turn is agent_error
TURN = "turn"  # the agent committed a user turn, with the id the caller announced for it
SAID = "said"  # an assistant message finished playing (or was interrupted)
SESSION = "session"  # the job's session started: which process, scenario, profile, version
BAD_JOB = "bad_job"  # the dispatch metadata was unusable; the job ends
MALFORMED = "malformed"  # caller side: a packet on EVENT_TOPIC that is not a JSON object
FAILURES = (ERROR, BAD_JOB, MALFORMED)  # what a turn's failure report lists


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message)


def transcript(turn: str, text: str) -> dict[str, str]:
    return {"turn": turn, "text": text}


def read_transcript(payload: bytes | str) -> tuple[str, str] | None:
    """(turn, text) of a transcript packet; None for anything else (other participants may use
    the topic name too)."""
    try:
        msg = json.loads(payload)
        return str(msg["turn"]), str(msg["text"])
    except (ValueError, KeyError, TypeError):
        return None


def error(kind: str) -> dict[str, str]:
    return {"event": ERROR, "kind": kind}


def turn(turn_id: str | None) -> dict[str, Any]:
    return {"event": TURN, "turn": turn_id}


def said(text: str, interrupted: bool) -> dict[str, Any]:
    return {"event": SAID, "text": text, "interrupted": interrupted}


def session(pid: int, scenario: str, profile: str, agents_version: str) -> dict[str, Any]:
    return {"event": SESSION, "pid": pid, "scenario": scenario, "profile": profile,
            "agents_version": agents_version}


def bad_job(detail: str) -> dict[str, str]:
    return {"event": BAD_JOB, "detail": detail}


def read_event(payload: str | bytes | None) -> dict[str, Any]:
    """An event packet as a dict; anything else as a MALFORMED event carrying its start."""
    try:
        msg = json.loads(payload or "")
    except ValueError:
        return {"event": MALFORMED, "raw": str(payload)[:200]}
    return msg if isinstance(msg, dict) else {"event": MALFORMED, "raw": str(msg)[:200]}


class EventSender:
    """Agent side: sends events to the callers in `room` (a livekit.rtc.Room). A failed send is
    logged, never raised: the caller may be gone, the room closed."""

    def __init__(self, room: Any) -> None:
        self._room = room
        self._pending: set[asyncio.Task[None]] = set()

    async def publish(self, event: dict[str, Any]) -> None:
        try:
            await self._room.local_participant.publish_data(
                dumps(event).encode(), reliable=True, topic=EVENT_TOPIC)
        except Exception:
            log.debug("could not publish %s to the room", event)

    def send(self, event: dict[str, Any]) -> None:
        """publish() in the background, from a callback of the running loop."""
        task = asyncio.get_running_loop().create_task(self.publish(event))
        self._pending.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._pending.discard)


def is_event(event: dict[str, Any], *kinds: str) -> bool:
    return event.get("event") in kinds


def failure_kind(event: dict[str, Any]) -> str:
    """How a failure event is named in a turn's report: its kind, else its detail."""
    return str(event.get("kind") or event.get("detail") or event.get("event"))


def committed(events: list[dict[str, Any]], turn_id: str) -> bool:
    """Whether the agent reported committing the caller's turn `turn_id`."""
    return any(is_event(e, TURN) and e.get("turn") == turn_id for e in events)
