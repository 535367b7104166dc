"""A headless Locust run: one master and M worker processes running loadgen/locustfile.py.

Used by `rig run` and by the live tests. Each process leads its own session, so a stop reaches
every voice driver it forked; the caller metrics the master serves are scraped while it runs,
because the master exits at the end of the run and its last numbers go with it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rig import procs
from rig.paths import LOCUSTFILE, REPO
from rig.promapi import Samples, scrape

# Longer than one conversation: a stopped caller finishes its call, so the counts add up.
STOP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] not in ("Z", "X"):
            kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def drivers_of(pids: list[int]) -> set[int]:
    """The voice-driver processes (loadgen.driver) below the given Locust processes, with their
    media engines (loadgen/lkmedia)."""
    kids = _children()
    found: set[int] = set()
    todo = list(pids)
    while todo:
        for child in kids.get(todo.pop(), []):
            todo.append(child)
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"loadgen.driver" in cmd or cmd.split(b"\0")[0].endswith(b"/lkmedia"):
                    found.add(child)
    return found


# Locust's failure text for a CallFailure("reason[: detail]") or CallFailure('reason (kind)').
_REASON = re.compile(r"""^\w+\(['"]([a-z_]+)""")


@dataclass
class Result:
    rc: int
    stats: list[dict[str, Any]]
    failures: list[dict[str, str]]
    caller_metrics: Samples  # the master's /metrics, last scrape before it exited
    drivers: set[int]
    log: str

    def requests(self, kind: str, name: str | None = None) -> tuple[int, int]:
        rows = [r for r in self.stats if r["method"] == kind and (name is None or r["name"] == name)]
        return sum(r["num_requests"] for r in rows), sum(r["num_failures"] for r in rows)

    def failure_counts(self, kind: str) -> dict[str, int]:
        """Failures of one request type by the reason's first word (agent_lost, dead_air, ...)."""
        out: dict[str, int] = {}
        for row in self.failures:
            if row["Method"] == kind:
                m = _REASON.match(row["Error"])
                reason = m.group(1) if m else row["Error"]
                out[reason] = out.get(reason, 0) + int(row["Occurrences"])
        return out


@dataclass
class Headless:
    """Start with start(), call poll() while it runs (cheap; tracks drivers and metrics), then
    result(). stop() ends every process, whatever state the run is in."""

    out: Path
    env: dict[str, str]  # LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET at least
    users: int
    run_time: str
    args: list[str]
    workers: int = 2
    spawn_rate: float = 2.0
    master_port: int = 0
    metrics_port: int = 0
    agent_name: str = "lkrig-agent"
    master: subprocess.Popen[bytes] | None = None
    worker_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    drivers: set[int] = field(default_factory=set)
    last_metrics: Samples = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _ticks: dict[int, int] = field(default_factory=dict)  # pid -> start time, against pid reuse

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.master_port = self.master_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        env = {**self.env, "LOADGEN_METRICS_PORT": str(self.metrics_port), "PYTHONUNBUFFERED": "1"}
        loc = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
        self.master = self._spawn("master", [
            *loc, "--master", "--headless", "--expect-workers", str(self.workers),
            "--master-bind-host", "127.0.0.1", "--master-bind-port", str(self.master_port),
            "-u", str(self.users), "-r", f"{self.spawn_rate:g}", "-t", self.run_time,
            "--stop-timeout", str(STOP_TIMEOUT_S), "--agent-name", self.agent_name,
            "--json-file", str(self.out / "stats"), "--csv", str(self.out / "locust"), *self.args], env)
        self.worker_procs = [self._spawn(f"worker{i}", [
            *loc, "--worker", "--master-host", "127.0.0.1", "--master-port", str(self.master_port)], env)
            for i in range(self.workers)]

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.out / f"{name}.log", "wb")
        self._logs.append(log)
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 cwd=REPO, env=env, start_new_session=True,
                                 preexec_fn=procs.die_with_parent(signal.SIGTERM))
        info = procs.proc_info(popen.pid)
        self._ticks[popen.pid] = info.start_ticks if info else 0
        return popen

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [*([self.master] if self.master else []), *self.worker_procs]

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def running(self) -> bool:
        return self.master is not None and self.master.poll() is None

    def poll(self) -> None:
        self.drivers |= drivers_of([w.pid for w in self.worker_procs])
        with contextlib.suppress(OSError, ValueError):
            self.last_metrics = scrape(self.metrics_url)

    def wait(self, interval: float = 0.5) -> None:
        while self.running():
            self.poll()
            time.sleep(interval)

    def result(self) -> Result:
        assert self.master is not None
        rc = self.master.wait()
        for w in self.worker_procs:
            try:
                w.wait(timeout=90)  # the master's quit reaches them
            except subprocess.TimeoutExpired:
                pass
        self.stop()
        failures: list[dict[str, str]] = []
        with contextlib.suppress(FileNotFoundError), open(self.out / "locust_failures.csv") as f:
            failures = list(csv.DictReader(f))
        try:
            stats = json.loads((self.out / "stats.json").read_text())
        except (OSError, ValueError):
            stats = []
        log = (self.out / "master.log").read_text(errors="replace")
        return Result(rc, stats, failures, self.last_metrics, set(self.drivers), log)

    def stop(self, grace: float = 10.0) -> list[int]:
        """End every process of the run (their sessions); return pids that would not go."""
        left: list[int] = []
        for p in (*self.worker_procs, *([self.master] if self.master else [])):
            left += procs.stop_session(p.pid, self._ticks.get(p.pid, 0), grace, reap=p.poll)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for log in self._logs:
            log.close()
        self._logs.clear()
        return left
