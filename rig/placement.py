"""Where one host's share of a native stack runs, and what it reaches on the other hosts.

`rig up --native` on one machine runs every role on 127.0.0.1. Past one machine each host runs
some roles (`--only`), listens and advertises on its own address (`--bind`), and is told where
the rest is: the LiveKit its agents and callers join (`--livekit-url`), the Locust master its
workers join (`--master-host`), the Redis its livekit-server shares rooms through (`--redis`),
and a folder every host writes its scrape targets into (`--sd-dir`), which Prometheus reads as
file_sd (docs/native-stack.md, "Across hosts").
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rig.paths import LIVEKIT_CONFIG
from rig.stackerror import StackError

ROLES = ("livekit", "prometheus", "agents", "locust-master", "locust-workers")
LOOPBACK = "127.0.0.1"
# Prometheus jobs whose targets come from --sd-dir (file_sd), one subfolder each.
SD_JOBS = ("livekit", "agent", "loadgen")


def parse_roles(text: str) -> frozenset[str]:
    """`--only livekit,agents`: the roles named, each one of ROLES."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROLES]
    if unknown or not names:
        raise StackError(f"--only {text}: {'unknown role ' + ', '.join(unknown) if unknown else 'no role'};"
                         f" choose from {', '.join(ROLES)}")
    return frozenset(names)


@dataclass(frozen=True)
class Placement:
    roles: frozenset[str] = frozenset(ROLES)
    bind: str = LOOPBACK  # every service here listens, and livekit-server advertises ICE, on it
    livekit_url: str | None = None  # the LiveKit this host's agents and callers join (None: ours)
    master_host: str | None = None  # the Locust master this host's workers join (None: ours)
    redis: str | None = None  # HOST:PORT; livekit-server joins the nodes that share it
    sd_dir: Path | None = None  # scrape targets, shared by the hosts (file_sd)
    livekit_config: Path = field(default=LIVEKIT_CONFIG)

    def has(self, role: str) -> bool:
        return role in self.roles

    def check(self) -> None:
        """Raise StackError for options that cannot work together, before anything starts."""
        try:
            ipaddress.IPv4Address(self.bind)
        except ValueError:
            raise StackError(f"--bind {self.bind}: not an IPv4 address") from None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((self.bind, 0))
            except OSError as exc:
                why = "not an address of this host" if exc.errno == errno.EADDRNOTAVAIL else exc.strerror
                raise StackError(f"--bind {self.bind}: {why}") from None
        joins_livekit = self.has("agents") or self.has("locust-workers") or self.has("locust-master")
        if joins_livekit and not self.has("livekit") and not self.livekit_url:
            raise StackError("--only without livekit: give --livekit-url, the LiveKit the agents and callers"
                             " here join (e.g. ws://10.0.0.2:7880)")
        if self.livekit_url is not None and not self.livekit_url.startswith(("ws://", "wss://")):
            raise StackError(f"--livekit-url {self.livekit_url}: must start with ws:// or wss://")
        if self.has("locust-workers") and not self.has("locust-master") and not self.master_host:
            raise StackError("--only locust-workers without locust-master: give --master-host, the"
                             " Locust master's address")
        if self.redis is not None:
            host, _, port = self.redis.rpartition(":")
            if not host or not port.isdigit():
                raise StackError(f"--redis {self.redis}: must be HOST:PORT")
            if not self.has("livekit"):
                raise StackError("--redis is for livekit-server; add livekit to --only")
        if not self.livekit_config.is_file():
            raise StackError(f"--livekit-config {self.livekit_config}: no such file")
        if self.sd_dir is not None and not self.sd_dir.is_dir():
            raise StackError(f"--sd-dir {self.sd_dir}: no such folder (create it, shared by the hosts)")

    def worker(self, i: int) -> str:
        """Agent worker i's `worker` label: unique across hosts."""
        return f"agent-{i}" if self.bind == LOOPBACK else f"agent-{i}@{self.bind}"


def write_livekit_config(p: Placement, path: Path) -> Path:
    """The config livekit-server runs with: the given file as it is on one machine; past it, the
    file listening on and advertising only --bind, in the cluster of --redis."""
    if p.bind == LOOPBACK and p.redis is None:
        return p.livekit_config
    try:
        cfg: dict[str, Any] = yaml.safe_load(p.livekit_config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"{p.livekit_config}: cannot read ({exc})") from exc
    cfg["bind_addresses"] = [p.bind]
    rtc = cfg.setdefault("rtc", {})
    rtc["node_ip"] = p.bind
    if p.bind != LOOPBACK:
        # ICE from this address alone: another host cannot reach a loopback candidate.
        rtc["enable_loopback_candidate"] = False
        rtc["ips"] = {"includes": [f"{p.bind}/32"]}
    if p.redis is not None:
        cfg["redis"] = {"address": p.redis}
    path.write_text(f"# Generated by `rig up --native` from {p.livekit_config} for --bind {p.bind}"
                    f"{' --redis ' + p.redis if p.redis else ''}; edit that file, not this one.\n"
                    + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def sd_files(p: Placement, port_offset: int) -> dict[str, Path]:
    """The file_sd file of each job this host writes into --sd-dir (none without it)."""
    if p.sd_dir is None:
        return {}
    name = f"{p.bind}-{port_offset}.json"
    return {job: p.sd_dir / job / name for job in SD_JOBS}


def write_targets(files: dict[str, Path], groups: dict[str, list[dict[str, Any]]]) -> None:
    """Each job's target groups into its file_sd file, atomically (Prometheus rereads on change)."""
    for job, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups.get(job, [])), encoding="utf-8")
        os.replace(tmp, path)


def remove_targets(paths: list[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)
