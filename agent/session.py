"""Session wiring shared by the worker (real rooms) and `rig replay` (text mode, no server)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import livekit.agents as lka
from livekit.agents import Agent, AgentSession
from lkrig_instrument import envnames, names, prom

from . import scenarios
from .latency import Latency, Profile
from .providers.scripted_llm import ScriptedLLM
from .providers.scripted_stt import ScriptedSTT, TranscriptFeed

AGENTS_VERSION = lka.__version__
# The session's options by name, not by version: 1.4.2 still takes the older ones.
_OPTIONS = inspect.signature(AgentSession.__init__).parameters
# AgentSession.start's: where a pin has `session_host` (1.8.9; not 1.3.12 or 1.4.2), it hosts a
# remote session by default, writing every session event to the room as a byte stream
# (voice/remote_session.py) that no one in a rig room reads, and that fails as rooms close under
# load ("failed to send session event"). The rig's agent turns it off.
START_OPTIONS: dict[str, Any] = (
    {"session_host": False} if "session_host" in inspect.signature(AgentSession.start).parameters else {})


@dataclass
class RigData:
    """`context.userdata` for scenario code: the session's latency source."""

    latency: Latency
    scenario: str


def _providers(latency: Latency, feed: TranscriptFeed) -> dict[str, Any]:
    """Scripted by default; LKRIG_PROVIDERS=real uses OpenAI / Deepgram / Cartesia plugins with
    the keys from the environment (installed only in the `providers` image variant)."""
    from .providers.scripted_tts import ScriptedTTS

    if envnames.get("LKRIG_PROVIDERS", "scripted") != "real":
        return {"stt": ScriptedSTT(feed, latency), "llm": ScriptedLLM(latency),
                "tts": ScriptedTTS(latency)}
    from livekit.plugins import cartesia, deepgram, openai  # type: ignore[import-not-found]

    return {"stt": deepgram.STT(), "llm": openai.LLM(model="gpt-4o-mini"), "tts": cartesia.TTS()}


def build(scenario: str, profile: Profile, seed: int, *, feed: TranscriptFeed | None = None,
          vad: Any = None, time_scale: float = 1.0, replay: bool = False,
          ) -> tuple[AgentSession, Agent]:
    """(session, entry agent) for a scenario; raises ScenarioError for an unknown one."""
    module = scenarios.load(scenario)
    labels = {"scenario": scenario, "profile": profile.name, "agents_version": AGENTS_VERSION}

    def injected(component: str, seconds: float) -> None:
        prom.observe(names.INJECTED_LATENCY, {**labels, "component": component}, seconds)

    latency = Latency(profile, seed, time_scale=time_scale, on_sample=injected)
    kwargs: dict[str, Any] = {
        **_providers(latency, feed or TranscriptFeed()),
        "vad": vad,
        "userdata": RigData(latency, scenario),
    }
    if replay and vad is None:
        kwargs["stt"] = None  # text mode: no audio to transcribe
    if "turn_handling" not in _OPTIONS:
        kwargs.update(turn_detection="vad" if vad is not None else "manual",
                      preemptive_generation=False)
    else:
        kwargs.update(turn_handling={"turn_detection": "vad" if vad is not None else None,
                                     "preemptive_generation": {"enabled": False}})
    if replay and "aec_warmup_duration" in _OPTIONS:
        kwargs["aec_warmup_duration"] = None  # no echo to cancel in text mode
    return AgentSession(**kwargs), module.entry_agent()
