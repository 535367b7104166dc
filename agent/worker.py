"""The livekit-agents worker: `python -m agent.worker start` (or `dev`).

Jobs are dispatched explicitly to AGENT_NAME with metadata `{"scenario", "profile", "seed"}`.
Each job runs one scenario agent with scripted providers in its own subprocess; counts go to
PROMETHEUS_MULTIPROC_DIR, which the worker's /metrics aggregates, so they outlive the job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from livekit.agents import AgentServer, JobContext, JobProcess, cli
from lkrig_instrument import LEDGER, envnames, instrument, process_sampler, protocol
from lkrig_instrument.server import ProcessTreeLoad, serve_metrics, watch_worker_start

from . import latency, scenarios, session
from .providers.scripted_stt import TranscriptFeed

log = logging.getLogger("lkrig.agent")


class BadJob(ValueError):
    """Dispatch metadata that names an unknown scenario or a malformed profile."""


def parse_metadata(raw: str) -> tuple[str, latency.Profile, int]:
    try:
        meta: dict[str, Any] = json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        raise BadJob(f"dispatch metadata: not JSON ({e}): {raw[:200]!r}") from None
    if not isinstance(meta, dict):
        raise BadJob(f"dispatch metadata: expected a JSON object, got {raw[:200]!r}")
    scenario = str(meta.get("scenario", envnames.get("LKRIG_DEFAULT_SCENARIO", "seed")))
    seed = meta.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BadJob(f"dispatch metadata: field 'seed': expected an integer, got {seed!r}")
    profile_name = str(meta.get("profile", envnames.get("LKRIG_LATENCY_PROFILE", "typical")))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", profile_name) or profile_name.startswith("."):
        # a name, never a path: callers must not make the agent read files of their choosing
        raise BadJob(f"dispatch metadata: field 'profile': not a profile name: {profile_name!r}")
    try:
        scenarios.load(scenario)
        profile = latency.load(profile_name)
    except (scenarios.ScenarioError, latency.ProfileError) as e:
        raise BadJob(f"dispatch metadata: {e}") from None
    return scenario, profile, seed


def prewarm(proc: JobProcess) -> None:
    from livekit.plugins import silero

    process_sampler.start("job")  # idle job processes too: their memory is the worker's cost

    proc.userdata["vad"] = silero.VAD.load()


async def entrypoint(ctx: JobContext) -> None:
    try:
        scenario, profile, seed = parse_metadata(ctx.job.metadata or "")
    except BadJob as e:
        log.error("%s (room %s)", e, ctx.room.name)
        await ctx.connect()
        await protocol.EventSender(ctx.room).publish(protocol.bad_job(str(e)))
        ctx.shutdown(reason=str(e))
        return

    await ctx.connect()
    feed = TranscriptFeed()
    feed.listen(ctx.room)
    sess, agent = session.build(scenario, profile, seed, feed=feed, vad=ctx.proc.userdata["vad"])
    # LKRIG_INSTRUMENT=off: no probe, for measuring what the instrumentation costs (bench/overhead.py)
    probe = None if _instrument_off() else instrument(sess, scenario=scenario, profile=profile.name)
    notify = protocol.EventSender(ctx.room).send

    def on_error(kind: str, labels: dict[str, str], owner: object) -> None:
        if owner is probe or owner is None:
            notify(protocol.error(kind))

    if probe is not None:
        LEDGER.add_listener(on_error)

    def on_transcribed(ev: Any) -> None:
        if ev.is_final and ev.transcript.strip():
            notify(protocol.turn(feed.last_turn))

    sess.on("user_input_transcribed", on_transcribed)

    def on_item(ev: Any) -> None:
        # added when its playout ends, so these arrive in the order the caller heard them
        item = ev.item
        if getattr(item, "type", "") == "message" and item.role == "assistant":
            notify(protocol.said(item.text_content or "", bool(item.interrupted)))

    sess.on("conversation_item_added", on_item)
    if probe is not None:
        ctx.add_shutdown_callback(lambda: _finish(probe))
    await sess.start(agent=agent, room=ctx.room, **session.START_OPTIONS)
    # which process ran the job: tests check that its counts outlive it
    notify(protocol.session(os.getpid(), scenario, profile.name, session.AGENTS_VERSION))


def _instrument_off() -> bool:
    return envnames.get("LKRIG_INSTRUMENT", "on") == "off"


async def _finish(probe: Any) -> None:
    probe.finish()


def server() -> AgentServer:
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="lkrig-prom-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ.setdefault("AGENT_METRICS_PORT", "9100")
    options: dict[str, Any] = {}
    if os.environ.get("AGENT_LOAD", "system") == "process":
        options["load_fnc"] = ProcessTreeLoad()
    if threshold := os.environ.get("AGENT_LOAD_THRESHOLD"):
        options["load_threshold"] = float(threshold)
    srv = AgentServer(
        **options,
        host=os.environ.get("AGENT_HOST", "127.0.0.1"),
        port=int(os.environ.get("AGENT_HEALTH_PORT", "8081")),
        prometheus_multiproc_dir=metrics_dir,
        setup_fnc=prewarm,
    )
    # earlier workers' counts carried over this start (server.py); the soak sampler once the
    # worker's servers are up; /metrics from the rig's server, which reads under carry's lock
    watch_worker_start(sampler=False)
    serve_metrics()
    srv.on("worker_started", lambda *_: process_sampler.start("worker"))
    srv.rtc_session(entrypoint, agent_name=os.environ.get("AGENT_NAME", "lkrig-agent"))
    if ready_file := os.environ.get("AGENT_READY_FILE"):
        # the health endpoint answers before the worker has registered with livekit-server,
        # and a dispatch in between is dropped: compose's healthcheck waits for this file
        Path(ready_file).unlink(missing_ok=True)
        srv.on("worker_registered", lambda *_: Path(ready_file).write_text("registered\n"))
    return srv


if __name__ == "__main__":
    cli.run_app(server())
