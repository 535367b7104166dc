"""`from lkrig_instrument import AgentSession`: the one-line swap that counts every session.

A subclass of livekit-agents' own `AgentSession` that calls `instrument(self)` at the top of
`start()`, before the framework creates its first speech, so nothing is missed; everything else
is the parent class, untouched. Labels come from the environment (see settings.py): scenario
`byo` unless LKRIG_SCENARIO says otherwise, profile `none` unless the scripted providers or
LKRIG_PROFILE set one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, TypeVar

from livekit.agents import AgentSession as _FrameworkSession

from . import settings
from .hooks import SessionProbe, instrument
from .ledger import LEDGER, Labels

log = logging.getLogger("lkrig.instrument")
EVENT_TOPIC = "lkrig.event"  # the rig's caller <-> agent data topic

Userdata_T = TypeVar("Userdata_T")


class AgentSession(_FrameworkSession[Userdata_T]):
    """livekit-agents' AgentSession, counted by the rig. Same constructor, same methods."""

    lkrig_probe: SessionProbe | None = None

    async def start(self, *args: Any, **kwargs: Any) -> Any:
        if self.lkrig_probe is None:
            self.lkrig_probe = instrument(
                self, scenario=settings.scenario(), profile=settings.profile(),
                stuck_timeout=settings.stuck_timeout())
            _finish_with_the_job(self.lkrig_probe)
            room = kwargs.get("room")
            if room is not None and settings.room_events():
                _tell_the_caller(self.lkrig_probe, room)
        return await super().start(*args, **kwargs)


def _finish_with_the_job(probe: SessionProbe) -> None:
    """A job can end without the session's `close` event (the room is deleted, the process is
    told to shut down); its shutdown callbacks still run, and finish() is idempotent."""
    try:
        from livekit.agents import get_job_context

        ctx = get_job_context()
    except Exception:  # not in a job (a test, a console run): `close` ends the probe
        return

    async def finish(*_: Any) -> None:
        probe.finish()

    ctx.add_shutdown_callback(finish)


def _tell_the_caller(probe: SessionProbe, room: Any) -> None:
    """Publish each error counted for this session on the rig's event topic, so that the rig's
    callers mark the turn it happened in (`agent_error`), as they do for the rig's own agent."""
    pending: set[asyncio.Task[None]] = set()

    async def publish(kind: str) -> None:
        try:
            await room.local_participant.publish_data(
                json.dumps({"event": "error", "kind": kind}).encode(), reliable=True,
                topic=EVENT_TOPIC)
        except Exception:  # the caller may be gone, the room closed
            log.debug("could not publish the %s error to the room", kind)

    def on_error(kind: str, labels: Labels, owner: object) -> None:
        if owner is probe:
            task = asyncio.get_running_loop().create_task(publish(kind))
            pending.add(task)
            task.add_done_callback(pending.discard)

    LEDGER.add_listener(on_error)
    probe.on_close(lambda _: LEDGER.remove_listener(on_error))
