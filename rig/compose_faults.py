"""The `rig run` faults against a Docker Compose project's containers, through the Docker SDK.

The same four faults and the same interface as `faults.NativeFaults` (schedule, service, join,
records, errors, busy), on the containers Compose labels `com.docker.compose.project=<project>`
and `com.docker.compose.service=<service>` (docker-compose.yml: `livekit`, `agent`,
`agent-providers`):

    kill-agent       SIGKILL the busiest agent container (a crash), then start it again. A kill
                     through the engine's API counts as a manual stop, so the restart policy does
                     not bring it back; if an engine's policy did, the restart only waits for it
    drain-agent      SIGTERM the busiest agent container (the worker stops taking jobs and lets its
                     conversations finish), SIGKILL after the drain grace, then start it again
    restart-livekit  SIGTERM the livekit container, SIGKILL after 5 s, then start it again
    slow-provider    write the latency override file into every agent container (running or not),
                     at the path its LKRIG_LATENCY_OVERRIDE names (docker-compose.yml sets it);
                     at the end of `for=` the file is overwritten with an empty override

"Started again" waits until the container runs and, if it has a healthcheck, is healthy (the
agent's healthcheck includes its registration with livekit-server). The restarts run in
service(), from the caller's thread, as natively; join(restart=False) leaves what a fault
stopped stopped (its container names are in `busy`).

Counts survive as natively: an agent container keeps PROMETHEUS_MULTIPROC_DIR in its own layer
(docker-compose.yml), which outlives a kill and a start, and the worker carries the earlier
processes' counts over its start (lkrig_instrument.carry).
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rig.faults import DRAIN_WAIT_S, Fault, FaultScheduler, busiest

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"  # `docker compose run` containers: not the service's
OVERRIDE_ENV = "LKRIG_LATENCY_OVERRIDE"
LIVEKIT_GRACE_S = 5.0  # as natively: SIGTERM, SIGKILL after 5 s
GONE_WAIT_S = 10.0  # after a SIGKILL, the engine notices the exit within this
HEALTH_TIMEOUT_S = 180.0  # a restarted agent: start, healthcheck interval, registration
_POLL_S = 0.1


@dataclass
class _Stopped:
    container_id: str
    name: str
    kind: str
    started_at: str  # State.StartedAt before the fault: a later one means it runs again


class ComposeFaults(FaultScheduler):
    """The faults on a compose project's containers; driven like NativeFaults (the scheduling,
    the lock and the restarts in service() are faults.FaultScheduler's)."""

    def __init__(self, project: str, say: Callable[[str], None], client: Any = None, *,
                 agent_services: tuple[str, ...] = ("agent", "agent-providers"),
                 livekit_service: str = "livekit", drain_grace: float = DRAIN_WAIT_S,
                 livekit_grace: float = LIVEKIT_GRACE_S,
                 health_timeout: float = HEALTH_TIMEOUT_S) -> None:
        super().__init__(say)
        if client is None:
            import docker  # the `docker` package (pyproject dev extra); only compose runs need it

            client = docker.from_env()
        self.client = client
        self.project = project
        self.agent_services = agent_services
        self.livekit_service = livekit_service
        self.drain_grace = drain_grace
        self.livekit_grace = livekit_grace
        self.health_timeout = health_timeout

    # -- containers

    def containers(self, service: str) -> list[Any]:
        """The project's containers of one service, running or not, by container number."""
        found = self.client.containers.list(all=True, filters={"label": [
            f"{PROJECT_LABEL}={self.project}", f"{SERVICE_LABEL}={service}"]})
        found = [c for c in found if c.labels.get(ONEOFF_LABEL, "False") != "True"]
        return sorted(found, key=lambda c: (int(c.labels.get(NUMBER_LABEL, "0") or 0), c.name))

    def _agents(self) -> list[Any]:
        return [c for svc in self.agent_services for c in self.containers(svc)]

    def _livekit(self) -> Any:
        found = [c for c in self.containers(self.livekit_service) if c.status == "running"]
        if not found:
            raise RuntimeError(f"no running {self.livekit_service!r} container in compose project"
                               f" {self.project!r}")
        return found[0]

    def _busiest_agent(self) -> tuple[Any, str]:
        """The running agent container a kill or drain hits (faults.busiest), and its load."""
        running = {c.name: c for c in self._agents() if c.status == "running" and c.name not in self.busy}
        if not running:
            raise RuntimeError(f"no running agent container ({', '.join(self.agent_services)}) in"
                               f" compose project {self.project!r}")
        name, load = busiest({n: _metrics_url(c) for n, c in running.items()})
        return running[name or next(iter(running))], load

    # -- the faults

    def _stop(self, f: Fault) -> None:
        if f.kind == "restart-livekit":
            self._bounce(self._livekit(), "", "SIGTERM", self.livekit_grace, f.kind)
        else:
            sig, grace = ("SIGKILL", GONE_WAIT_S) if f.kind == "kill-agent" else ("SIGTERM", self.drain_grace)
            self._bounce(*self._busiest_agent(), sig, grace, f.kind)

    def _bounce(self, c: Any, load: str, sig: str, grace: float, kind: str) -> None:
        """Send `sig`; wait up to `grace` for the container to stop (then SIGKILL); queue the
        restart."""
        c.reload()
        before = c.attrs["State"]["StartedAt"]
        self.busy.add(c.name)  # until started again: its stop is the fault, not a failure
        at, t = time.time(), time.monotonic()
        c.kill(sig)
        state = _wait_stopped(c, before, grace)
        killed = ""
        if state["Running"] and state["StartedAt"] == before:  # still the same run: cut it short
            c.kill("SIGKILL")
            killed = f"; still running after {grace:g} s: SIGKILL"
            state = _wait_stopped(c, before, GONE_WAIT_S)
        if state["Running"] and state["StartedAt"] == before:
            raise RuntimeError(f"{c.name} still running {GONE_WAIT_S:g} s after SIGKILL")
        if state["StartedAt"] != before:
            how = "already running again: its restart policy or someone else started it"
        else:
            how = f"exit code {state['ExitCode']}"
        what = f"{c.short_id}, {load}" if load else c.short_id
        self._record(kind, f"{c.name} ({what}) {sig}, gone after {time.monotonic() - t:.1f} s"
                           f" ({how}){killed}", at)
        self._restarts.put((c.name, kind, _Stopped(c.id, c.name, kind, before)))

    def _restart(self, item: object) -> str:
        s = item
        assert isinstance(s, _Stopped)
        c = self.client.containers.get(s.container_id)
        t = time.monotonic()
        state = c.attrs["State"]
        if state["StartedAt"] != s.started_at or state.get("Restarting"):
            how = "already started again (its restart policy or someone else)"
        else:
            c.start()
            how = "started"
        _wait_up(c, s.started_at, self.health_timeout)
        return f"{s.name} {how}, up after {time.monotonic() - t:.1f} s"

    def _slow(self, f: Fault) -> None:
        payload = {"add_ms": f.add_ms, "components": list(f.components)}
        where = self._write_override(payload)
        self._record("slow-provider", f"+{f.add_ms:g} ms on {', '.join(f.components)}"
                                      + (f" for {f.lasts:g} s" if f.lasts else " to the end")
                                      + f" in {where}")
        if f.lasts is not None and not self._quit.wait(f.lasts):
            # An empty override, rather than deleting the file: writing works on a stopped
            # container too, deleting would need a process inside it.
            self._write_override({"add_ms": 0, "components": []})
            self._record("slow-provider:end", f"latency of {', '.join(f.components)} back to the profile")

    def _write_override(self, payload: dict[str, Any]) -> str:
        """Put the override file into every agent container; return their names. Raises after
        trying all of them if any could not take it."""
        agents = self._agents()
        if not agents:
            raise RuntimeError(f"no agent container ({', '.join(self.agent_services)}) in compose"
                               f" project {self.project!r}")
        data = json.dumps(payload).encode()
        done, failed = [], []
        for c in agents:
            path = _env(c).get(OVERRIDE_ENV)
            if not path or not path.startswith("/"):
                failed.append(f"{c.name}: no absolute {OVERRIDE_ENV} in its environment, so its agent"
                              " reads no override file (docker-compose.yml sets it in x-agent-env)")
                continue
            try:
                if not c.put_archive(posixpath.dirname(path), _tar_one(posixpath.basename(path), data)):
                    failed.append(f"{c.name}: the engine refused the file at {path}")
                    continue
            except Exception as e:
                failed.append(f"{c.name}: {type(e).__name__}: {e}")
                continue
            done.append(c.name)
        if failed:
            raise RuntimeError("; ".join(failed) + (f" (written in {', '.join(done)})" if done else ""))
        return ", ".join(done)


def _env(c: Any) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in (c.attrs["Config"].get("Env") or []) if "=" in kv)


def _metrics_url(c: Any, port: str | None = None) -> str | None:
    """Where the rig reaches a container's /metrics (an agent's, on AGENT_METRICS_PORT, unless
    `port` says otherwise): its address on a network (the engine's host reaches bridge
    networks), or loopback with host networking."""
    port = port or _env(c).get("AGENT_METRICS_PORT", "9100")
    if c.attrs["HostConfig"].get("NetworkMode") == "host":
        return f"http://127.0.0.1:{port}/metrics"
    for net in (c.attrs["NetworkSettings"].get("Networks") or {}).values():
        if net.get("IPAddress"):
            return f"http://{net['IPAddress']}:{port}/metrics"
    return None


def _tar_one(name: str, data: bytes) -> bytes:
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


def _wait_stopped(c: Any, started_at: str, timeout: float) -> dict[str, Any]:
    """Wait until the run that started at `started_at` is over (stopped, or a newer run began);
    return the last State seen."""
    deadline = time.monotonic() + timeout
    while True:
        c.reload()
        state = c.attrs["State"]
        if not state["Running"] or state["StartedAt"] != started_at or time.monotonic() >= deadline:
            return state
        time.sleep(_POLL_S)


def _wait_up(c: Any, started_at: str, timeout: float) -> None:
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
        time.sleep(_POLL_S)
