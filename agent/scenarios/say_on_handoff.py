"""say_on_handoff: the agent announces every handoff from a `conversation_item_added` listener.

The session emits the AgentHandoff item right after it swaps the activities (1.8.9
agent_session.py:1950-1972), before it starts or resumes the new one. In that gap the current
activity's scheduling is still paused and there is no next activity, so say() refuses with
"AgentSession is closing, cannot use say()": on the way into the AgentTask (its activity not
started yet) and on the way back (the front desk not resumed yet). The session's event emitter
catches the error and logs "failed to emit event conversation_item_added"; the conversation goes
on without the announcements. livekit-agents <= 1.3.12 records handoffs without emitting them: the
listener never runs there.
"""

from typing import Any

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
        self.session.on("conversation_item_added", self._announce_handoff)
        self.session.say(dialog.GREETING)

    def _announce_handoff(self, ev: Any) -> None:
        if getattr(ev.item, "type", "") == "agent_handoff":
            self.session.say(dialog.FILLER)

    @function_tool
    async def get_programs(self, context: RunContext, user_query: str) -> str:
        """Find the programs that fit the caller's child."""
        await context.wait_for_playout()
        result = await CollectAgeGender(chat_ctx=self.chat_ctx, user_query=user_query)
        await context.userdata.latency.sleep("tool")
        return dialog.tool_result(result)


def entry_agent() -> Agent:
    return FrontDeskAgent()
