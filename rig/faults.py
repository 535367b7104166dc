"""Faults injected at offsets into a `rig run`: `--fault NAME@OFFSET[:ARGS]`.

    kill-agent@120s          SIGKILL one agent worker with its job processes (a crash), then
                             start it again on the same metrics folder, so no count is lost
    drain-agent@90s          SIGTERM one agent worker: it takes no new job, its conversations
                             finish, it exits; then it is started again
    restart-livekit@3m       stop livekit-server (SIGTERM, SIGKILL after 5 s) and start it again
    slow-provider@60s:+800ms[:llm|:tts|:stt|:tool][:for=30s]
                             add latency to one provider's samples in every running session
                             (default llm), until the end of the run or for the given time

Natively the faults are process control on the stack `rig run` started (rig.native). A compose
project takes the same four operations through the Docker SDK: rig.compose_faults.ComposeFaults,
with the same interface as NativeFaults (tests/test_compose_faults.py runs it on a real engine).
"""

from __future__ import annotations

import json
import queue
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lkrig_instrument import names

from rig import headless, native

KINDS = ("kill-agent", "drain-agent", "restart-livekit", "slow-provider")
# The provider a slow-provider fault slows, by its short name: the first-byte component of each.
PROVIDERS = {"llm": "llm_ttft", "tts": "tts_first_byte", "stt": "stt_final", "tool": "tool"}
DRAIN_WAIT_S = headless.STOP_TIMEOUT_S + 60  # a conversation in progress finishes first
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class FaultError(ValueError):
    """A --fault spec that does not parse; the message names it."""


def seconds(text: str, what: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise FaultError(f"{what}: {text!r} is not a duration (like 90s, 2m, 1h, 800ms)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Fault:
    spec: str
    kind: str
    at: float  # seconds into the run
    add_ms: float = 0.0
    components: tuple[str, ...] = ()
    lasts: float | None = None  # slow-provider only; None = to the end of the run


def parse(spec: str) -> Fault:
    where = f"--fault {spec}"
    kind, sep, rest = spec.partition("@")
    if kind not in KINDS:
        raise FaultError(f"{where}: unknown fault {kind!r}; choose from {', '.join(KINDS)}")
    if not sep:
        raise FaultError(f"{where}: give the offset into the run, like {kind}@120s")
    when, *args = rest.split(":")
    at = seconds(when, where)
    if kind != "slow-provider":
        if args:
            raise FaultError(f"{where}: {kind} takes no arguments after the offset")
        return Fault(spec, kind, at)
    if not args or not args[0].startswith("+"):
        raise FaultError(f"{where}: say how much latency to add, like slow-provider@60s:+800ms")
    amount = args[0][1:]
    if amount.replace(".", "", 1).isdigit():
        amount += "ms"  # a bare number is milliseconds
    add_ms = seconds(amount, where) * 1000.0
    provider, lasts = "llm", None
    for arg in args[1:]:
        if arg in PROVIDERS:
            provider = arg
        elif arg.startswith("for="):
            lasts = seconds(arg[4:], where)
        else:
            raise FaultError(f"{where}: unknown argument {arg!r}; give one of {', '.join(PROVIDERS)}"
                             " or for=DURATION")
    assert PROVIDERS[provider] in names.INJECTED_COMPONENTS
    return Fault(spec, kind, at, add_ms, (PROVIDERS[provider],), lasts)


def busiest(metrics_urls: dict[str, str | None]) -> tuple[str | None, str]:
    """The agent a kill or drain hits, and its load in words: among the agents that have counted
    a turn, the one with the most sessions now (so the fault hits conversations and a counter
    that must survive it); any agent if none has counted yet. None if none answers."""
    best: tuple[bool, float] | None = None
    choice, load = None, ""
    for name, url in metrics_urls.items():
        if url is None:
            continue
        try:
            samples = headless.scrape(url, timeout=2)
        except OSError:
            continue
        sessions = headless.total(samples, names.SESSIONS_ACTIVE.name)
        turns = headless.total(samples, names.TURNS.name)
        rank = (turns > 0, sessions)
        if best is None or rank > best:
            best, choice = rank, name
            load = f"{sessions:g} sessions, {turns:g} turns counted"
    return choice, load


class FaultScheduler:
    """Runs each fault in a thread of its own at its offset, so a long one (a drain) delays
    neither the others nor the run; one stop at a time (a lock). Restarts are queued for
    service(), which the caller's main thread calls often (natively, a child's death signal
    fires when the thread that started it ends). Subclasses apply the faults: `_stop(f)` for
    kill-agent, drain-agent and restart-livekit, `_slow(f)`, and `_restart(item)` for what
    `_stop` queued, returning what to record."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.records: list[dict[str, object]] = []  # {"at", "name", "detail"} for the report
        self.errors: list[str] = []
        self.busy: set[str] = set()  # what a fault has stopped on purpose, until it is back
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._quit = threading.Event()
        self._restarts: queue.Queue[tuple[str, str, object]] = queue.Queue()  # (name, kind, item)

    def schedule(self, faults: list[Fault], t0_monotonic: float) -> None:
        for f in faults:
            t = threading.Thread(target=self._run, args=(f, t0_monotonic), name=f.spec, daemon=True)
            t.start()
            self._threads.append(t)

    def service(self) -> None:
        """Restart what the faults stopped; call it often from the main thread."""
        while True:
            try:
                name, kind, item = self._restarts.get_nowait()
            except queue.Empty:
                return
            try:
                self._record(f"{kind}:restarted", self._restart(item))
            except Exception as e:
                self.errors.append(f"{kind}: restarting {name}: {type(e).__name__}: {e}")
                self.say(f"rig run: fault {kind}: restarting {name} failed: {e}")
            finally:
                self.busy.discard(name)

    def join(self, timeout: float, restart: bool = True) -> None:
        """Cancel what has not started; wait for what has, and restart what it stopped (unless
        the run is being abandoned)."""
        self._quit.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(t.is_alive() for t in self._threads):
            if restart:
                self.service()
            time.sleep(0.2)
        if restart:
            self.service()

    def _record(self, name: str, detail: str, at: float | None = None) -> None:
        self.records.append({"at": at or time.time(), "name": name, "detail": detail})
        self.say(f"rig run: fault {name}: {detail}")

    def _run(self, f: Fault, t0: float) -> None:
        if self._quit.wait(max(0.0, t0 + f.at - time.monotonic())):
            return
        try:
            if f.kind == "slow-provider":
                self._slow(f)
                return
            with self._lock:
                self._stop(f)
        except Exception as e:  # a fault that could not be applied fails the run, named
            self.errors.append(f"{f.spec}: {type(e).__name__}: {e}")
            self.say(f"rig run: fault {f.spec} failed: {e}")

    def _stop(self, f: Fault) -> None:
        raise NotImplementedError

    def _slow(self, f: Fault) -> None:
        raise NotImplementedError

    def _restart(self, item: object) -> str:
        raise NotImplementedError


class NativeFaults(FaultScheduler):
    """The faults as process control on the native stack `rig run` started."""

    def __init__(self, stack: native.NativeStack, say: Callable[[str], None]) -> None:
        super().__init__(say)
        self.stack = stack

    def _stop(self, f: Fault) -> None:
        if f.kind == "restart-livekit":
            self._bounce("livekit-server", signal.SIGTERM, 5.0, f.kind)
        else:
            sig = signal.SIGKILL if f.kind == "kill-agent" else signal.SIGTERM
            info = self.stack.info
            assert info is not None
            name, load = busiest({a.name: a.metrics_url for a in info.agents if a.name not in self.busy})
            self._bounce(name or info.agents[0].name, sig, DRAIN_WAIT_S, f.kind, load)

    def _restart(self, item: object) -> str:
        name = str(item)
        took = self.stack.restart_service(name)
        return f"{name} healthy again after {took:.1f} s"

    def _bounce(self, name: str, sig: int, grace: float, kind: str, load: str = "") -> None:
        self.busy.add(name)  # until restarted: its death is the fault, not a failure
        pid = self.stack.service(name).popen.pid  # type: ignore[union-attr]
        at, t = time.time(), time.monotonic()
        left = self.stack.kill_service(name, sig, grace)
        what = f"pid {pid}, {load}" if load else f"pid {pid}"
        self._record(kind, f"{name} ({what}) {signal.Signals(sig).name}, gone after "
                           f"{time.monotonic() - t:.1f} s{'; left: ' + str(left) if left else ''}", at)
        self._restarts.put((name, kind, name))

    def _slow(self, f: Fault) -> None:
        assert self.stack.info is not None
        path = Path(self.stack.info.run_dir) / native.LATENCY_OVERRIDE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"add_ms": f.add_ms, "components": list(f.components)}))
        tmp.replace(path)  # the agents never read a half-written file
        self._record("slow-provider", f"+{f.add_ms:g} ms on {', '.join(f.components)}"
                                      + (f" for {f.lasts:g} s" if f.lasts else " to the end"))
        if f.lasts is not None and not self._quit.wait(f.lasts):
            path.unlink(missing_ok=True)
            self._record("slow-provider:end", f"latency of {', '.join(f.components)} back to the profile")
