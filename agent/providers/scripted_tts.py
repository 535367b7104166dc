"""A TTS that speaks with espeak-ng (real speech audio, cached per phrase), after the injected
`tts_first_byte` delay, streamed to the framework in 100 ms chunks."""

from __future__ import annotations

import asyncio

from livekit.agents import APIConnectOptions, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from .. import speech
from ..latency import Latency

SAMPLE_RATE = 22050  # espeak-ng's native rate
CHUNK_S = 0.1


class ScriptedTTS(tts.TTS):
    def __init__(self, latency: Latency) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                         sample_rate=SAMPLE_RATE, num_channels=1)
        self._latency = latency

    @property
    def model(self) -> str:
        return "espeak-ng"

    @property
    def provider(self) -> str:
        return "lkrig"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _Chunked(tts=self, input_text=text, conn_options=conn_options)


class _Chunked(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        latency: Latency = self._tts._latency  # type: ignore[attr-defined]
        first_byte = asyncio.ensure_future(latency.sleep("tts_first_byte"))
        pcm, rate = await speech.render(self.input_text)
        await first_byte
        output_emitter.initialize(request_id=utils.shortuuid("tts_"), sample_rate=rate,
                                  num_channels=1, mime_type="audio/pcm")
        step = int(rate * CHUNK_S) * 2
        for i in range(0, len(pcm), step):
            output_emitter.push(pcm[i:i + step])
            await asyncio.sleep(0)
        output_emitter.flush()
