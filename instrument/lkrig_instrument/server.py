"""`AgentServer(**lkrig_instrument.server_options())`: a user's worker on the rig's ports.

The rig runs every agent worker with the same environment contract (docs/native-stack.md):
AGENT_HEALTH_PORT, AGENT_METRICS_PORT, PROMETHEUS_MULTIPROC_DIR, AGENT_HOST, AGENT_READY_FILE.
livekit-agents reads none of them itself and has no public way to change a server's ports after
construction, so the user's code passes them in: these are constructor arguments of
`AgentServer` (and of `WorkerOptions`) on 1.3.12 and 1.8.9 alike. Outside the rig (none of the
variables set) the result is `{}` and the worker keeps its own defaults.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from . import capabilities

REGISTERED = "registered worker"  # livekit-agents' log line once livekit-server accepted the worker


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


_ready: _ReadyFile | None = None


def server_options() -> dict[str, Any]:
    """Keyword arguments for `AgentServer(...)` / `WorkerOptions(...)` from the rig's
    environment: host, port (health), prometheus_port and prometheus_multiproc_dir. The
    livekit-agents metrics endpoint then serves the instrumentation's counters of every job
    process, aggregated through the multiprocess directory."""
    global _ready
    opts: dict[str, Any] = {}
    if (port := _port("AGENT_HEALTH_PORT")) is not None:
        opts["port"] = port
    if (metrics := _port("AGENT_METRICS_PORT")) is not None:
        opts["prometheus_port"] = metrics
    if opts or os.environ.get("AGENT_HOST"):
        # the rig's ports are loopback-only unless it says otherwise (compose: 0.0.0.0)
        opts["host"] = os.environ.get("AGENT_HOST", "").strip() or "127.0.0.1"
    if multiproc := os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
        opts["prometheus_multiproc_dir"] = multiproc
    if (ready := os.environ.get("AGENT_READY_FILE", "").strip()) and _ready is None:
        path = Path(ready)
        path.unlink(missing_ok=True)
        _ready = _ReadyFile(path)
        logger = logging.getLogger("livekit.agents")
        logger.addHandler(_ready)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    capabilities.report_once()
    return opts
