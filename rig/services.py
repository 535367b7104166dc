"""How each service of the native stack is started and checked: one builder per service
(livekit-server, Prometheus with its generated config, agent worker i, the Locust master and
worker j), each returning the Service the supervisor runs. Nothing here starts a process.

A `Layout` holds what the builders share: the ports, the run and log folders, the credentials.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rig import placement, probes
from rig.paths import INSTRUMENT, REPO
from rig.placement import Placement
from rig.ports import Ports
from rig.stackerror import StackError
from rig.supervisor import Service

PROMETHEUS_TEMPLATE = REPO / "prometheus" / "prometheus.native.yml"
# In the run folder: one folder per agent worker, its PROMETHEUS_MULTIPROC_DIR.
MULTIPROC = "multiproc"
# In the run folder: the agents' latency override (agent/latency.py), written by `rig run`'s
# slow-provider fault; its path reaches the agents as LKRIG_LATENCY_OVERRIDE.
LATENCY_OVERRIDE_FILE = "latency-override.json"
# The web UI's master lets a stopped call finish for up to WEB_STOP_TIMEOUT_S. A Locust worker
# then waits that long again before it rejoins, and handles no heartbeat meanwhile: it would
# quit on the master's 60 s heartbeat timeout. Locust's own variable takes the second wait off
# (docker-compose.yml sets the same two).
WEB_STOP_TIMEOUT_S = 45
WORKER_REJOIN_ENV = {"LOCUST_WORKER_ADDITIONAL_WAIT_BEFORE_READY_AFTER_STOP": str(-WEB_STOP_TIMEOUT_S)}

# Environment variables the rig sets itself; inherited values would silently change a service
# (livekit-server reads LIVEKIT_<CONFIG_FIELD> variables as config overrides).
_SCRUBBED_PREFIXES = ("LIVEKIT_",)
_SCRUBBED = {"PROMETHEUS_MULTIPROC_DIR", "AGENT_NAME", "AGENT_HEALTH_PORT", "AGENT_METRICS_PORT"}


def multiproc_dir(run_dir: Path, agent: int) -> Path:
    return run_dir / MULTIPROC / f"agent-{agent}"


@dataclass(frozen=True)
class Layout:
    """Where the services of one stack listen and write, and the credentials they share."""

    ports: Ports
    run_dir: Path
    logs: Path
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    where: Placement = field(default_factory=Placement)

    @property
    def host(self) -> str:
        return self.where.bind

    @property
    def livekit_url(self) -> str:
        """The LiveKit this host's agents and callers join."""
        return self.where.livekit_url or f"ws://{self.host}:{self.ports.livekit}"

    @property
    def livekit_http_url(self) -> str:
        return f"http://{self.host}:{self.ports.livekit}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.ports.prometheus}"

    @property
    def master_host(self) -> str:
        return self.where.master_host or self.host

    @property
    def locust_url(self) -> str:
        """The Locust master's web UI, here or on --master-host (the same port plan)."""
        return f"http://{self.master_host}:{self.ports.locust_web}"

    def agent_health_url(self, i: int) -> str:
        return f"http://{self.host}:{self.ports.agent_health[i]}/"

    def agent_metrics_url(self, i: int) -> str:
        return f"http://{self.host}:{self.ports.agent_metrics[i]}/metrics"

    def targets(self, agents: int, locust: bool) -> dict[str, list[dict[str, Any]]]:
        """Prometheus target groups by job, of the roles this host runs."""
        p, h, w = self.ports, self.host, self.where
        return {
            "prometheus": [{"targets": [f"{h}:{p.prometheus}"]}] if w.has("prometheus") else [],
            "livekit": [{"targets": [f"{h}:{p.livekit_metrics}"]}] if w.has("livekit") else [],
            "agent": [{"targets": [f"{h}:{p.agent_metrics[i]}"], "labels": {"worker": w.worker(i)}}
                      for i in range(agents)] if w.has("agents") else [],
            "loadgen": [{"targets": [f"{h}:{p.loadgen_metrics}"]}] if locust else [],
        }

    def creds(self) -> dict[str, str]:
        """The environment a LiveKit client (an agent, a caller) connects with."""
        return {"LIVEKIT_URL": self.livekit_url, "LIVEKIT_API_KEY": self.api_key,
                "LIVEKIT_API_SECRET": self.api_secret}


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# --- livekit-server and Prometheus ---------------------------------------------------------------------


def livekit_server(at: Layout, server: Path, port_offset: int, timeout: float) -> Service:
    p = at.ports
    config = placement.write_livekit_config(at.where, at.run_dir / "livekit.yaml")
    argv = [str(server), "--config", str(config)]
    if port_offset:
        argv += [
            "--port",
            str(p.livekit),
            "--prometheus.port",
            str(p.livekit_metrics),
            "--rtc.port_range_start",
            str(p.rtc_udp_start),
            "--rtc.port_range_end",
            str(p.rtc_udp_end),
        ]
    url = at.livekit_http_url + "/"
    return Service(
        "livekit-server",
        argv,
        clean_env({"LIVEKIT_KEYS": f"{at.api_key}: {at.api_secret}"}),
        at.logs / "livekit-server.log",
        timeout,
        probes.livekit_ready(url),
        f"GET {url} answering 200 for 0.3 s",
        death_signal=signal.SIGKILL,
        restart_health=lambda: probes.livekit_ready(url),  # a fresh settle window
    )


def write_prometheus_config(
    path: Path, at: Layout, agents: int, locust: bool, template: Path = PROMETHEUS_TEMPLATE
) -> None:
    """The run's Prometheus config: the template's jobs with this stack's targets; with --sd-dir,
    the livekit, agent and loadgen jobs read every host's targets from that folder instead."""
    try:
        cfg = yaml.safe_load(template.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"{template}: cannot read the Prometheus template ({exc})") from exc
    local = at.targets(agents, locust)
    sd_dir = at.where.sd_dir
    jobs = []
    for job in cfg.get("scrape_configs") or []:
        name = job.get("job_name")
        if sd_dir is not None and name in placement.SD_JOBS:
            job = {k: v for k, v in job.items() if k != "static_configs"}
            job["file_sd_configs"] = [{"files": [str(sd_dir.resolve() / name / "*.json")],
                                       "refresh_interval": "5s"}]
        elif name in local:
            if not local[name]:
                continue  # nothing of that kind runs in this stack
            job = {**job, "static_configs": local[name]}
        jobs.append(job)
    cfg["scrape_configs"] = jobs
    # Prometheus resolves rule files against the config's folder; the config moves to the run folder.
    cfg["rule_files"] = [str((template.parent / rule).resolve()) for rule in cfg.get("rule_files") or []]
    path.write_text(
        f"# Generated by `rig up --native` from {template}; edit that file, not this one.\n"
        + yaml.safe_dump(cfg, sort_keys=False),
        encoding="utf-8",
    )


def prometheus(at: Layout, binary: Path, agents: int, loadgen: bool, timeout: float) -> Service:
    """Prometheus scraping the stack; writes its config into the run folder. `loadgen`: scrape
    the loadgen metrics port too."""
    config = at.run_dir / "prometheus.yml"
    write_prometheus_config(config, at, agents, loadgen)
    ready = at.prometheus_url + "/-/ready"
    return Service(
        "prometheus",
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={at.run_dir / 'prometheus-data'}",
            f"--web.listen-address={at.host}:{at.ports.prometheus}",
        ],
        clean_env({}),
        at.logs / "prometheus.log",
        timeout,
        probes.http_ok(ready),
        f"GET {ready}",
        death_signal=signal.SIGKILL,
    )


# --- agent workers -------------------------------------------------------------------------------------


def module_file(module: str, first: Path | None = None) -> Path | None:
    """Where `python -m module` would find it, looking in `first`, the repo and on PYTHONPATH.

    Checked by path rather than imported: importing agent.worker would pull in livekit-agents here.
    """
    rel = Path(*module.split("."))
    roots = [*([first] if first else []), REPO,
             *(Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    for root in roots:
        for candidate in (root / rel.with_suffix(".py"), root / rel / "__main__.py"):
            if candidate.is_file():
                return candidate
    return None


def check_agent(
    agents: int, spec: str, agent_path: Path | None, requirements: Path | None, agents_version: str | None
) -> None:
    """Raise StackError if the agent options cannot start `agents` workers of `spec` (MODULE or
    MODULE:SERVER)."""
    if agent_path is not None and not agent_path.is_dir():
        raise StackError(f"--agent-path {agent_path}: no such folder")
    if requirements is not None and agents_version is not None:
        raise StackError(
            "--agents-version and --agent-requirements both pick the livekit-agents version;"
            " give one (your requirements file pins it for your agent)"
        )
    module, _, attr = spec.partition(":")
    found = module_file(module, agent_path) or (
        module_file(f"{module}.__init__", agent_path) if attr else None
    )
    if agents and found is None and requirements is None:
        raise StackError(
            f"--agents {agents}: the agent worker module {module} is not in"
            f" {agent_path or REPO} (or on PYTHONPATH){'' if agent_path else ' yet'};"
            " point --agent-path at the folder holding it, or use --agents 0"
        )


def agent_argv(python: Path, spec: str) -> list[str]:
    """`python -m MODULE start`, or for MODULE:SERVER (a worker without a `__main__` block of its
    own) the instrumentation's runner, which hands that server object to livekit-agents' CLI."""
    if ":" in spec:
        return [str(python), "-m", "lkrig_instrument.run", spec, "start"]
    return [str(python), "-m", spec, "start"]


def agent(
    at: Layout, i: int, python: Path, spec: str, agent_name: str, agent_path: Path | None, timeout: float
) -> Service:
    """Agent worker i: `spec` run by `python`, registering as `agent_name`."""
    env = clean_env(
        {
            **at.creds(),
            "AGENT_NAME": agent_name,
            "AGENT_HEALTH_PORT": str(at.ports.agent_health[i]),
            "AGENT_METRICS_PORT": str(at.ports.agent_metrics[i]),
            "AGENT_HOST": at.host,
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir(at.run_dir, i)),
            # admission load from the worker's own processes: the callers share the CPUs
            "AGENT_LOAD": os.environ.get("AGENT_LOAD", "process"),
            # The legacy venv finds the repo and instrument/ through .pth files pointing at the
            # clone that last ran setup; this pins both to this checkout.
            "PYTHONPATH": os.pathsep.join(
                filter(
                    None,
                    [
                        str(agent_path.resolve()) if agent_path else None,
                        str(REPO),
                        str(INSTRUMENT),
                        os.environ.get("PYTHONPATH"),
                    ],
                )
            ),
            # A user's worker that names no agent registers under this one (1.8+), and
            # its sessions tell the rig's callers about counted errors (lkrig_instrument).
            "LIVEKIT_AGENT_NAME": agent_name,
            "LKRIG_ROOM_EVENTS": "1",
            "LKRIG_LATENCY_OVERRIDE": str(at.run_dir / LATENCY_OVERRIDE_FILE),
        }
    )
    health = at.agent_health_url(i)
    log = at.logs / f"agent-{i}.log"
    return Service(
        f"agent-{i}",
        agent_argv(python, spec),
        env,
        log,
        timeout,
        probes.agent_registered(health, log),
        f"GET {health} and the worker registered with livekit-server",
        grace=10.0,  # lets the worker drain its jobs on SIGTERM
        # a restarted worker appends to its log: only a registration after this point counts
        restart_health=lambda: probes.agent_registered(health, log, since=log.stat().st_size),
    )


# --- Locust --------------------------------------------------------------------------------------------


def _locust(locustfile: Path) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(locustfile)]


def locust_master(at: Layout, locustfile: Path, timeout: float) -> Service:
    web = at.locust_url
    return Service(
        "locust-master",
        [
            *_locust(locustfile),
            "--master",
            "--master-bind-host",
            at.host,
            "--master-bind-port",
            str(at.ports.locust_master),
            "--web-host",
            at.host,
            "--web-port",
            str(at.ports.locust_web),
            # a stopped run lets each call finish, so its turns are counted on both sides
            "--stop-timeout",
            str(WEB_STOP_TIMEOUT_S),
        ],
        clean_env({**at.creds(), "LOADGEN_METRICS_PORT": str(at.ports.loadgen_metrics),
                   "LOADGEN_METRICS_HOST": at.host}),
        at.logs / "locust-master.log",
        timeout,
        probes.http_ok(web + "/"),
        f"GET {web}/",
    )


def locust_worker(at: Layout, j: int, workers: int, locustfile: Path, timeout: float) -> Service:
    """Locust worker j of `workers`; healthy once the master lists all of them (a master on
    another host: at least as many, since other hosts' workers count too)."""
    stats = at.locust_url + "/stats/requests"
    return Service(
        f"locust-worker-{j}",
        [*_locust(locustfile), "--worker", "--master-host", at.master_host, "--master-port",
         str(at.ports.locust_master)],
        clean_env({**at.creds(), **WORKER_REJOIN_ENV}),
        at.logs / f"locust-worker-{j}.log",
        timeout,
        probes.locust_workers(stats, workers),
        f"{workers} workers listed by {stats}",
    )
