"""Cutting a native agent worker off from livekit-server while it runs: `partition-agent` on the
native stack.

A socket belongs to the cgroup of the process that made it, for its whole life; moving a process
later leaves its sockets where they were. So a stack that may partition an agent starts each
agent worker in a cgroup (v2) of its own (`group()`, entered by the worker before it runs: its
job processes are born there too), and a partition is two iptables rules that drop what that
cgroup sends to livekit-server's signalling port (TCP) and media ports (UDP): the connections in
progress stall and new ones hang, as behind a broken link, while the worker's own /metrics and
health port go on. Joining again removes the rules.

It needs root (a cgroup and iptables rules); `unavailable()` says so before a run starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (alone, or beside v1 in hybrid mode)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                return Path(left.split()[4])
    return None


def unavailable() -> str | None:
    """Why a native partition cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root on a native stack (a cgroup and iptables rules for the agent's processes)"
    if shutil.which("iptables") is None:
        return "needs iptables on a native stack (Debian: apt-get install iptables)"
    if cgroup2_root() is None:
        return "needs the cgroup v2 hierarchy mounted on a native stack"
    return None


def group(name: str) -> Path:
    """A cgroup of its own for one agent worker (made if missing), named after this process."""
    root = cgroup2_root()
    assert root is not None, unavailable()
    path = root / f"lkrig-{os.getpid()}-{name}"
    path.mkdir(exist_ok=True)
    return path


def enter(path: Path) -> Callable[[], None]:
    """For Popen's preexec_fn: the child moves into the cgroup before it runs anything."""
    procs_file = str(path / "cgroup.procs")

    def move() -> None:
        with open(procs_file, "w") as f:
            f.write(str(os.getpid()))

    return move


def remove(path: Path) -> None:
    """Remove an agent's cgroup once its processes are gone (a leftover is harmless)."""
    try:
        path.rmdir()
    except OSError:
        pass


def iptables(action: str, rule: list[str]) -> None:
    done = subprocess.run(["iptables", "-w", action, "OUTPUT", *rule], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"iptables {action} OUTPUT {' '.join(rule)}: {done.stderr.strip()}")


@dataclass
class Cut:
    rules: list[list[str]]


def cut(path: Path, tcp_port: int, udp_ports: tuple[int, int]) -> Cut:
    """Drop what the cgroup at `path` sends to those ports."""
    root = cgroup2_root()
    assert root is not None, unavailable()
    where = f"/{path.relative_to(root)}"
    rules = [["-m", "cgroup", "--path", where, "-p", "tcp", "--dport", str(tcp_port), "-j", "DROP"],
             ["-m", "cgroup", "--path", where, "-p", "udp", "--dport", f"{udp_ports[0]}:{udp_ports[1]}",
              "-j", "DROP"]]
    done: list[list[str]] = []
    try:
        for rule in rules:
            iptables("-I", rule)
            done.append(rule)
    except RuntimeError:
        join(Cut(done))
        raise
    return Cut(rules)


def join(c: Cut) -> None:
    for rule in c.rules:
        iptables("-D", rule)
