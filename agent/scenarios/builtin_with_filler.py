"""builtin_with_filler: the framework's own filler, `RunContext.with_filler` (1.6.0 and later).

with_filler says the filler once the session has been idle for `delay` (0 by default). That
moment can fall inside the handoff's draining window (or, when the task's activity is slow to
start, the "AgentSession is closing" window): then the framework logs "filler stopped on an
error", counted as filler_dropped, and no filler plays. Otherwise the filler plays: after the
task's question, or before it when the task's activity has started but its on_enter has not run
yet. One event-loop iteration decides which (tests/test_with_filler_race.py). Not available
before 1.6.0 (the 1.3.12 and 1.4.2 pins): the worker refuses the scenario there.
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

        async with context.with_filler(dialog.FILLER):
            result = await CollectAgeGender(chat_ctx=self.chat_ctx, user_query=user_query)
        await context.userdata.latency.sleep("tool")
        return dialog.tool_result(result)


def entry_agent() -> Agent:
    return FrontDeskAgent()
