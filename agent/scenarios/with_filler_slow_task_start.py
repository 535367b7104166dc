"""with_filler_slow_task_start: `RunContext.with_filler` around an AgentTask that is slow to start.

The task owns a toolset whose setup() takes a second (an MCP server connecting, say). The
activity's start() awaits it before it resumes the task's speech scheduling (1.8.9
agent_activity.py:1067, then :1339), so the handoff's window stays open for that second.
with_filler says its filler as soon as the session is idle, within a few event-loop iterations of
the pause: inside the window, every time. The say() is refused, the framework logs "filler
stopped on an error" and no filler plays (counted as filler_dropped). Needs livekit-agents 1.6.0
or later (with_filler).
"""

import asyncio

from livekit.agents import Agent, AgentTask, ChatContext, RunContext, function_tool, llm

from .. import dialog
from . import ScenarioError

if not hasattr(RunContext, "with_filler"):
    raise ScenarioError("scenario 'with_filler_slow_task_start' needs RunContext.with_filler "
                        "(livekit-agents 1.6.0 or later)")

SETUP_S = 1.0


class SlowToolset(llm.Toolset):
    async def setup(self) -> "SlowToolset":
        await asyncio.sleep(SETUP_S)
        return await super().setup()


class CollectAgeGender(AgentTask[dict]):
    def __init__(self, chat_ctx: ChatContext, user_query: str) -> None:
        super().__init__(instructions="Collect the child's age and gender.", chat_ctx=chat_ctx,
                         tools=[SlowToolset(id="slow_setup")])
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
