"""Runs the faults of a `rig run` (rig.faults) beside its load: each in a thread of its own at its
offset, their restarts on the caller's thread, and their records, the report's and the dashboard's
annotations."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rig.backends.base import Backend
    from rig.faults import Fault


class FaultScheduler:
    """Runs each fault in a thread of its own at its offset, so a long one (a drain) delays
    neither the others nor the run; one exclusive fault at a time (a lock). Restarts are queued
    for service(), which the caller's main thread calls often (natively, a child's death signal
    fires when the thread that started it ends)."""

    def __init__(self, backend: Backend, say: Callable[[str], None]) -> None:
        self.backend = backend
        self.say = say
        self.records: list[dict[str, object]] = []  # {"at", "name", "detail"[, "target"]}: the report
        self.errors: list[str] = []
        self.quit = threading.Event()  # the run is over: cancel what has not started
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._restarts: queue.Queue[tuple[str, str, object]] = queue.Queue()  # (name, kind, token)
        # agent -> {kind: counted errors whose log lines died with it}, as of its latest stop
        self.log_gaps: dict[str, dict[str, float]] = {}
        self.forced = False  # an orderly stop ran out of grace and was SIGKILLed: calls were cut

    @property
    def busy(self) -> set[str]:
        """What a fault has stopped or cut on purpose, until it is back: not a death."""
        return self.backend.busy

    def schedule(self, faults: list[Fault], t0_monotonic: float) -> None:
        for f in faults:
            t = threading.Thread(target=self._run, args=(f, t0_monotonic), name=f.spec, daemon=True)
            t.start()
            self._threads.append(t)

    def service(self) -> None:
        """Restart what the faults stopped; call it often from the main thread."""
        while True:
            try:
                name, kind_name, token = self._restarts.get_nowait()
            except queue.Empty:
                return
            try:
                self.record(f"{kind_name}:restarted", self.backend.start_again(token), target=name)
            except Exception as e:
                self.errors.append(f"{kind_name}: restarting {name}: {type(e).__name__}: {e}")
                self.say(f"rig run: fault {kind_name}: restarting {name} failed: {e}")
            finally:
                self.busy.discard(name)

    def join(self, timeout: float, restart: bool = True) -> None:
        """Cancel what has not started; wait for what has, and restart what it stopped (unless
        the run is being abandoned)."""
        self.quit.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(t.is_alive() for t in self._threads):
            if restart:
                self.service()
            time.sleep(0.2)
        if restart:
            self.service()

    def record(self, name: str, detail: str, at: float | None = None, target: str | None = None,
               forced: bool = False) -> None:
        """One line of the report; with a target, also a start or end ("kind:end",
        "kind:restarted") for the dashboard's annotations. forced: an orderly stop that had to be
        a SIGKILL (its calls were cut)."""
        at = at or time.time()
        self.records.append({"at": at, "name": name, "detail": detail,
                             **({"target": target} if target is not None else {}),
                             **({"forced": True} if forced else {})})
        self.say(f"rig run: fault {name}: {detail}")
        if target is not None:
            kind_name, _, after = name.partition(":")
            self.annotate(kind_name, target, "end" if after else "start", at)

    def annotate(self, kind_name: str, target: str, phase: str, at: float) -> None:
        """Post the event to the Locust master, which serves it to Prometheus
        (loadgen/runstate.py). A master that cannot take it costs the annotation, not the run."""
        url = self.backend.events_url
        if url is None:
            return
        body = json.dumps({"fault": kind_name, "target": target, "phase": phase, "at": at}).encode()
        try:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=3):
                pass
        except (OSError, ValueError) as e:
            self.say(f"rig run: fault {kind_name}: {phase} not annotated on the dashboard ({url}: {e})")

    def lost_lines(self) -> dict[str, float]:
        """By kind, the counted errors whose log lines died with the agents the faults stopped."""
        total: dict[str, float] = {}
        for gap in self.log_gaps.values():
            for kind, n in gap.items():
                total[kind] = total.get(kind, 0.0) + n
        return total

    def stop_and_restart(self, name: str, load: str, sig: str, grace: float, kind_name: str,
                         agent: bool = False) -> None:
        """Stop one service with `sig` (SIGKILL after `grace`), record it, queue its restart. An
        agent's folder and log are compared while it is down (Backend.log_gap)."""
        self.busy.add(name)  # until restarted: its stop is the fault, not a failure
        at, t = time.time(), time.monotonic()
        try:
            ident, how, token, forced = self.backend.stop_service(name, sig, grace)
        except Exception:
            self.busy.discard(name)
            raise
        what = f"{ident}, {load}" if load else ident
        gone = f"{name} ({what}) {sig}, gone after {time.monotonic() - t:.1f} s ({how})"
        self.forced |= forced
        try:
            if agent:
                self.log_gaps[name] = gap = self.backend.log_gap(name)
                if lacking := {k: n for k, n in gap.items() if n > 0}:
                    gone += "; its log lacks counted lines, in flight when it died: " + ", ".join(
                        f"{kind} {n:g}" for kind, n in sorted(lacking.items()))
                if extra := {k: -n for k, n in gap.items() if n < 0}:
                    self.errors.append(f"{kind_name}: {name}'s log holds counted-error lines its"
                                       f" folder never counted: {extra}")
        finally:  # what could not be read fails the run (the caller), the restart still comes
            self.record(kind_name, gone, at, target=name, forced=forced)
            self._restarts.put((name, kind_name, token))

    def _run(self, f: Fault, t0: float) -> None:
        if self.quit.wait(max(0.0, t0 + f.at - time.monotonic())):
            return
        try:
            if f.exclusive:
                with self._lock:
                    f.apply(self)
            else:
                f.apply(self)
        except Exception as e:  # a fault that could not be applied fails the run, named
            self.errors.append(f"{f.spec}: {type(e).__name__}: {e}")
            self.say(f"rig run: fault {f.spec} failed: {e}")
