"""Helpers for tests that drive the native stack: polling, PromQL, the `rig` CLI, /proc checks.

Tests poll for what they wait for (never a fixed sleep) and give up after a bounded time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rig import procs

REPO = Path(__file__).resolve().parent.parent
RIG = Path(sys.executable).parent / "rig"  # the console script the root pyproject installs
T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Return check()'s first truthy value; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def prom_query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """Instant query over Prometheus's HTTP API; returns the result vector (raises on API error)."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    got = procs.http_get(url, timeout=5)
    if got is None:
        raise AssertionError(f"Prometheus at {prometheus_url} did not answer")
    body = json.loads(got[1])
    if body.get("status") != "success":
        raise AssertionError(f"query {expr!r} failed: {body}")
    return body["data"]["result"]


def rig_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a `rig` subprocess: ours, minus stack-steering variables, plus overrides."""
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEKIT_SERVER_BIN", "PROMETHEUS_BIN")}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_rig(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RIG), *args], capture_output=True, text=True, timeout=timeout, env=env or rig_env(), cwd=REPO
    )


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie has already exited)."""
    info = procs.proc_info(pid)
    return info is not None and info.state not in ("Z", "X")


def socket_addresses(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, local ip, local port) of every TCP/UDP socket the process holds, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[9] not in inodes:
                continue
            hex_ip, hex_port = parts[1].rsplit(":", 1)
            if len(hex_ip) == 8:
                ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_ip)[::-1])
            else:  # four little-endian 32-bit words
                raw = b"".join(bytes.fromhex(hex_ip[i : i + 8])[::-1] for i in range(0, 32, 8))
                ip = socket.inet_ntop(socket.AF_INET6, raw)
            found.append((proto, ip, int(hex_port, 16)))
    return found
