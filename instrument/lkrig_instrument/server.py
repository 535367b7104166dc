"""`AgentServer(**lkrig_instrument.server_options())`: a user's worker on the rig's ports.

The rig runs every agent worker with the same environment contract (docs/native-stack.md):
AGENT_HEALTH_PORT, AGENT_METRICS_PORT, PROMETHEUS_MULTIPROC_DIR, AGENT_HOST, AGENT_READY_FILE,
AGENT_LOAD, AGENT_LOAD_THRESHOLD.
livekit-agents reads none of them itself and has no public way to change a server's ports after
construction, so the user's code passes them in: these are constructor arguments of
`AgentServer` (and of `WorkerOptions`) on 1.3.12 and 1.8.9 alike. Outside the rig (none of the
variables set) the result is `{}` and the worker keeps its own defaults.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from . import capabilities, carry, process_sampler, scrape_target

REGISTERED = "registered worker"  # livekit-agents' log line once livekit-server accepted the worker
STARTING = "starting worker"  # logged once the worker has emptied PROMETHEUS_MULTIPROC_DIR


class ServerOptionError(ValueError):
    """A rig variable in the environment that cannot be used as a server option."""


def _port(var: str) -> int | None:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ServerOptionError(f"{var}={raw!r}: expected a TCP port number (1-65535)")
    return int(raw)


class _ReadyFile(logging.Handler):
    """Writes AGENT_READY_FILE when the worker has registered: compose's healthcheck waits for
    it, because a dispatch sent between the health endpoint answering and the registration is
    dropped. The log line is the one signal that needs no handle on the server object."""

    def __init__(self, path: Path) -> None:
        super().__init__(level=logging.INFO)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.getMessage() == REGISTERED:
                self.path.write_text("registered\n")
        except Exception:
            self.handleError(record)


class ProcessTreeLoad:
    """AGENT_LOAD=process: this worker's own CPU (its processes and their children) as a share
    of the machine's cores, instead of the framework's whole-machine CPU. On a machine the rig's
    callers and livekit-server share, the machine's CPU says more about them than about the
    agent, and a worker that thinks itself full refuses jobs. The rig's own worker uses it too."""

    def __init__(self) -> None:
        import psutil  # a livekit-agents dependency

        self._psutil = psutil
        self._me = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._last: tuple[float, float] | None = None
        self._value = 0.0

    def _cpu_seconds(self) -> float:
        total = 0.0
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except self._psutil.Error:
                pass
        return total

    def __call__(self) -> float:
        now, cpu = time.monotonic(), self._cpu_seconds()
        if self._last is None:
            self._last = (now, cpu)
        elif now - self._last[0] >= 0.25:
            self._value = min(max(cpu - self._last[1], 0.0) / (now - self._last[0]) / self._cores, 1.0)
            self._last = (now, cpu)
        return self._value


class _WorkerStarted(logging.Handler):
    """When livekit-agents logs that the worker starts: brings the earlier processes' counts back
    (carry) and starts the worker's soak sampler (process_sampler). The worker's start-up deletes
    every file in the multiprocess directory first, and a file written before that would be
    deleted under the sampler. The log line is the one signal after the clean-up and before
    /metrics listens that needs no handle on the server object."""

    def __init__(self, sampler: bool) -> None:
        super().__init__(level=logging.INFO)
        self.sampler = sampler

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.getMessage() == STARTING:
                carry.restore()
                if self.sampler:
                    process_sampler.start("worker")
        except Exception:
            self.handleError(record)


_ready: _ReadyFile | None = None
_started_hook: _WorkerStarted | None = None
_used = False  # server_options() was called in this process


def used() -> bool:
    return _used


def watch_ready_file() -> None:
    """Arm AGENT_READY_FILE (idempotent): written when livekit-agents logs the registration."""
    global _ready
    ready = os.environ.get("AGENT_READY_FILE", "").strip()
    if not ready or _ready is not None:
        return
    path = Path(ready)
    path.unlink(missing_ok=True)
    _ready = _ReadyFile(path)
    logger = logging.getLogger("livekit.agents")
    logger.addHandler(_ready)
    _info_from(logger)


def _info_from(logger: logging.Logger) -> None:
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def is_child_process() -> bool:
    """A process multiprocessing started (a job process), also while it is still unpickling its
    target: that is when it imports the user's module, before parent_process() is set, and
    stashing there would hide the counts of the jobs running beside it. CPython's spawn and
    forkserver bootstrap (multiprocessing/spawn.py `_main`) marks that phase with `_inheriting`."""
    return (multiprocessing.parent_process() is not None
            or bool(getattr(multiprocessing.current_process(), "_inheriting", False)))


def watch_worker_start(sampler: bool = True) -> None:
    """In the worker process, before the worker runs (idempotent): stash the counts of earlier
    processes in the multiprocess directory (carry) and arm their return and the worker's soak
    sampler (unless `sampler` is False: the caller starts it) for when the worker starts. A job
    process that imports the user's module (and so calls server_options()) neither stashes nor
    samples as the worker."""
    global _started_hook
    if _started_hook is not None or is_child_process():
        return
    carry.stash()
    if (metrics_port := _port("AGENT_METRICS_PORT")) is not None:
        scrape_target.announce(metrics_port)
    _started_hook = _WorkerStarted(sampler)
    logger = logging.getLogger("livekit.agents")
    logger.addHandler(_started_hook)
    _info_from(logger)


_serving: int | None = None


def serve_metrics() -> int | None:
    """In the worker process (idempotent): serve the multiprocess aggregate on AGENT_METRICS_PORT
    from prometheus_client's own HTTP server, read under the lock that carry's folds take, which
    the framework's /metrics (prometheus_port) would not. Returns the port, or None when there is
    nothing to serve (no port or no multiprocess directory set, or a job process)."""
    global _serving
    port = _port("AGENT_METRICS_PORT")
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if port is None or not multiproc or is_child_process():
        return None
    if _serving is not None:
        return _serving
    from prometheus_client import CollectorRegistry, start_http_server

    Path(multiproc).mkdir(parents=True, exist_ok=True)
    watch_worker_start()
    registry = CollectorRegistry()
    registry.register(carry.Collector(Path(multiproc)))
    start_http_server(port, addr=os.environ.get("AGENT_HOST", "").strip() or "127.0.0.1",
                      registry=registry)
    _serving = port
    return port


def server_options() -> dict[str, Any]:
    """Keyword arguments for `AgentServer(...)` / `WorkerOptions(...)` from the rig's
    environment: host, port (health), prometheus_multiproc_dir, load_fnc, load_threshold; only
    those whose variable is set. The worker process then serves /metrics on AGENT_METRICS_PORT
    itself (serve_metrics): the counters of every job process, aggregated through the
    multiprocess directory. To keep an option of your own, merge: `{**server_options(), ...}`
    (not prometheus_port: the framework's /metrics does not take carry's lock)."""
    global _used
    _used = True
    opts: dict[str, Any] = {}
    if (port := _port("AGENT_HEALTH_PORT")) is not None:
        opts["port"] = port
    if opts or os.environ.get("AGENT_HOST"):
        # the rig's ports are loopback-only unless it says otherwise (compose: 0.0.0.0)
        opts["host"] = os.environ.get("AGENT_HOST", "").strip() or "127.0.0.1"
    if multiproc := os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
        opts["prometheus_multiproc_dir"] = multiproc
    load = os.environ.get("AGENT_LOAD", "").strip()
    if load == "process":
        opts["load_fnc"] = ProcessTreeLoad()
    elif load not in ("", "system"):
        raise ServerOptionError(f"AGENT_LOAD={load!r}: expected 'process' or 'system'")
    if threshold := os.environ.get("AGENT_LOAD_THRESHOLD", "").strip():
        try:
            value = float(threshold)
        except ValueError:
            value = math.nan
        if not value > 0:
            raise ServerOptionError(f"AGENT_LOAD_THRESHOLD={threshold!r}: expected a number > 0")
        opts["load_threshold"] = value
    watch_ready_file()
    watch_worker_start()
    serve_metrics()
    capabilities.report_once()
    return opts
