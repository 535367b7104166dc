"""Locust entry point: every Locust user is one caller holding one scripted conversation at a time.

    locust -f loadgen/locustfile.py                       # web UI on :8089
    locust -f loadgen/locustfile.py --headless -u 10 -r 2 -t 60s --stop-timeout 60 \
        --scenario seed --latency-profile fast --script seed

Locust only orchestrates (spawning, shapes, stats, UI, the Prometheus exporter on the master).
The media runs in voice drivers, plain-asyncio processes that never see gevent (loadgen/driver.py,
started by loadgen/pool.py); they measure next to the audio and stream results back. Nothing
here imports livekit: Locust forks (--processes) after importing this file, and livekit.rtc
refuses to cross a fork.

Locust request events (the UI's rows):
    join          dispatch_to_join   agent dispatch request -> the agent joined the room
    greeting      greeting           dispatch -> first agent audio (scripts with greeting: true)
    turn          <turn id>          end of the caller's utterance -> first agent audio
    barge_in      <turn id>          how far into the agent's reply the barge-in started
    conversation  <script name>      the whole call
Failures carry the named reason (dead_air, agent_error (draining), no_agent: agent_join_timeout,
expectation failures, driver_exit, ...).

Environment: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET (workers; never logged),
LOADGEN_METRICS_PORT (default 9646) and LOADGEN_METRICS_HOST (default 127.0.0.1) on the
master, LOADGEN_SCRIPTS_DIR (extra conversation scripts), LOADGEN_NETWORKS_DIR (extra network
profiles), AGENT_NAME (default agent name).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # `locust -f loadgen/locustfile.py` from any directory
    sys.path.insert(0, str(_REPO))

import gevent  # noqa: E402
import gevent.queue  # noqa: E402
import locust.runners  # noqa: E402
from lkrig_instrument import protocol  # noqa: E402
from locust import User, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.runners import LocalRunner, MasterRunner, WorkerRunner  # noqa: E402

from loadgen import convscript, exporter, metrics, netprofile, runstate  # noqa: E402
from loadgen.audio import RenderError, UtteranceCache  # noqa: E402
from loadgen.conversation import Spec  # noqa: E402
from loadgen.pool import Pool  # noqa: E402
from loadgen.shapes import SHAPES, shape_class  # noqa: E402

log = logging.getLogger("lkrig.loadgen")
CallerShape = shape_class()  # Locust finds the shape among this module's names

# The master calls a worker missing after 3 heartbeats (3 s) without news and stops the test when
# none is left. On one host shared with the agents under test (the native stack, CI), a CPU-bound
# agent starves the Locust processes for longer than that (measured: 2-7 s run-queue waits with
# 10 agent sessions on 2 cores), so allow 15 s. locust 2.47's module constant, read at each use.
if getattr(locust.runners, "HEARTBEAT_LIVENESS", 15) < 15:
    locust.runners.HEARTBEAT_LIVENESS = 15

# Measured on this rig's reference machine (loadgen/README.md "Sizing"): above this a driver's
# event loop and frame pacing start to slip; more callers take more driver processes.
DEFAULT_CALLERS_PER_DRIVER = 50
# How long a user waits for the next message of a call before giving up on the driver.
_SILENT_DRIVER_S = 120.0
_CLOSE_WAIT_S = 30.0


def _names(folder: Path, suffix: str) -> list[str]:
    return sorted(p.stem for p in folder.glob(f"*{suffix}") if not p.stem.startswith("_"))


def _fail_start(msg: str) -> None:
    print(f"loadgen: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


SCENARIOS = _names(_REPO / "agent" / "scenarios", ".py")
PROFILES = _names(_REPO / "agent" / "profiles", ".yaml")
try:
    SCRIPTS = convscript.load_all()
except convscript.ScriptError as e:
    _fail_start(str(e))
if not SCRIPTS:
    _fail_start(f"no conversation scripts in {', '.join(map(str, convscript.script_dirs()))}")
try:
    NETWORKS = netprofile.load_all()  # a malformed profile stops Locust here, naming file and field
except netprofile.NetworkError as e:
    _fail_start(str(e))
try:
    # Real speech, rendered once into the content-addressed cache before any caller starts.
    _UTTERANCES = UtteranceCache()
    for _s in SCRIPTS.values():
        for _text in _s.texts():
            _UTTERANCES.get(_text)
except RenderError as e:
    _fail_start(f"cannot render the scripts' utterances: {e}")

RECORDER = metrics.Recorder()
AGGREGATE = metrics.Aggregate()
CALLER_METRICS = metrics.CallerMetrics(RECORDER)
RUN_STATE = runstate.RunState()
QUIT_LINGER_S = 6.0  # above the compose stack's 5 s scrape interval (the native one is 2 s)
POOL: Pool | None = None
_conversation_numbers = itertools.count(1)


class CallFailure(Exception):
    """A failed turn, join or conversation; str() is the named reason the UI groups by."""


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--scenario", choices=SCENARIOS, default="seed" if "seed" in SCENARIOS else None,
                        help="agent scenario (agent/scenarios), sent with every dispatch")
    parser.add_argument("--latency-profile", choices=PROFILES,
                        default="typical" if "typical" in PROFILES else None,
                        help="agent latency profile (agent/profiles), sent with every dispatch")
    parser.add_argument("--script", choices=sorted(SCRIPTS), default="seed" if "seed" in SCRIPTS else None,
                        help="conversation script (loadgen/scripts)")
    parser.add_argument("--network", choices=sorted(NETWORKS),
                        default=netprofile.DEFAULT if netprofile.DEFAULT in NETWORKS else None,
                        help="the callers' network: loss, delay, jitter, bandwidth both ways "
                             "(loadgen/networks); turn latencies leave out what it adds")
    parser.add_argument("--seed", type=int, default=1,
                        help="base seed: conversation k of worker w sends seed + 1000000*w + k")
    parser.add_argument("--barge-in", choices=("on", "off"), default="on",
                        help="off: barge-in turns wait for the agent's reply instead")
    parser.add_argument("--agent-name", default=os.environ.get("AGENT_NAME", "lkrig-agent"),
                        help="agent to dispatch into every room")
    parser.add_argument("--call-gap", type=float, default=1.0,
                        help="mean seconds a caller waits between its calls (uniform 0.5x..1.5x); "
                             "its first call also starts at a random point in that range")
    parser.add_argument("--shape", choices=SHAPES, default="none",
                        help="load shape (loadgen/shapes.py); users = peak, run time = length")
    parser.add_argument("--shape-steps", type=int, default=5, include_in_web_ui=False,
                        help="number of steps of the step shape")
    parser.add_argument("--callers-per-driver", type=int, default=DEFAULT_CALLERS_PER_DRIVER,
                        include_in_web_ui=False, help="callers per voice-driver process")


def _worker_index(env: Environment) -> int:
    runner = env.runner
    return int(getattr(runner, "worker_index", 0) or 0) if isinstance(runner, WorkerRunner) else 0


def _pool(env: Environment) -> Pool:
    global POOL
    if POOL is None:
        o = env.parsed_options
        POOL = Pool(int(o.callers_per_driver))
    return POOL


def _close_pool() -> None:
    global POOL
    pool, POOL = POOL, None
    if pool is not None:
        problems = pool.close()
        for p in problems:
            log.error("voice drivers: %s", p)


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner | LocalRunner):
        needed = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
        missing = [n for n in needed if not os.environ.get(n)]
        if missing:
            _fail_start(f"{', '.join(missing)} not set in the environment (the callers need them)")
        # The drivers' media engine: built now if this checkout's sources never were (scripts/
        # setup does it), so that no driver start waits a minute for a compiler.
        from loadgen.media import MediaError, ensure_binary

        try:
            ensure_binary()
        except MediaError as e:
            _fail_start(str(e))
    if isinstance(runner, MasterRunner | LocalRunner):
        if isinstance(runner, LocalRunner):
            AGGREGATE.attach_local(RECORDER)
        port = int(os.environ.get("LOADGEN_METRICS_PORT", "9646"))
        host = os.environ.get("LOADGEN_METRICS_HOST", "127.0.0.1")
        RUN_STATE.runner = runner
        try:
            exporter.serve([metrics.AggregateCollector(AGGREGATE), RUN_STATE], RUN_STATE.fault_event,
                           port, host)
        except OSError as e:
            _fail_start(f"cannot serve caller metrics on {host}:{port} ({e.strerror}); "
                        "set LOADGEN_METRICS_PORT")
        log.info("caller metrics on http://%s:%d/metrics", host, port)


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data[metrics.REPORT_KEY] = RECORDER.drain()


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    delta = data.get(metrics.REPORT_KEY)
    if delta:
        AGGREGATE.merge(client_id, delta)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    if isinstance(environment.runner, MasterRunner | LocalRunner):
        o = environment.parsed_options
        AGGREGATE.prepare(o.scenario, o.latency_profile, o.network)
        RUN_STATE.run_event("start")


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    # Users are stopped by now: the drivers go with them, so a stopped run leaves no caller.
    if not isinstance(environment.runner, MasterRunner):
        _close_pool()
    if isinstance(environment.runner, MasterRunner | LocalRunner):
        RUN_STATE.run_event("stop")


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kw: Any) -> None:
    _close_pool()
    if isinstance(environment.runner, MasterRunner | LocalRunner) and RUN_STATE.runner is not None:
        # A headless master quits as its run stops: serve a little longer, so that Prometheus
        # scrapes the run's stop (and the last turns' counts) at least once.
        gevent.sleep(QUIT_LINGER_S)


def _spec(env: Environment) -> Spec:
    o = env.parsed_options
    bad = [f"{name}={value!r}" for name, value, allowed in (
        ("scenario", o.scenario, SCENARIOS), ("latency_profile", o.latency_profile, PROFILES),
        ("script", o.script, SCRIPTS), ("network", o.network, NETWORKS),
        ("barge_in", o.barge_in, ("on", "off"))) if value not in allowed]
    if bad:
        raise CallFailure(f"bad option: {', '.join(bad)}")
    seed = int(o.seed) + 1_000_000 * _worker_index(env) + next(_conversation_numbers)
    return Spec(script=SCRIPTS[o.script], scenario=o.scenario, profile=o.latency_profile, seed=seed,
                agent_name=o.agent_name, barge_in=o.barge_in == "on", network=o.network)


def _why(r: dict[str, Any]) -> str | None:
    """A turn's failure as the UI groups it: outcome (error kinds): detail."""
    if r["outcome"] == "ok":
        return None
    kinds = ", ".join(protocol.failure_kind(e) for e in r["events"]
                      if protocol.is_event(e, protocol.ERROR, protocol.BAD_JOB))
    return r["outcome"] + (f" ({kinds})" if kinds else "") + (f": {r['detail']}" if r.get("detail") else "")


class VoiceCaller(User):
    """One caller: one room and one conversation at a time, then the next."""

    host = os.environ.get("LIVEKIT_URL", "")  # shown in the UI; the callers read the environment

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._call: tuple[Any, str, Any] | None = None  # (driver, call id, message queue)
        self._joined: Spec | None = None
        self._rng = random.Random(f"{environment.parsed_options.seed}-{id(self)}")

    def wait_time(self) -> float:
        gap = max(0.0, float(self.environment.parsed_options.call_gap))
        return self._rng.uniform(0.5 * gap, 1.5 * gap)

    def on_start(self) -> None:
        # Spread the first calls too, so a ramp does not start every conversation in step.
        gevent.sleep(self._rng.uniform(0.0, max(0.0, float(self.environment.parsed_options.call_gap))))

    def _fire(self, request_type: str, name: str, ms: float, failure: str | None,
              context: dict[str, Any]) -> None:
        self.environment.events.request.fire(
            request_type=request_type, name=name, response_time=ms, response_length=0,
            exception=CallFailure(failure) if failure else None, context=context)

    @task
    def converse(self) -> None:
        t0 = time.monotonic()
        try:
            spec = _spec(self.environment)
        except CallFailure as e:
            self._fire("conversation", str(self.environment.parsed_options.script), 0, str(e), {})
            return
        ctx = {"scenario": spec.scenario, "profile": spec.profile, "network": spec.network, "seed": spec.seed}
        try:
            driver = _pool(self.environment).acquire()
        except RuntimeError as e:
            CALLER_METRICS.conversation("loadgen_error", scenario=spec.scenario, profile=spec.profile,
                                        network=spec.network)
            self._fire("conversation", spec.script.name, 0, f"driver_start: {e}", ctx)
            gevent.sleep(5)  # do not spin on a machine that cannot start drivers
            return
        call_id = str(spec.seed)  # unique within this Locust process
        queue = driver.start_call(call_id, spec.to_dict())
        self._call = (driver, call_id, queue)
        try:
            self._follow(spec, queue, ctx, t0)
        finally:
            self._call = None

    def _follow(self, spec: Spec, queue: Any, ctx: dict[str, Any], t0: float) -> None:
        lab = {"scenario": spec.scenario, "profile": spec.profile, "network": spec.network}
        while True:
            try:
                msg = queue.get(timeout=_SILENT_DRIVER_S)
            except gevent.queue.Empty:
                CALLER_METRICS.conversation("loadgen_error", **lab)
                self._fire("conversation", spec.script.name, 1000 * (time.monotonic() - t0),
                           f"driver_silent: no message for {_SILENT_DRIVER_S:.0f} s", ctx)
                self.on_stop()
                return
            kind = msg["type"]
            if kind == "join":
                j = msg["join"]
                ctx["room"] = j["room"]
                CALLER_METRICS.joined(j, **lab)
                if j["outcome"] == "ok":
                    self._joined = spec
                ms = 1000 * (j.get("dispatch_to_join_s") or (time.monotonic() - t0))
                why = None if j["outcome"] == "ok" else f"{j['outcome']}: {j.get('reason')}"
                self._fire("join", "dispatch_to_join", ms, why, ctx)
            elif kind == "turn":
                self._turn(msg, spec, ctx)
            elif kind == "conversation":
                CALLER_METRICS.conversation(msg["outcome"], **lab)
                why = None if msg["outcome"] == "completed" else f"{msg['outcome']}: {msg.get('reason')}"
                self._fire("conversation", spec.script.name, 1000 * msg["seconds"], why, ctx)
            elif kind == "hung_up":  # the driver hung up (it is stopping): not the agent's doing
                CALLER_METRICS.conversation("hung_up", **lab)
                self._fire("conversation", spec.script.name, 1000 * msg["seconds"],
                           "hung_up: the voice driver stopped during the call", ctx)
            elif kind == "closed":
                self._left()
                if not msg["teardown"].get("ok", True):
                    log.warning("room %s: teardown problems: %s", ctx.get("room"), msg["teardown"]["errors"])
                return
            elif kind in ("rejected", "driver_exit"):
                self._left()
                CALLER_METRICS.conversation("loadgen_error", **lab)
                why = msg.get("reason") or msg.get("detail")
                self._fire("conversation", spec.script.name, 1000 * (time.monotonic() - t0),
                           f"{kind}: {why}", ctx)
                return

    def _turn(self, msg: dict[str, Any], spec: Spec, ctx: dict[str, Any]) -> None:
        r = msg["result"]
        if msg["kind"] == "greeting":
            ms = 1000 * (r["latency_s"] if r["latency_s"] is not None else r["listened_s"])
            self._fire("greeting", "greeting", ms, _why(r), ctx)
            return
        CALLER_METRICS.turn(r, scenario=spec.scenario, profile=spec.profile, network=spec.network)
        ms = 1000 * (r["latency_s"] if r["latency_s"] is not None else r["listened_s"])
        why = _why(r)
        if why is None and msg.get("expect_failed"):
            why = f"expectation failed: {msg['expect_failed']}"
        self._fire("turn", r["turn"], ms, why, ctx)
        barge = msg.get("barge_in")
        if barge is not None:
            offset = barge.get("offset_s")
            self._fire("barge_in", r["turn"], 1000 * offset if offset is not None else 0,
                       None if offset is not None else "no agent reply to barge in on", ctx)

    def _left(self) -> None:
        if self._joined is not None:
            CALLER_METRICS.left(self._joined.scenario, self._joined.profile, self._joined.network)
            self._joined = None

    def on_stop(self) -> None:
        # Killed mid-call (a stop without --stop-timeout, or past it): hang up and wait for
        # the driver's teardown, so the room is gone when the run is.
        call = self._call
        if call is None:
            return
        driver, call_id, queue = call
        driver.cancel_call(call_id)
        deadline = time.monotonic() + _CLOSE_WAIT_S
        while time.monotonic() < deadline:
            try:
                msg = queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except gevent.queue.Empty:
                break
            if msg["type"] in ("closed", "rejected", "driver_exit"):
                break
        self._left()
        self._call = None
