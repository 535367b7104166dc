"""The tables of `rig explain` (rig/explain.py): what a message's wording says about the
livekit-agents version; the agent patterns behind speech-scheduling errors (ROWS), the scenario file
that reproduces each (agent/scenarios/, one pattern a file) and the fix, the rows with no fix being
the fixes themselves; and the decision table (DECISIONS): what each pattern ends with on each
version, which docs/speech-scheduling.md prints (decision_markdown) and
tests/test_decision_table.py replays cell by cell."""

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
#  - "filler stopped on an error" comes from RunContext.with_filler's scheduler: 1.8.9 events.py:120,
#    filler_scheduler.py:112; neither in 1.3.12. Tags: with_filler itself is in 1.6.0, but this log
#    line is in no tag through 1.7.0 (the newest in the mirror checked): so after 1.7.0.
FILLER_STOPPED_MESSAGE: Range = ("1.7.1", None)
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
        "the task's not yet started activity and is refused (draining), every time; before 1.4.3 "
        "the refused speech is left pending, so the AgentTask's hand-back never finishes and the "
        "tool never returns; closing the session then cancels the tool, and the framework logs "
        "that its scheduling_task is not running (scheduler_not_running)",
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
        "the filler is said a fixed few event-loop iterations after the session first looks "
        "idle, which is inside the handoff, and one iteration decides where it lands: while the "
        "front desk is still pausing (longer with audio input to close) or the task is slow to "
        "start, it is refused, dropped and logged as 'filler stopped on an error'; once the "
        "task's activity has started, before the task's question if on_enter has not run yet, "
        "otherwise after it",
        "agent/scenarios/builtin_with_filler.py (rig replay --scenario builtin_with_filler "
        "--barge-in-ms 150)", FILLER_IN_ON_ENTER, WHY_CONFLICT),
    "say_before_handoff": Row(
        "session.say(filler), not awaited, on the line before `await` of the AgentTask",
        "no error: queued before the pause, which waits for it to play",
        "agent/scenarios/fix_say_before_handoff.py", None, WHY_CONFLICT),
    "filler_in_on_enter": Row(
        "the filler as the first line of the AgentTask's on_enter, not awaited",
        "no error: the task's activity has started, the filler is heard before its question",
        "agent/scenarios/fix_filler_in_on_enter.py", None, WHY_CONFLICT),
}


# -- the decision table ----------------------------------------------------------------------

FILLER_BEFORE = "before the question"  # the filler is heard before the task's question
FILLER_AFTER = "after the question"
FILLER_NOT_HEARD = "not heard"
ANSWERED = "answered"  # the caller got the front desk's answer
APOLOGY = "apology"  # the tool failed: the caller heard "sorry, something went wrong"
STUCK = "stuck"  # no answer: the session stopped at the handoff or the hand-back


@dataclass(frozen=True)
class Outcome:
    """How one call ends in the replay (agent/replay.py --timeline; tests/test_decision_table.py
    reads it off each run)."""
    errors: tuple[str, ...]  # the kinds the rig counted, in the order it counted them
    filler: str | None  # FILLER_*; None for a pattern without a filler
    end: str  # ANSWERED, APOLOGY or STUCK

    def text(self) -> str:
        parts = [" → ".join(f"`{e}`" for e in self.errors) or "no error"]
        if self.filler is not None:
            parts.append(f"filler {self.filler}")
        parts.append({ANSWERED: "answered", APOLOGY: "tool failed, apology",
                      STUCK: "**stuck**, no answer"}[self.end])
        return "; ".join(parts)


@dataclass(frozen=True)
class Decision:
    scenario: str  # agent/scenarios/<scenario>.py
    pattern: str
    legacy: Outcome | None  # 1.3.12, the caller silent during the preamble; None: no such API
    legacy_barge: Outcome | None  # 1.3.12, the caller making sound during the tool's preamble
    middle: Outcome | None  # 1.4.2 (the middle pin), the caller silent; None: no such API
    middle_barge: Outcome | None  # 1.4.2, the caller making sound during the tool's preamble
    # 1.8.9, text only (no audio input); a tuple: the endings a race inside the framework picks
    # from, most runs' first (builtin_with_filler: tests/test_with_filler_race.py)
    current: Outcome | tuple[Outcome, ...]
    current_barge: Outcome  # 1.8.9, the caller making sound during the tool's preamble
    fix: str
    rows: tuple[str, ...] = ()  # the ROWS that rig explain prints for its errors

    @property
    def path(self) -> str:
        return f"agent/scenarios/{self.scenario}.py"


def _o(errors: str, filler: str | None, end: str) -> Outcome:
    return Outcome(tuple(errors.split()), filler, end)


_WEDGED_BY_PAUSE = "circular_wait task_unfinished scheduler_not_running"
_NO_WITH_FILLER = "no `RunContext.with_filler` (from 1.6.0)"
DECISIONS: list[Decision] = [
    Decision(
        "seed", "tool: `create_task(say(filler))`, then `await` the AgentTask (the report's code)",
        _o("draining", FILLER_NOT_HEARD, STUCK),
        _o("draining " + _WEDGED_BY_PAUSE, FILLER_NOT_HEARD, STUCK),
        _o("draining", FILLER_NOT_HEARD, STUCK),
        _o("draining", FILLER_NOT_HEARD, STUCK),
        _o("draining", FILLER_NOT_HEARD, ANSWERED),
        _o("draining", FILLER_NOT_HEARD, ANSWERED),
        "filler first in the task's `on_enter` (row 4); upgrade to ≥ 1.4.3",
        ("create_task_say", "seed_barge_in")),
    Decision(
        "seed_sleep_before_say", "the same, the filler sleeping 0.5 s before `say()`",
        _o("", FILLER_AFTER, ANSWERED),
        _o(_WEDGED_BY_PAUSE + " draining", FILLER_NOT_HEARD, STUCK),
        _o("", FILLER_AFTER, ANSWERED),
        _o("", FILLER_AFTER, ANSWERED),
        _o("", FILLER_AFTER, ANSWERED),
        _o("", FILLER_AFTER, ANSWERED),
        "as row 1: a sleep only moves the filler behind the question (and a longer window, "
        "e.g. a slow task start, still refuses it)"),
    Decision(
        "fix_say_before_handoff", "tool: `say(filler)`, not awaited, on the line before `await` "
        "of the AgentTask",
        _o("", FILLER_BEFORE, ANSWERED),
        _o("", FILLER_BEFORE, ANSWERED),
        _o("", FILLER_BEFORE, ANSWERED),
        _o("", FILLER_BEFORE, ANSWERED),
        _o("", FILLER_BEFORE, ANSWERED),
        _o("", FILLER_BEFORE, ANSWERED),
        "a fix; the handoff waits for the filler to play",
        ("say_before_handoff",)),
    Decision(
        "fix_filler_in_on_enter", "the filler as the first line of the task's `on_enter`, "
        "not awaited",
        _o("", FILLER_BEFORE, ANSWERED),
        _o(_WEDGED_BY_PAUSE, FILLER_NOT_HEARD, STUCK),
        _o("", FILLER_BEFORE, ANSWERED),
        _o("", FILLER_BEFORE, ANSWERED),
        _o("", FILLER_BEFORE, ANSWERED),
        _o("", FILLER_BEFORE, ANSWERED),
        "the fix; on ≤ 1.3.x caller sound still wedges the handoff: upgrade to ≥ 1.4.0",
        ("filler_in_on_enter",)),
    Decision(
        "await_own_handle", "tool: `await context.speech_handle` (or its `wait_for_playout()`)",
        _o("circular_wait", None, APOLOGY),
        _o("circular_wait", None, APOLOGY),
        _o("circular_wait", None, APOLOGY),
        _o("circular_wait", None, APOLOGY),
        _o("circular_wait", None, APOLOGY),
        _o("circular_wait", None, APOLOGY),
        "`await context.wait_for_playout()` (RunContext's)",
        ("await_own_handle",)),
    Decision(
        "builtin_with_filler", "`async with context.with_filler(filler)` around the `await`",
        None, None, None, None,
        (_o("", FILLER_AFTER, ANSWERED), _o("", FILLER_BEFORE, ANSWERED),
         _o("filler_dropped", FILLER_NOT_HEARD, ANSWERED)),
        _o("filler_dropped", FILLER_NOT_HEARD, ANSWERED),
        "row 4 (`on_enter` runs once the task's activity has started)",
        ("with_filler",)),
    Decision(
        "with_filler_slow_task_start", "the same, the task slow to start (a toolset set up "
        "for 1 s)",
        None, None, None, None,
        _o("filler_dropped", FILLER_NOT_HEARD, ANSWERED),
        _o("filler_dropped", FILLER_NOT_HEARD, ANSWERED),
        "row 4"),
]

DECISION_HEADER = ("pattern (scenario)", "1.3.12, text only", "1.3.12, caller sound in the preamble",
                   "1.4.2, text only", "1.4.2, caller sound in the preamble", "1.8.9, text only",
                   "1.8.9, caller sound in the preamble", "fix")


def decision_markdown() -> str:
    """docs/speech-scheduling.md's decision table, as it must read there."""
    def cell(o: Outcome | tuple[Outcome, ...] | None) -> str:
        if isinstance(o, tuple):
            return "<br>**or** ".join(x.text() for x in o) + " (one event-loop iteration decides)"
        return o.text() if o is not None else _NO_WITH_FILLER

    lines = ["| # | " + " | ".join(DECISION_HEADER) + " |",
             "|---" * (len(DECISION_HEADER) + 1) + "|"]
    for i, d in enumerate(DECISIONS, 1):
        lines.append(f"| {i} | " + " | ".join([
            f"{d.pattern} (`{d.scenario}`)", cell(d.legacy), cell(d.legacy_barge), cell(d.middle),
            cell(d.middle_barge),
            cell(d.current), cell(d.current_barge), d.fix]) + " |")
    return "\n".join(lines) + "\n"
