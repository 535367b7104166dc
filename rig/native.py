"""The native stack: livekit-server, agent workers, Locust and Prometheus as supervised processes.

`rig up --native` and the tests' `native_stack` fixture both go through `NativeStack`, so what
the tests start is what a user starts. The design (ports, order, health checks, teardown) is in
docs/native-stack.md. This module plans and runs the stack from its parts: rig.ports (the port
plan), rig.binaries (the programs), rig.services (one builder per service), rig.supervisor (the
processes) and rig.stackstate (the state file `rig down` reads).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rig import binaries, envfile, netcut, pins, placement, procs, services
from rig.binaries import resolve_livekit_server, resolve_prometheus
from rig.paths import LOCUSTFILE, REPO
from rig.placement import Placement
from rig.ports import (
    Ports,
    check_free,
    compute_ports,
)
from rig.services import LATENCY_OVERRIDE_FILE
from rig.stackerror import StackError
from rig.stackstate import STATE_FILE, alive_services, read_state, write_state
from rig.supervisor import Service, Supervisor

DEFAULT_RUN_DIR = REPO / ".rig" / "native"
AGENT_MODULE = "agent.worker"


def _print(msg: str) -> None:
    # A closed stdout (`rig up | head`) must not abort a start or a teardown half-way.
    with contextlib.suppress(OSError):
        print(msg, flush=True)


@dataclass
class NativeOptions:
    agents: int = 1
    loadgen_workers: int = 1
    run_dir: Path = DEFAULT_RUN_DIR
    logs: Path | None = None  # default: <run_dir>/logs
    port_offset: int = 0
    env_file: Path = REPO / ".env"
    env_example: Path = REPO / ".env.example"
    compose_file: Path = pins.COMPOSE_FILE
    agent_name: str = "lkrig-agent"
    agents_version: str | None = None  # None: the main pin (this venv); or an older pin
    agent_module: str = AGENT_MODULE  # run as `python -m MODULE start`; MODULE:SERVER see below
    # A user's own agent (docs/bring-your-own-agent.md): the folder holding its package, put first
    # on the workers' PYTHONPATH, and its requirements file, installed into a venv of its own.
    agent_path: Path | None = None
    agent_requirements: Path | None = None
    locustfile: Path = LOCUSTFILE
    # Scrape the loadgen metrics port even with no Locust here: `rig run`'s headless master serves it.
    scrape_loadgen: bool = False
    # SIGTERM the services if this process dies; off for --detach, where they must outlive it.
    die_with_supervisor: bool = True
    # Each agent worker in a cgroup of its own, which a partition-agent fault cuts off (rig.netcut).
    agent_cgroups: bool = False
    # Which roles run here, on which address, and where the others are (rig.placement).
    where: Placement = field(default_factory=Placement)
    livekit_timeout: float = 30.0
    prometheus_timeout: float = 30.0
    agent_timeout: float = 90.0  # imports livekit-agents, loads the silero VAD, registers
    locust_timeout: float = 60.0
    say: Callable[[str], None] = field(default=lambda msg: _print(msg), repr=False)

    @property
    def logs_dir(self) -> Path:
        return self.logs or self.run_dir / "logs"


@dataclass
class AgentEndpoint:
    name: str
    health_url: str
    metrics_url: str
    multiproc_dir: str


@dataclass
class StackInfo:
    """Where the running stack answers. Secrets are excluded from repr and from the state file."""

    livekit_url: str
    livekit_http_url: str | None
    livekit_metrics_url: str | None
    prometheus_url: str | None
    locust_url: str | None
    loadgen_metrics_url: str | None
    agents: list[AgentEndpoint]
    agent_name: str
    logs_dir: str
    run_dir: str
    ports: Ports
    pids: dict[str, int]
    startup_seconds: float = 0.0
    sd_files: list[str] = field(default_factory=list)  # this host's scrape targets in --sd-dir
    api_key: str = field(default="", repr=False)
    api_secret: str = field(default="", repr=False)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("api_key")
        data.pop("api_secret")
        return data


class NativeStack:
    def __init__(self, opts: NativeOptions) -> None:
        self.opts = opts
        self.info: StackInfo | None = None
        self._supervisor = Supervisor(opts.say, opts.die_with_supervisor)
        self._owns_state = False  # the state file is ours only once we wrote it

    @property
    def services(self) -> list[Service]:
        """The running services, in start order."""
        return self._supervisor.services

    # -- planning

    def plan(self) -> list[list[Service]]:
        """What start() runs, stage by stage, with the credentials, the run folder and the
        agents' empty multiprocess folders ready; nothing is started."""
        o = self.opts
        try:
            self._pins = pins.load(o.compose_file, os.environ)
        except pins.PinError as exc:
            raise StackError(str(exc)) from exc
        try:
            key, secret, generated = envfile.load_credentials(o.env_file, o.env_example)
        except envfile.EnvFileError as exc:
            raise StackError(f"{exc} (fix it, or delete it to have a new one generated)") from exc
        if generated:
            o.say(
                f"rig up: created {o.env_file} (mode 0600) from {o.env_example.name} with new random"
                f" {', '.join(generated)} (values not shown)"
            )
        self._credentials = (key, secret)
        self._supervisor.secret = secret
        o.run_dir.mkdir(parents=True, exist_ok=True)
        o.logs_dir.mkdir(parents=True, exist_ok=True)
        stages = self._plan()
        # stale .db files would be summed into new metrics
        shutil.rmtree(o.run_dir / services.MULTIPROC, ignore_errors=True)
        for i in range(o.agents):
            services.multiproc_dir(o.run_dir, i).mkdir(parents=True)
        (o.run_dir / LATENCY_OVERRIDE_FILE).unlink(missing_ok=True)
        return stages

    def _plan(self) -> list[list[Service]]:
        o, w = self.opts, self.opts.where
        w.check()
        agents = o.agents if w.has("agents") else 0
        if agents:
            services.check_agent(agents, o.agent_module, o.agent_path, o.agent_requirements, o.agents_version)
        livekit = w.has("livekit")
        server = resolve_livekit_server(self._pins.livekit_server, o.compose_file) if livekit else None
        prometheus = resolve_prometheus() if w.has("prometheus") else None
        python = (
            binaries.agents_python(o.agents_version, o.agent_requirements, self._pins, o.say)
            if agents
            else None
        )
        workers = o.loadgen_workers if w.has("locust-workers") else 0
        master = o.loadgen_workers > 0 and w.has("locust-master")
        if (master or workers) and not o.locustfile.exists():
            o.say(f"rig up: skipping Locust: {o.locustfile} does not exist yet")
            master, workers = False, 0
        self._locust = master
        self.ports = compute_ports(o.port_offset, o.agents, w.livekit_config)
        at = services.Layout(self.ports, o.run_dir, o.logs_dir, *self._credentials, where=w)
        self._layout, self._agents_here = at, agents
        stage0 = [
            *([services.livekit_server(at, server, o.port_offset, o.livekit_timeout)] if server else []),
            *([services.prometheus(at, prometheus, agents, master or o.scrape_loadgen, o.prometheus_timeout)]
              if prometheus else []),
        ]
        agent_svcs = (
            [
                services.agent(at, i, python, o.agent_module, o.agent_name, o.agent_path, o.agent_timeout)
                for i in range(agents)
            ]
            if python
            else []
        )
        if o.agent_cgroups:
            for svc in agent_svcs:
                svc.cgroup = netcut.group(svc.name)
        stages = [
            stage0,
            agent_svcs,
            [services.locust_master(at, o.locustfile, o.locust_timeout)] if master else [],
            [services.locust_worker(at, j, workers, o.locustfile, o.locust_timeout) for j in range(workers)],
        ]
        self.info = self._stack_info(at, agents, master)
        return [stage for stage in stages if stage]

    def _stack_info(self, at: services.Layout, agents: int, locust: bool) -> StackInfo:
        o, p, w = self.opts, at.ports, at.where
        return StackInfo(
            livekit_url=at.livekit_url,
            livekit_http_url=at.livekit_http_url if w.has("livekit") else None,
            livekit_metrics_url=f"http://{at.host}:{p.livekit_metrics}/metrics" if w.has("livekit") else None,
            prometheus_url=at.prometheus_url if w.has("prometheus") else None,
            locust_url=at.locust_url if locust else None,
            loadgen_metrics_url=f"http://{at.host}:{p.loadgen_metrics}/metrics" if locust else None,
            agents=[
                AgentEndpoint(
                    w.worker(i),
                    at.agent_health_url(i),
                    at.agent_metrics_url(i),
                    str(services.multiproc_dir(o.run_dir, i)),
                )
                for i in range(agents)
            ],
            agent_name=o.agent_name,
            logs_dir=str(at.logs),
            run_dir=str(o.run_dir),
            ports=p,
            pids={},
            sd_files=[str(f) for f in placement.sd_files(w, o.port_offset).values()],
            api_key=at.api_key,
            api_secret=at.api_secret,
        )

    # -- starting

    def start(self) -> StackInfo:
        """Start everything and wait until all is healthy; on any failure stop what was started."""
        o = self.opts
        t0 = time.monotonic()
        state = read_state(o.run_dir)
        if state is not None:
            alive = alive_services(state)
            if alive:
                raise StackError(
                    f"a native stack from {o.run_dir} is already running ({', '.join(alive)});"
                    " stop it with `rig down`"
                )
            o.say(f"rig up: removing stale state {o.run_dir / STATE_FILE} (none of its processes runs)")
            (o.run_dir / STATE_FILE).unlink()
        stages = self.plan()
        w = o.where
        check_free(self.ports, self._agents_here, self._locust, w.has("livekit"), w.has("prometheus"), w.bind)
        try:
            # Prometheus rereads the folder: targets not up yet are down for a scrape or two.
            placement.write_targets(placement.sd_files(w, o.port_offset),
                                    self._layout.targets(self._agents_here, self._locust))
            for stage in stages:
                for svc in stage:
                    self._supervisor.spawn(svc)
                self._write_state(detached=False)
                self._supervisor.wait_healthy(stage)
        except BaseException:
            self.stop()
            raise
        assert self.info is not None
        self.info.startup_seconds = round(time.monotonic() - t0, 2)
        self.info.pids = {s.name: s.popen.pid for s in self.services if s.popen}
        self._write_state(detached=False)
        return self.info

    def _write_state(self, detached: bool) -> None:
        self._owns_state = True
        write_state(self.opts.run_dir, self.services, self.info.public() if self.info else None, detached)

    def mark_detached(self) -> None:
        self._write_state(detached=True)

    # -- running and stopping

    def dead_service(self) -> Service | None:
        return self._supervisor.dead()

    def describe_death(self, svc: Service) -> str:
        return self._supervisor.describe_death(svc)

    # -- faults (rig run): one service at a time, while the rest runs

    def service(self, name: str) -> Service:
        return self._supervisor.service(name)

    def kill_service(self, name: str, sig: int = signal.SIGKILL, grace: float = 5.0) -> list[int]:
        """Stop one service the hard way (SIGKILL to its whole session) or the orderly way (`sig`
        to its leader, SIGKILL after `grace` s); return pids left (empty = gone)."""
        return self._supervisor.kill(name, sig, grace)

    def restart_service(self, name: str) -> float:
        """Start a stopped service again, as before, and wait until it is healthy; return the
        seconds that took. Call it from the main thread: the death signal (PR_SET_PDEATHSIG)
        fires when the *thread* that started a child exits. Its log is appended to; an agent
        keeps its multiproc folder, and the worker carries its earlier processes' counts over its
        start (lkrig_instrument.carry), so its /metrics carries on (no counter reset)."""
        new = self._supervisor.respawn(name)
        try:
            self._supervisor.wait_healthy([new])
        finally:
            assert self.info is not None and new.popen is not None
            self.info.pids[name] = new.popen.pid
            self._write_state(detached=False)
        return time.monotonic() - new.started_at

    def stop(self) -> list[str]:
        """Stop every service (reverse start order); return what could not be stopped (empty = clean)."""
        left = self._supervisor.stop()
        if self.info is not None:
            placement.remove_targets(self.info.sd_files)
        if not left and self._owns_state:
            (self.opts.run_dir / STATE_FILE).unlink(missing_ok=True)
            self._owns_state = False
        return left


def down(run_dir: Path, say: Callable[[str], None], supervisor_timeout: float = 60.0) -> None:
    """Stop the stack recorded in `run_dir`; raise StackError if anything survives."""
    state = read_state(run_dir)
    if state is None:
        say(f"rig down: no native stack recorded in {run_dir}; nothing to stop")
        return
    recorded = state.get("services", [])
    alive = [s["name"] for s in recorded if procs.session_members(s["pid"], s["start_ticks"])]
    sup = state.get("supervisor") or {}
    # A foreground `rig up` stops its own services in order when told to; give it the chance.
    if (
        not sup.get("detached")
        and sup.get("pid")
        and procs.is_same_process(sup["pid"], sup.get("start_ticks", 0))
    ):
        say(f"rig down: asking the foreground `rig up` (pid {sup['pid']}) to stop")
        os.kill(sup["pid"], signal.SIGTERM)
        deadline = time.monotonic() + supervisor_timeout
        while time.monotonic() < deadline and procs.is_same_process(sup["pid"], sup.get("start_ticks", 0)):
            time.sleep(0.1)
    left = []
    for svc in reversed(recorded):
        grace = 10.0 if svc["name"].startswith("agent-") else 5.0
        pids = procs.stop_session(svc["pid"], svc["start_ticks"], grace)
        if pids:
            left.append(f"{svc['name']}: pids {', '.join(map(str, pids))}")
    if left:
        raise StackError(f"rig down: could not stop {'; '.join(left)}; state kept in {run_dir / STATE_FILE}")
    placement.remove_targets((state.get("info") or {}).get("sd_files") or [])
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    what = ", ".join(alive) if alive else "nothing was running any more"
    say(f"rig down: stopped {what}; no process of the stack is left")
