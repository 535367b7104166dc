"""fix_say_before_handoff: the filler is said, not awaited, before awaiting the task.

say() runs synchronously while the front desk still accepts speech, so the filler is queued
there; the pause waits for queued speech to play, so it is always heard in full, but the
handoff (and the task's question) is delayed by the filler's length.
"""

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

        context.session.say(dialog.FILLER)
        result = await CollectAgeGender(chat_ctx=self.chat_ctx, user_query=user_query)
        await context.userdata.latency.sleep("tool")
        return dialog.tool_result(result)


def entry_agent() -> Agent:
    return FrontDeskAgent()
