"""Counts every speech-scheduling error exactly once, from public hooks only.

One error can show up through several hooks: a rejected SpeechHandle (speech_created fires before
the scheduler refuses it), the exception itself (asyncio's "Task exception was never retrieved",
the tool-error log line, with_filler's "filler stopped on an error"), and warnings logged by the
framework. The ledger ties them together:

* exceptions are deduplicated by identity (the same object reaches the loop handler and the
  `asyncio` logger);
* a draining refusal is counted once per SpeechHandle. On >= 1.4.3 the refused handle is
  interrupted without ever being scheduled; on older versions it is left pending, so the
  exception (or, if user code swallowed it, the handle still unscheduled at session close)
  is what counts it;
* with_filler's drop claims the handle it lost, so a dropped filler counts as `filler_dropped`
  rather than also as `draining`.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import names, prom
from .taxonomy import filler_kind, kind_of_error_text, kind_of_log_message

log = logging.getLogger("lkrig.instrument")

# A refused handle is counted after this long unless with_filler claims it first; the filler's
# log line follows its refusal within a few event-loop iterations.
CLAIM_GRACE_S = 0.5

Labels = dict[str, str]
Listener = Callable[[str, Labels, object], None]
# The session whose task raised or logged, for errors that carry no SpeechHandle: tasks inherit
# it from the task that instrumented the session.
CURRENT_OWNER: contextvars.ContextVar[object] = contextvars.ContextVar("lkrig_owner", default=None)


@dataclass(eq=False)
class _Tracked:
    handle: Any
    labels: Labels
    seq: int
    owner: object = None
    judged: bool = False
    counted: bool = False
    not_running: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Ledger:
    def __init__(self) -> None:
        self.default_labels: Labels = {
            "scenario": "none", "profile": "none", "agents_version": "unknown"}
        self._seq = itertools.count()
        self._pending: dict[int, _Tracked] = {}  # refused or suspect handles not yet counted
        self._seen_exc: collections.deque[BaseException] = collections.deque(maxlen=512)
        self._listeners: list[Listener] = []
        self.counts: collections.Counter[str] = collections.Counter()

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def count(self, kind: str, labels: Labels | None = None, owner: object = None) -> None:
        owner = owner if owner is not None else CURRENT_OWNER.get()
        if labels is None:
            labels = getattr(owner, "labels", None) or self.default_labels
        labels = {**labels, "kind": kind}
        self.counts[kind] += 1
        prom.inc(names.SPEECH_SCHEDULING_ERRORS, labels)
        describe = getattr(owner, "describe", None)
        where = f" ({describe()})" if callable(describe) else ""
        log.warning("speech scheduling error counted: %s%s", kind, where, extra={"lkrig_kind": kind})
        for fn in list(self._listeners):
            try:
                fn(kind, labels, owner)
            except Exception:
                log.exception("error listener failed")

    # -- SpeechHandles ---------------------------------------------------------------------
    def speech_created(self, handle: Any, labels: Labels, owner: object = None) -> None:
        """Call from `speech_created`, which fires inside say()/generate_reply() before the
        scheduler accepts or refuses the handle; the verdict is read one iteration later."""
        tracked = _Tracked(handle, labels, next(self._seq), owner)
        self._pending[id(handle)] = tracked
        asyncio.get_running_loop().call_soon(self._verdict, tracked)

    def _verdict(self, t: _Tracked) -> None:
        h = t.handle
        t.judged = True
        if t.counted:
            return
        if h.scheduled:
            self._pending.pop(id(h), None)
            return
        if h.interrupted:  # >= 1.4.3: refused and interrupted at once
            t.timer = asyncio.get_running_loop().call_later(CLAIM_GRACE_S, self._settle, t)
        # else: < 1.4.3 refusal (left pending) or scheduled later; the exception or
        # flush() decides

    def _settle(self, t: _Tracked, kind: str | None = None) -> None:
        if t.counted:
            return
        t.counted = True
        if t.timer:
            t.timer.cancel()
        self._pending.pop(id(t.handle), None)
        self.count(kind or ("scheduler_not_running" if t.not_running else "draining"), t.labels,
                   t.owner)

    def _newest_pending(self) -> _Tracked | None:
        live = [t for t in self._pending.values() if not t.counted and not t.handle.scheduled]
        return max(live, key=lambda t: t.seq) if live else None

    def flush(self, owner: object = None) -> None:
        """Count the refusals of `owner` (a session) still waiting: at session end, handles
        that were never scheduled."""
        for t in sorted(self._pending.values(), key=lambda t: t.seq):
            if t.judged and (owner is None or t.owner is owner):
                if t.handle.scheduled:
                    self._pending.pop(id(t.handle), None)
                else:
                    self._settle(t)

    # -- exceptions and log records ----------------------------------------------------------
    def exception_seen(self, exc: BaseException, origin: str) -> None:
        """origin: 'asyncio' (unretrieved task exception), 'tool' (tool raised), 'filler'
        (with_filler gave up), 'log' (any other log record carrying an exception)."""
        if any(e is exc for e in self._seen_exc):
            return
        self._seen_exc.append(exc)
        kind = kind_of_error_text(str(exc))
        if origin == "filler":
            kind = filler_kind(kind)
        elif kind is None:
            if origin == "tool":
                kind = "tool_error_other"
            else:
                return
        if kind in ("draining", "filler_dropped"):
            t = self._newest_pending() if kind_of_error_text(str(exc)) == "draining" else None
            if t is not None:
                self._settle(t, kind)
                return
            if kind == "draining":
                return  # its handle was counted already
        self.count(kind)

    def log_message(self, message: str) -> None:
        kind = kind_of_log_message(message)
        if kind == "scheduler_not_running":
            # logged inside _schedule_speech, before the handle is interrupted
            t = self._newest_pending()
            if t is not None:
                t.not_running = True
                return
        if kind is not None:
            self.count(kind)


LEDGER = Ledger()
