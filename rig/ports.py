"""The port plan of a native stack: which port each service listens on, shifted as a whole by
--port-offset so that two stacks can run side by side, and the check that they are all free.

livekit-server's own ports come from livekit/livekit.yaml (the file the compose service mounts
too); the others are set here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from rig import procs
from rig.paths import LIVEKIT_CONFIG
from rig.stackerror import StackError

# Ports of the services whose port is not in livekit/livekit.yaml. Each agent worker i takes
# AGENT_HEALTH_BASE + i and AGENT_METRICS_BASE + i. --port-offset shifts all of them.
PROMETHEUS_PORT = 9090
LOCUST_WEB_PORT = 8089
LOCUST_MASTER_PORT = 5557
LOADGEN_METRICS_PORT = 9646
AGENT_HEALTH_BASE = 8100
AGENT_METRICS_BASE = 9100
MAX_AGENTS = 100
MAX_PORT_OFFSET = 14000  # keeps the shifted UDP range below 65536


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

    def tcp(self, agents: int, locust: bool, livekit: bool = True, prometheus: bool = True
            ) -> list[tuple[int, str]]:
        """(port, what) for every TCP port this run will listen on."""
        out = []
        if livekit:
            out += [(self.livekit, "livekit-server HTTP/WebSocket"),
                    (self.livekit_metrics, "livekit-server metrics")]
        if prometheus:
            out.append((self.prometheus, "Prometheus"))
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


def check_free(ports: Ports, agents: int, locust: bool, livekit: bool = True, prometheus: bool = True,
               host: str = "127.0.0.1") -> None:
    """Raise StackError naming every TCP port of the plan that something already listens on."""
    busy = []
    for port, what in ports.tcp(agents, locust, livekit, prometheus):
        if not procs.tcp_port_free(port, host):
            owner = procs.port_owner(port)
            busy.append(f"{host}:{port} ({what}){' held by ' + owner if owner else ''}")
    if busy:
        raise StackError(
            "port(s) already in use: "
            + "; ".join(busy)
            + ". Stop what holds them (`rig down` if it is a native stack),"
            " or pick other ports with --port-offset"
        )
