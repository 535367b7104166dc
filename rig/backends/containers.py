"""A compose project's containers as the Docker SDK shows them: the labels Compose sets, where
this machine reaches a container's ports, a file put into it, and waiting for its state."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"  # `docker compose run` containers: not the service's
POLL_S = 0.1


class ComposeStackError(RuntimeError):
    """The project is not up as the rig needs it; the message says what is missing."""


def env_of(c: Any) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in (c.attrs["Config"].get("Env") or []) if "=" in kv)


def metrics_url(c: Any, port: str | None = None) -> str | None:
    """Where the rig reaches a container's /metrics (an agent's, on AGENT_METRICS_PORT, unless
    `port` says otherwise): its address on a network (the engine's host reaches bridge
    networks), or loopback with host networking."""
    port = port or env_of(c).get("AGENT_METRICS_PORT", "9100")
    if c.attrs["HostConfig"].get("NetworkMode") == "host":
        return f"http://127.0.0.1:{port}/metrics"
    for net in (c.attrs["NetworkSettings"].get("Networks") or {}).values():
        if net.get("IPAddress"):
            return f"http://{net['IPAddress']}:{port}/metrics"
    return None


def published(c: Any, port: int) -> str:
    """http://HOST:PORT where this machine reaches the container's `port`."""
    bindings = (c.attrs["NetworkSettings"].get("Ports") or {}).get(f"{port}/tcp") or []
    if not bindings:
        if c.attrs["HostConfig"].get("NetworkMode") == "host":
            return f"http://127.0.0.1:{port}"
        raise ComposeStackError(f"{c.name} publishes no port {port} (docker-compose.yml does)")
    host = bindings[0].get("HostIp") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{bindings[0]['HostPort']}"


def tar_one(name: str, data: bytes) -> bytes:
    """A tar of one file, readable by any user. The engine sets the file's mtime from the tar
    header, and the agent re-reads the file when its mtime changes: PAX keeps the fraction of a
    second, so two writes within one second still differ."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = len(data), 0o644, 0, 0
        info.mtime = time.time()
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def wait_stopped(c: Any, started_at: str, timeout: float) -> dict[str, Any]:
    """Wait until the run that started at `started_at` is over (stopped, or a newer run began);
    return the last State seen."""
    deadline = time.monotonic() + timeout
    while True:
        c.reload()
        state = c.attrs["State"]
        if not state["Running"] or state["StartedAt"] != started_at or time.monotonic() >= deadline:
            return state
        time.sleep(POLL_S)


def wait_up(c: Any, started_at: str, timeout: float) -> None:
    """Wait until a run newer than `started_at` runs and, with a healthcheck, is healthy."""
    deadline = time.monotonic() + timeout
    while True:
        c.reload()
        state = c.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        if state["Running"] and state["StartedAt"] != started_at and health in (None, "healthy"):
            return
        if not state["Running"] and not state.get("Restarting") and state["StartedAt"] != started_at:
            raise RuntimeError(f"{c.name} exited with code {state['ExitCode']} after starting again"
                               f" (see `docker logs {c.name}`)")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{c.name} not up {timeout:g} s after starting again (state"
                               f" {state['Status']}, health {health})")
        time.sleep(POLL_S)
