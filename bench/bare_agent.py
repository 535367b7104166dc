"""A bare livekit-agents worker: the reference the rig's agent is measured against
(`bench/overhead.py --instrument bare`, issue #17 item 2).

    python -m bench.bare_agent start     # AGENT_NAME, AGENT_HOST, AGENT_HEALTH_PORT as the rig's

No scenario, no instrumentation, no /metrics server, no transcript feed, no process sampler: one
AgentSession wired the way livekit-agents' examples wire it, with the rig's silero VAD and
three providers that cost next to nothing and take the same fixed time as the benchmark's
profile (BARE_AGENT_DELAYS_MS, set by bench/overhead.py from it):
  * an STT that answers every VAD segment of speech longer than MIN_SPEECH_S with one fixed
    final transcript (the rig's answers a segment only when the caller announced one);
  * an LLM that answers every turn with the rig's fallback reply, one token per word;
  * a TTS that plays that reply (or the greeting the agent says on entering, as the rig's seed
    scenario does), rendered once per process with espeak-ng and kept in memory.
A caller hears the same reply after the same delays as from the rig's agent, so the two
workers' CPU per turn compare like with like. The session starts with the options the rig's
does (VAD turn detection, no preemptive generation, no session host): they change what the
framework does per turn, and the comparison is of everything else.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import shutil
import subprocess
import wave
from typing import Any

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    APIConnectOptions,
    JobContext,
    JobProcess,
    cli,
    llm,
    stt,
    tts,
    utils,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

# agent/dialog.py's GREETING and FALLBACK: what the rig's seed scenario says in a bench call
GREETING = "Hi, this is the front desk. How can I help you today?"
REPLY = "Sorry, could you say that again?"
TRANSCRIPT = "What programs do you have for kids?"
MIN_SPEECH_S = 0.5  # shorter VAD segments (a breath, a tail) get an empty final, which starts no turn
CHUNK_S = 0.1


DELAY_NAMES = ("stt_final", "llm_ttft", "llm_token", "tts_first_byte")  # a profile's, less its tool's


def delays() -> dict[str, float]:
    """BARE_AGENT_DELAYS_MS="stt_final=100,llm_ttft=300,llm_token=10,tts_first_byte=150", in s."""
    out = dict.fromkeys(DELAY_NAMES, 0.0)
    for part in filter(None, os.environ.get("BARE_AGENT_DELAYS_MS", "").split(",")):
        key, _, ms = part.partition("=")
        if key not in out:
            raise SystemExit(f"bare_agent: BARE_AGENT_DELAYS_MS: unknown delay {key!r} "
                             f"(known: {sorted(out)})")
        out[key] = float(ms) / 1000.0
    return out


DELAYS = delays()


class FixedSTT(stt.STT):
    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        speech_s = sum(f.samples_per_channel / f.sample_rate for f in frames)
        await asyncio.sleep(DELAYS["stt_final"])
        text = TRANSCRIPT if speech_s >= MIN_SPEECH_S else ""
        return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                               alternatives=[stt.SpeechData(language="en", text=text)])


class FixedLLM(llm.LLM):
    def chat(self, *, chat_ctx: llm.ChatContext, tools: list[Any] | None = None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS, **_: Any) -> llm.LLMStream:
        return FixedStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class FixedStream(llm.LLMStream):
    async def _run(self) -> None:
        request_id = utils.shortuuid("bare_")
        await asyncio.sleep(DELAYS["llm_ttft"])
        for i, word in enumerate(REPLY.split(" ")):
            if i:
                await asyncio.sleep(DELAYS["llm_token"])
            delta = llm.ChoiceDelta(role="assistant", content=word if i == 0 else " " + word)
            self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=delta))


def render(text: str) -> tuple[bytes, int]:
    """(16-bit mono PCM, rate) of `text` by espeak-ng, as the rig's TTS speaks it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("bare_agent: espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run([exe, "-v", "en-us", "-s", "170", "--stdout", text], check=True,
                         capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        return w.readframes(w.getnframes()), w.getframerate()


class PcmTTS(tts.TTS):
    def __init__(self, speech: dict[str, tuple[bytes, int]]) -> None:
        rate = speech[REPLY][1]
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=rate, num_channels=1)
        self.speech, self.rate = speech, rate

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
                   ) -> tts.ChunkedStream:
        return PcmStream(tts=self, input_text=text, conn_options=conn_options)


class PcmStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner: PcmTTS = self._tts  # type: ignore[assignment]
        pcm, rate = owner.speech.get(self.input_text, owner.speech[REPLY])
        await asyncio.sleep(DELAYS["tts_first_byte"])
        output_emitter.initialize(request_id=utils.shortuuid("bare_"), sample_rate=rate,
                                  num_channels=1, mime_type="audio/pcm")
        step = int(rate * CHUNK_S) * 2
        for i in range(0, len(pcm), step):
            output_emitter.push(pcm[i:i + step])
        output_emitter.flush()


def prewarm(proc: JobProcess) -> None:
    from livekit.plugins import silero

    proc.userdata["vad"] = silero.VAD.load()
    proc.userdata["speech"] = {text: render(text) for text in (GREETING, REPLY)}


def session_options() -> dict[str, Any]:
    params = inspect.signature(AgentSession.__init__).parameters
    if "turn_handling" in params:
        return {"turn_handling": {"turn_detection": "vad", "preemptive_generation": {"enabled": False}}}
    return {"turn_detection": "vad", "preemptive_generation": False}


class Greeter(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answer briefly.")

    async def on_enter(self) -> None:
        self.session.say(GREETING)


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession(vad=ctx.proc.userdata["vad"], stt=FixedSTT(), llm=FixedLLM(),
                           tts=PcmTTS(ctx.proc.userdata["speech"]), **session_options())
    start: dict[str, Any] = (
        {"session_host": False} if "session_host" in inspect.signature(AgentSession.start).parameters else {})
    await session.start(agent=Greeter(), room=ctx.room, **start)


def server() -> AgentServer:
    options: dict[str, Any] = {}
    if threshold := os.environ.get("AGENT_LOAD_THRESHOLD"):
        options["load_threshold"] = float(threshold)
    srv = AgentServer(host=os.environ.get("AGENT_HOST", "127.0.0.1"),
                      port=int(os.environ.get("AGENT_HEALTH_PORT", "8081")), setup_fnc=prewarm, **options)
    srv.rtc_session(entrypoint, agent_name=os.environ.get("AGENT_NAME", "lkrig-agent"))
    return srv


if __name__ == "__main__":
    cli.run_app(server())
