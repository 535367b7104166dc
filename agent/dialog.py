"""The scripted LLM's dialog policy: the front-desk conversation every scenario shares.

The caller asks for programs; the agent speaks a preamble and calls `get_programs`, which runs the
CollectAgeGender task; the task asks for the child's age and gender and records them (or cancels
on a refusal); the front desk answers. The scenarios differ only in how the agent code schedules
speech around that handoff, never in what is said.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

GREETING = "Hi, this is the front desk. How can I help you today?"
PREAMBLE = "Sure, let me check which programs we have."
FILLER = "Hmm, I am looking into the details, please wait for a second."
TASK_QUESTION = "How old is your child, and is it a boy or a girl?"
TASK_ACK = "Got it."
FINAL = "We have soccer and swimming for a {profile}."
CANCELLED = "No problem. Let me know if I can help with anything else."
TOOL_FAILED = "Sorry, something went wrong while I was looking that up."
FALLBACK = "Sorry, could you say that again?"

_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen".split())}
_GIRL = re.compile(r"\b(girl|daughter|female|she)\b", re.I)
_BOY = re.compile(r"\b(boy|son|male|he)\b", re.I)
_REFUSAL = re.compile(r"\b(rather not|don't want|do not want|no thanks|cancel|never mind)\b", re.I)
_PROGRAMS = re.compile(r"\b(programs?|classes|activities)\b", re.I)


@dataclass
class Reply:
    text: str = ""
    tool: str | None = None
    args: dict[str, object] = field(default_factory=dict)

    @property
    def arguments(self) -> str:
        return json.dumps(self.args)


def parse_age(text: str) -> int | None:
    if m := re.search(r"\b(\d{1,2})\b", text):
        return int(m.group(1))
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _NUMBERS:
            return _NUMBERS[word]
    return None


def parse_gender(text: str) -> str | None:
    if _GIRL.search(text):
        return "female"
    if _BOY.search(text):
        return "male"
    return None


def child_profile(age: int, gender: str) -> str:
    return f"{age} year old {'girl' if gender == 'female' else 'boy'}"


def tool_result(result: dict[str, object]) -> str:
    """What get_programs returns to the LLM once CollectAgeGender is done."""
    if "cancelled" in result:
        return f"cancelled: {result['cancelled']}"
    return f"programs for {child_profile(int(result['age']), str(result['gender']))}"  # type: ignore[call-overload]


def next_reply(last_kind: str, last_text: str, last_tool: str | None, tools: set[str]) -> Reply:
    """What the LLM says next, from the newest chat item.

    last_kind: "user" (a user message; `last_text` is its text) or "tool_output" (`last_tool`
    returned `last_text`).
    """
    if last_kind == "tool_output":
        if last_tool == "get_programs":
            if last_text.startswith("cancelled"):
                return Reply(CANCELLED)
            if last_text.startswith("programs for "):
                return Reply(FINAL.format(profile=last_text.removeprefix("programs for ")))
            return Reply(TOOL_FAILED)
        return Reply()  # the task's own tools: the hand-back speaks, not the task
    if "record_child_profile" in tools:  # inside CollectAgeGender
        if _REFUSAL.search(last_text):
            return Reply(tool="cancel_task", args={"reason": last_text})
        age, gender = parse_age(last_text), parse_gender(last_text)
        if age is not None and gender is not None:
            return Reply(TASK_ACK, "record_child_profile", {"age": age, "gender": gender})
        return Reply(TASK_QUESTION)
    if "get_programs" in tools and _PROGRAMS.search(last_text):
        return Reply(PREAMBLE, "get_programs", {"user_query": last_text})
    return Reply(FALLBACK)
