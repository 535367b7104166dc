"""seed: the user's pattern, as written.

`get_programs` waits for its preamble to play, starts a filler with a fire-and-forget
`session.say()`, and at once awaits the CollectAgeGender AgentTask. Awaiting the task pauses the
front desk's speech scheduling in the same event-loop step, so the filler's say() lands on an
activity that is draining/pausing: on 1.8.9 it is refused every time ("cannot schedule new speech
... draining/pausing"); on <= 1.3.12, caller sound during the preamble can also turn the pause
into a circular wait and a stuck session.
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

        asyncio.create_task(fillers())  # noqa: RUF006  (the user's code, as written)
        result = await CollectAgeGender(chat_ctx=self.chat_ctx, user_query=user_query)
        await context.userdata.latency.sleep("tool")
        return dialog.tool_result(result)


def entry_agent() -> Agent:
    return FrontDeskAgent()
