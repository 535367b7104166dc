"""The two tables of `rig explain` (rig/explain.py): what a message's wording says about the
livekit-agents version, and the decision table: the agent patterns behind speech-scheduling errors,
the scenario file that reproduces each (agent/scenarios/, one pattern a file) and the fix. The rows
with no fix are the fixes themselves; the rows are docs/speech-scheduling.md's, in short."""

from __future__ import annotations

import re
from dataclasses import dataclass

Range = tuple[str | None, str | None]  # livekit-agents versions: [lower, upper), None = open

# What a message's wording says about the version. Checked in the two installed wheels
# (.venv: 1.8.9; ~/.cache/lkrig/venv-agents-1.3.12: 1.3.12; files under livekit/agents/voice/) and,
# for the release where the wording changed, in livekit/agents' git tags (livekit-agents@X).
#  - draining: 1.3.12 agent_activity.py:993 ends at "draining/pausing"; 1.8.9 agent_activity.py:2026
#    adds taxonomy.CANCELLED_SUFFIX. Tags: the suffix first in 1.4.3 (1.4.2 has none); the message
#    first in 1.2.0 (1.1.7 says "the agent is draining", which the taxonomy does not match).
#  - not running: 1.3.12 agent_activity.py:998 ends "not running."; 1.8.9 agent_activity.py:2031
#    adds the suffix. Tags: the same releases as the draining message.
SHORT_MESSAGE: Range = ("1.2.0", "1.4.3")
SUFFIXED_MESSAGE: Range = ("1.4.3", None)
#  - the circular-wait guard: 1.3.12 speech_handle.py:147, 1.8.9 speech_handle.py:248. Tags: first
#    in 1.2.2.
CIRCULAR_GUARD: Range = ("1.2.2", None)
#  - raised by the framework: pause -> _close_session -> _interrupt_paused_speech ->
#    `await self._paused_speech.interrupt()` inside the tool's task (1.3.12 agent_activity.py:671,
#    :718, :2766). Tags: _close_session calls _interrupt_paused_speech from 1.2.7 to 1.3.12; from
#    1.4.0 it calls _cancel_speech_pause(interrupt=False) (1.8.9 agent_activity.py:1644).
CIRCULAR_FRAMEWORK: Range = ("1.2.7", "1.4.0")
#  - "filler stopped on an error" comes from RunContext.with_filler: 1.8.9 events.py:120,
#    filler_scheduler.py:112; neither in 1.3.12. Tags: first in 1.6.0.
WITH_FILLER: Range = ("1.6.0", None)
#  - "AgentSession is closing, cannot use say()" (1.3.12 agent_session.py:885, 1.8.9 :1574) and
#    "The asyncio.Task finished before" (1.3.12 agent.py:733, 1.8.9 agent.py:994) read the same in
#    both: they date nothing.
UPGRADE_BELOW = "1.4.3"  # the release with both fixes; older versions get the upgrade advice


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def spec(r: Range | None) -> str | None:
    """A range as a PEP 440 specifier (`>=1.2.0,<1.4.3`); None for "any version"."""
    if r is None:
        return None
    return ",".join([*([f">={r[0]}"] if r[0] else []), *([f"<{r[1]}"] if r[1] else [])]) or None


def intersect(ranges: list[Range]) -> Range | None:
    """The versions every range allows; None if there are none (logs of more than one version)."""
    lows = [r[0] for r in ranges if r[0]]
    highs = [r[1] for r in ranges if r[1]]
    low = max(lows, key=version_key) if lows else None
    high = min(highs, key=version_key) if highs else None
    if low and high and version_key(low) >= version_key(high):
        return None
    return (low, high)


DOC = "docs/speech-scheduling.md"
WHY_CONFLICT = "#2-why-a-filler-and-the-tasks-speech-scheduled-at-nearly-the-same-time-conflict"
WHO_DECIDES = "#3-how-the-framework-decides-whether-speech-is-allowed"
WHY_CIRCULAR = "#4-why-it-sometimes-becomes-a-circular-wait-instead"

# the frames of livekit-agents < 1.4.0 that await the tool's own preamble while pausing for an
# AgentTask (1.3.12 voice/agent_activity.py:671 pause, :718 _close_session, :2766
# _interrupt_paused_speech)
PAUSE_PATH = frozenset({"_close_session", "_interrupt_paused_speech"})

FILLER_IN_ON_ENTER = """\
Say the filler as the first line of the AgentTask's on_enter, not awaited, and take the
create_task(say) out of the tool (agent/scenarios/fix_filler_in_on_enter.py):

    class CollectAgeGender(AgentTask[dict]):
        async def on_enter(self) -> None:
            self.session.say("One moment, let me look that up.")  # first line, not awaited
            await self.session.generate_reply(instructions="Ask for the child's age and gender.")

    @function_tool
    async def get_programs(self, context: RunContext, user_query: str) -> str:
        await context.wait_for_playout()  # RunContext's, never the SpeechHandle's
        result = await CollectAgeGender(chat_ctx=self.chat_ctx, user_query=user_query)
        ...

Or say it, not awaited, on the line before `await CollectAgeGender(...)`
(agent/scenarios/fix_say_before_handoff.py): always heard, but the handoff waits for it."""

RUN_CONTEXT_PLAYOUT = """\
Wait for the speech before the tool with RunContext's wait_for_playout, not the tool's own handle
(which waits for the tool: agent/scenarios/fix_filler_in_on_enter.py does this):

    await context.wait_for_playout()  # not `await context.speech_handle`,
                                      # nor `await session.current_speech`"""

UPGRADE = """\
Upgrade livekit-agents to at least 1.4.3 (pip install 'livekit-agents>=1.4.3'): from 1.4.0 the
pause for an AgentTask no longer awaits the paused speech inside your tool (no circular wait from
the framework), and from 1.4.3 a refused speech is interrupted instead of left pending (a pending
one keeps the AgentTask's hand-back from finishing: the tool never returns)."""


@dataclass(frozen=True)
class Row:
    pattern: str  # the agent's code, as the user wrote it
    result: str  # what livekit-agents does with it
    scenario: str | None  # the scenario file that reproduces it
    fix: str | None  # None: the row is a fix
    anchor: str

    @property
    def doc(self) -> str:
        return DOC + self.anchor

    def fix_text(self, upgrade: bool) -> str | None:
        """The fix; `upgrade`: the log's version is one that needs the upgrade too."""
        if self.fix is None:
            return None
        return f"{self.fix}\n\n{UPGRADE}" if upgrade else self.fix


ROWS: dict[str, Row] = {
    "create_task_say": Row(
        "a function tool starts a filler with asyncio.create_task(... session.say(...)) and then "
        "awaits an AgentTask",
        "awaiting the task pauses the agent before the filler's task first runs; its say() goes to "
        "the task's not yet started activity and is refused (draining), every time",
        "agent/scenarios/seed.py", FILLER_IN_ON_ENTER, WHY_CONFLICT),
    "seed_barge_in": Row(
        "the same tool (filler, then await of an AgentTask) on livekit-agents < 1.4.0, with the "
        "caller making sound during the tool's preamble",
        "the pause (_close_session -> _interrupt_paused_speech) awaits the tool's own preamble "
        "inside the tool: a circular wait raised by the framework; the AgentTask never starts, the "
        "scheduler stops (task_unfinished, scheduler_not_running) and the session is stuck",
        "agent/scenarios/seed.py (rig replay --agents-version 1.3.12 --scenario seed "
        "--barge-in-ms 150)", FILLER_IN_ON_ENTER, WHY_CIRCULAR),
    "await_own_handle": Row(
        "a function tool awaits its own SpeechHandle: await context.speech_handle, "
        "context.speech_handle.wait_for_playout(), or session.current_speech",
        "the handle waits for the tool and the tool for the handle: a circular wait, every time",
        "agent/scenarios/await_own_handle.py", RUN_CONTEXT_PLAYOUT, WHY_CIRCULAR),
    "say_in_window": Row(
        "your code calls say() or generate_reply() while a handoff or an AgentTask has the agent's "
        "speech scheduling paused or draining",
        "refused: draining while the new activity has not started, closing between the swap and "
        "its start", None, FILLER_IN_ON_ENTER, WHO_DECIDES),
    "with_filler": Row(
        "async with context.with_filler(...) around the AgentTask (livekit-agents >= 1.6.0)",
        "the filler is said once the session is idle, which can fall in the handoff's window: "
        "dropped and logged as 'filler stopped on an error'",
        "agent/scenarios/builtin_with_filler.py", FILLER_IN_ON_ENTER, WHY_CONFLICT),
    "say_before_handoff": Row(
        "session.say(filler), not awaited, on the line before `await` of the AgentTask",
        "no error: queued before the pause, which waits for it to play",
        "agent/scenarios/fix_say_before_handoff.py", None, WHY_CONFLICT),
    "filler_in_on_enter": Row(
        "the filler as the first line of the AgentTask's on_enter, not awaited",
        "no error: the task's activity has started, the filler is heard before its question",
        "agent/scenarios/fix_filler_in_on_enter.py", None, WHY_CONFLICT),
}
