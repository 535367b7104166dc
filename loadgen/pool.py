"""The Locust side of the voice drivers: start them, route their messages, stop them.

Runs under gevent inside a Locust worker and never imports livekit: the media lives in the
driver processes (loadgen/driver.py). A call is a queue of the driver's messages for that call;
the user greenlet reads it and fires Locust events. A driver that dies ends each of its calls
with a synthetic {"type": "driver_exit"} message, so no greenlet waits forever.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.queue
from gevent import subprocess as gsp

log = logging.getLogger("lkrig.loadgen")
REPO = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1
# A driver whose event loop wakes this late, or whose mic frames reach the SDK this late, is
# measuring its own queueing: say so in the log (its numbers are suspect), once per episode.
HOT_LAG_MS = 100.0
HOT_SEND_JITTER_MS = 40.0


def _die_with_parent() -> None:
    # The driver gets SIGTERM (a clean hang-up of its calls) if its Locust worker dies.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class Driver:
    """One voice-driver process."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], max_callers: int,
                 on_stats: Any = None) -> None:
        self.name = name
        self.max_callers = max_callers
        self.calls: dict[str, gevent.queue.Queue[dict[str, Any]]] = {}
        self.ready = gevent.event.Event()
        self.exited = gevent.event.Event()
        self.last_stats: dict[str, Any] = {}
        self.bye: dict[str, Any] | None = None
        self._on_stats = on_stats
        self._write_lock = gevent.lock.Semaphore()
        self._hot = False
        self.proc = gsp.Popen(argv, stdin=gsp.PIPE, stdout=gsp.PIPE, env=env, cwd=str(REPO),
                              preexec_fn=_die_with_parent)
        self._reader = gevent.spawn(self._read)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def alive(self) -> bool:
        return not self.exited.is_set() and self.bye is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("driver %s: not JSON: %r", self.name, line[:200])
                    continue
                kind = msg.get("type")
                if kind == "ready":
                    self.ready.set()
                elif kind == "stats":
                    self._stats(msg)
                elif kind == "bye":
                    self.bye = msg
                elif "call" in msg:
                    q = self.calls.get(msg["call"])
                    if q is not None:
                        q.put(msg)
                        if kind in ("closed", "rejected"):
                            self.calls.pop(msg["call"], None)
        finally:
            rc = self.proc.wait()
            self.exited.set()
            self.ready.set()  # wake anyone waiting for a driver that never came up
            why = f"driver {self.name} (pid {self.pid}) exited with code {rc}"
            for q in self.calls.values():
                q.put({"type": "driver_exit", "detail": why})
            self.calls.clear()

    def _stats(self, msg: dict[str, Any]) -> None:
        prev, self.last_stats = self.last_stats, msg
        if prev and msg["wall_s"] > prev["wall_s"]:
            share = (msg["cpu_s"] - prev["cpu_s"]) / (msg["wall_s"] - prev["wall_s"])
            msg["cpu_share"] = share
            hot = (msg.get("lag_ms_p99", 0) > HOT_LAG_MS
                   or msg.get("send_jitter_ms_p99", 0) > HOT_SEND_JITTER_MS)
            if hot and not self._hot:
                log.warning(
                    "driver %s (pid %s, %s callers, %.0f%% of a core): event-loop lag p99 %.0f ms, "
                    "frame-send jitter p99 %.0f ms: the driver or this machine is overloaded, so the "
                    "latencies measured now include the load generator's own delay (fewer "
                    "--callers-per-driver, more cores, or load generation on another machine)",
                    self.name, self.pid, msg["callers"], 100 * share, msg.get("lag_ms_p99", 0),
                    msg.get("send_jitter_ms_p99", 0))
            self._hot = hot
        if self._on_stats is not None:
            self._on_stats(self, msg)

    def _send(self, msg: dict[str, Any]) -> bool:
        if self.exited.is_set() or self.proc.stdin is None or self.proc.stdin.closed:
            return False
        try:
            with self._write_lock:
                self.proc.stdin.write((json.dumps(msg) + "\n").encode())
                self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def start_call(self, call_id: str, spec: dict[str, Any]) -> gevent.queue.Queue[dict[str, Any]]:
        q: gevent.queue.Queue[dict[str, Any]] = gevent.queue.Queue()
        self.calls[call_id] = q
        if not self._send({"op": "start", "call": call_id, "spec": spec}):
            self.calls.pop(call_id, None)
            q.put({"type": "driver_exit", "detail": f"driver {self.name} is not running"})
        return q

    def cancel_call(self, call_id: str) -> None:
        self._send({"op": "cancel", "call": call_id})

    def stop(self, timeout: float = 45.0) -> int | None:
        """Hangs up every call, waits for the process to exit (SIGKILL after `timeout`)."""
        self._send({"op": "stop"})
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if not self.exited.wait(timeout):
            log.warning("driver %s (pid %s) did not exit within %.0f s: killing it",
                        self.name, self.pid, timeout)
            self.proc.kill()
            self.exited.wait(5)
        return self.proc.returncode


class Pool:
    """Drivers of one Locust process, started on demand, at most `per_driver` calls each."""

    def __init__(self, per_driver: int, driver_args: list[str] | None = None,
                 env: dict[str, str] | None = None, ready_timeout: float = 60.0) -> None:
        self.per_driver = per_driver
        self.driver_args = driver_args or []
        self.env = env
        self.ready_timeout = ready_timeout
        self.drivers: list[Driver] = []
        self._ids = itertools.count(1)
        self._spawn_lock = gevent.lock.Semaphore()
        self.on_stats: Any = None

    def _env(self) -> dict[str, str]:
        env = dict(self.env if self.env is not None else os.environ)
        paths = [str(REPO), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _pick(self) -> Driver | None:
        live = [d for d in self.drivers if d.alive and d.ready.is_set()]
        free = [d for d in live if len(d.calls) < d.max_callers]
        # The least busy driver: calls spread over processes, so no one process saturates first.
        return min(free, key=lambda d: len(d.calls)) if free else None

    def acquire(self) -> Driver:
        """A running driver with room for one more call (starting one if all are full)."""
        with self._spawn_lock:
            d = self._pick()
            if d is not None:
                return d
            n = next(self._ids)
            argv = [sys.executable, "-m", "loadgen.driver", "--max-callers", str(self.per_driver),
                    *self.driver_args]
            d = Driver(f"d{n}", argv, self._env(), self.per_driver, self.on_stats)
            self.drivers.append(d)
            t0 = time.monotonic()
            if not d.ready.wait(self.ready_timeout) or not d.alive:
                d.stop(5)
                self.drivers.remove(d)
                raise RuntimeError(f"voice driver {d.name} did not start within {self.ready_timeout:.0f} s "
                                   f"(exit code {d.proc.returncode}); see the Locust log for its stderr")
            log.info("voice driver %s started (pid %s) in %.1f s", d.name, d.pid, time.monotonic() - t0)
            return d

    @property
    def active_calls(self) -> int:
        return sum(len(d.calls) for d in self.drivers)

    def close(self, timeout: float = 45.0) -> list[str]:
        """Stops every driver (in parallel); returns what did not exit cleanly."""
        drivers, self.drivers = self.drivers, []
        jobs = [gevent.spawn(d.stop, timeout) for d in drivers]
        gevent.joinall(jobs)
        problems = []
        for d, j in zip(drivers, jobs, strict=True):
            if j.value not in (0,):
                problems.append(f"driver {d.name} (pid {d.pid}) exit code {j.value}")
            if d.bye and d.bye.get("left"):
                problems.append(f"driver {d.name}: teardown unfinished for calls {d.bye['left']}")
        return problems
