"""A cheap stand-in agent for the load-generator benchmarks (not part of the product).

The benchmark measures the callers, so the far end must cost little and know exactly when it
spoke: this process joins rooms as an agent-kind participant through the callers' own media
engine (loadgen/media.py; no livekit-agents, no VAD, no subscription to the caller's audio),
and answers each caller utterance announced on the transcript topic (lkrig_instrument.protocol)
with pre-rendered speech after a random delay. After each reply it publishes
`{"event": "bench_reply", "turn": id, "speech_start": t}` on the event topic, where t is the
CLOCK_MONOTONIC time its first speech sample went out (shared by every process on the host):
the truth the caller's measured onset is compared with.

With "talk_every": s in its join line it answers nothing and speaks the reply every s seconds
instead: the agent of `lk perf agent-load-test`'s echo rooms (bench/lkecho.py), whose echo
participant only repeats what it hears.

stdin: {"op": "join", "room": name, "seed": n[, "talk_every": s]} lines; end of input = leave
every room, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

from lkrig_instrument import protocol

from loadgen.audio import UtteranceCache
from loadgen.media import MediaEngine

REPLY = "Sure, we have soccer and swimming for her."
# The caller's utterance padding (loadgen.caller.CallerConfig lead_ms / trail_ms).
CALLER_LEAD_MS, CALLER_TRAIL_MS = 200.0, 300.0


class Room:
    def __init__(self, name: str, seed: int, owner: Responder, talk_every: float = 0.0) -> None:
        self.name = name
        self.talk_every = talk_every
        self.rng = random.Random(seed)
        self.owner = owner
        self.room = owner.engine.room(name, self)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.done = asyncio.Event()

    def on_media(self, ev: dict[str, Any]) -> None:
        kind = ev.get("ev")
        if kind == "data" and ev.get("topic") == protocol.TRANSCRIPT_TOPIC:
            said = protocol.read_transcript(ev["payload"])
            if said is None:
                return
            turn, text = said
            task = asyncio.ensure_future(self.reply(turn, text, float(ev["t"])))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind in ("participant_left", "disconnected", "engine_exit"):
            self.done.set()

    async def run(self) -> None:
        try:
            res = await self.room.join(self.name, f"bench-agent-{self.name}", 15.0, as_agent=True,
                                       listen=False)
            if res.get("ev") != "joined":
                print(f"responder: room {self.name}: {res.get('step')}: {res.get('error')}", file=sys.stderr)
                return
            if self.talk_every:
                talk = asyncio.ensure_future(self.talk())
                self.tasks.add(talk)
            await self.done.wait()
        finally:
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.room.leave()

    async def talk(self) -> None:
        at = time.monotonic()
        while True:
            await self.room.play(self.owner.reply, not_before=at)
            at += self.talk_every

    async def reply(self, turn: str, text: str, arrival: float) -> None:
        # The caller sends the transcript right before its utterance: its speech ends about
        # lead + speech duration later. Only the reply's own start time has to be exact.
        said = await self.owner.caller_utts.aget(text)
        eou = arrival + said.speech_end / said.sample_rate
        await asyncio.sleep(max(0.0, eou + self.rng.uniform(0.3, 0.7) - time.monotonic()))
        start, _ = await self.room.play(self.owner.reply)
        note = json.dumps({"event": "bench_reply", "turn": turn, "speech_start": start})
        with contextlib.suppress(Exception):
            await self.room.publish_data(protocol.EVENT_TOPIC, note, 10.0)


class Responder:
    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.caller_utts = UtteranceCache(CALLER_LEAD_MS, CALLER_TRAIL_MS)
        self.reply = UtteranceCache(0.0, 100.0).get(REPLY)
        self.rooms: dict[str, asyncio.Task[None]] = {}

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            msg = json.loads(line)
            if msg.get("op") == "join":
                name = str(msg["room"])
                r = Room(name, int(msg.get("seed", 0)), self, float(msg.get("talk_every", 0.0)))
                task = loop.create_task(r.run())
                self.rooms[name] = task
                task.add_done_callback(lambda _t, n=name: self.rooms.pop(n, None))
        for t in list(self.rooms.values()):
            t.cancel()
        await asyncio.gather(*self.rooms.values(), return_exceptions=True)


async def amain() -> None:
    engine = await MediaEngine.start()
    try:
        await Responder(engine).main()
    finally:
        await engine.close()


if __name__ == "__main__":
    asyncio.run(amain())
