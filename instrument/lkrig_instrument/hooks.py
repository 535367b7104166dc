"""Public-hook instrumentation of a livekit-agents AgentSession: one call, `instrument(session)`.

Hooks used (all public; nothing in livekit internals is patched):
  * the event loop's exception handler, chained to the one already set, and handlers on the
    `livekit.agents` and `asyncio` loggers: exceptions from fire-and-forget tasks, tool errors,
    with_filler drops, framework warnings;
  * `speech_created`, then the handle's `scheduled` / `interrupted` / done state;
  * `user_input_transcribed`, `conversation_item_added` (turns, handoffs, turn metrics), `close`;
  * `session.history`, read every half second and at the end, for handoffs on versions that
    record them without emitting them (1.3.12); one count per handoff item id either way;
  * `tool_execution_updated` where it exists (1.8), to name the tools running when an error
    is counted or a session is stuck;
  * `session.current_agent` and the speech handles, polled, to find sessions that are stuck:
    an AgentTask that never hands back, or a speech that never finishes.

What a version lacks is said once per process in the log (`capabilities.report_once`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from . import capabilities, names, process_sampler, prom
from .ledger import CURRENT_OWNER, LEDGER, Labels
from .taxonomy import FILLER_DROPPED, SESSION_EVENT_UNSENT, TOOL_FAILED

log = logging.getLogger("lkrig.instrument")

STUCK_TIMEOUT_S = 30.0
_STAGES = {  # ChatMessage.metrics key -> stage label
    "e2e_latency": "e2e",
    "llm_node_ttft": "llm_ttft",
    "tts_node_ttfb": "tts_ttfb",
    "end_of_turn_delay": "end_of_turn",
    "transcription_delay": "transcription",
}


class _LogTap(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if message == SESSION_EVENT_UNSENT:  # not a scheduling error: a metric of its own
                owner = CURRENT_OWNER.get()
                prom.inc(names.SESSION_EVENTS_UNSENT, getattr(owner, "labels", None) or LEDGER.default_labels)
                return
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                if TOOL_FAILED in message:
                    origin = "tool"
                elif FILLER_DROPPED in message:
                    origin = "filler"
                elif record.name == "asyncio":
                    origin = "asyncio"
                else:
                    origin = "log"
                LEDGER.exception_seen(exc, origin)
            elif record.name.startswith("livekit.agents"):
                LEDGER.log_message(message)
        except Exception:  # a logging handler must never raise into the framework
            self.handleError(record)


_tap = _LogTap()
_hooked_loops: set[int] = set()


def install_process_hooks(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Idempotent. Needed once per process and event loop; instrument() calls it."""
    for name in ("livekit.agents", "asyncio"):
        logger = logging.getLogger(name)
        if _tap not in logger.handlers:
            logger.addHandler(_tap)
        if logger.getEffectiveLevel() > logging.WARNING:
            # the records we count are WARNING/ERROR; a quieter level would drop them unseen
            logger.setLevel(logging.WARNING)
    loop = loop or asyncio.get_running_loop()
    if id(loop) in _hooked_loops:
        return
    _hooked_loops.add(id(loop))
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            LEDGER.exception_seen(exc, "asyncio")
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)


class SessionProbe:
    """What instrument() returns: counts for one session, and the hooks to undo."""

    def __init__(self, session: Any, labels: Labels, stuck_timeout: float) -> None:
        self.session = session
        self.labels = labels
        self.stuck_timeout = stuck_timeout
        self.stuck = False
        self.closed = False
        self.close_reason = ""
        self.turns = 0
        self.handoffs = 0
        self._handoff_ids: set[str] = set()
        self._running_tools: dict[str, str] = {}  # call_id -> tool name (tool_execution_updated)
        self.speeches: list[tuple[str, Any]] = []  # (source, handle), in creation order
        self._created_at: list[float] = []
        self._task_seen: tuple[int, float] | None = None
        self._task_last_seen = 0.0
        self._watch: asyncio.Task[None] | None = None
        self._tasks_sampled_at = time.monotonic()
        self._ended = False
        self._on_close_fns: list[Callable[[SessionProbe], None]] = []

    def on_close(self, fn: Callable[[SessionProbe], None]) -> None:
        self._on_close_fns.append(fn)

    # -- events ----------------------------------------------------------------------------
    def _speech_created(self, ev: Any) -> None:
        source = "say" if ev.source == "say" else "generate_reply"
        if not getattr(ev, "user_initiated", True) and ev.source != "say":
            source = "auto_reply"
        handle = ev.speech_handle
        self.speeches.append((source, handle))
        self._created_at.append(time.monotonic())
        prom.inc(names.SPEECHES_CREATED, {**self.labels, "source": source})
        LEDGER.speech_created(handle, self.labels, owner=self)

        def done(h: Any) -> None:
            outcome = ("played" if not h.interrupted
                       else "interrupted" if h.scheduled else "rejected")
            prom.inc(names.SPEECHES_DONE, {**self.labels, "source": source, "outcome": outcome})

        handle.add_done_callback(done)

    def _transcribed(self, ev: Any) -> None:
        if getattr(ev, "is_final", False) and str(getattr(ev, "transcript", "")).strip():
            self.count_turn()

    def count_turn(self) -> None:
        self.turns += 1
        prom.inc(names.TURNS, self.labels)

    def _handoff_seen(self, item: Any) -> None:
        if getattr(item, "old_agent_id", None) is None:
            return  # the session's first agent: a start, not a handoff
        item_id = str(getattr(item, "id", id(item)))
        if item_id in self._handoff_ids:
            return  # seen through the event and in the history: one handoff
        self._handoff_ids.add(item_id)
        self.handoffs += 1
        prom.inc(names.HANDOFFS, self.labels)

    def _scan_history(self) -> None:
        """Handoffs that were recorded in the history without an event (1.3.12 inserts its
        AgentHandoff items into the chat context but does not emit them)."""
        try:
            items = list(self.session.history.items)
        except Exception:  # no history yet, or a session type without one
            return
        for item in items:
            if getattr(item, "type", "") == "agent_handoff":
                self._handoff_seen(item)

    def _tool_update(self, ev: Any) -> None:
        update = getattr(ev, "update", None)
        kind = getattr(update, "type", "")
        if kind == "tool_call_started":
            call = update.function_call
            self._running_tools[str(call.call_id)] = str(call.name)
        elif kind == "tool_call_ended":
            self._running_tools.pop(str(update.call_id), None)

    def describe(self) -> str:
        """Where the session is, for log lines: the current agent and the tools running."""
        try:
            agent = type(self.session.current_agent).__name__
        except Exception:  # not started, or closed
            agent = "none"
        where = f"agent {agent}"
        if self._running_tools:
            where += f", tools running: {', '.join(sorted(set(self._running_tools.values())))}"
        return where

    def _item_added(self, ev: Any) -> None:
        item = ev.item
        if getattr(item, "type", "") == "agent_handoff":
            self._handoff_seen(item)
            return
        metrics = getattr(item, "metrics", None) or {}
        for key, stage in _STAGES.items():
            value = metrics.get(key) if isinstance(metrics, dict) else None
            if isinstance(value, (int, float)) and value >= 0:
                prom.observe(names.TURN_SECONDS, {**self.labels, "stage": stage}, float(value))

    def _closed(self, ev: Any) -> None:
        reason = getattr(ev, "reason", "")
        self.close_reason = str(getattr(reason, "value", reason))
        self.session_ended()
        self.finish("error" if getattr(ev, "error", None) else None)

    # -- soak signals -----------------------------------------------------------------------
    def sample_tasks(self, phase: str) -> None:
        prom.observe(names.SESSION_ASYNCIO_TASKS, {**self.labels, "phase": phase},
                     process_sampler.asyncio_tasks())

    def session_ended(self) -> None:
        """At the session's `close` event, after the framework has torn its activity down (so
        a handle still pending there will never finish): the tasks left on the loop and the
        unfinished speech handles. Not in finish(), which a job's shutdown may call while the
        session is still closing; the `close` event follows it."""
        if self._ended:
            return
        self._ended = True
        self.sample_tasks("end")
        unfinished = sum(1 for _, handle in self.speeches if not handle.done())
        if unfinished:
            prom.inc(names.SPEECH_HANDLES_UNFINISHED, self.labels, unfinished)
            log.warning("session closed with %d speech handle(s) not done (%s)", unfinished,
                        self.describe())

    # -- stuck sessions ---------------------------------------------------------------------
    def _stuck_reason(self, now: float) -> str | None:
        from livekit.agents import AgentTask

        try:
            agent = self.session.current_agent
        except RuntimeError:
            agent = None
        if isinstance(agent, AgentTask):
            # a speech that awaits a task (its tool runs it) may last as long as the task
            self._task_last_seen = now
            if self._task_seen is None or self._task_seen[0] != id(agent):
                self._task_seen = (id(agent), now)
            elif now - self._task_seen[1] >= self.stuck_timeout:
                return f"AgentTask {type(agent).__name__} has not handed back"
            return None
        self._task_seen = None
        for created, (_, handle) in zip(self._created_at, self.speeches, strict=True):
            since = max(created, self._task_last_seen)
            if handle.scheduled and not handle.done() and now - since >= self.stuck_timeout:
                return f"speech {handle.id} has not finished"
        return None

    async def _watch_stuck(self) -> None:
        while not self.closed:
            await asyncio.sleep(min(0.5, self.stuck_timeout / 4))
            self._scan_history()
            if time.monotonic() - self._tasks_sampled_at >= process_sampler.INTERVAL_S:
                self._tasks_sampled_at = time.monotonic()
                self.sample_tasks("running")
            if self.stuck:
                continue
            reason = self._stuck_reason(time.monotonic())
            if reason:
                self.stuck = True
                prom.inc(names.STUCK_SESSIONS, self.labels)
                log.warning("session stuck: %s after %.0f s (%s)", reason, self.stuck_timeout,
                            self.describe())

    def finish(self, outcome: str | None = None) -> None:
        """Ends the probe (idempotent): counts refusals still pending and the session outcome."""
        if self.closed:
            return
        self.closed = True
        if self._watch:
            self._watch.cancel()
        self._scan_history()
        LEDGER.flush(owner=self)
        if outcome is None:
            if self.stuck:
                outcome = "stuck"
            elif "disconnect" in self.close_reason:
                outcome = "caller_left"
            else:
                outcome = "completed"
        prom.gauge_add(names.SESSIONS_ACTIVE, self.labels, -1)
        prom.inc(names.SESSIONS_ENDED, {**self.labels, "outcome": outcome})
        for fn in self._on_close_fns:
            fn(self)


def _in_job() -> bool:
    try:
        from livekit.agents import get_job_context

        get_job_context()
    except Exception:  # a test or a console run: no job process to sample
        return False
    return True


def zero_series(labels: Labels) -> None:
    """Export every agent counter of this session at 0, for each value of its closed labels, so
    that rates and "no errors" are visible before the first one happens."""
    for spec in names.AGENT_METRICS:
        if spec.type == "counter":
            for label_set in names.label_sets(spec, labels):
                prom.inc(spec, label_set, 0)


def instrument(
    session: Any,
    *,
    scenario: str = "byo",
    profile: str = "none",
    stuck_timeout: float = STUCK_TIMEOUT_S,
) -> SessionProbe:
    """Counts this session's speech-scheduling errors, speeches, turns, handoffs and stuck
    AgentTasks under the names in lkrig_instrument.names. Call before session.start()."""
    install_process_hooks()
    capabilities.report_once()
    if _in_job():
        process_sampler.start("job")
    labels = {"scenario": scenario, "profile": profile, "agents_version": capabilities.agents_version()}
    LEDGER.default_labels = labels
    probe = SessionProbe(session, labels, stuck_timeout)
    CURRENT_OWNER.set(probe)
    session.on("speech_created", probe._speech_created)
    session.on("user_input_transcribed", probe._transcribed)
    session.on("conversation_item_added", probe._item_added)
    session.on("close", probe._closed)
    if capabilities.has_tool_execution_updated():
        session.on("tool_execution_updated", probe._tool_update)
    zero_series(labels)
    prom.gauge_add(names.SESSIONS_ACTIVE, labels, 1)
    probe._watch = asyncio.get_running_loop().create_task(probe._watch_stuck())
    return probe
