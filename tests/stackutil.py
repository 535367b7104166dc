"""Helpers for tests that drive the native stack: polling, PromQL, the `rig` CLI, /proc checks.

Tests poll for what they wait for (never a fixed sleep) and give up after a bounded time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from rig import binaries, procs

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
    """True until the process has finished exiting (procs.running: a zombie leader whose other
    threads still exit still holds its sockets)."""
    info = procs.proc_info(pid)
    return info is not None and procs.running(info)


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


@contextlib.contextmanager
def native_stack(tmp_path_factory: Any, name: str, agents: int, port_offset: int,
                 **options: Any) -> Iterator[Any]:
    """A native stack (livekit-server, Prometheus, `agents` workers, no Locust) for a test
    module; the teardown fails the test if any process of it is left. `options`: more of
    NativeOptions (agents_version, ...)."""
    from rig import native

    run_dir = tmp_path_factory.mktemp(name)
    opts = native.NativeOptions(agents=agents, loadgen_workers=0, run_dir=run_dir,
                                port_offset=port_offset, env_file=run_dir / ".env", **options)
    running = native.NativeStack(opts)
    info = running.start()
    try:
        yield info
    finally:
        left = running.stop()
        assert not left, f"teardown left processes running: {left}"


@contextlib.contextmanager
def synthetic_prometheus(tmp: Path, prom_port: int, exporter_port: int) -> Iterator[str]:
    """A real Prometheus (1 s scrapes, the rig's rules) scraping tests/tools/synthetic_exporter.py,
    an exporter of every names.py metric; yields its URL. The target carries the `worker` label
    the rig's agent scrape job gives each worker (the dashboard names workers by it)."""
    import yaml

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted((REPO / "prometheus" / "rules").glob("*.yml"))],
        "scrape_configs": [
            {
                "job_name": "synthetic",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{exporter_port}"], "labels": {"worker": "agent-1"}}
                ],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    started = [
        subprocess.Popen([sys.executable, str(REPO / "tests" / "tools" / "synthetic_exporter.py"),
                          str(exporter_port)],
                         stdout=subprocess.DEVNULL, stderr=open(tmp / "exporter.log", "w")),
        subprocess.Popen([str(binaries.resolve_prometheus()), f"--config.file={tmp / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp / 'data'}",
                          f"--web.listen-address=127.0.0.1:{prom_port}"],
                         stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w")),
    ]
    try:
        yield f"http://127.0.0.1:{prom_port}"
    finally:
        for p in started:
            p.terminate()
        for p in started:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def clean_drain(run: dict[str, Any], victim_log: list[str]) -> str:
    """Assert what a drain-agent fault of `rig run` promises, from its run.json and the drained
    worker's log lines (livekit-agents' JSON records): it met conversations, the worker took no
    new job once draining, and it exited on its own within the grace (no SIGKILL). Says how."""
    assert [f["name"] for f in run["faults"]] == ["drain-agent", "drain-agent:restarted"], run["faults"]
    drain = run["faults"][0]
    m = re.match(r"^\S+ \(\S+ ?\S*, ([\d.]+) sessions, [\d.]+ turns counted\) SIGTERM, gone after"
                 r" ([\d.]+) s \(exit code (-?\d+)\)$", drain["detail"])
    assert m, drain
    sessions, took, code = float(m.group(1)), float(m.group(2)), int(m.group(3))
    assert sessions >= 1 and code == 0 and not drain.get("forced"), drain
    said: dict[str, list[float]] = {}
    for line in victim_log:
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("message") in ("draining worker", "received job request"):
            at = datetime.fromisoformat(record["timestamp"]).timestamp()
            said.setdefault(record["message"], []).append(at)
    gone = drain["at"] + took
    [began] = [t for t in said["draining worker"] if drain["at"] - 1 <= t <= gone]
    # one second for a request livekit-server sent before it saw the worker unavailable
    assert [t for t in said["received job request"] if began + 1.0 < t <= gone] == [], said
    assert any(t < began for t in said["received job request"]), said
    return f"held {sessions:g} sessions, exited {took:.1f} s after SIGTERM"
