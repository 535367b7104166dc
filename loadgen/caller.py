"""One real WebRTC caller: creates a room, dispatches the agent, speaks, listens, measures.

Plain asyncio, no gevent: run it in its own process, never in Locust's (the Locust side only
orchestrates). Under Locust's gevent monkey-patching, an asyncio loop's default executor runs on
greenlets of a hub that never runs, so `run_in_executor` and DNS lookups hang. The room API
calls (create, dispatch, delete) go through livekit.api; the media (WebRTC, Opus, the
microphone's pacing, the agent's audio and its speech edges) run in the media engine
(loadgen/media.py, a Go process shared by the callers of a driver). Every wait is bounded and
every failure is returned as a named outcome/reason instead of raised.

Clock: time.monotonic() throughout (CLOCK_MONOTONIC, shared by all processes on the host).

    python -m loadgen.cli --url ws://127.0.0.1:7880 --scenario seed --profile fast \
        --say "What programs do you have for kids?" --say "She is seven, a girl."
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from lkrig_instrument import protocol

from livekit import api
from loadgen import netprofile
from loadgen.audio import UtteranceCache
from loadgen.detect import Segment
from loadgen.media import MediaEngine, MediaError, MediaRoom
from loadgen.results import (
    BargeInResult,
    JoinOutcome,
    JoinResult,
    SegmentOut,
    TeardownResult,
    TurnOutcome,
    TurnResult,
)


@dataclass(frozen=True)
class CallerConfig:
    url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    agent_name: str = "lkrig-agent"
    scenario: str = "seed"
    profile: str = "fast"
    seed: int = 1
    # loadgen/networks/<network>.yaml: what the caller's network does to its media, both ways
    # (the media engine impairs this call's packets; seeded by `seed`)
    network: str = netprofile.DEFAULT
    room_prefix: str = "lkrig"
    # The server deletes the room this long after the last participant left, in case our
    # own DeleteRoom never arrives (caller process killed).
    empty_timeout_s: int = 60
    api_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    join_timeout_s: float = 15.0
    track_timeout_s: float = 10.0
    dead_air_timeout_s: float = 8.0
    settle_s: float = 1.5
    turn_timeout_s: float = 30.0
    teardown_timeout_s: float = 5.0
    lead_ms: float = 200.0
    trail_ms: float = 300.0

    @classmethod
    def from_env(cls, url: str | None = None, **kw: Any) -> CallerConfig:
        """Keys from LIVEKIT_API_KEY / LIVEKIT_API_SECRET, URL from LIVEKIT_URL unless given."""
        url = url or os.environ.get("LIVEKIT_URL", "")
        missing = [n for n in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if not os.environ.get(n)]
        if not url:
            missing.insert(0, "LIVEKIT_URL (or --url)")
        if missing:
            raise ValueError(f"caller config: {', '.join(missing)} not set in the environment")
        return cls(url, os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"], **kw)


class AgentAudioMonitor:
    """The agent's speech segments, from the media engine's speech edges (loadgen/lkmedia
    runs loadgen/detect.py's segmenter on the decoded audio).

    Times are the agent's audio as if the caller's downlink added nothing (the engine subtracts
    what its impairment added); `heard` maps each onset to when the caller heard it."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.onsets: list[float] = []
        self.heard: dict[float, float] = {}
        self.current_start: float | None = None
        self._changed = asyncio.Event()

    @property
    def speaking(self) -> bool:
        return self.current_start is not None

    @property
    def last_end(self) -> float | None:
        return self.segments[-1].end if self.segments else None

    def edge(self, kind: str, t: float, t_net: float | None = None) -> None:
        if kind == "start":
            self.current_start = t
            self.onsets.append(t)
            self.heard[t] = t if t_net is None else t_net
        elif self.current_start is not None:
            self.segments.append(Segment(self.current_start, t))
            self.current_start = None
        self.notify()

    def notify(self) -> None:
        """Wakes every listener (a state change they may be waiting for)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, until: float) -> None:
        """Returns on the next onset/offset or at monotonic time `until`, whichever is first."""
        timeout = until - time.monotonic()
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def first_onset_after(self, t: float) -> float | None:
        for onset in self.onsets:
            if onset >= t:
                return onset
        return None

    def heard_at(self, onset: float) -> float:
        """When the caller heard `onset` (later than it by what its downlink added)."""
        return self.heard.get(onset, onset)


class Caller:
    """One caller in one room. Use `async with Caller(cfg) as c:` or start()/close().

    `media`: the driver's shared media engine; without one the caller starts its own.
    """

    def __init__(
        self,
        config: CallerConfig,
        *,
        lkapi: api.LiveKitAPI | None = None,
        utterances: UtteranceCache | None = None,
        room_name: str | None = None,
        media: MediaEngine | None = None,
    ) -> None:
        self.cfg = config
        self.room_name = room_name or f"{config.room_prefix}-{uuid.uuid4().hex[:12]}"
        self.identity = f"caller-{self.room_name}"
        self._own_api = lkapi is None
        self._api = lkapi
        self._own_media = media is None
        self._media = media
        self._room: MediaRoom | None = None
        self.utterances = utterances or UtteranceCache(config.lead_ms, config.trail_ms)
        self.join = JoinResult(room=self.room_name)
        self.monitor = AgentAudioMonitor()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.agent: str | None = None  # the agent participant's identity
        self.agent_left_at: float | None = None
        self.disconnected: str | None = None
        self._agent_joined = asyncio.Event()
        self._agent_track = asyncio.Event()
        self._t_dispatch: float | None = None
        self._speak_lock = asyncio.Lock()
        self._speech_started: dict[str, float] = {}
        self._uplink_delay: dict[str, float] = {}  # turn -> what the uplink added to its eou
        self._transcript_errors: dict[str, str] = {}
        self._room_created = False
        self._connected = False
        self._closed = False

    # ---- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Caller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def dispatched_at(self) -> float | None:
        """time.monotonic() when the CreateDispatch request was sent."""
        return self._t_dispatch

    async def start(self) -> JoinResult:
        """Create the room, join, publish the mic, dispatch the agent, wait for its audio."""
        cfg, j = self.cfg, self.join
        if self._api is None:
            self._api = api.LiveKitAPI(
                _http_url(cfg.url), cfg.api_key, cfg.api_secret,
                timeout=_aiohttp_timeout(cfg.api_timeout_s),
            )
        t = time.monotonic()
        try:
            await asyncio.wait_for(
                self._api.room.create_room(
                    api.CreateRoomRequest(name=self.room_name, empty_timeout=cfg.empty_timeout_s,
                                          departure_timeout=cfg.empty_timeout_s)),
                cfg.api_timeout_s)
            self._room_created = True
        except Exception as e:  # any failure is a named outcome
            return self._fail("connect_failed", "create_room_failed", e)
        j.create_room_s = time.monotonic() - t

        try:
            if self._media is None:
                self._media = await MediaEngine.start()
        except MediaError as e:
            return self._fail("connect_failed", "connect_error", e)
        try:
            network = netprofile.get(cfg.network).engine(cfg.seed)
        except netprofile.NetworkError as e:
            return self._fail("connect_failed", "bad_network", e)
        self._room = self._media.room(self.room_name, self)
        # Connect and publish the microphone; the engine bounds each step by the timeout
        # (a stalled server would otherwise take 16-32 s).
        res = await self._room.join(self.room_name, self.identity, cfg.connect_timeout_s, network=network)
        if res.get("ev") != "joined":
            step = str(res.get("step") or "connect_error")
            return self._fail("connect_failed", step, str(res.get("error") or res.get("detail") or ""))
        self._connected = True
        j.connect_s = float(res.get("connect_s") or 0.0)
        present = [p["identity"] for p in res.get("participants") or [] if p.get("agent")]
        if present and self.agent is None:
            # Not ours (automatic dispatch or a stale job): its join time is unknowable.
            self._adopt_agent(present[0])
            j.detail = f"agent {present[0]} was in the room before the dispatch"

        meta = json.dumps({"scenario": cfg.scenario, "profile": cfg.profile, "seed": cfg.seed})
        self._t_dispatch = time.monotonic()
        try:
            d = await asyncio.wait_for(
                self._api.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                    agent_name=cfg.agent_name, room=self.room_name, metadata=meta)),
                cfg.api_timeout_s)
            j.dispatch_id = d.id
        except Exception as e:
            return self._fail("connect_failed", "dispatch_failed", e)
        j.dispatch_api_s = time.monotonic() - self._t_dispatch

        deadline = self._t_dispatch + cfg.join_timeout_s
        if not await _wait_event(self._agent_joined, deadline):
            return self._fail("no_agent", "agent_join_timeout",
                              f"agent '{cfg.agent_name}' did not join within {cfg.join_timeout_s:g} s")
        if not await _wait_event(self._agent_track, max(deadline, time.monotonic() + cfg.track_timeout_s)):
            return self._fail("no_agent", "agent_track_timeout",
                              f"the agent joined but published no audio within {cfg.track_timeout_s:g} s")
        j.outcome = "ok"
        return j

    def _fail(self, outcome: JoinOutcome, reason: str, err: BaseException | str | None) -> JoinResult:
        self.join.outcome = outcome
        self.join.reason = reason
        if isinstance(err, BaseException):
            self.join.detail = f"{type(err).__name__}: {err}"[:300]
        else:
            self.join.detail = err[:300] if err else None
        return self.join

    async def close(self) -> TeardownResult:
        """Leave and delete the room, stop the own media engine. Idempotent."""
        res = TeardownResult()
        if self._closed:
            return res
        self._closed = True
        t = time.monotonic()
        to = self.cfg.teardown_timeout_s

        async def step(name: str, coro: Any) -> None:
            try:
                await asyncio.wait_for(coro, to * 3)
            except Exception as e:  # teardown continues whatever fails
                res.ok = False
                res.errors.append(f"{name}: {type(e).__name__}: {e}"[:200])

        if self._room is not None:
            # A join still under way is waited for by the engine, then disconnected.
            errors = await asyncio.shield(self._room.leave(to))
            if errors:
                res.ok = False
                res.errors.extend(f"leave: {e}"[:200] for e in errors)
        if self._room_created and self._api is not None:
            await step("delete_room", self._api.room.delete_room(
                api.DeleteRoomRequest(room=self.room_name)))
        if self._own_api and self._api is not None:
            await step("api_close", self._api.aclose())
        if self._own_media and self._media is not None:
            await step("media_close", self._media.close(to))
        res.seconds = time.monotonic() - t
        return res

    # ---- room events (from the media engine) -----------------------------------------

    def on_media(self, ev: dict[str, Any]) -> None:
        kind = ev.get("ev")
        if kind == "speech":
            t_net = ev.get("t_net")
            self.monitor.edge(str(ev.get("edge")), float(ev["t"]), None if t_net is None else float(t_net))
        elif kind in ("participant", "track"):
            p = ev.get("participant") or {}
            if not p.get("agent"):
                return
            if self.agent is None:
                self._adopt_agent(str(p.get("identity")))
            if kind == "track" and not self._agent_track.is_set():
                if self._t_dispatch is not None:
                    self.join.dispatch_to_track_s = time.monotonic() - self._t_dispatch
                self._agent_track.set()
        elif kind == "participant_left":
            if self.agent is not None and ev.get("identity") == self.agent:
                self.agent_left_at = time.monotonic()
                self.monitor.notify()
        elif kind == "data":
            if ev.get("topic") != protocol.EVENT_TOPIC:
                return
            self.events.append((time.monotonic(), protocol.read_event(ev.get("payload"))))
            self.monitor.notify()
        elif kind in ("disconnected", "engine_exit"):
            self.disconnected = str(ev.get("reason") or ev.get("detail") or kind)
            self.monitor.notify()

    def _adopt_agent(self, identity: str) -> None:
        self.agent = identity
        self.join.agent_identity = identity
        if self._t_dispatch is not None and not self._agent_joined.is_set():
            self.join.dispatch_to_join_s = time.monotonic() - self._t_dispatch
        self._agent_joined.set()

    # ---- speaking --------------------------------------------------------------------

    async def prepare(self, *texts: str) -> None:
        """Renders utterances ahead of time so speak() starts without synthesis delay."""
        for text in texts:
            await self.utterances.aget(text)

    async def speak(self, turn_id: str, text: str, *, max_speech_ms: float | None = None,
                    not_before: float = 0.0) -> float:
        """Sends the transcript packet, plays the utterance at real time; returns its end time.

        The end of utterance is when the last speech sample leaves the microphone (trailing
        silence follows it), plus what the caller's uplink impairment added to the packet that
        carried it: when the agent's side could first have it. The call returns then.
        """
        if self._room is None or not self._connected:
            raise RuntimeError("speak() before a successful start()")
        u = await self.utterances.aget(text)
        if max_speech_ms is not None:
            u = u.truncated(max_speech_ms, self.cfg.trail_ms)
        # The agent's scripted STT needs the transcript before the audio ends; a broken data
        # channel must not hang the caller, the turn then shows what the agent did without it.
        try:
            await self._room.publish_data(protocol.TRANSCRIPT_TOPIC,
                                          protocol.dumps(protocol.transcript(turn_id, text)),
                                          self.cfg.connect_timeout_s)
        except Exception as e:  # reported in the turn's detail
            self._transcript_errors[turn_id] = f"transcript not sent: {type(e).__name__}: {e}"[:200]
        async with self._speak_lock:
            played = await self._room.play_ex(u, not_before)
        self._speech_started[turn_id] = played.speech_start
        self._uplink_delay[turn_id] = played.eou_delay
        return played.eou + played.eou_delay

    async def wait_for_onset(self, since: float, timeout_s: float) -> float | None:
        """First agent speech onset at or after `since`, waiting at most timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            onset = self.monitor.first_onset_after(since)
            if onset is not None or time.monotonic() >= deadline or self._agent_gone():
                return onset
            await self.monitor.wait_change(deadline)

    async def barge_in(
        self, turn_id: str, text: str, *, after_ms: float, since: float,
        max_speech_ms: float | None = None, timeout_s: float | None = None,
    ) -> BargeInResult:
        """Starts speaking `after_ms` into the agent's first reply onset after `since`, as the
        caller heard it (through its downlink).

        The utterance's leading silence is skipped so that speech itself starts on time.
        """
        onset = await self.wait_for_onset(since, timeout_s or self.cfg.dead_air_timeout_s)
        if onset is None:
            return BargeInResult(turn_id, None)
        heard = self.monitor.heard_at(onset)
        u = await self.utterances.aget(text)
        lead = u.speech_start / u.sample_rate
        eou = await self.speak(turn_id, text, max_speech_ms=max_speech_ms,
                               not_before=heard + after_ms / 1000.0 - lead)
        started = self._speech_started.get(turn_id)
        return BargeInResult(turn_id, heard, None if started is None else started - heard, eou)

    # ---- listening -------------------------------------------------------------------

    def _agent_gone(self) -> bool:
        return self.agent_left_at is not None or self.disconnected is not None

    async def listen_turn(
        self,
        turn_id: str,
        since: float,
        *,
        dead_air_timeout_s: float | None = None,
        settle_s: float | None = None,
        turn_timeout_s: float | None = None,
        stop: asyncio.Event | None = None,
    ) -> TurnResult:
        """Collects the agent's reply to an utterance that ended at `since`.

        Ends when the agent has been quiet for settle_s after replying (ok), when nothing
        started within dead_air_timeout_s (dead_air), when turn_timeout_s passes with the
        agent still talking or pausing (agent_cut_off), when the agent leaves (agent_lost),
        or when `stop` is set (a barge-in: whatever was heard so far). Any error event
        from the agent during the turn makes it agent_error.
        """
        cfg = self.cfg
        dead = since + (dead_air_timeout_s if dead_air_timeout_s is not None else cfg.dead_air_timeout_s)
        settle = settle_s if settle_s is not None else cfg.settle_s
        end_by = since + (turn_timeout_s if turn_timeout_s is not None else cfg.turn_timeout_s)
        mon = seg = self.monitor
        if self.agent is None or not self._agent_track.is_set():
            return TurnResult(turn_id, "no_agent", eou=since, detail="no agent audio in the room")

        outcome: TurnOutcome
        detail = None
        while True:
            now = time.monotonic()
            onset = mon.first_onset_after(since)
            if self._agent_gone():
                outcome, detail = "agent_lost", self.disconnected or "agent left the room"
                break
            if stop is not None and stop.is_set():
                outcome = "ok" if onset is not None else "dead_air"
                detail = "stopped"
                break
            if onset is None:
                if now >= dead:
                    outcome = "dead_air"
                    break
                await self._wait(dead, stop)
                continue
            if now >= end_by:
                outcome, detail = "agent_cut_off", "turn timeout while the agent was talking"
                break
            if mon.speaking:
                await self._wait(end_by, stop)
                continue
            quiet_since = mon.last_end or onset
            if now - quiet_since >= settle:
                outcome = "ok"
                break
            await self._wait(min(quiet_since + settle, end_by), stop)

        closed = time.monotonic()
        started = self._speech_started.get(turn_id, since)
        events = [dict(msg, t=round(t - since, 4)) for t, msg in self.events if started <= t <= closed]
        if outcome in ("ok", "dead_air", "agent_cut_off") and any(
                protocol.is_event(e, protocol.ERROR) for e in events):
            outcome = "agent_error"
        onset = mon.first_onset_after(since)
        segs = [SegmentOut(s.start - since, s.end - since) for s in seg.segments
                if onset is not None and onset <= s.start <= closed]
        speaking_at_eou = any(s.start < since < s.end for s in seg.segments) or (
            seg.speaking and seg.current_start is not None and seg.current_start < since)
        if seg.speaking and seg.current_start is not None and seg.current_start >= since:
            segs.append(SegmentOut(seg.current_start - since, closed - since, True))
        return TurnResult(
            turn=turn_id,
            outcome=outcome,
            latency_s=None if onset is None else onset - since,
            network_delay_s=None if onset is None else
            self._uplink_delay.get(turn_id, 0.0) + self.monitor.heard_at(onset) - onset,
            segments=segs,
            gaps_s=[b.start - a.end for a, b in itertools.pairwise(segs)],
            agent_speech_s=sum(s.end - s.start for s in segs),
            agent_speaking_at_eou=speaking_at_eou,
            listened_s=closed - since,
            events=events,
            detail="; ".join(d for d in (detail, self._transcript_errors.get(turn_id)) if d) or None,
            eou=since,
        )

    async def _wait(self, until: float, stop: asyncio.Event | None) -> None:
        if stop is None:
            await self.monitor.wait_change(until)
            return
        waiters = {asyncio.ensure_future(stop.wait()),
                   asyncio.ensure_future(self.monitor.wait_change(until))}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def turn(self, turn_id: str, text: str, **listen_kw: Any) -> TurnResult:
        """speak() then listen_turn()."""
        eou = await self.speak(turn_id, text)
        return await self.listen_turn(turn_id, eou, **listen_kw)


def _http_url(url: str) -> str:
    if url.startswith("ws://"):
        return "http://" + url[5:]
    if url.startswith("wss://"):
        return "https://" + url[6:]
    return url


def _aiohttp_timeout(seconds: float) -> Any:
    import aiohttp  # a dependency of livekit-api; imported here to keep it out of module load

    return aiohttp.ClientTimeout(total=seconds)


async def _wait_event(event: asyncio.Event, deadline: float) -> bool:
    timeout = deadline - time.monotonic()
    if event.is_set():
        return True
    if timeout <= 0:
        return False
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


__all__ = ["AgentAudioMonitor", "Caller", "CallerConfig"]
