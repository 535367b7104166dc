"""The native stack: livekit-server, agent workers, Locust and Prometheus as supervised processes.

`rig up --native` and the tests' `native_stack` fixture both go through `NativeStack`, so what
the tests start is what a user starts. The design (ports, order, health checks, teardown) is in
docs/native-stack.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from rig import byo, envfile, pins, procs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = REPO / ".rig" / "native"
LIVEKIT_CONFIG = REPO / "livekit" / "livekit.yaml"
PROMETHEUS_TEMPLATE = REPO / "prometheus" / "prometheus.native.yml"
AGENT_MODULE = "agent.worker"
LOCUSTFILE = REPO / "loadgen" / "locustfile.py"
STATE_FILE = "state.json"
# In the run folder: the agents' latency override (agent/latency.py), written by `rig run`'s
# slow-provider fault; its path reaches the agents as LKRIG_LATENCY_OVERRIDE.
LATENCY_OVERRIDE_FILE = "latency-override.json"

# Ports of the services whose port is not in livekit/livekit.yaml. Each agent worker i takes
# AGENT_HEALTH_BASE + i and AGENT_METRICS_BASE + i. --port-offset shifts all of them.
PROMETHEUS_PORT = 9090
LOCUST_WEB_PORT = 8089
LOCUST_MASTER_PORT = 5557
LOADGEN_METRICS_PORT = 9646
# The web UI's master lets a stopped call finish for up to WEB_STOP_TIMEOUT_S. A Locust worker
# then waits that long again before it rejoins, and handles no heartbeat meanwhile: it would
# quit on the master's 60 s heartbeat timeout. Locust's own variable takes the second wait off
# (docker-compose.yml sets the same two).
WEB_STOP_TIMEOUT_S = 45
WORKER_REJOIN_ENV = {"LOCUST_WORKER_ADDITIONAL_WAIT_BEFORE_READY_AFTER_STOP": str(-WEB_STOP_TIMEOUT_S)}
AGENT_HEALTH_BASE = 8100
AGENT_METRICS_BASE = 9100
MAX_AGENTS = 100
MAX_PORT_OFFSET = 14000  # keeps the shifted UDP range below 65536

# Environment variables the rig sets itself; inherited values would silently change a service
# (livekit-server reads LIVEKIT_<CONFIG_FIELD> variables as config overrides).
_SCRUBBED_PREFIXES = ("LIVEKIT_",)
_SCRUBBED = {"PROMETHEUS_MULTIPROC_DIR", "AGENT_NAME", "AGENT_HEALTH_PORT", "AGENT_METRICS_PORT"}


class StackError(RuntimeError):
    """A user-facing failure of `rig up` / `rig down`: the message says what, where and what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("RIG_CACHE") or Path.home() / ".cache" / "lkrig")


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
    agents_version: str | None = None  # None: the main pin (this venv); or the legacy pin
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
    livekit_timeout: float = 30.0
    prometheus_timeout: float = 30.0
    agent_timeout: float = 90.0  # imports livekit-agents, loads the silero VAD, registers
    locust_timeout: float = 60.0
    say: Callable[[str], None] = field(default=lambda msg: _print(msg), repr=False)

    @property
    def logs_dir(self) -> Path:
        return self.logs or self.run_dir / "logs"


@dataclass(frozen=True)
class Ports:
    livekit: int
    livekit_metrics: int
    rtc_udp_start: int
    rtc_udp_end: int
    prometheus: int
    locust_web: int
    locust_master: int
    loadgen_metrics: int
    agent_health: tuple[int, ...]
    agent_metrics: tuple[int, ...]

    def tcp(self, agents: int, locust: bool) -> list[tuple[int, str]]:
        """(port, what) for every TCP port this run will listen on."""
        out = [
            (self.livekit, "livekit-server HTTP/WebSocket"),
            (self.livekit_metrics, "livekit-server metrics"),
            (self.prometheus, "Prometheus"),
        ]
        for i in range(agents):
            out += [
                (self.agent_health[i], f"agent-{i} health"),
                (self.agent_metrics[i], f"agent-{i} metrics"),
            ]
        if locust:
            out += [
                (self.locust_web, "Locust web UI"),
                (self.locust_master, "Locust master"),
                (self.loadgen_metrics, "loadgen metrics"),
            ]
        return out


def livekit_base_ports(config: Path = LIVEKIT_CONFIG) -> dict[str, int]:
    """The ports livekit/livekit.yaml sets (the same file the compose service mounts)."""
    try:
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
        ports = {
            "port": int(cfg["port"]),
            "prometheus": int(cfg["prometheus"]["port"]),
            "udp_start": int(cfg["rtc"]["port_range_start"]),
            "udp_end": int(cfg["rtc"]["port_range_end"]),
        }
    except OSError as exc:
        raise StackError(f"{config}: cannot read ({exc.strerror})") from exc
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise StackError(
            f"{config}: needs port, prometheus.port, rtc.port_range_start and rtc.port_range_end ({exc})"
        ) from exc
    if int((cfg.get("rtc") or {}).get("tcp_port") or 0):
        raise StackError(f"{config}: rtc.tcp_port must be 0: livekit-server binds ICE/TCP on every interface")
    return ports


def compute_ports(offset: int, agents: int, config: Path = LIVEKIT_CONFIG) -> Ports:
    if not 0 <= offset <= MAX_PORT_OFFSET:
        raise StackError(f"--port-offset {offset}: must be between 0 and {MAX_PORT_OFFSET}")
    if not 0 <= agents <= MAX_AGENTS:
        raise StackError(f"--agents {agents}: must be between 0 and {MAX_AGENTS}")
    base = livekit_base_ports(config)
    ports = Ports(
        livekit=base["port"] + offset,
        livekit_metrics=base["prometheus"] + offset,
        rtc_udp_start=base["udp_start"] + offset,
        rtc_udp_end=base["udp_end"] + offset,
        prometheus=PROMETHEUS_PORT + offset,
        locust_web=LOCUST_WEB_PORT + offset,
        locust_master=LOCUST_MASTER_PORT + offset,
        loadgen_metrics=LOADGEN_METRICS_PORT + offset,
        agent_health=tuple(AGENT_HEALTH_BASE + offset + i for i in range(agents)),
        agent_metrics=tuple(AGENT_METRICS_BASE + offset + i for i in range(agents)),
    )
    tcp = ports.tcp(agents, locust=True)
    seen: dict[int, str] = {}
    for port, what in tcp:
        if port in seen:
            raise StackError(f"port {port} is assigned to both {seen[port]} and {what}; check {config}")
        if not 0 < port < 65536:
            raise StackError(f"port {port} for {what} is out of range; lower --port-offset")
        seen[port] = what
    if ports.rtc_udp_end >= 65536:
        raise StackError(f"RTC UDP range ends at {ports.rtc_udp_end}; lower --port-offset")
    return ports


# --- binaries ---------------------------------------------------------------------------------------


def resolve_livekit_server(version: str, compose_file: Path) -> Path:
    env = os.environ.get("LIVEKIT_SERVER_BIN")
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StackError(
                f"LIVEKIT_SERVER_BIN={env} is not an executable file; point it at a livekit-server {version}"
                " binary, or unset it to use the one scripts/setup builds"
            )
    else:
        path = cache_dir() / "livekit-server" / version / "livekit-server"
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StackError(
                f"livekit-server {version} (pinned in {compose_file}) is not installed:"
                f" no executable at {path};"
                " run scripts/setup (or bash scripts/install-livekit-server.sh), or set LIVEKIT_SERVER_BIN"
            )
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{path} --version failed ({exc}); is it a livekit-server binary?") from exc
    got = out.strip().rsplit(" ", 1)[-1] if out.strip() else "nothing"
    if got.lstrip("v") != version.lstrip("v"):
        raise StackError(f"{path} reports version {got!r}, but {compose_file} pins livekit-server {version}")
    return path


def resolve_prometheus() -> Path:
    env = os.environ.get("PROMETHEUS_BIN")
    found = env or shutil.which("prometheus")
    if not found or not os.access(found, os.X_OK):
        where = f"PROMETHEUS_BIN={env} is not executable" if env else "no `prometheus` on PATH"
        raise StackError(f"Prometheus not found ({where}); run scripts/setup (Debian package prometheus)")
    return Path(found)


def resolve_agents_python(version: str | None, pinned: pins.Pins) -> Path:
    main = pinned["LIVEKIT_AGENTS_VERSION"]
    legacy = pinned["LIVEKIT_AGENTS_LEGACY_VERSION"]
    if version in (None, main):
        return Path(sys.executable)
    if version == legacy:
        python = cache_dir() / f"venv-agents-{legacy}" / "bin" / "python"
        if not python.exists():
            raise StackError(
                f"no venv for livekit-agents {legacy} at {python.parent.parent}; run scripts/setup"
            )
        return python
    raise StackError(f"--agents-version {version}: {pinned.source} pins {main} and legacy {legacy} only")


# --- services ----------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    timeout: float
    health: Callable[[], bool]
    health_what: str  # said in the error when the check never passes
    grace: float = 5.0  # seconds between SIGTERM and SIGKILL
    # What the service gets if the supervisor dies without stopping it. Python services get
    # SIGTERM and stop their own children; the Go servers have no children and livekit-server can
    # lose a single SIGTERM (see _livekit_ready), so they get SIGKILL.
    death_signal: int = signal.SIGTERM
    popen: subprocess.Popen[bytes] | None = None
    start_ticks: int = 0
    log_file: IO[bytes] | None = None
    started_at: float = 0.0


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        got = procs.http_get(url)
        return got is not None and got[0] == 200

    return check


def _agent_registered(health_url: str, log: Path, since: int = 0) -> Callable[[], bool]:
    """A worker answers its health check before it has registered with livekit-server, and a
    dispatch in between is dropped, not retried. livekit-agents logs "registered worker" (any
    worker, ours or a user's) once the server has accepted it; a restarted worker appends to
    its log, so only what follows byte `since` counts."""
    http_ok = _http_ok(health_url)

    def check() -> bool:
        try:
            with open(log, "rb") as f:
                f.seek(since)
                return http_ok() and b"registered worker" in f.read()
        except OSError:
            return False

    return check


def _livekit_ready(url: str, settle: float = 0.3) -> Callable[[], bool]:
    """GET / answers 200, and kept answering for `settle` seconds.

    livekit-server v1.13.5 serves HTTP ~100 ms before it marks itself running, and a SIGTERM in
    that window is swallowed (Stop() returns early and the server runs on). Calling it healthy
    only after the window means a prompt `rig down` always stops it.
    """
    first_ok: list[float] = []

    def check() -> bool:
        got = procs.http_get(url)
        if got is None or got[0] != 200:
            first_ok.clear()
            return False
        if not first_ok:
            first_ok.append(time.monotonic())
        return time.monotonic() - first_ok[0] >= settle

    return check


def _locust_workers(url: str, expected: int) -> Callable[[], bool]:
    def check() -> bool:
        got = procs.http_get(url)
        if got is None or got[0] != 200:
            return False
        try:
            return len(json.loads(got[1]).get("workers", [])) >= expected
        except (ValueError, AttributeError):
            return False

    return check


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
    livekit_http_url: str
    livekit_metrics_url: str
    prometheus_url: str
    locust_url: str | None
    loadgen_metrics_url: str | None
    agents: list[AgentEndpoint]
    agent_name: str
    logs_dir: str
    run_dir: str
    ports: Ports
    pids: dict[str, int]
    startup_seconds: float = 0.0
    api_key: str = field(default="", repr=False)
    api_secret: str = field(default="", repr=False)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("api_key")
        data.pop("api_secret")
        return data


def write_prometheus_config(
    path: Path, ports: Ports, agents: int, locust: bool, template: Path = PROMETHEUS_TEMPLATE
) -> None:
    try:
        cfg = yaml.safe_load(template.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"{template}: cannot read the Prometheus template ({exc})") from exc
    targets: dict[str, list[dict[str, Any]] | None] = {
        "prometheus": [{"targets": [f"127.0.0.1:{ports.prometheus}"]}],
        "livekit": [{"targets": [f"127.0.0.1:{ports.livekit_metrics}"]}],
        "agent": [
            {"targets": [f"127.0.0.1:{ports.agent_metrics[i]}"], "labels": {"worker": f"agent-{i}"}}
            for i in range(agents)
        ]
        or None,
        "loadgen": [{"targets": [f"127.0.0.1:{ports.loadgen_metrics}"]}] if locust else None,
    }
    jobs = []
    for job in cfg.get("scrape_configs") or []:
        name = job.get("job_name")
        if name in targets:
            if targets[name] is None:
                continue  # nothing of that kind runs in this stack
            job = {**job, "static_configs": targets[name]}
        jobs.append(job)
    cfg["scrape_configs"] = jobs
    # Prometheus resolves rule files against the config's folder; the config moves to the run folder.
    cfg["rule_files"] = [str((template.parent / rule).resolve()) for rule in cfg.get("rule_files") or []]
    path.write_text(
        f"# Generated by `rig up --native` from {template}; edit that file, not this one.\n"
        + yaml.safe_dump(cfg, sort_keys=False),
        encoding="utf-8",
    )


def _module_file(module: str, first: Path | None = None) -> Path | None:
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


def agent_argv(python: Path, spec: str) -> list[str]:
    """`python -m MODULE start`, or for MODULE:SERVER (a worker without a `__main__` block of its
    own) the instrumentation's runner, which hands that server object to livekit-agents' CLI."""
    if ":" in spec:
        return [str(python), "-m", "lkrig_instrument.run", spec, "start"]
    return [str(python), "-m", spec, "start"]


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# --- state file ----------------------------------------------------------------------------------------


def read_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StackError(
            f"{path}: unreadable state file ({exc}); remove it after checking nothing runs"
        ) from exc


def _alive_services(state: dict[str, Any]) -> list[str]:
    return [
        f"{s['name']} (pid {s['pid']})"
        for s in state.get("services", [])
        if procs.session_members(s["pid"], s["start_ticks"])
    ]


# --- the stack ------------------------------------------------------------------------------------------


class NativeStack:
    def __init__(self, opts: NativeOptions) -> None:
        self.opts = opts
        self.services: list[Service] = []
        self.info: StackInfo | None = None
        self._secret = ""
        self._owns_state = False  # the state file is ours only once we wrote it

    # -- planning

    def _plan(self) -> list[list[Service]]:
        o = self.opts
        if o.agent_path is not None and not o.agent_path.is_dir():
            raise StackError(f"--agent-path {o.agent_path}: no such folder")
        if o.agent_requirements is not None and o.agents_version is not None:
            raise StackError(
                "--agents-version and --agent-requirements both pick the livekit-agents version;"
                " give one (your requirements file pins it for your agent)"
            )
        module, _, attr = o.agent_module.partition(":")
        module_file = _module_file(module, o.agent_path) or (
            _module_file(f"{module}.__init__", o.agent_path) if attr else None
        )
        if o.agents and module_file is None and o.agent_requirements is None:
            raise StackError(
                f"--agents {o.agents}: the agent worker module {module} is not in"
                f" {o.agent_path or REPO} (or on PYTHONPATH){'' if o.agent_path else ' yet'};"
                " point --agent-path at the folder holding it, or use --agents 0"
            )
        pinned = self._pins
        server = resolve_livekit_server(pinned.livekit_server, o.compose_file)
        prometheus = resolve_prometheus()
        agents_python = None
        if o.agents and o.agent_requirements is not None:
            try:
                agents_python = byo.ensure_venv(o.agent_requirements, o.say)
            except byo.ByoError as exc:
                raise StackError(str(exc)) from exc
        elif o.agents:
            agents_python = resolve_agents_python(o.agents_version, pinned)
        locust = o.loadgen_workers > 0 and o.locustfile.exists()
        if o.loadgen_workers > 0 and not locust:
            o.say(f"rig up: skipping Locust: {o.locustfile} does not exist yet")
        self._locust = locust
        p = self.ports = compute_ports(o.port_offset, o.agents)
        logs = o.logs_dir
        key, secret = self._credentials
        livekit_url = f"ws://127.0.0.1:{p.livekit}"
        creds = {"LIVEKIT_URL": livekit_url, "LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": secret}

        argv = [str(server), "--config", str(LIVEKIT_CONFIG)]
        if o.port_offset:
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
        livekit = Service(
            "livekit-server",
            argv,
            _clean_env({"LIVEKIT_KEYS": f"{key}: {secret}"}),
            logs / "livekit-server.log",
            o.livekit_timeout,
            _livekit_ready(f"http://127.0.0.1:{p.livekit}/"),
            f"GET http://127.0.0.1:{p.livekit}/ answering 200 for 0.3 s",
            death_signal=signal.SIGKILL,
        )
        prom_cfg = o.run_dir / "prometheus.yml"
        write_prometheus_config(prom_cfg, p, o.agents, locust or o.scrape_loadgen)
        prom = Service(
            "prometheus",
            [
                str(prometheus),
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={o.run_dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{p.prometheus}",
            ],
            _clean_env({}),
            logs / "prometheus.log",
            o.prometheus_timeout,
            _http_ok(f"http://127.0.0.1:{p.prometheus}/-/ready"),
            f"GET http://127.0.0.1:{p.prometheus}/-/ready",
            death_signal=signal.SIGKILL,
        )
        agents = []
        for i in range(o.agents):
            mp = o.run_dir / "multiproc" / f"agent-{i}"
            env = _clean_env(
                {
                    **creds,
                    "AGENT_NAME": o.agent_name,
                    "AGENT_HEALTH_PORT": str(p.agent_health[i]),
                    "AGENT_METRICS_PORT": str(p.agent_metrics[i]),
                    "PROMETHEUS_MULTIPROC_DIR": str(mp),
                    # admission load from the worker's own processes: the callers share the CPUs
                    "AGENT_LOAD": os.environ.get("AGENT_LOAD", "process"),
                    # The legacy venv finds the repo and instrument/ through .pth files pointing at the
                    # clone that last ran setup; this pins both to this checkout.
                    "PYTHONPATH": os.pathsep.join(
                        filter(
                            None,
                            [
                                str(o.agent_path.resolve()) if o.agent_path else None,
                                str(REPO),
                                str(REPO / "instrument"),
                                os.environ.get("PYTHONPATH"),
                            ],
                        )
                    ),
                    # A user's worker that names no agent registers under this one (1.8+), and
                    # its sessions tell the rig's callers about counted errors (lkrig_instrument).
                    "LIVEKIT_AGENT_NAME": o.agent_name,
                    "LKRIG_ROOM_EVENTS": "1",
                    "LKRIG_LATENCY_OVERRIDE": str(o.run_dir / LATENCY_OVERRIDE_FILE),
                }
            )
            health = f"http://127.0.0.1:{p.agent_health[i]}/"
            agents.append(
                Service(
                    f"agent-{i}",
                    agent_argv(agents_python, o.agent_module),
                    env,
                    logs / f"agent-{i}.log",
                    o.agent_timeout,
                    _agent_registered(health, logs / f"agent-{i}.log"),
                    f"GET {health} and the worker registered with livekit-server",
                    grace=10.0,  # lets the worker drain its jobs on SIGTERM
                )
            )
        stages = [[livekit, prom], agents]
        if locust:
            loc = [sys.executable, "-m", "locust", "-f", str(o.locustfile)]
            web = f"http://127.0.0.1:{p.locust_web}"
            master_env = _clean_env({**creds, "LOADGEN_METRICS_PORT": str(p.loadgen_metrics)})
            master = Service(
                "locust-master",
                [
                    *loc,
                    "--master",
                    "--master-bind-host",
                    "127.0.0.1",
                    "--master-bind-port",
                    str(p.locust_master),
                    "--web-host",
                    "127.0.0.1",
                    "--web-port",
                    str(p.locust_web),
                    # a stopped run lets each call finish, so its turns are counted on both sides
                    "--stop-timeout",
                    str(WEB_STOP_TIMEOUT_S),
                ],
                master_env,
                logs / "locust-master.log",
                o.locust_timeout,
                _http_ok(web + "/"),
                f"GET {web}/",
            )
            workers = [
                Service(
                    f"locust-worker-{j}",
                    [*loc, "--worker", "--master-host", "127.0.0.1", "--master-port", str(p.locust_master)],
                    _clean_env({**creds, **WORKER_REJOIN_ENV}),
                    logs / f"locust-worker-{j}.log",
                    o.locust_timeout,
                    _locust_workers(web + "/stats/requests", o.loadgen_workers),
                    f"{o.loadgen_workers} workers listed by {web}/stats/requests",
                )
                for j in range(o.loadgen_workers)
            ]
            stages += [[master], workers]
        self.info = StackInfo(
            livekit_url=livekit_url,
            livekit_http_url=f"http://127.0.0.1:{p.livekit}",
            livekit_metrics_url=f"http://127.0.0.1:{p.livekit_metrics}/metrics",
            prometheus_url=f"http://127.0.0.1:{p.prometheus}",
            locust_url=f"http://127.0.0.1:{p.locust_web}" if locust else None,
            loadgen_metrics_url=f"http://127.0.0.1:{p.loadgen_metrics}/metrics" if locust else None,
            agents=[
                AgentEndpoint(
                    f"agent-{i}",
                    f"http://127.0.0.1:{p.agent_health[i]}/",
                    f"http://127.0.0.1:{p.agent_metrics[i]}/metrics",
                    str(o.run_dir / "multiproc" / f"agent-{i}"),
                )
                for i in range(o.agents)
            ],
            agent_name=o.agent_name,
            logs_dir=str(logs),
            run_dir=str(o.run_dir),
            ports=p,
            pids={},
            api_key=key,
            api_secret=secret,
        )
        return [stage for stage in stages if stage]

    def _preflight_ports(self) -> None:
        busy = []
        for port, what in self.ports.tcp(self.opts.agents, self._locust):
            if not procs.tcp_port_free(port):
                owner = procs.port_owner(port)
                busy.append(f"127.0.0.1:{port} ({what}){' held by ' + owner if owner else ''}")
        if busy:
            raise StackError(
                "port(s) already in use: "
                + "; ".join(busy)
                + ". Stop what holds them (`rig down` if it is a native stack),"
                " or pick other ports with --port-offset"
            )

    # -- starting

    def start(self) -> StackInfo:
        """Start everything and wait until all is healthy; on any failure stop what was started."""
        o = self.opts
        t0 = time.monotonic()
        state = read_state(o.run_dir)
        if state is not None:
            alive = _alive_services(state)
            if alive:
                raise StackError(
                    f"a native stack from {o.run_dir} is already running ({', '.join(alive)});"
                    " stop it with `rig down`"
                )
            o.say(f"rig up: removing stale state {o.run_dir / STATE_FILE} (none of its processes runs)")
            (o.run_dir / STATE_FILE).unlink()
        stages = self.plan()
        self._preflight_ports()
        try:
            for stage in stages:
                for svc in stage:
                    self._spawn(svc)
                self._write_state(detached=False)
                self._wait_healthy(stage)
        except BaseException:
            self.stop()
            raise
        assert self.info is not None
        self.info.startup_seconds = round(time.monotonic() - t0, 2)
        self.info.pids = {s.name: s.popen.pid for s in self.services if s.popen}
        self._write_state(detached=False)
        return self.info

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
        self._secret = secret
        o.run_dir.mkdir(parents=True, exist_ok=True)
        o.logs_dir.mkdir(parents=True, exist_ok=True)
        stages = self._plan()
        mp_root = o.run_dir / "multiproc"
        shutil.rmtree(mp_root, ignore_errors=True)  # stale .db files would be summed into new metrics
        for i in range(o.agents):
            (mp_root / f"agent-{i}").mkdir(parents=True)
        (o.run_dir / LATENCY_OVERRIDE_FILE).unlink(missing_ok=True)
        return stages

    def _spawn(self, svc: Service, append: bool = False) -> None:
        svc.log.parent.mkdir(parents=True, exist_ok=True)
        svc.log_file = open(svc.log, "ab" if append else "wb")  # stays open for the child's lifetime
        try:
            svc.popen = subprocess.Popen(
                svc.argv,
                stdin=subprocess.DEVNULL,
                stdout=svc.log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=svc.env,
                start_new_session=True,
                preexec_fn=procs.die_with_parent(svc.death_signal) if self.opts.die_with_supervisor else None,
            )
        except OSError as exc:
            svc.log_file.close()
            raise StackError(f"{svc.name}: cannot start {svc.argv[0]} ({exc.strerror})") from exc
        svc.started_at = time.monotonic()
        info = procs.proc_info(svc.popen.pid)
        svc.start_ticks = info.start_ticks if info else 0
        self.services.append(svc)
        self.opts.say(f"rig up: started {svc.name} (pid {svc.popen.pid}), log {svc.log}")

    def _log_tail(self, svc: Service, lines: int = 15) -> str:
        try:
            text = svc.log.read_text(errors="replace")
        except OSError:
            return ""
        if self._secret:
            text = text.replace(self._secret, "<secret>")
        tail = text.splitlines()[-lines:]
        return (
            ("\n  last lines of the log:\n    " + "\n    ".join(tail)) if tail else "\n  (the log is empty)"
        )

    def _wait_healthy(self, stage: list[Service]) -> None:
        pending = list(stage)
        while pending:
            for svc in list(pending):
                assert svc.popen is not None
                rc = svc.popen.poll()
                if rc is not None:
                    raise StackError(
                        f"{svc.name} exited with code {rc} while starting; see {svc.log}{self._log_tail(svc)}"
                    )
                if svc.health():
                    pending.remove(svc)
                    self.opts.say(
                        f"rig up: {svc.name} healthy after {time.monotonic() - svc.started_at:.1f} s"
                    )
                elif time.monotonic() - svc.started_at > svc.timeout:
                    raise StackError(
                        f"{svc.name} did not become healthy within {svc.timeout:.0f} s (waited for "
                        f"{svc.health_what}); see {svc.log}{self._log_tail(svc)}"
                    )
            if pending:
                time.sleep(0.1)

    def _write_state(self, detached: bool) -> None:
        me = procs.proc_info(os.getpid())
        state = {
            "version": 1,
            "supervisor": {
                "pid": os.getpid(),
                "start_ticks": me.start_ticks if me else 0,
                "detached": detached,
            },
            "services": [
                {"name": s.name, "pid": s.popen.pid, "start_ticks": s.start_ticks, "log": str(s.log)}
                for s in self.services
                if s.popen
            ],
            "info": self.info.public() if self.info else None,
        }
        path = self.opts.run_dir / STATE_FILE
        self._owns_state = True
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(path)

    def mark_detached(self) -> None:
        self._write_state(detached=True)

    # -- running and stopping

    def dead_service(self) -> Service | None:
        for svc in self.services:
            if svc.popen and svc.popen.poll() is not None:
                return svc
        return None

    def describe_death(self, svc: Service) -> str:
        assert svc.popen is not None
        return f"{svc.name} exited with code {svc.popen.returncode}; see {svc.log}{self._log_tail(svc)}"

    # -- faults (rig run): one service at a time, while the rest runs

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise StackError(f"no service {name!r} in this stack")

    def kill_service(self, name: str, sig: int = signal.SIGKILL, grace: float = 5.0) -> list[int]:
        """Stop one service the hard way or the orderly way; return pids left (empty = gone).

        SIGKILL hits every process of its session at once (a crash of the whole worker, job
        processes included). SIGTERM goes to the leader only, so a worker drains its own jobs;
        what is still there after `grace` seconds gets SIGKILL."""
        svc = self.service(name)
        assert svc.popen is not None
        if sig == signal.SIGKILL:
            for pid in procs.session_members(svc.popen.pid, svc.start_ticks):
                _send(pid, signal.SIGKILL)
            grace = 0.0
        elif procs.is_same_process(svc.popen.pid, svc.start_ticks):
            _send(svc.popen.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and procs.session_members(svc.popen.pid, svc.start_ticks):
            svc.popen.poll()
            time.sleep(0.1)
        left = procs.stop_session(svc.popen.pid, svc.start_ticks, 0.0, reap=svc.popen.poll)
        with contextlib.suppress(subprocess.TimeoutExpired):
            svc.popen.wait(timeout=5)
        if svc.log_file:
            svc.log_file.close()
        return left

    def restart_service(self, name: str) -> float:
        """Start a stopped service again, as before, and wait until it is healthy; return the
        seconds that took. Call it from the main thread: the death signal (PR_SET_PDEATHSIG)
        fires when the *thread* that started a child exits. Its log is appended to; an agent
        keeps its multiproc folder, and the worker carries its earlier processes' counts over its
        start (lkrig_instrument.carry), so its /metrics carries on (no counter reset)."""
        old = self.service(name)
        if old.popen is not None and old.popen.poll() is None:
            raise StackError(f"{name} is still running; stop it first")
        with open(old.log, "ab") as f:
            f.write(f"--- rig: {name} restarted at {time.time():.3f} ---\n".encode())
        health = old.health
        if old.name.startswith("agent-"):
            url = f"http://127.0.0.1:{self.ports.agent_health[int(name.split('-')[1])]}/"
            health = _agent_registered(url, old.log, since=old.log.stat().st_size)
        elif old.name == "livekit-server":
            health = _livekit_ready(f"http://127.0.0.1:{self.ports.livekit}/")  # a fresh settle window
        new = Service(old.name, old.argv, old.env, old.log, old.timeout, health, old.health_what,
                      old.grace, old.death_signal)
        # In the old one's place (stop order), once: _spawn appends, and a stale entry would be
        # reported dead by dead_service() after a second restart of the same service.
        at = next(i for i, svc in enumerate(self.services) if svc is old)
        self.services.remove(old)
        self._spawn(new, append=True)
        self.services.insert(at, self.services.pop())
        try:
            self._wait_healthy([new])
        finally:
            assert self.info is not None and new.popen is not None
            self.info.pids[name] = new.popen.pid
            self._write_state(detached=False)
        return time.monotonic() - new.started_at

    def stop(self) -> list[str]:
        """Stop every service (reverse start order); return what could not be stopped (empty = clean)."""
        left: list[str] = []
        for svc in reversed(self.services):
            if svc.popen is None:
                continue
            popen = svc.popen
            pids = procs.stop_session(popen.pid, svc.start_ticks, svc.grace, reap=popen.poll)
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pids.append(popen.pid)
            if pids:
                left.append(f"{svc.name}: pids {', '.join(map(str, pids))}")
            if svc.log_file:
                svc.log_file.close()
        self.services.clear()
        if not left and self._owns_state:
            (self.opts.run_dir / STATE_FILE).unlink(missing_ok=True)
            self._owns_state = False
        return left


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def down(run_dir: Path, say: Callable[[str], None], supervisor_timeout: float = 60.0) -> None:
    """Stop the stack recorded in `run_dir`; raise StackError if anything survives."""
    state = read_state(run_dir)
    if state is None:
        say(f"rig down: no native stack recorded in {run_dir}; nothing to stop")
        return
    services = state.get("services", [])
    alive = [s["name"] for s in services if procs.session_members(s["pid"], s["start_ticks"])]
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
    for svc in reversed(services):
        grace = 10.0 if svc["name"].startswith("agent-") else 5.0
        pids = procs.stop_session(svc["pid"], svc["start_ticks"], grace)
        if pids:
            left.append(f"{svc['name']}: pids {', '.join(map(str, pids))}")
    if left:
        raise StackError(f"rig down: could not stop {'; '.join(left)}; state kept in {run_dir / STATE_FILE}")
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    what = ", ".join(alive) if alive else "nothing was running any more"
    say(f"rig down: stopped {what}; no process of the stack is left")
