"""The Harbour Hotel front desk: written the way a user writes an agent, not one of the rig's
scenarios (its own classes, tools and words), with two speech-scheduling mistakes in it.

* `transfer_to_billing` hands off by returning an Agent, and keeps the line alive with a
  background `session.say()` loop until billing picks up. The handoff drains the concierge's
  speech scheduling: the first hold message said while it drains is refused ("cannot schedule
  new speech ... draining/pausing") and ends the loop with that exception.
* `look_up_balance` waits for its own speech handle ("until my 'one moment' has played"), which
  is the speech waiting for this tool: a circular wait, refused every time.

The only lines that are there for the rig: `server_options()`, the AgentSession import, and
`providers_or(...)` around the providers (each a no-op outside the rig).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import lkrig_instrument
from livekit.agents import Agent, AgentServer, JobContext, JobProcess, RunContext, function_tool
from lkrig_instrument import AgentSession

WELCOME = "Good evening, Harbour Hotel front desk."
HOLD = "Please stay on the line."
BILLING_INSTRUCTIONS = "You are the billing desk of the Harbour Hotel."


def _real_stt() -> Any:
    from livekit.plugins import deepgram  # type: ignore[import-not-found]

    return deepgram.STT()


def _real_llm() -> Any:
    from livekit.plugins import openai  # type: ignore[import-not-found]

    return openai.LLM(model="gpt-4o-mini")


def _real_tts() -> Any:
    from livekit.plugins import cartesia  # type: ignore[import-not-found]

    return cartesia.TTS()


class BillingDesk(Agent):
    def __init__(self, on_connected: Callable[[], None]) -> None:
        super().__init__(instructions=BILLING_INSTRUCTIONS)
        self._on_connected = on_connected

    async def on_enter(self) -> None:
        self._on_connected()
        self.session.generate_reply(instructions="Greet the guest on behalf of billing.")

    @function_tool
    async def look_up_balance(self, context: RunContext) -> str:
        """Look up what the guest owes."""
        await context.speech_handle  # meant: "once my 'one moment' has played"
        return "The guest owes 42 euros."


class Concierge(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the concierge of the Harbour Hotel.")

    async def on_enter(self) -> None:
        self.session.say(WELCOME)

    @function_tool
    async def transfer_to_billing(self, context: RunContext) -> Agent:
        """Transfer the guest to the billing desk."""
        connected = asyncio.Event()
        asyncio.create_task(self._hold_line(connected))  # noqa: RUF006 (the pattern under test)
        return BillingDesk(on_connected=connected.set)

    async def _hold_line(self, connected: asyncio.Event) -> None:
        while not connected.is_set():
            self.session.say(HOLD)
            await asyncio.sleep(0.5)


def new_session(vad: Any) -> AgentSession:
    return AgentSession(
        **lkrig_instrument.providers_or(stt=_real_stt, llm=_real_llm, tts=_real_tts), vad=vad)


def prewarm(proc: JobProcess) -> None:
    from livekit.plugins import silero

    proc.userdata["vad"] = silero.VAD.load()


server = AgentServer(setup_fnc=prewarm, **lkrig_instrument.server_options())


@server.rtc_session(agent_name="hotel-desk")
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = new_session(ctx.proc.userdata["vad"])
    await session.start(agent=Concierge(), room=ctx.room)
