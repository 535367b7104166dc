"""A run on a Locust master that is already up in web mode (the compose stack's `locust-master`),
driven through its web UI's own HTTP API, as a person at the form would: POST /swarm with the
users, spawn rate, run time and the locustfile's options; GET /stats/requests until the run is
over; then the totals and failures as CSV. The same Result as a headless run (rig.headless).

Locust resets its statistics when a run starts from a stopped or ready state, so the totals are
this run's. The caller metrics the master serves are cumulative over its life: the Result holds
their growth during the run. Locust's history CSV exists only with --csv-full-history, so the
aggregate row of each poll is written in its format for the report (PREFIX_stats_history.csv).
"""

from __future__ import annotations

import csv
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig import headless, promapi

RUNNING = ("spawning", "running", "cleanup", "stopping")  # Locust's runner states of a run
# With a shape class (the locustfile has one) the runner stays "ready" until the shape's first
# tick, about a second after /swarm; a run that has not left it by then never started.
START_TIMEOUT_S = 30.0
# A Locust worker leaves the master when a run stops and rejoins once its calls are done (up to
# the master's stop timeout, 45 s in docker-compose.yml and `rig up`): a run right after another
# waits for it.
WORKER_WAIT_S = 90.0
HISTORY_COLUMNS = ("Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s")


class LocustWebError(RuntimeError):
    """The master did not answer, or refused the run; the message says which and why."""


def _request(url: str, data: dict[str, str] | None = None, timeout: float = 10.0) -> bytes:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=timeout) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as e:
        raise LocustWebError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (OSError, ValueError) as e:
        raise LocustWebError(f"{url}: no answer ({e})") from e


def delta(after: promapi.Samples, before: promapi.Samples) -> promapi.Samples:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


@dataclass
class WebLocust:
    """start(), then poll() while running(), then result(); stop() ends the run early."""

    url: str  # the web UI, e.g. http://127.0.0.1:8089
    out: Path
    users: int
    spawn_rate: float
    run_time: str
    options: dict[str, str]  # the locustfile's options by their form names (scenario, call_gap, ...)
    metrics_url: str | None = None  # the master's caller metrics, if reachable from here
    _before: promapi.Samples = field(default_factory=dict)
    last_metrics: promapi.Samples = field(default_factory=dict)
    _state: str = "ready"
    _started: bool = False  # the runner has been seen in a running state
    _swarmed_at: float = 0.0
    _history: list[dict[str, Any]] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(_request(f"{self.url}/stats/requests"))
        except ValueError as e:
            raise LocustWebError(f"{self.url}/stats/requests: not Locust's JSON ({e})") from e
        return data

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        now = self.status()
        if now.get("state") in RUNNING:
            raise LocustWebError(f"the Locust master at {self.url} is already running a test"
                                 f" ({now.get('user_count')} users); stop it first")
        deadline = time.monotonic() + WORKER_WAIT_S
        while not now.get("worker_count"):
            if time.monotonic() > deadline:
                raise LocustWebError(f"the Locust master at {self.url} has had no worker connected for"
                                     f" {WORKER_WAIT_S:g} s")
            time.sleep(1.0)
            now = self.status()
        self._before = self._metrics()
        form = {"user_count": str(self.users), "spawn_rate": f"{self.spawn_rate:g}",
                "run_time": self.run_time, **self.options}
        try:
            answer = json.loads(_request(f"{self.url}/swarm", form))
        except ValueError as e:
            raise LocustWebError(f"{self.url}/swarm: not Locust's JSON ({e})") from e
        if not answer.get("success"):
            raise LocustWebError(f"{self.url}/swarm refused the run: {answer.get('message')}")
        self._swarmed_at = time.monotonic()

    def _metrics(self) -> promapi.Samples:
        if self.metrics_url is None:
            return {}
        try:
            return promapi.scrape(self.metrics_url)
        except (OSError, ValueError):
            return self.last_metrics

    def running(self) -> bool:
        if self._state in RUNNING:
            return True
        if not self._started and self._swarmed_at:  # not begun yet
            if time.monotonic() - self._swarmed_at > START_TIMEOUT_S:
                raise LocustWebError(f"the Locust master at {self.url} took the run but did not start it"
                                     f" within {START_TIMEOUT_S:g} s (state {self._state!r})")
            return True
        return False

    def poll(self) -> None:
        now = self.status()
        self._state = str(now.get("state"))
        self._started |= self._state in RUNNING
        total = next((s for s in now.get("stats", []) if s.get("name") == "Aggregated"), {})
        self._history.append({"Timestamp": int(time.time()), "User Count": now.get("user_count", 0),
                              "Type": "", "Name": "Aggregated",
                              "Requests/s": total.get("current_rps", 0.0),
                              "Failures/s": total.get("current_fail_per_sec", 0.0)})
        self.last_metrics = self._metrics()

    def stop(self) -> list[int]:
        """Ask the master to stop the run; nothing of it runs in this machine's processes."""
        over = self._started and self._state not in RUNNING
        if self._swarmed_at and not over:
            try:
                _request(f"{self.url}/stop", {})
            except LocustWebError:
                pass
        return []

    def result(self) -> headless.Result:
        while self.running():
            time.sleep(1.0)
            self.poll()
        now = self.status()
        stats = [s for s in now.get("stats", []) if s.get("name") != "Aggregated"]
        prefix = self.out / "locust"
        Path(f"{prefix}_stats.csv").write_bytes(_request(f"{self.url}/stats/requests/csv"))
        failures_csv = _request(f"{self.url}/stats/failures/csv")
        Path(f"{prefix}_failures.csv").write_bytes(failures_csv)
        with open(f"{prefix}_stats_history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, HISTORY_COLUMNS)
            w.writeheader()
            w.writerows(self._history)
        (self.out / "stats.json").write_text(json.dumps(stats))
        failures = list(csv.DictReader(failures_csv.decode().splitlines()))
        caller = delta(self._metrics(), self._before)
        return headless.Result(0, stats, failures, caller, set(), "")
