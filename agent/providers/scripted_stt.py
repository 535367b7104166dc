"""An STT that returns what the caller says it is saying.

The caller publishes each utterance's transcript (lkrig_instrument.protocol) just before it
plays the utterance as real audio. The session's VAD finds the end of speech on that audio; the
framework then calls recognize() on the segment and we answer with the pending transcript after
the injected `stt_final` delay. Segments with no pending transcript (a cough, a second VAD
segment of one utterance) come back empty, and the framework ignores empty finals.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from lkrig_instrument import protocol

from ..latency import Latency


@dataclass
class Utterance:
    turn: str
    text: str


class TranscriptFeed:
    """Transcripts announced by the caller, in the order it will speak them."""

    def __init__(self) -> None:
        self._pending: deque[Utterance] = deque()
        self.last_turn: str | None = None

    def announce(self, payload: bytes) -> None:
        said = protocol.read_transcript(payload)
        if said is not None:
            self._pending.append(Utterance(*said))

    def listen(self, room: Any) -> None:
        """Take the transcripts announced in `room` (a livekit.rtc.Room)."""

        def on_data(packet: Any) -> None:
            if packet.topic == protocol.TRANSCRIPT_TOPIC:
                self.announce(packet.data)

        room.on("data_received", on_data)

    def take(self) -> Utterance | None:
        if not self._pending:
            return None
        utterance = self._pending.popleft()
        self.last_turn = utterance.turn
        return utterance


class ScriptedSTT(stt.STT):
    def __init__(self, feed: TranscriptFeed, latency: Latency) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._feed = feed
        self._latency = latency

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "lkrig"

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        utterance = self._feed.take()
        await self._latency.sleep("stt_final")
        text = utterance.text if utterance else ""
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language="en", text=text)],
        )
