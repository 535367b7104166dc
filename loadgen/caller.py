"""One real WebRTC caller: creates a room, dispatches the agent, speaks, listens, measures.

Plain asyncio on livekit.rtc / livekit.api, no gevent: run it in its own process (the
Locust side only orchestrates, see ../shared/research/feasibility.md). Every wait is bounded
and every failure is returned as a named outcome/reason instead of raised.

Clock: time.monotonic() throughout (CLOCK_MONOTONIC, shared by all processes on the host).

    python -m loadgen.caller --url ws://127.0.0.1:7880 --scenario seed --profile fast \
        --say "What programs do you have for kids?" --say "She is seven, a girl."
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from livekit import api, rtc
from loadgen.audio import SAMPLE_RATE, Utterance, UtteranceCache
from loadgen.detect import DetectorConfig, SpeechSegmenter, StreamClock
from loadgen.results import (
    BargeInResult,
    JoinOutcome,
    JoinResult,
    SegmentOut,
    TeardownResult,
    TurnOutcome,
    TurnResult,
)

TRANSCRIPT_TOPIC = "lkrig.transcript"
EVENT_TOPIC = "lkrig.event"


@dataclass(frozen=True)
class CallerConfig:
    url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    agent_name: str = "lkrig-agent"
    scenario: str = "seed"
    profile: str = "fast"
    seed: int = 1
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
    token_ttl_h: float = 24.0
    send_chunk_ms: int = 20
    # 100 ms frames: a third of the receive CPU of 20 ms frames (measured); edges stay
    # sample-accurate, only the onset notification comes up to one frame later.
    recv_frame_ms: int = 100
    recv_sample_rate: int = 48000
    lead_ms: float = 200.0
    trail_ms: float = 300.0
    detector: DetectorConfig = field(default_factory=DetectorConfig)

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


class _FrameCache:
    """Pre-built AudioFrames per (utterance, chunk size), shared by the callers of a process:
    building frames per capture costs more CPU than the capture itself (feasibility Q3)."""

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, int], list[rtc.AudioFrame]] = OrderedDict()

    def get(self, u: Utterance, chunk: int) -> list[rtc.AudioFrame]:
        key = (u.key, chunk)
        frames = self._entries.get(key)
        if frames is None:
            pcm = u.pcm
            if pcm.size % chunk:
                pcm = np.concatenate([pcm, np.zeros(chunk - pcm.size % chunk, dtype=np.int16)])
            frames = [
                rtc.AudioFrame(pcm[i : i + chunk].tobytes(), u.sample_rate, 1, chunk)
                for i in range(0, pcm.size, chunk)
            ]
            self._entries[key] = frames
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)  # callers mid-capture hold their own reference
        else:
            self._entries.move_to_end(key)
        return frames


_FRAMES = _FrameCache()


class AgentAudioMonitor:
    """Runs the speech segmenter over the agent's received audio for the whole call."""

    def __init__(self, config: DetectorConfig) -> None:
        self.segmenter = SpeechSegmenter(config)
        self.onsets: list[float] = []
        self.frames = 0
        self._changed = asyncio.Event()

    @property
    def speaking(self) -> bool:
        return self.segmenter.speaking

    @property
    def last_end(self) -> float | None:
        segs = self.segmenter.segments
        return segs[-1].end if segs else None

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

    async def run(self, stream: rtc.AudioStream) -> None:
        clock = StreamClock()
        try:
            async for ev in stream:
                arrival = time.monotonic()
                frame = ev.frame
                self.frames += 1
                x = np.frombuffer(frame.data, dtype=np.int16)
                t0 = clock.add(arrival, frame.samples_per_channel, frame.sample_rate)
                if self._handle(self.segmenter.push(t0, x, frame.sample_rate)):
                    self.notify()
        finally:
            if self._handle(self.segmenter.flush()):
                self.notify()

    def _handle(self, events: list[tuple[str, float]]) -> bool:
        for kind, t in events:
            if kind == "start":
                self.onsets.append(t)
        return bool(events)


class Caller:
    """One caller in one room. Use `async with Caller(cfg) as c:` or start()/close()."""

    def __init__(
        self,
        config: CallerConfig,
        *,
        lkapi: api.LiveKitAPI | None = None,
        utterances: UtteranceCache | None = None,
        room_name: str | None = None,
    ) -> None:
        self.cfg = config
        self.room_name = room_name or f"{config.room_prefix}-{uuid.uuid4().hex[:12]}"
        self.identity = f"caller-{self.room_name}"
        self._own_api = lkapi is None
        self._api = lkapi
        self.utterances = utterances or UtteranceCache(config.lead_ms, config.trail_ms)
        self.room = rtc.Room()
        self.join = JoinResult(room=self.room_name)
        self.monitor = AgentAudioMonitor(config.detector)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.agent: rtc.RemoteParticipant | None = None
        self.agent_left_at: float | None = None
        self.disconnected: str | None = None
        self._source: rtc.AudioSource | None = None
        self._track: rtc.LocalAudioTrack | None = None
        self._stream: rtc.AudioStream | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._agent_joined = asyncio.Event()
        self._agent_track = asyncio.Event()
        self._t_dispatch: float | None = None
        self._cursor = 0.0  # monotonic time at which the mic queue runs dry
        self._speak_lock = asyncio.Lock()
        self._speech_started: dict[str, float] = {}
        self._transcript_errors: dict[str, str] = {}
        self._room_created = False
        self._connect: asyncio.Future[None] | None = None
        self._closed = False
        self._wire_events()

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

    @property
    def chunk_samples(self) -> int:
        return SAMPLE_RATE * self.cfg.send_chunk_ms // 1000

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

        token = (
            api.AccessToken(cfg.api_key, cfg.api_secret)
            .with_identity(self.identity)
            .with_ttl(datetime.timedelta(hours=cfg.token_ttl_h))  # soak calls outlive the 6 h default
            .with_grants(api.VideoGrants(room_join=True, room=self.room_name, can_publish=True,
                                         can_subscribe=True, can_publish_data=True))
            .to_jwt()
        )
        t = time.monotonic()
        try:
            # Room.connect to a stalled server takes 16-32 s on its own: bound it. Shielded:
            # cancelling Room.connect between its ConnectCallback and ReadyForRoomEvent makes
            # livekit-ffi 1.1.21 panic and the SDK SIGTERM the whole process (every caller in
            # it); close() lets an abandoned connect finish and then disconnects it.
            self._connect = asyncio.ensure_future(
                self.room.connect(cfg.url, token, rtc.RoomOptions(
                    auto_subscribe=True, connect_timeout=cfg.connect_timeout_s)))
            await asyncio.wait_for(asyncio.shield(self._connect), cfg.connect_timeout_s)
        except TimeoutError:
            return self._fail("connect_failed", "connect_timeout", None)
        except Exception as e:
            return self._fail("connect_failed", "connect_error", e)
        j.connect_s = time.monotonic() - t
        present = [p for p in self.room.remote_participants.values() if _is_agent(p)]
        if present:
            # Not ours (automatic dispatch or a stale job): its join time is unknowable.
            self._adopt_agent(present[0])
            j.detail = f"agent {present[0].identity} was in the room before the dispatch"

        try:
            self._source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=2 * cfg.send_chunk_ms)
            self._track = rtc.LocalAudioTrack.create_audio_track("caller-mic", self._source)
            await asyncio.wait_for(
                self.room.local_participant.publish_track(
                    self._track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)),
                cfg.connect_timeout_s)
        except TimeoutError:
            return self._fail("connect_failed", "publish_failed", "timed out")
        except Exception as e:
            return self._fail("connect_failed", "publish_failed", e)

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
            self.join.detail = err
        return self.join

    async def close(self) -> TeardownResult:
        """Leave and delete the room, close the media objects, cancel every task. Idempotent."""
        res = TeardownResult()
        if self._closed:
            return res
        self._closed = True
        t = time.monotonic()
        to = self.cfg.teardown_timeout_s

        async def step(name: str, coro: Any) -> None:
            try:
                await asyncio.wait_for(coro, to)
            except Exception as e:  # teardown continues whatever fails
                res.ok = False
                res.errors.append(f"{name}: {type(e).__name__}: {e}"[:200])

        connect = self._connect
        if connect is not None and not connect.done():
            await step("connect", asyncio.shield(connect))
            if not connect.done():  # still connecting: disconnect whenever it gets there
                connect.add_done_callback(lambda _f: asyncio.ensure_future(self.room.disconnect()))
        for task in list(self._tasks):
            task.cancel()
        if self._stream is not None:
            await step("audio_stream", self._stream.aclose())
        if self._tasks:
            await step("tasks", asyncio.gather(*self._tasks, return_exceptions=True))
        if self._track is not None and self._track.sid and self.room.isconnected():
            # Unpublishing drops the room's reference to the track; with ours gone too the
            # native track and its capture thread are freed now, not at the next GC cycle.
            await step("unpublish", self.room.local_participant.unpublish_track(self._track.sid))
        await step("disconnect", self.room.disconnect())
        if self._source is not None:
            await step("audio_source", self._source.aclose())
        self._track = self._source = self._stream = None
        if self._room_created and self._api is not None:
            await step("delete_room", self._api.room.delete_room(
                api.DeleteRoomRequest(room=self.room_name)))
        if self._own_api and self._api is not None:
            await step("api_close", self._api.aclose())
        res.seconds = time.monotonic() - t
        return res

    # ---- room events -----------------------------------------------------------------

    def _wire_events(self) -> None:
        room = self.room

        @room.on("participant_connected")
        def _on_participant(p: rtc.RemoteParticipant) -> None:
            if self.agent is None and _is_agent(p):
                self._adopt_agent(p)

        @room.on("participant_disconnected")
        def _on_left(p: rtc.RemoteParticipant) -> None:
            if self.agent is not None and p.identity == self.agent.identity:
                self.agent_left_at = time.monotonic()
                self.monitor.notify()

        @room.on("track_subscribed")
        def _on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication,
                      p: rtc.RemoteParticipant) -> None:
            if track.kind != rtc.TrackKind.KIND_AUDIO or not _is_agent(p):
                return
            if self.agent is None:
                self._adopt_agent(p)
            if self._stream is not None:
                old = self._stream
                self._spawn(old.aclose())
            self._stream = rtc.AudioStream(
                track, sample_rate=self.cfg.recv_sample_rate, num_channels=1,
                frame_size_ms=self.cfg.recv_frame_ms)
            self._spawn(self.monitor.run(self._stream))
            if not self._agent_track.is_set():
                if self._t_dispatch is not None:
                    self.join.dispatch_to_track_s = time.monotonic() - self._t_dispatch
                self._agent_track.set()

        @room.on("data_received")
        def _on_data(packet: rtc.DataPacket) -> None:
            if packet.topic != EVENT_TOPIC:
                return
            try:
                msg = json.loads(packet.data)
            except ValueError:
                msg = {"event": "malformed", "raw": packet.data[:200].decode(errors="replace")}
            if not isinstance(msg, dict):
                msg = {"event": "malformed", "raw": str(msg)[:200]}
            self.events.append((time.monotonic(), msg))
            self.monitor.notify()

        @room.on("disconnected")
        def _on_disconnected(reason: Any) -> None:
            self.disconnected = str(reason)
            self.monitor.notify()

    def _adopt_agent(self, p: rtc.RemoteParticipant) -> None:
        self.agent = p
        self.join.agent_identity = p.identity
        if self._t_dispatch is not None and not self._agent_joined.is_set():
            self.join.dispatch_to_join_s = time.monotonic() - self._t_dispatch
        self._agent_joined.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- speaking --------------------------------------------------------------------

    async def prepare(self, *texts: str) -> None:
        """Renders utterances ahead of time so speak() starts without synthesis delay."""
        for text in texts:
            await self.utterances.aget(text)

    async def speak(self, turn_id: str, text: str, *, max_speech_ms: float | None = None) -> float:
        """Sends the transcript packet, plays the utterance at real time; returns its end time.

        The end of utterance is when the last speech sample leaves the mic queue (trailing
        silence follows it). The mic queue drains at real time, so a sample's play time is
        the queue's run-dry time when it was captured plus its offset.
        """
        if self._source is None:
            raise RuntimeError("speak() before a successful start()")
        u = await self.utterances.aget(text)
        if max_speech_ms is not None:
            u = u.truncated(max_speech_ms, self.cfg.trail_ms)
        # The agent's scripted STT needs the transcript before the audio ends; a broken data
        # channel must not hang the caller, the turn then shows what the agent did without it.
        try:
            await asyncio.wait_for(self.room.local_participant.publish_data(
                json.dumps({"turn": turn_id, "text": text}), reliable=True, topic=TRANSCRIPT_TOPIC),
                self.cfg.connect_timeout_s)
        except Exception as e:  # reported in the turn's detail
            self._transcript_errors[turn_id] = f"transcript not sent: {type(e).__name__}: {e}"[:200]
        chunk = self.chunk_samples
        frames = _FRAMES.get(u, chunk)
        sr = u.sample_rate
        last = u.speech_end - 1
        eou = 0.0
        async with self._speak_lock:
            try:
                for i, frame in enumerate(frames):
                    self._cursor = max(self._cursor, time.monotonic())
                    if i == 0:
                        self._speech_started[turn_id] = self._cursor + u.speech_start / sr
                    if i * chunk <= last < (i + 1) * chunk:
                        eou = self._cursor + (u.speech_end - i * chunk) / sr
                    self._cursor += chunk / sr
                    await self._source.capture_frame(frame)
            except asyncio.CancelledError:
                self._source.clear_queue()
                self._cursor = time.monotonic()
                raise
        # Make "returned" imply "the agent could have heard the end" for short trails.
        delay = eou - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return eou

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
        """Starts speaking `after_ms` into the agent's first reply onset after `since`.

        The utterance's leading silence is skipped so that speech itself starts on time.
        """
        onset = await self.wait_for_onset(since, timeout_s or self.cfg.dead_air_timeout_s)
        if onset is None:
            return BargeInResult(turn_id, None)
        u = await self.utterances.aget(text)
        lead = u.speech_start / u.sample_rate
        # The mic queue adds up to two chunks before the first sample plays.
        target = onset + after_ms / 1000.0 - lead
        delay = target - max(time.monotonic(), self._cursor)
        if delay > 0:
            await asyncio.sleep(delay)
        eou = await self.speak(turn_id, text, max_speech_ms=max_speech_ms)
        started = self._speech_started.get(turn_id)
        return BargeInResult(turn_id, onset, None if started is None else started - onset, eou)

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
        or when `stop` is set (a barge-in: whatever was heard so far). Any lkrig.event
        error notice during the turn makes it agent_error.
        """
        cfg = self.cfg
        dead = since + (dead_air_timeout_s if dead_air_timeout_s is not None else cfg.dead_air_timeout_s)
        settle = settle_s if settle_s is not None else cfg.settle_s
        end_by = since + (turn_timeout_s if turn_timeout_s is not None else cfg.turn_timeout_s)
        mon = self.monitor
        seg = mon.segmenter
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
                e.get("event") == "error" for e in events):
            outcome = "agent_error"
        onset = mon.first_onset_after(since)
        segs = [SegmentOut(s.start - since, s.end - since) for s in seg.segments
                if onset is not None and onset <= s.start <= closed]
        speaking_at_eou = any(s.start < since < s.end for s in seg.segments) or (
            seg.speaking and seg.current_start is not None and seg.current_start < since)
        if seg.speaking and seg.current_start is not None and seg.current_start >= since:
            segs.append(SegmentOut(seg.current_start - since, (seg.last_active or closed) - since, True))
        return TurnResult(
            turn=turn_id,
            outcome=outcome,
            latency_s=None if onset is None else onset - since,
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


def _is_agent(p: rtc.RemoteParticipant) -> bool:
    return p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


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

if __name__ == "__main__":
    from loadgen.cli import main
    from loadgen.hard_exit import exit_now

    exit_now(main())
