"""What a call measured. Plain dataclasses, JSON-ready through `to_dict()`.

Outcome values are the label values of lkrig_instrument.names (TURN_OUTCOMES,
CONVERSATION_OUTCOMES); tests/test_caller_unit.py checks they stay a subset. Times inside a
TurnResult are seconds relative to the turn's end of utterance, so results from different
processes and clocks compare directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

JoinOutcome = Literal["ok", "no_agent", "connect_failed"]
TurnOutcome = Literal["ok", "dead_air", "agent_cut_off", "agent_error", "no_agent", "agent_lost"]

JOIN_OUTCOMES: tuple[str, ...] = ("ok", "no_agent", "connect_failed")
TURN_OUTCOME_VALUES: tuple[str, ...] = (
    "ok", "dead_air", "agent_cut_off", "agent_error", "no_agent", "agent_lost",
)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


class _Jsonable:
    def to_dict(self) -> dict[str, Any]:
        return _rounded(dataclasses.asdict(self))  # type: ignore[call-overload, no-any-return]


@dataclass
class JoinResult(_Jsonable):
    """Room creation, connection and the agent's arrival.

    reason names the failing step: create_room_failed, connect_timeout, connect_error,
    publish_failed, dispatch_failed, agent_join_timeout, agent_track_timeout, bad_network.
    """

    room: str
    outcome: JoinOutcome = "connect_failed"
    reason: str | None = None
    detail: str | None = None
    create_room_s: float | None = None
    connect_s: float | None = None
    dispatch_api_s: float | None = None
    # CreateDispatch request sent -> the agent participant connected to the room.
    dispatch_to_join_s: float | None = None
    # CreateDispatch request sent -> the agent's audio track subscribed.
    dispatch_to_track_s: float | None = None
    agent_identity: str | None = None
    dispatch_id: str | None = None


@dataclass
class SegmentOut(_Jsonable):
    start: float  # seconds after the end of utterance
    end: float
    open: bool = False  # still going when the turn ended


@dataclass
class TurnResult(_Jsonable):
    turn: str
    outcome: TurnOutcome
    # End of utterance to the first agent speech onset after it.
    latency_s: float | None = None
    # What the caller's network impairment added to that latency, and so left out of it: the
    # uplink's delay on the end of utterance plus the downlink's on the onset (as heard: the
    # caller heard the reply latency_s + network_delay_s after its speech ended). 0 without one.
    network_delay_s: float | None = None
    segments: list[SegmentOut] = field(default_factory=list)
    # Silence between consecutive agent segments of this turn (filler end -> answer start...).
    gaps_s: list[float] = field(default_factory=list)
    agent_speech_s: float = 0.0
    # The agent was still talking (from before) when the caller's utterance ended.
    agent_speaking_at_eou: bool = False
    # Seconds from the end of utterance until the turn was closed.
    listened_s: float = 0.0
    # The agent's events (lkrig_instrument.protocol) received during the turn, with "t" relative
    # to the end of utterance.
    events: list[dict[str, Any]] = field(default_factory=list)
    detail: str | None = None
    # time.monotonic() of the end of utterance (process-local clock), plus what the caller's
    # uplink impairment added to it (Caller.speak)
    eou: float = 0.0


@dataclass
class BargeInResult(_Jsonable):
    turn: str
    # The agent reply onset the barge-in was timed from, or None (no reply: nothing spoken).
    reply_onset: float | None
    # Caller speech onset minus reply onset, as played (target: after_ms).
    offset_s: float | None = None
    eou: float | None = None


@dataclass
class TeardownResult(_Jsonable):
    ok: bool = True
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
