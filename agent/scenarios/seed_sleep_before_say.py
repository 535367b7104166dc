"""seed_sleep_before_say: the seed, with the filler sleeping before its say().

The usual first fix: `await asyncio.sleep(...)` before `session.say()` in the filler task. Half a
second is far longer than the handoff's draining window here (a few event-loop iterations when the
task's activity starts at once), so the filler's say() reaches the task's activity after it has
started, and after its on_enter queued the task's question: no error, but the filler plays after
the question it was meant to precede. A window that outlasts the sleep (a slow task start: toolset
or MCP setup, a realtime session) still refuses it, and on <= 1.3.12 the sleep does nothing about
the circular wait that caller sound causes (the framework raises it, not the filler).
"""

import asyncio

from livekit.agents import Agent, AgentTask, ChatContext, RunContext, function_tool

from .. import dialog

FILLER_DELAY_S = 0.5


class CollectAgeGender(AgentTask[dict]):
    def __init__(self, chat_ctx: ChatContext, user_query: str) -> None:
        super().__init__(instructions="Collect the child's age and gender.", chat_ctx=chat_ctx)
        self.user_query = user_query

    async def on_enter(self) -> None:
        await self.session.generate_reply(
            instructions="Ask for the child's age and gender.", user_input=self.user_query)

    @function_tool
    async def record_child_profile(self, context: RunContext, age: int, gender: str) -> str:
        """Record the child's age and gender."""
        self.complete({"age": age, "gender": gender})
        return "recorded"

    @function_tool
    async def cancel_task(self, context: RunContext, reason: str) -> str:
        """The caller does not want to give the child's age and gender."""
        self.complete({"cancelled": reason})
        return "cancelled"


class FrontDeskAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the front desk of a kids' sports club.")

    async def on_enter(self) -> None:
        self.session.say(dialog.GREETING)

    @function_tool
    async def get_programs(self, context: RunContext, user_query: str) -> str:
        """Find the programs that fit the caller's child."""
        await context.wait_for_playout()

        async def fillers() -> None:
            await asyncio.sleep(FILLER_DELAY_S)
            await context.session.say(dialog.FILLER)

        asyncio.create_task(fillers())  # noqa: RUF006  (the user's code, as written)
        result = await CollectAgeGender(chat_ctx=self.chat_ctx, user_query=user_query)
        await context.userdata.latency.sleep("tool")
        return dialog.tool_result(result)


def entry_agent() -> Agent:
    return FrontDeskAgent()
