"""The native stack as a Backend: livekit-server, Prometheus and N agent workers that this command
starts and stops as local processes (rig.native), and headless Locust processes for each load.
Faults are process control: a signal to a service's session, a restart on the same log and
metrics folder (no count is lost), and one latency override file that every agent reads."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from rig import faults, headless, native, netcut, reconcile, services
from rig.backends.base import LoadSpec


class NativeBackend:
    livekit = "livekit-server"
    drain_grace = faults.DRAIN_WAIT_S

    def __init__(self, *, agents: int, loadgen_workers: int, run_dir: Path, port_offset: int,
                 env_file: Path, isolate_agents: bool = False, agents_version: str | None = None) -> None:
        """isolate_agents: each agent in a cgroup of its own, for cut_network (rig.netcut);
        agents_version: an older livekit-agents pin for the workers (None: the main pin)."""
        self.stack = native.NativeStack(native.NativeOptions(
            agents=agents, loadgen_workers=0, scrape_loadgen=True, run_dir=run_dir,
            port_offset=port_offset, env_file=env_file, agent_cgroups=isolate_agents,
            agents_version=agents_version))
        self.loadgen_workers = loadgen_workers
        self.label = "the native stack"
        self.restart_timeout = self.stack.opts.agent_timeout
        self.busy: set[str] = set()
        self.loads: list[headless.Headless] = []
        self.cuts: dict[str, netcut.Cut] = {}

    @property
    def info(self) -> native.StackInfo:
        assert self.stack.info is not None, "start() first"
        return self.stack.info

    # -- the stack

    def start(self) -> str:
        info = self.stack.start()
        return f"stack healthy in {info.startup_seconds:.1f} s; Prometheus {info.prometheus_url}"

    def stop(self) -> list[str]:
        left = [f"locust pid {p}" for load in self.loads for p in load.stop()]
        return [*self.stack.stop(), *left]

    def dead(self) -> str | None:
        svc = self.stack.dead_service()
        if svc is None or svc.name in self.busy:
            return None
        return self.stack.describe_death(svc)

    @property
    def prometheus_url(self) -> str:
        return self.info.prometheus_url

    def livekit_nodes(self) -> dict[str, str | None]:
        return {self.livekit: self.info.livekit_metrics_url}

    def start_load(self, out: Path, spec: LoadSpec) -> headless.Headless:
        info = self.info
        env = {**os.environ, "LIVEKIT_URL": info.livekit_url, "LIVEKIT_API_KEY": info.api_key,
               "LIVEKIT_API_SECRET": info.api_secret}
        args = [arg for key, value in spec.params().items()
                for arg in (f"--{key.replace('_', '-')}", value)]
        load = headless.Headless(
            out, env, spec.users, f"{spec.duration:g}s", [*args, "--exit-code-on-error", "0"],
            workers=self.loadgen_workers, spawn_rate=spec.spawn_rate, agent_name=info.agent_name,
            master_port=info.ports.locust_master, metrics_port=info.ports.loadgen_metrics)
        self.loads.append(load)
        load.start()
        return load

    @property
    def events_url(self) -> str | None:
        return f"http://127.0.0.1:{self.info.ports.loadgen_metrics}/events"

    # -- the agents

    def agent_metrics(self) -> dict[str, str | None]:
        return {a.name: a.metrics_url for a in self.info.agents}

    def agent_metrics_urls(self) -> list[str]:
        return [a.metrics_url for a in self.info.agents]

    def agent_log_lines(self, since: float) -> list[str]:
        # A native stack lives for one command: its logs hold nothing from before it.
        lines: list[str] = []
        for a in self.info.agents:
            lines += (Path(self.info.logs_dir) / f"{a.name}.log").read_text(errors="replace").splitlines()
        return lines

    def logged_errors(self, since: float) -> dict[str, int]:
        return reconcile.logged_errors_in(self.agent_log_lines(since))

    def log_gap(self, agent: str) -> dict[str, float]:
        # A native stack lives for one command: its folders and logs hold this run alone.
        endpoint = next(a for a in self.info.agents if a.name == agent)
        return reconcile.log_gap(reconcile.errors_in_folder(Path(endpoint.multiproc_dir)),
                                 reconcile.logged_errors([Path(self.info.logs_dir) / f"{agent}.log"]))

    def run_info(self) -> dict[str, Any]:
        # every process this command started, to check that none outlives it
        if self.stack.info is None:
            return {}
        pids = dict(self.info.pids)
        for load in self.loads:
            pids.update({f"locust-{p.pid}": p.pid for p in load.processes})
            pids.update({f"driver-{pid}": pid for pid in load.drivers})
        return {"agents": len(self.info.agents), "loadgen_workers": self.loadgen_workers, "pids": pids}

    # -- the primitives the faults use

    def stop_service(self, name: str, sig: str, grace: float) -> tuple[str, str, object, bool]:
        popen = self.stack.service(name).popen
        assert popen is not None
        left = self.stack.kill_service(name, signal.Signals[sig], grace)
        code = popen.poll()
        forced = sig != "SIGKILL" and (bool(left) or code == -signal.SIGKILL)
        how = f"left: {left}" if left else f"exit code {code}"
        return (f"pid {popen.pid}", how + (f"; still running after {grace:g} s: SIGKILL" if forced else ""),
                name, forced)

    def start_again(self, token: object) -> str:
        took = self.stack.restart_service(str(token))
        return f"{token} healthy again after {took:.1f} s"

    def write_latency_override(self, payload: dict[str, Any]) -> str:
        path = Path(self.info.run_dir) / services.LATENCY_OVERRIDE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)  # the agents never read a half-written file
        return ""  # one file, which every agent reads

    def cut_network(self, agent: str) -> str:
        svc = self.stack.service(agent)
        if svc.cgroup is None:
            raise RuntimeError(f"{agent} has no cgroup of its own: start the stack with isolate_agents")
        ports = self.info.ports
        udp = (ports.rtc_udp_start, ports.rtc_udp_end)
        self.cuts[agent] = netcut.cut(svc.cgroup, ports.livekit, udp)
        return f"what its processes send to tcp/{ports.livekit} and udp/{udp[0]}-{udp[1]} is dropped"

    def join_network(self, agent: str) -> str:
        netcut.join(self.cuts.pop(agent))
        return "the drop rules removed"
