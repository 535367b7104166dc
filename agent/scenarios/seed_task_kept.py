"""seed_task_kept: the seed, with the filler's task kept in a variable of the tool.

The filler is refused exactly as in the seed, but asyncio reports an exception nobody retrieved
only when the Task object is freed ("Task exception was never retrieved", from Task.__del__).
The tool's frame holds the task until the tool is done, so the refusal reaches the log only then:
after the hand-back on 1.8.9, after the circular wait on <= 1.3.12 with caller sound, and not
while the wedged hand-back of <= 1.3.12 keeps the tool waiting. The error is the same; what the
log shows, and when, is not.
"""

import asyncio

from livekit.agents import Agent, AgentTask, ChatContext, RunContext, function_tool

from .. import dialog


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
            await context.session.say(dialog.FILLER)

        filler = asyncio.create_task(fillers())  # noqa: F841, RUF006  (kept, never awaited)
        result = await CollectAgeGender(chat_ctx=self.chat_ctx, user_query=user_query)
        await context.userdata.latency.sleep("tool")
        return dialog.tool_result(result)


def entry_agent() -> Agent:
    return FrontDeskAgent()
