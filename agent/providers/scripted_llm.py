"""An LLM whose replies and tool calls follow agent/dialog.py, with injected latency:
`llm_ttft` before the first token, then `llm_token` between words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livekit.agents import APIConnectOptions, llm, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from .. import dialog
from ..latency import Latency


def _last_item(chat_ctx: llm.ChatContext) -> tuple[str, str, str | None]:
    """(kind, text, tool name) of the newest user message or tool output."""
    calls = {i.call_id: i.name for i in chat_ctx.items if i.type == "function_call"}
    for item in reversed(chat_ctx.items):
        if item.type == "function_call_output":
            return "tool_output", str(item.output), calls.get(item.call_id, item.name)
        if item.type == "message" and item.role == "user":
            return "user", item.text_content or "", None
    return "user", "", None


# what to say next and which tool to call, given the chat so far and the tools on offer
Policy = Callable[[llm.ChatContext, set[str]], dialog.Reply]


def dialog_policy(chat_ctx: llm.ChatContext, tools: set[str]) -> dialog.Reply:
    return dialog.next_reply(*_last_item(chat_ctx), tools)


class ScriptedLLM(llm.LLM):
    def __init__(self, latency: Latency, policy: Policy = dialog_policy,
                 model: str = "scripted") -> None:
        super().__init__()
        self._latency = latency
        self._policy = policy
        self._model = model

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        return "lkrig"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[Any] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[Any] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _Stream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _Stream(llm.LLMStream):
    async def _run(self) -> None:
        owner: ScriptedLLM = self._llm  # type: ignore[assignment]
        latency = owner._latency
        names = {t.info.name for t in self._tools if hasattr(t, "info")}
        reply = owner._policy(self._chat_ctx, names)
        request_id = utils.shortuuid("lkrig_")
        await latency.sleep("llm_ttft")
        words = reply.text.split(" ") if reply.text else []
        for i, word in enumerate(words):
            if i:
                await latency.sleep("llm_token")
            self._event_ch.send_nowait(llm.ChatChunk(
                id=request_id,
                delta=llm.ChoiceDelta(role="assistant", content=word if i == 0 else " " + word)))
        if reply.tool:
            call = llm.FunctionToolCall(
                name=reply.tool, call_id=utils.shortuuid("call_"), arguments=reply.arguments)
            self._event_ch.send_nowait(llm.ChatChunk(
                id=request_id, delta=llm.ChoiceDelta(role="assistant", tool_calls=[call])))
