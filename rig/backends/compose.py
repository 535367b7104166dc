"""A `docker compose up` project as a Backend: used as it is (scaled as the user scaled it) and
left running. Its services are found by the labels Compose sets, reached from this machine at the
published ports (127.0.0.1:8089, :9090 in docker-compose.yml) and, for the unpublished metrics of
the agents and the master, at the containers' network addresses (the engine's host reaches its
bridge networks). The load goes to its Locust master through the web UI's API; the faults go to
its containers through the Docker SDK:

    stop_service     SIGKILL or SIGTERM a container, SIGKILL after the grace. A kill through the
                     engine's API counts as a manual stop, so the restart policy does not bring
                     it back; if an engine's policy did, start_again only waits for it
    start_again      start it again; wait until it runs and, with a healthcheck, is healthy (the
                     agent's healthcheck includes its registration with livekit-server)
    latency override written into every agent container (running or not), at the path its
                     LKRIG_LATENCY_OVERRIDE names (docker-compose.yml sets it)
    cut_network      disconnect an agent container from the networks it shares with livekit;
                     join_network connects it again with the same aliases

Counts survive a kill as natively: an agent container keeps PROMETHEUS_MULTIPROC_DIR in its own
layer (docker-compose.yml), which outlives a kill and a start, and the worker carries the earlier
processes' counts over its start (lkrig_instrument.carry).
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from rig import faults, locust_web, promapi, reconcile
from rig.backends import containers as ct
from rig.backends.base import LoadSpec

SERVICES = ("livekit", "livekit-2", "agent", "agent-providers", "prometheus", "locust-master",
            "locust-worker")
# The LiveKit nodes past the first: the multinode profile's second node (docker-compose.yml).
MORE_LIVEKIT_NODES = ("livekit-2",)
OVERRIDE_ENV = "LKRIG_LATENCY_OVERRIDE"
HEALTH_TIMEOUT_S = 180.0  # a restarted agent: start, healthcheck interval, registration


class ComposeBackend:
    def __init__(self, project: str, client: Any = None, *,
                 agent_services: tuple[str, ...] = ("agent", "agent-providers"),
                 livekit_service: str = "livekit", drain_grace: float = faults.DRAIN_WAIT_S,
                 health_timeout: float = HEALTH_TIMEOUT_S) -> None:
        if client is None:
            import docker  # the `docker` package (pyproject dev extra); only compose runs need it

            try:
                client = docker.from_env()
            except Exception as e:  # docker.errors.DockerException, or a malformed DOCKER_HOST
                raise ct.ComposeStackError(f"cannot reach the Docker engine ({type(e).__name__}: {e});"
                                           " is it running, and DOCKER_HOST right?") from e
        self.client = client
        self.project = project
        self.label = f"compose project {project!r}"
        self.agent_services = agent_services
        self.livekit_service = livekit_service
        self.drain_grace = drain_grace
        self.restart_timeout = health_timeout
        self.busy: set[str] = set()
        # when start() ran, and each agent's counted errors then (log_gap counts from there)
        self.started: tuple[float, dict[str, dict[str, float]]] = (0.0, {})
        self._cut: dict[str, dict[str, list[str]]] = {}  # container name -> {network: aliases}

    # -- containers

    def containers(self, service: str) -> list[Any]:
        """The project's containers of one service, running or not, by container number."""
        found = self.client.containers.list(all=True, filters={"label": [
            f"{ct.PROJECT_LABEL}={self.project}", f"{ct.SERVICE_LABEL}={service}"]})
        found = [c for c in found if c.labels.get(ct.ONEOFF_LABEL, "False") != "True"]
        return sorted(found, key=lambda c: (int(c.labels.get(ct.NUMBER_LABEL, "0") or 0), c.name))

    def agents(self) -> list[Any]:
        return [c for svc in self.agent_services for c in self.containers(svc)]

    def one(self, service: str) -> Any:
        running = [c for c in self.containers(service) if c.status == "running"]
        if not running:
            raise ct.ComposeStackError(f"no running {service!r} container in {self.label}; start it"
                                       " with `docker compose up -d`")
        return running[0]

    @property
    def livekit(self) -> str:
        return self.one(self.livekit_service).name

    # -- the stack

    def start(self) -> str:
        """Check that every service a run needs runs, and that no other load does."""
        labelled = {"label": [f"{ct.PROJECT_LABEL}={self.project}"]}
        if not self.client.containers.list(all=True, filters=labelled):
            raise ct.ComposeStackError(f"{self.label} has no containers: is it up (`docker compose up"
                                       " -d`) and named so (`docker compose ls`)?")
        missing = [repr(svc) for svc in ("livekit", "prometheus", "locust-master")
                   if not any(c.status == "running" for c in self.containers(svc))]
        if not any(c.status == "running" for c in self.agents()):
            missing.append(" or ".join(repr(a) for a in self.agent_services))
        if missing:
            raise ct.ComposeStackError(f"no running {', '.join(missing)} container in {self.label};"
                                       " start it with `docker compose up -d`")
        active = reconcile.agent_totals(self.agent_metrics_urls()).sessions_active
        if active > 0:
            raise ct.ComposeStackError(f"{active:g} agent sessions are active in {self.label}: another"
                                       " load is running; stop it first")
        self.started = (time.time(), {name: reconcile.errors_of(promapi.scrape(url))
                                      for name, url in self.agent_metrics().items() if url})
        return (f"{self.label}: Locust {self.locust_url}, Prometheus {self.prometheus_url},"
                f" {len(self.agents())} agent containers")

    def stop(self) -> list[str]:
        return []  # the project is the user's: it stays up

    def dead(self) -> str | None:
        """A service container that stopped, other than one a fault stopped on purpose."""
        for svc in SERVICES:
            for c in self.containers(svc):
                c.reload()
                if c.status != "running" and c.name not in self.busy:
                    return (f"{c.name} is {c.status} (exit code {c.attrs['State'].get('ExitCode')});"
                            f" see `docker logs {c.name}`")
        return None

    @property
    def prometheus_url(self) -> str:
        return ct.published(self.one("prometheus"), 9090)

    def livekit_nodes(self) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for svc in (self.livekit_service, *MORE_LIVEKIT_NODES):
            for c in self.containers(svc):
                if c.status == "running":
                    found[c.name] = ct.metrics_url(c, ct.env_of(c).get("LIVEKIT_PROMETHEUS_PORT", "6789"))
        return found

    @property
    def locust_url(self) -> str:
        return ct.published(self.one("locust-master"), 8089)

    @property
    def caller_metrics_url(self) -> str | None:
        c = self.one("locust-master")
        return ct.metrics_url(c, ct.env_of(c).get("LOADGEN_METRICS_PORT", "9646"))

    @property
    def events_url(self) -> str | None:
        try:
            url = self.caller_metrics_url
        except ct.ComposeStackError:  # no Locust master: nothing to annotate on
            return None
        return url.removesuffix("/metrics") + "/events" if url else None

    def start_load(self, out: Path, spec: LoadSpec) -> locust_web.WebLocust:
        load = locust_web.WebLocust(self.locust_url, out, spec.users, spec.spawn_rate,
                                    f"{spec.duration:g}s", spec.params(), metrics_url=self.caller_metrics_url)
        load.start()
        return load

    # -- the agents

    def agent_metrics(self) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for c in self.agents():
            c.reload()
            if c.status == "running":
                found[c.name] = ct.metrics_url(c)
        return found

    def agent_metrics_urls(self) -> list[str]:
        urls = []
        for name, url in self.agent_metrics().items():
            if url is None:
                raise ct.ComposeStackError(f"{name}: no network address to reach its /metrics at")
            urls.append(url)
        if not urls:
            raise ct.ComposeStackError(f"no running agent container in {self.label}")
        return urls

    def agent_log_lines(self, since: float) -> list[str]:
        """Every agent container's log since `since` (unix seconds), its earlier runs included."""
        lines: list[str] = []
        for c in self.agents():
            lines += c.logs(since=int(since)).decode(errors="replace").splitlines()
        return lines

    def logged_errors(self, since: float) -> dict[str, int]:
        return reconcile.logged_errors_in(self.agent_log_lines(since))

    def log_gap(self, agent: str) -> dict[str, float]:
        """Its folder read out of the stopped container (which keeps it in its layer), less what
        it had counted when the run started; its log since then."""
        c = self.client.containers.get(agent)
        folder = ct.env_of(c).get("PROMETHEUS_MULTIPROC_DIR")
        if not folder:
            raise RuntimeError(f"{agent}: no PROMETHEUS_MULTIPROC_DIR in its environment")
        since, before = self.started
        with tempfile.TemporaryDirectory(prefix="lkrig-folder-") as tmp:
            stream, _ = c.get_archive(folder)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                tar.extractall(tmp, filter="data")
            counted = reconcile.errors_in_folder(Path(tmp) / posixpath.basename(folder.rstrip("/")))
        counted = {k: v - before.get(agent, {}).get(k, 0.0) for k, v in counted.items()}
        log = c.logs(since=int(since)) if since else c.logs()  # not started: its whole life
        logged = reconcile.logged_errors_in(log.decode(errors="replace").splitlines())
        return reconcile.log_gap(counted, logged)

    def run_info(self) -> dict[str, Any]:
        return {"compose_project": self.project, "agents": len(self.agents()),
                "loadgen_workers": len(self.containers("locust-worker"))}

    # -- the primitives the faults use

    def stop_service(self, name: str, sig: str, grace: float) -> tuple[str, str, object, bool]:
        c = self.client.containers.get(name)
        before = c.attrs["State"]["StartedAt"]
        c.kill(sig)
        state = ct.wait_stopped(c, before, grace)
        killed = ""
        if state["Running"] and state["StartedAt"] == before:  # still the same run: cut it short
            c.kill("SIGKILL")
            killed = f"; still running after {grace:g} s: SIGKILL"
            state = ct.wait_stopped(c, before, faults.GONE_WAIT_S)
        if state["Running"] and state["StartedAt"] == before:
            raise RuntimeError(f"{c.name} still running {faults.GONE_WAIT_S:g} s after SIGKILL")
        if state["StartedAt"] != before:
            how = "already running again: its restart policy or someone else started it"
        else:
            how = f"exit code {state['ExitCode']}"
        return c.short_id, how + killed, (c.id, c.name, before), bool(killed)

    def start_again(self, token: object) -> str:
        container_id, name, started_at = token  # type: ignore[misc]
        c = self.client.containers.get(container_id)
        state = c.attrs["State"]
        if state["StartedAt"] != started_at or state.get("Restarting"):
            how = "already started again (its restart policy or someone else)"
        else:
            c.start()
            how = "started"
        t = time.monotonic()
        ct.wait_up(c, started_at, self.restart_timeout)
        return f"{name} {how}, up after {time.monotonic() - t:.1f} s"

    def write_latency_override(self, payload: dict[str, Any]) -> str:
        """Put the override file into every agent container; return their names. Raises after
        trying all of them if any could not take it."""
        agents = self.agents()
        if not agents:
            raise RuntimeError(f"no agent container ({', '.join(self.agent_services)}) in {self.label}")
        data = json.dumps(payload).encode()
        done, failed = [], []
        for c in agents:
            path = ct.env_of(c).get(OVERRIDE_ENV)
            if not path or not path.startswith("/"):
                failed.append(f"{c.name}: no absolute {OVERRIDE_ENV} in its environment, so its agent"
                              " reads no override file (docker-compose.yml sets it in x-agent-env)")
                continue
            try:
                if not c.put_archive(posixpath.dirname(path), ct.tar_one(posixpath.basename(path), data)):
                    failed.append(f"{c.name}: the engine refused the file at {path}")
                    continue
            except Exception as e:
                failed.append(f"{c.name}: {type(e).__name__}: {e}")
                continue
            done.append(c.name)
        if failed:
            raise RuntimeError("; ".join(failed) + (f" (written in {', '.join(done)})" if done else ""))
        return ", ".join(done)

    def cut_network(self, agent: str) -> str:
        c = self.client.containers.get(agent)
        livekit_nets = set(self.one(self.livekit_service).attrs["NetworkSettings"].get("Networks") or {})
        shared = {net: attrs for net, attrs in (c.attrs["NetworkSettings"].get("Networks") or {}).items()
                  if net in livekit_nets}
        if not shared:
            raise RuntimeError(f"{agent} shares no network with livekit-server (host networking?):"
                               " there is no link to cut")
        self._cut[agent] = {net: list(attrs.get("Aliases") or []) for net, attrs in shared.items()}
        for net in shared:
            self.client.networks.get(net).disconnect(c, force=True)
        return f"disconnected from {', '.join(sorted(shared))}"

    def join_network(self, agent: str) -> str:
        nets = self._cut.pop(agent, {})
        c = self.client.containers.get(agent)
        for net, aliases in nets.items():
            self.client.networks.get(net).connect(c, aliases=[a for a in aliases if a != c.id[:12]] or None)
        return f"connected to {', '.join(sorted(nets))} again"
