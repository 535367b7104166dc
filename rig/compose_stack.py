"""A `docker compose up` stack as `rig run --compose` uses it: where its Locust master, Prometheus
and agents answer, their logs, and whether a service died. Found by the labels Compose sets
(rig.compose_faults.ComposeFaults.containers), reached from this machine at the published ports
(127.0.0.1:8089, :9090 in docker-compose.yml) and, for the unpublished metrics of the agents and
the master, at the containers' network addresses (the engine's host reaches its bridge networks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rig.compose_faults import PROJECT_LABEL, ComposeFaults, _env, _metrics_url

SERVICES = ("livekit", "agent", "agent-providers", "prometheus", "locust-master", "locust-worker")


class ComposeStackError(RuntimeError):
    """The project is not up as `rig run --compose` needs it; the message says what is missing."""


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


@dataclass
class ComposeStack:
    faults: ComposeFaults  # its containers() and busy set

    def check(self) -> None:
        """Every service a run needs runs; else one error naming what does not."""
        project = self.faults.project
        labelled = {"label": [f"{PROJECT_LABEL}={project}"]}
        if not self.faults.client.containers.list(all=True, filters=labelled):
            raise ComposeStackError(f"compose project {project!r} has no containers: is it up"
                                    " (`docker compose up -d`) and named so (`docker compose ls`)?")
        missing = [repr(svc) for svc in ("livekit", "prometheus", "locust-master")
                   if not any(c.status == "running" for c in self.faults.containers(svc))]
        if not any(c.status == "running" for c in self.agents()):
            missing.append(" or ".join(repr(a) for a in self.faults.agent_services))
        if missing:
            raise ComposeStackError(f"no running {', '.join(missing)} container in compose project"
                                    f" {project!r}; start it with `docker compose up -d`")

    def one(self, service: str) -> Any:
        running = [c for c in self.faults.containers(service) if c.status == "running"]
        if not running:
            raise ComposeStackError(f"no running {service!r} container in compose project"
                                    f" {self.faults.project!r}; start it with `docker compose up -d`")
        return running[0]

    @property
    def locust_url(self) -> str:
        return published(self.one("locust-master"), 8089)

    @property
    def prometheus_url(self) -> str:
        return published(self.one("prometheus"), 9090)

    @property
    def caller_metrics_url(self) -> str | None:
        c = self.one("locust-master")
        return _metrics_url(c, _env(c).get("LOADGEN_METRICS_PORT", "9646"))

    def agents(self) -> list[Any]:
        return [c for svc in self.faults.agent_services for c in self.faults.containers(svc)]

    def agent_metrics_urls(self) -> list[str]:
        urls = []
        for c in self.agents():
            c.reload()
            if c.status != "running":
                continue
            url = _metrics_url(c)
            if url is None:
                raise ComposeStackError(f"{c.name}: no network address to reach its /metrics at")
            urls.append(url)
        if not urls:
            raise ComposeStackError(f"no running agent container in compose project {self.faults.project!r}")
        return urls

    def agent_log_lines(self, since: float) -> list[str]:
        """Every agent container's log since `since` (unix seconds), its earlier runs included."""
        lines: list[str] = []
        for c in self.agents():
            lines += c.logs(since=int(since)).decode(errors="replace").splitlines()
        return lines

    def dead(self) -> str | None:
        """A service container that stopped, other than one a fault stopped on purpose."""
        for svc in SERVICES:
            for c in self.faults.containers(svc):
                c.reload()
                if c.status != "running" and c.name not in self.faults.busy:
                    return (f"{c.name} is {c.status} (exit code {c.attrs['State'].get('ExitCode')});"
                            f" see `docker logs {c.name}`")
        return None
