"""The rig's scripted providers for a user's own agent: what `lkrig_instrument.providers_or`
returns with LKRIG_PROVIDERS=scripted (LKRIG_PROVIDERS_FACTORY defaults to `agent.providers.byo:build`).

* STT: the rig's ScriptedSTT. It answers with the transcript the rig's caller announces in the
  room before it speaks (lkrig_instrument.protocol), so it fits any agent (it needs the session's
  VAD to find the end of speech, like any non-streaming STT).
* TTS: the rig's ScriptedTTS (espeak-ng speech after the injected first-byte delay).
* LLM: only with LKRIG_LLM_SCRIPT=path.yaml, a conversation script for *your* agent (which tool to
  call on which words; see docs/bring-your-own-agent.md). Without one your own LLM stays: the rig
  cannot know your prompts and tools.

Latency comes from a profile (agent/profiles or LKRIG_PROFILE_DIR) named by the dispatch metadata's
`profile` (what the rig's callers and Locust send), else LKRIG_LATENCY_PROFILE, else `typical`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from livekit.agents import llm
from lkrig_instrument import envnames, names, prom, settings
from lkrig_instrument.capabilities import agents_version

from .. import dialog
from .. import latency as latency_mod
from .scripted_llm import ScriptedLLM
from .scripted_stt import ScriptedSTT, TranscriptFeed
from .scripted_tts import ScriptedTTS

SCRIPT_ENV = "LKRIG_LLM_SCRIPT"
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class ScriptError(ValueError):
    """A conversation script that does not parse; the message names the file and the step."""


# --- the conversation script ------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    agent: re.Pattern[str] | None = None  # on the current agent's instructions
    user: re.Pattern[str] | None = None  # on the newest message, which must be the user's
    after_tool: str | None = None  # the newest item is this tool's output
    error: bool | None = None  # ... and it failed (True) or not (False)
    say: str = ""
    call: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Script:
    steps: tuple[Step, ...]
    fallback: str

    def next(self, instructions: str, newest: tuple[str, str, str | None, bool],
             tools: set[str]) -> Step:
        """The first step whose conditions hold. `newest`: (kind, text, tool, is_error) of the
        newest chat item, kind one of user, tool_output, other."""
        kind, text, tool, is_error = newest
        for step in self.steps:
            if step.agent and not step.agent.search(instructions):
                continue
            if step.call and step.call not in tools:
                continue
            if kind == "tool_output":
                # only steps written for this output: anything else could call the tool again
                if step.after_tool != tool or (step.error is not None and step.error != is_error):
                    continue
            elif step.after_tool:
                continue
            elif step.user and not (kind == "user" and step.user.search(text)):
                continue
            return step
        if kind == "tool_output":
            return Step()  # nothing to add after a tool nobody wrote a step for
        return Step(say=self.fallback)


def _regex(value: Any, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ScriptError(f"{where}: expected a regular expression, got {value!r}")
    try:
        return re.compile(value, re.I)
    except re.error as e:
        raise ScriptError(f"{where}: not a valid regular expression ({e})") from None


def load_script(path: Path) -> Script:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScriptError(f"{path}: cannot read the conversation script ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ScriptError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise ScriptError(f"{path}: expected a mapping with a non-empty list `steps`")
    unknown = set(data) - {"steps", "fallback"}
    if unknown:
        raise ScriptError(f"{path}: unknown field {sorted(unknown)[0]!r}; fields: steps, fallback")
    steps = []
    keys = {"agent", "user", "after_tool", "error", "say", "call", "args"}
    for i, raw in enumerate(data["steps"]):
        where = f"{path}: steps[{i}]"
        if not isinstance(raw, dict):
            raise ScriptError(f"{where}: expected a mapping, got {raw!r}")
        if bad := set(raw) - keys:
            raise ScriptError(f"{where}: unknown field {sorted(bad)[0]!r}; fields: {', '.join(sorted(keys))}")
        if not raw.get("say") and not raw.get("call"):
            raise ScriptError(f"{where}: give `say`, `call` or both")
        if "error" in raw and not isinstance(raw["error"], bool):
            raise ScriptError(f"{where}.error: expected true or false")
        if "error" in raw and "after_tool" not in raw:
            raise ScriptError(f"{where}.error: only meaningful with after_tool")
        if "args" in raw and not isinstance(raw["args"], dict):
            raise ScriptError(f"{where}.args: expected a mapping of argument names to values")
        for name in ("say", "call", "after_tool"):
            if name in raw and not isinstance(raw[name], str):
                raise ScriptError(f"{where}.{name}: expected a string")
        steps.append(Step(
            agent=_regex(raw["agent"], f"{where}.agent") if "agent" in raw else None,
            user=_regex(raw["user"], f"{where}.user") if "user" in raw else None,
            after_tool=raw.get("after_tool"), error=raw.get("error"), say=raw.get("say", ""),
            call=raw.get("call"), args=dict(raw.get("args") or {})))
    fallback = data.get("fallback", "Sorry, could you say that again?")
    if not isinstance(fallback, str):
        raise ScriptError(f"{path}: fallback: expected a string")
    return Script(tuple(steps), fallback)


def _newest(chat_ctx: llm.ChatContext) -> tuple[str, str, str | None, bool]:
    calls = {i.call_id: i.name for i in chat_ctx.items if i.type == "function_call"}
    for item in reversed(chat_ctx.items):
        if item.type == "function_call_output":
            return "tool_output", str(item.output), calls.get(item.call_id, item.name), bool(item.is_error)
        if item.type == "message" and item.role == "user":
            return "user", item.text_content or "", None, False
        if item.type == "message" and item.role == "assistant":
            return "other", item.text_content or "", None, False
    return "other", "", None, False


def _instructions(chat_ctx: llm.ChatContext) -> str:
    return "\n".join(i.text_content or "" for i in chat_ctx.items
                     if i.type == "message" and i.role in ("system", "developer"))


class ConversationLLM(ScriptedLLM):
    """An LLM that follows a conversation script, with the profile's llm_ttft / llm_token."""

    def __init__(self, script: Script, latency: latency_mod.Latency) -> None:
        def policy(chat_ctx: llm.ChatContext, tools: set[str]) -> dialog.Reply:
            step = script.next(_instructions(chat_ctx), _newest(chat_ctx), tools)
            return dialog.Reply(step.say, step.call, dict(step.args))

        super().__init__(latency, policy, model="conversation-script")


# --- the factory ---------------------------------------------------------------------------------
def _job_metadata() -> tuple[Any, dict[str, Any]]:
    """(room, dispatch metadata) of the running job, or (None, {}) outside a job."""
    try:
        from livekit.agents import get_job_context

        ctx = get_job_context()
    except Exception:
        return None, {}
    try:
        meta = json.loads(ctx.job.metadata or "{}")
    except ValueError:
        meta = {}
    return ctx.room, meta if isinstance(meta, dict) else {}


def _profile(meta: dict[str, Any]) -> latency_mod.Profile:
    name = meta.get("profile")
    if not (isinstance(name, str) and _PROFILE_NAME.fullmatch(name)):
        name = envnames.get("LKRIG_LATENCY_PROFILE").strip() or "typical"  # a name, never a path
    return latency_mod.load(name)


def build(kinds: Sequence[str]) -> dict[str, Any]:
    room, meta = _job_metadata()
    profile = _profile(meta)
    seed = meta.get("seed") if isinstance(meta.get("seed"), int) else 0
    labels = {"scenario": settings.scenario(), "profile": profile.name,
              "agents_version": agents_version()}

    def injected(component: str, seconds: float) -> None:
        prom.observe(names.INJECTED_LATENCY, {**labels, "component": component}, seconds)

    latency = latency_mod.Latency(profile, seed, on_sample=injected)
    out: dict[str, Any] = {"profile": profile.name}
    if "stt" in kinds:
        feed = TranscriptFeed()
        if room is not None:
            feed.listen(room)
        out["stt"] = ScriptedSTT(feed, latency)
    if "tts" in kinds:
        out["tts"] = ScriptedTTS(latency)
    if "llm" in kinds and (script := envnames.get(SCRIPT_ENV).strip()):
        out["llm"] = ConversationLLM(load_script(Path(script)), latency)
    return out
