"""A cheap stand-in agent for the load-generator benchmark (not part of the product).

The benchmark measures the callers, so the far end must cost little and know exactly when it
spoke: this process joins rooms as an agent-kind participant (no livekit-agents, no VAD, no
subscription to the caller's audio), and answers each caller utterance announced on
`lkrig.transcript` with pre-rendered speech after a random delay. For every reply it publishes
`{"event": "bench_reply", "turn": id, "speech_start": t}` on `lkrig.event`, where t is the
CLOCK_MONOTONIC time its first speech sample entered the wire (shared by every process on the
host), which is the truth the caller's measured onset is compared with.

stdin: {"op": "join", "room": name, "seed": n} lines; end of input = leave every room, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from typing import Any

from livekit import api, rtc
from loadgen.audio import SAMPLE_RATE, Utterance, UtteranceCache
from loadgen.hard_exit import exit_now

REPLY = "Sure, we have soccer and swimming for her."
CHUNK_MS = 20
# The caller's utterance padding (loadgen.caller.CallerConfig lead_ms / trail_ms).
CALLER_LEAD_MS, CALLER_TRAIL_MS = 200.0, 300.0


class Room:
    def __init__(self, name: str, seed: int, owner: Responder) -> None:
        self.name = name
        self.rng = random.Random(seed)
        self.owner = owner
        self.room = rtc.Room()
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=2 * CHUNK_MS)
        self.cursor = 0.0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.done = asyncio.Event()

    async def run(self) -> None:
        o = self.owner
        token = (api.AccessToken(o.key, o.secret).with_identity(f"bench-agent-{self.name}")
                 .with_kind("agent")
                 .with_grants(api.VideoGrants(room_join=True, room=self.name, can_publish=True,
                                              can_subscribe=False, can_publish_data=True))
                 .to_jwt())

        @self.room.on("data_received")
        def _on_data(packet: rtc.DataPacket) -> None:
            if packet.topic != "lkrig.transcript":
                return
            arrival = time.monotonic()
            try:
                msg = json.loads(packet.data)
                turn, text = str(msg["turn"]), str(msg["text"])
            except (ValueError, KeyError, TypeError):
                return
            task = asyncio.ensure_future(self.reply(turn, text, arrival))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        @self.room.on("participant_disconnected")
        def _on_left(_p: rtc.RemoteParticipant) -> None:
            self.done.set()

        @self.room.on("disconnected")
        def _on_disconnected(_reason: Any) -> None:
            self.done.set()

        try:
            # Shielded: a cancelled Room.connect makes livekit-ffi 1.1.21 panic (see caller.py).
            connect = asyncio.ensure_future(
                self.room.connect(o.url, token, rtc.RoomOptions(auto_subscribe=False)))
            await asyncio.wait_for(asyncio.shield(connect), 15)
            track = rtc.LocalAudioTrack.create_audio_track("agent-voice", self.source)
            await self.room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            await self.done.wait()
        except Exception as e:
            print(f"responder: room {self.name}: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.room.disconnect()
            with contextlib.suppress(Exception):
                await self.source.aclose()

    async def reply(self, turn: str, text: str, arrival: float) -> None:
        # The caller sends the transcript right before its first frame: its speech ends about
        # lead + speech duration later. Only the reply's own start time has to be exact.
        said = await self.owner.caller_utts.aget(text)
        eou = arrival + said.speech_end / said.sample_rate
        await asyncio.sleep(max(0.0, eou + self.rng.uniform(0.3, 0.7) - time.monotonic()))
        u: Utterance = self.owner.reply
        chunk = SAMPLE_RATE * CHUNK_MS // 1000
        start = 0.0
        for i, frame in enumerate(self.owner.frames):
            self.cursor = max(self.cursor, time.monotonic())
            if i == 0:
                start = self.cursor + u.speech_start / u.sample_rate
                note = asyncio.ensure_future(self.room.local_participant.publish_data(
                    json.dumps({"event": "bench_reply", "turn": turn, "speech_start": start}),
                    reliable=True, topic="lkrig.event"))
                self.tasks.add(note)
                note.add_done_callback(self.tasks.discard)
            self.cursor += chunk / SAMPLE_RATE
            await self.source.capture_frame(frame)


class Responder:
    def __init__(self) -> None:
        self.url = os.environ["LIVEKIT_URL"]
        self.key = os.environ["LIVEKIT_API_KEY"]
        self.secret = os.environ["LIVEKIT_API_SECRET"]
        self.caller_utts = UtteranceCache(CALLER_LEAD_MS, CALLER_TRAIL_MS)
        self.reply = UtteranceCache(0.0, 100.0).get(REPLY)
        chunk = SAMPLE_RATE * CHUNK_MS // 1000
        pcm = self.reply.pcm
        self.frames = [rtc.AudioFrame(pcm[i:i + chunk].tobytes(), SAMPLE_RATE, 1, chunk)
                       for i in range(0, pcm.size - chunk + 1, chunk)]
        self.rooms: dict[str, asyncio.Task[None]] = {}

    async def main(self) -> None:
        from loadgen import ffi_routing

        ffi_routing.install()  # many rooms in one process: route capture callbacks
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            msg = json.loads(line)
            if msg.get("op") == "join":
                name = str(msg["room"])
                r = Room(name, int(msg.get("seed", 0)), self)
                task = loop.create_task(r.run())
                self.rooms[name] = task
                task.add_done_callback(lambda _t, n=name: self.rooms.pop(n, None))
        for t in list(self.rooms.values()):
            t.cancel()
        await asyncio.gather(*self.rooms.values(), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(Responder().main())
    exit_now(0)
