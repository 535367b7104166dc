"""The native stack's processes: started each in a session of its own with its log, waited on
until healthy, watched for an exit, stopped (the whole session, SIGKILL after a grace), and
started again in place.

A `Service` says how to start and check one process; rig.services builds them. A `Supervisor`
runs a list of them; it knows nothing about which service is which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rig import netcut, procs
from rig.paths import REPO
from rig.probes import Check
from rig.stackerror import StackError


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    timeout: float
    health: Check
    health_what: str  # said in the error when the check never passes
    grace: float = 5.0  # seconds between SIGTERM and SIGKILL
    # What the service gets if the supervisor dies without stopping it. Python services get
    # SIGTERM and stop their own children; the Go servers have no children and livekit-server can
    # lose a single SIGTERM (see probes.livekit_ready), so they get SIGKILL.
    death_signal: int = signal.SIGTERM
    # A check of its own for a restart, made just before it starts again, for a check that
    # keeps state (a settle window, a log offset); None: `health` again.
    restart_health: Callable[[], Check] | None = None
    cgroup: Path | None = None  # a cgroup of its own to start in (rig.netcut), or None
    popen: subprocess.Popen[bytes] | None = None
    start_ticks: int = 0
    log_file: IO[bytes] | None = None
    started_at: float = 0.0


class Supervisor:
    def __init__(self, say: Callable[[str], None], die_with_supervisor: bool) -> None:
        self.say = say
        self.die_with_supervisor = die_with_supervisor
        self.services: list[Service] = []  # in start order
        self.secret = ""  # masked in the log lines an error quotes

    def spawn(self, svc: Service, append: bool = False) -> None:
        svc.log.parent.mkdir(parents=True, exist_ok=True)
        svc.log_file = open(svc.log, "ab" if append else "wb")  # stays open for the child's lifetime
        try:
            svc.popen = subprocess.Popen(
                svc.argv,
                stdin=subprocess.DEVNULL,
                stdout=svc.log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=svc.env,
                start_new_session=True,
                preexec_fn=self._preexec(svc),
            )
        except OSError as exc:
            svc.log_file.close()
            raise StackError(f"{svc.name}: cannot start {svc.argv[0]} ({exc.strerror})") from exc
        svc.started_at = time.monotonic()
        info = procs.proc_info(svc.popen.pid)
        svc.start_ticks = info.start_ticks if info else 0
        self.services.append(svc)
        self.say(f"rig up: started {svc.name} (pid {svc.popen.pid}), log {svc.log}")

    def _preexec(self, svc: Service) -> Callable[[], None] | None:
        steps = [*([netcut.enter(svc.cgroup)] if svc.cgroup else []),
                 *([procs.die_with_parent(svc.death_signal)] if self.die_with_supervisor else [])]
        if not steps:
            return None

        def run_all() -> None:
            for step in steps:
                step()

        return run_all

    def log_tail(self, svc: Service, lines: int = 15) -> str:
        try:
            text = svc.log.read_text(errors="replace")
        except OSError:
            return ""
        if self.secret:
            text = text.replace(self.secret, "<secret>")
        tail = text.splitlines()[-lines:]
        return (
            ("\n  last lines of the log:\n    " + "\n    ".join(tail)) if tail else "\n  (the log is empty)"
        )

    def wait_healthy(self, stage: list[Service]) -> None:
        pending = list(stage)
        while pending:
            for svc in list(pending):
                assert svc.popen is not None
                rc = svc.popen.poll()
                if rc is not None:
                    raise StackError(
                        f"{svc.name} exited with code {rc} while starting; see {svc.log}{self.log_tail(svc)}"
                    )
                if svc.health():
                    pending.remove(svc)
                    self.say(f"rig up: {svc.name} healthy after {time.monotonic() - svc.started_at:.1f} s")
                elif time.monotonic() - svc.started_at > svc.timeout:
                    raise StackError(
                        f"{svc.name} did not become healthy within {svc.timeout:.0f} s (waited for "
                        f"{svc.health_what}); see {svc.log}{self.log_tail(svc)}"
                    )
            if pending:
                time.sleep(0.1)

    def dead(self) -> Service | None:
        """The first service that has exited, if any."""
        for svc in self.services:
            if svc.popen and svc.popen.poll() is not None:
                return svc
        return None

    def describe_death(self, svc: Service) -> str:
        assert svc.popen is not None
        return f"{svc.name} exited with code {svc.popen.returncode}; see {svc.log}{self.log_tail(svc)}"

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise StackError(f"no service {name!r} in this stack")

    def kill(self, name: str, sig: int, grace: float) -> list[int]:
        """Stop one service the hard way or the orderly way; return pids left (empty = gone).

        SIGKILL hits every process of its session at once (a crash of the whole worker, job
        processes included). SIGTERM goes to the leader only, so a worker drains its own jobs;
        what is still there after `grace` seconds gets SIGKILL."""
        svc = self.service(name)
        assert svc.popen is not None
        if sig == signal.SIGKILL:
            for pid in procs.session_members(svc.popen.pid, svc.start_ticks):
                _send(pid, signal.SIGKILL)
            grace = 0.0
        elif procs.is_same_process(svc.popen.pid, svc.start_ticks):
            _send(svc.popen.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and procs.session_members(svc.popen.pid, svc.start_ticks):
            svc.popen.poll()
            time.sleep(0.1)
        left = procs.stop_session(svc.popen.pid, svc.start_ticks, 0.0, reap=svc.popen.poll)
        with contextlib.suppress(subprocess.TimeoutExpired):
            svc.popen.wait(timeout=5)
        if svc.log_file:
            svc.log_file.close()
        return left

    def respawn(self, name: str) -> Service:
        """Start a stopped service again, as before, with its log appended to; return the new
        one (not yet healthy)."""
        old = self.service(name)
        if old.popen is not None and old.popen.poll() is None:
            raise StackError(f"{name} is still running; stop it first")
        with open(old.log, "ab") as f:
            f.write(f"--- rig: {name} restarted at {time.time():.3f} ---\n".encode())
        health = old.restart_health() if old.restart_health else old.health
        new = dataclasses.replace(
            old, health=health, popen=None, start_ticks=0, log_file=None, started_at=0.0
        )
        # In the old one's place (stop order), once: spawn appends, and a stale entry would be
        # reported dead by dead() after a second restart of the same service.
        at = next(i for i, svc in enumerate(self.services) if svc is old)
        self.services.remove(old)
        self.spawn(new, append=True)
        self.services.insert(at, self.services.pop())
        return new

    def stop(self) -> list[str]:
        """Stop every service (reverse start order); return what could not be stopped (empty = clean)."""
        left: list[str] = []
        for svc in reversed(self.services):
            if svc.popen is None:
                continue
            popen = svc.popen
            pids = procs.stop_session(popen.pid, svc.start_ticks, svc.grace, reap=popen.poll)
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pids.append(popen.pid)
            if pids:
                left.append(f"{svc.name}: pids {', '.join(map(str, pids))}")
            if svc.log_file:
                svc.log_file.close()
            if svc.cgroup:
                netcut.remove(svc.cgroup)
        self.services.clear()
        return left


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
