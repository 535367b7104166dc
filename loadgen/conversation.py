"""One scripted conversation on one Caller: join, (greeting), turns, barge-ins, teardown.

Plain asyncio (runs inside a voice driver, loadgen/driver.py). Every step is reported through
`emit(message)` as soon as it is known, so the Locust side shows turn rows while the call goes
on. Messages (all carry "call", the id the driver was given):

    {"type": "join", "join": JoinResult}                                once
    {"type": "turn", "kind": "greeting"|"turn", "result": TurnResult,
     "expect_failed": str|None, "barge_in": BargeInResult|None}          per turn
    {"type": "conversation", "outcome": str, "reason": str|None, "seconds": float,
     "turns": int}                                                       once, at the end, or
    {"type": "hung_up", "seconds": float, "turns": int}                  if the driver hung up
    {"type": "closed", "teardown": TeardownResult}                      once, always last

Outcomes are the label values of lkrig_instrument.names (CONVERSATION_OUTCOMES, TURN_OUTCOMES).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lkrig_instrument import protocol

from loadgen.convscript import Script, Turn
from loadgen.results import TurnResult

Emit = Callable[[dict[str, Any]], None]

# A turn that ends like this leaves the script out of step with the agent: stop the call.
_FATAL_TURN_OUTCOMES = frozenset({"no_agent", "agent_lost", "dead_air", "agent_cut_off"})


@dataclass(frozen=True)
class Spec:
    """What one conversation runs; travels over the driver pipe as a dict."""

    script: Script
    scenario: str = "seed"
    profile: str = "fast"
    seed: int = 1
    agent_name: str = "lkrig-agent"
    barge_in: bool = True  # False: barge-in turns are spoken after the agent's reply instead
    room: str | None = None
    network: str = "perfect"  # loadgen/networks/<network>.yaml: the caller's network impairment

    def to_dict(self) -> dict[str, Any]:
        return {"script": self.script.to_dict(), "scenario": self.scenario, "profile": self.profile,
                "seed": self.seed, "agent_name": self.agent_name, "barge_in": self.barge_in,
                "room": self.room, "network": self.network}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        return cls(script=Script.from_dict(d["script"]), scenario=str(d["scenario"]),
                   profile=str(d["profile"]), seed=int(d["seed"]), agent_name=str(d["agent_name"]),
                   barge_in=bool(d["barge_in"]), room=d.get("room"),
                   network=str(d.get("network") or "perfect"))


def check_expectations(turn: Turn, result: TurnResult) -> str | None:
    """What the turn's `expect` block found wrong, or None."""
    e = turn.expect
    problems = []
    if e.agent_turn and not protocol.committed(result.events, turn.id):
        problems.append("agent_turn: the agent reported no turn for this utterance")
    if e.max_latency_ms is not None and result.latency_s is not None \
            and result.latency_s * 1000 > e.max_latency_ms:
        problems.append(f"max_latency_ms: {result.latency_s * 1000:.0f} > {e.max_latency_ms:g}")
    if e.min_reply_ms is not None and result.agent_speech_s * 1000 < e.min_reply_ms:
        problems.append(f"min_reply_ms: {result.agent_speech_s * 1000:.0f} < {e.min_reply_ms:g}")
    return "; ".join(problems) or None


def conversation_outcome(join_outcome: str, turn_outcomes: list[str]) -> str:
    if join_outcome != "ok":
        return join_outcome
    return next((o for o in turn_outcomes if o != "ok"), "completed")


class Conversation:
    """Runs `spec` on a caller built by `make_caller(spec)` (a loadgen.caller.Caller)."""

    def __init__(self, call_id: str, spec: Spec, make_caller: Callable[[Spec], Any], emit: Emit) -> None:
        self.call_id = call_id
        self.spec = spec
        self._make_caller = make_caller
        self._emit_fn = emit
        self._rng = random.Random(spec.seed)
        self.turn_outcomes: list[str] = []  # the script's turns only
        self.outcomes: list[str] = []  # what decides the conversation's outcome (+ a failed greeting)
        self.first_failure: str | None = None
        self._agent_ready_s = 0.0  # dispatch -> the agent's audio track subscribed

    def _emit(self, msg: dict[str, Any]) -> None:
        self._emit_fn({"call": self.call_id, **msg})

    async def run(self) -> None:
        """Never raises except CancelledError; teardown always runs and is always reported."""
        t0 = time.monotonic()
        caller = self._make_caller(self.spec)
        join_outcome = "connect_failed"
        hung_up = False
        try:
            join = await caller.start()
            join_outcome = join.outcome
            self._agent_ready_s = join.dispatch_to_track_s or 0.0
            self._emit({"type": "join", "join": join.to_dict()})
            if join.outcome != "ok":
                self.first_failure = f"{join.reason}: {join.detail}" if join.detail else join.reason
            else:
                await self._turns(caller)
        except asyncio.CancelledError:
            hung_up = True  # the load generator hung up (a stop): no outcome of the agent's
            raise
        except Exception as e:  # a bug or an SDK failure: still a named outcome
            self.outcomes.append("agent_lost")
            self.first_failure = f"caller error: {type(e).__name__}: {e}"[:300]
        finally:
            seconds = round(time.monotonic() - t0, 4)
            if hung_up:
                self._emit({"type": "hung_up", "seconds": seconds, "turns": len(self.turn_outcomes)})
            else:
                outcome = conversation_outcome(join_outcome, self.outcomes)
                self._emit({"type": "conversation", "outcome": outcome, "reason": self.first_failure,
                            "seconds": seconds, "turns": len(self.turn_outcomes)})
            teardown = await _close(caller)
            self._emit({"type": "closed", "teardown": teardown})

    async def _think(self, turn: Turn) -> None:
        lo, hi = turn.think_ms or self.spec.script.think_ms
        await asyncio.sleep(self._rng.uniform(lo, hi) / 1000.0)

    def _listen_kw(self, turn: Turn | None) -> dict[str, float]:
        s = self.spec.script
        settle = turn.settle_ms if turn is not None and turn.settle_ms is not None else s.settle_ms
        dead_air = turn_timeout = 0.0
        if turn is None:
            # The greeting is timed from the dispatch, but the agent can only speak once its job
            # runs and its track is up: the dead-air window starts there.
            dead_air = turn_timeout = self._agent_ready_s
        return {"settle_s": settle / 1000.0, "dead_air_timeout_s": dead_air + s.dead_air_ms / 1000.0,
                "turn_timeout_s": turn_timeout + s.turn_timeout_ms / 1000.0}

    def _report(self, turn: Turn | None, result: TurnResult, barge: dict[str, Any] | None) -> bool:
        """Emits a turn (None: the greeting); returns False when the conversation cannot go on."""
        kind = "turn" if turn is not None else "greeting"
        failed = check_expectations(turn, result) if turn is not None else None
        self._emit({"type": "turn", "kind": kind, "result": result.to_dict(),
                    "expect_failed": failed, "barge_in": barge})
        if kind == "turn":
            self.turn_outcomes.append(result.outcome)
        if kind == "turn" or result.outcome != "ok":
            self.outcomes.append(result.outcome)
        if self.first_failure is None and (result.outcome != "ok" or failed):
            detail = failed if result.outcome == "ok" else "; ".join(
                d for d in (result.detail, _error_kinds(result)) if d)
            self.first_failure = f"{result.turn}: {result.outcome}" + (f" ({detail})" if detail else "")
        return result.outcome not in _FATAL_TURN_OUTCOMES

    async def _turns(self, caller: Any) -> None:
        turns = list(self.spec.script.turns)
        if not self.spec.barge_in:
            turns = [Turn(t.id, t.say, t.think_ms, t.settle_ms, None, t.expect) for t in turns]
        # The reply not yet listened to: (turn spoken, None for the greeting; its end of
        # utterance, or the dispatch time for the greeting; its barge-in timing if it was one).
        pending: tuple[Turn | None, float, dict[str, Any] | None] | None = None
        if self.spec.script.greeting:
            pending = (None, caller.dispatched_at or time.monotonic(), None)
        for turn in turns:
            if turn.barge_in is not None and pending is not None:
                prev, since, prev_barge = pending
                stop = asyncio.Event()
                listen = asyncio.ensure_future(caller.listen_turn(
                    prev.id if prev else "greeting", since, stop=stop, **self._listen_kw(prev)))
                try:
                    barge = await caller.barge_in(
                        turn.id, turn.say, after_ms=turn.barge_in.at_ms, since=since,
                        max_speech_ms=turn.barge_in.for_ms,
                        timeout_s=self.spec.script.dead_air_ms / 1000.0)
                finally:
                    stop.set()
                    prev_result = await listen
                if not self._report(prev, prev_result, prev_barge) or barge.eou is None:
                    return
                pending = (turn, barge.eou, barge.to_dict())
                continue
            if pending is not None:
                prev, since, prev_barge = pending
                result = await caller.listen_turn(
                    prev.id if prev else "greeting", since, **self._listen_kw(prev))
                if not self._report(prev, result, prev_barge):
                    return
            await self._think(turn)
            pending = (turn, await caller.speak(turn.id, turn.say), None)
        if pending is not None:
            prev, since, prev_barge = pending
            result = await caller.listen_turn(
                prev.id if prev else "greeting", since, **self._listen_kw(prev))
            self._report(prev, result, prev_barge)


def _error_kinds(result: TurnResult) -> str | None:
    kinds = [protocol.failure_kind(e) for e in result.events if protocol.is_event(e, *protocol.FAILURES)]
    return ", ".join(kinds) or None


async def _close(caller: Any) -> dict[str, Any]:
    # Teardown must finish even if the task is being cancelled: shield it, and swallow a second
    # cancel (the driver gives every close a bounded time anyway).
    task = asyncio.ensure_future(caller.close())
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)
    if not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        return task.result().to_dict()
    except Exception as e:
        return {"ok": False, "seconds": 0.0, "errors": [f"close: {type(e).__name__}: {e}"[:200]]}
