"""What `rig run` and `rig sweep` need of a stack, and what the faults use: the Backend protocol,
with one implementation per way the stack runs (rig.backends.native: processes this command starts
and stops; rig.backends.compose: a `docker compose up` project, used as it is and left up)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rig import headless


@dataclass(frozen=True)
class LoadSpec:
    """One Locust run: how many callers, how fast, how long, and the custom parameters that
    travel with every dispatch."""

    users: int
    spawn_rate: float
    duration: float  # seconds
    scenario: str
    profile: str
    script: str
    shape: str = "none"
    call_gap: float = 1.0
    seed: int = 1
    network: str = "perfect"  # loadgen/networks/<network>.yaml: the callers' network impairment

    def params(self) -> dict[str, str]:
        """The locustfile's custom parameters, by their web UI names."""
        return {"scenario": self.scenario, "latency_profile": self.profile, "script": self.script,
                "shape": self.shape, "call_gap": f"{self.call_gap:g}", "seed": str(self.seed),
                "network": self.network}


class Load(Protocol):
    """A Locust run in progress (rig.headless.Headless, rig.locust_web.WebLocust)."""

    out: Path

    def running(self) -> bool: ...
    def poll(self) -> None: ...
    def stop(self) -> list[int]: ...
    def result(self) -> headless.Result: ...


class Backend(Protocol):
    label: str  # how messages name the stack
    busy: set[str]  # services a fault stopped or cut on purpose, until it is back
    livekit: str  # the name stop_service takes for livekit-server
    drain_grace: float  # how long a drained agent may take to finish its conversations
    restart_timeout: float  # how long a restarted agent may take to be healthy again

    # -- the stack
    def start(self) -> str:
        """Make the stack ready for load (start it, or check that it is up); say where it is."""

    def stop(self) -> list[str]:
        """Stop what start() started; return what could not be stopped."""

    def dead(self) -> str | None:
        """A service that died on its own (not one in `busy`), in words; None if none did."""

    @property
    def prometheus_url(self) -> str: ...

    def start_load(self, out: Path, spec: LoadSpec) -> Load: ...

    @property
    def events_url(self) -> str | None:
        """Where the Locust master of the load takes fault events (loadgen/exporter.py)."""

    def livekit_nodes(self) -> dict[str, str | None]:
        """Each running LiveKit node's name (for stop_service) and its /metrics URL."""

    # -- the agents
    def agent_metrics(self) -> dict[str, str | None]:
        """Each running agent's /metrics URL by name (None: not reachable)."""

    def agent_metrics_urls(self) -> list[str]:
        """Every running agent's /metrics URL (an error if one cannot be reached)."""

    def agent_log_lines(self, since: float) -> list[str]:
        """The agents' log lines since `since` (unix seconds), for rig.explain."""

    def logged_errors(self, since: float) -> dict[str, int]:
        """Counted scheduling errors by kind in the agents' logs since `since` (unix seconds)."""

    def log_gap(self, agent: str) -> dict[str, float]:
        """For an agent a fault just stopped: by kind, the errors it counted in this run whose log
        lines it never wrote (reconcile.log_gap)."""

    def run_info(self) -> dict[str, Any]:
        """What run.json records about this stack."""

    # -- the primitives the faults use
    def stop_service(self, name: str, sig: str, grace: float) -> tuple[str, str, object, bool]:
        """Send `sig` ("SIGKILL" or "SIGTERM") to a service, SIGKILL after `grace` seconds; return
        (its identity, how it ended, a token for start_again, whether a SIGTERM ran out of grace
        and became a SIGKILL)."""

    def start_again(self, token: object) -> str:
        """Start a stopped service again and wait until it is healthy; say how it went. Call it
        from the main thread."""

    def write_latency_override(self, payload: dict[str, Any]) -> str:
        """Give every agent this latency override; return where, if that is worth saying."""

    def cut_network(self, agent: str) -> str:
        """Cut one agent's network to livekit-server (it keeps running); say how."""

    def join_network(self, agent: str) -> str:
        """Undo cut_network; say how."""
