"""`from lkrig_instrument import AgentSession`: the one-line swap that counts every session.

A subclass of livekit-agents' own `AgentSession` that calls `instrument(self)` at the top of
`start()`, before the framework creates its first speech, so nothing is missed; everything else
is the parent class, untouched. Labels come from the environment (see settings.py): scenario
`byo` unless LKRIG_SCENARIO says otherwise, profile `none` unless the scripted providers or
LKRIG_PROFILE set one.
"""

from __future__ import annotations

from typing import Any, TypeVar

from livekit.agents import AgentSession as _FrameworkSession

from . import protocol, settings
from .hooks import SessionProbe, instrument
from .ledger import LEDGER, Labels

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
                _tell_the_caller(self, self.lkrig_probe, room)
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


def _tell_the_caller(session: Any, probe: SessionProbe, room: Any) -> None:
    """Speak the rig's caller protocol, as the rig's own agent does, so that its callers and
    Locust work unchanged: each error counted for this session (`protocol.error`, the caller
    marks that turn `agent_error`), and each user turn the session commits (`protocol.turn`, with
    the id of the newest utterance the caller announced)."""
    send = protocol.EventSender(room).send
    announced: list[str] = []

    def on_error(kind: str, labels: Labels, owner: object) -> None:
        if owner is probe:
            send(protocol.error(kind))

    def on_data(packet: Any) -> None:
        if getattr(packet, "topic", None) != protocol.TRANSCRIPT_TOPIC:
            return
        said = protocol.read_transcript(packet.data)
        if said is not None:
            announced.append(said[0])

    def on_transcribed(ev: Any) -> None:
        if getattr(ev, "is_final", False) and str(getattr(ev, "transcript", "")).strip() and announced:
            send(protocol.turn(announced[-1]))

    LEDGER.add_listener(on_error)
    room.on("data_received", on_data)
    session.on("user_input_transcribed", on_transcribed)

    def stop(_: SessionProbe) -> None:
        LEDGER.remove_listener(on_error)
        room.off("data_received", on_data)

    probe.on_close(stop)
