"""Faults injected at offsets into a `rig run`: `--fault NAME@OFFSET[:ARGS]`.

Each kind is one class below, registered with @kind: how it parses its arguments, whether it cuts
calls (the reconciliation then bounds the turns it may have lost), whether it holds the stop lock,
the backends it runs on, and `apply`, which uses only the primitives of rig.backends.base.Backend.
The `--fault` help text and the table in docs/soak-and-faults.md come from this registry
(`python -m rig.faults --markdown` prints the table). Adding a fault is one class here and its test.
"""

from __future__ import annotations

import json
import queue
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from lkrig_instrument import names

from rig import headless, netcut, promapi

if TYPE_CHECKING:
    from rig.backends.base import Backend

DRAIN_WAIT_S = headless.STOP_TIMEOUT_S + 60  # a conversation in progress finishes first
GONE_WAIT_S = 10.0  # after a SIGKILL, the process or container is gone within this
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class FaultError(ValueError):
    """A --fault spec that does not parse; the message names it."""


def seconds(text: str, what: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise FaultError(f"{what}: {text!r} is not a duration (like 90s, 2m, 1h, 800ms)")
    return float(m.group(1)) * _UNITS[m.group(2)]


class Fault:
    """One parsed --fault. Subclasses set the class attributes and, if they take arguments after
    the offset, `parse_args`."""

    name: ClassVar[str]
    usage: ClassVar[str]  # the spec as a user writes it, with its arguments
    summary: ClassVar[str]
    cuts_calls: ClassVar[bool] = False  # a call in progress may lose its agent or server
    exclusive: ClassVar[bool] = True  # one exclusive fault at a time (they stop things)
    backends: ClassVar[tuple[str, ...]] = ("native", "compose")
    isolates_agents: ClassVar[bool] = False  # natively, each agent needs a cgroup of its own

    def __init__(self, spec: str, at: float, args: list[str]) -> None:
        self.spec, self.at = spec, at
        self.parse_args(args, f"--fault {spec}")

    @property
    def kind(self) -> str:
        return self.name

    def parse_args(self, args: list[str], where: str) -> None:
        if args:
            raise FaultError(f"{where}: {self.name} takes no arguments after the offset")

    def check(self, backend: str) -> None:
        """FaultError if this fault cannot run on `backend` ("native" or "compose") here."""
        if backend not in self.backends:
            raise FaultError(f"--fault {self.spec}: {self.name} runs on {' and '.join(self.backends)}"
                             f" stacks only, not {backend}")

    def apply(self, run: FaultScheduler) -> None:
        raise NotImplementedError


KINDS: dict[str, type[Fault]] = {}


def kind(cls: type[Fault]) -> type[Fault]:
    KINDS[cls.name] = cls
    return cls


def parse(spec: str) -> Fault:
    where = f"--fault {spec}"
    name, sep, rest = spec.partition("@")
    if name not in KINDS:
        raise FaultError(f"{where}: unknown fault {name!r}; choose from {', '.join(KINDS)}")
    if not sep:
        raise FaultError(f"{where}: give the offset into the run, like {name}@120s")
    when, *args = rest.split(":")
    return KINDS[name](spec, seconds(when, where), args)


def check_backend(faults: list[Fault], backend: str) -> None:
    for f in faults:
        f.check(backend)


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
            samples = promapi.scrape(url, timeout=2)
        except OSError:
            continue
        sessions = promapi.total(samples, names.SESSIONS_ACTIVE.name)
        turns = promapi.total(samples, names.TURNS.name)
        rank = (turns > 0, sessions)
        if best is None or rank > best:
            best, choice = rank, name
            load = f"{sessions:g} sessions, {turns:g} turns counted"
    return choice, load


def pick_agent(run: FaultScheduler) -> tuple[str, str]:
    """The busiest agent that no fault holds, and its load in words."""
    urls = {n: u for n, u in run.backend.agent_metrics().items() if n not in run.busy}
    if not urls:
        raise RuntimeError(f"no running agent in {run.backend.label}")
    name, load = busiest(urls)
    return name or next(iter(urls)), load


@kind
class KillAgent(Fault):
    name = "kill-agent"
    usage = "kill-agent@120s"
    summary = ("SIGKILL the busiest agent worker with its job processes (a crash), then start it"
               " again; its counts carry over")
    cuts_calls = True

    def apply(self, run: FaultScheduler) -> None:
        run.stop_and_restart(*pick_agent(run), "SIGKILL", GONE_WAIT_S, self.name, agent=True)


@kind
class DrainAgent(Fault):
    name = "drain-agent"
    usage = "drain-agent@90s[:grace=60s]"
    summary = ("SIGTERM the busiest agent worker: it takes no new job, its conversations finish,"
               " it exits; then it is started again. One still busy after the grace (default: the"
               " stack's, 2 min natively) is SIGKILLed, and its calls count as cut")

    def parse_args(self, args: list[str], where: str) -> None:
        self.grace: float | None = None
        for arg in args:
            if not arg.startswith("grace="):
                raise FaultError(f"{where}: unknown argument {arg!r}; expected grace=DURATION")
            self.grace = seconds(arg[6:], where)

    def apply(self, run: FaultScheduler) -> None:
        grace = self.grace if self.grace is not None else run.backend.drain_grace
        run.stop_and_restart(*pick_agent(run), "SIGTERM", grace, self.name, agent=True)


@kind
class RestartLivekit(Fault):
    name = "restart-livekit"
    usage = "restart-livekit@3m"
    summary = "stop livekit-server (SIGTERM, SIGKILL after 5 s) and start it again"
    cuts_calls = True

    def apply(self, run: FaultScheduler) -> None:
        run.stop_and_restart(run.backend.livekit, "", "SIGTERM", 5.0, self.name)


ALL_AGENTS = "all-agents"  # the target of a fault that hits every agent worker (slow-provider)

# The provider a slow-provider fault slows, by its short name: the first-byte component of each.
PROVIDERS = {"llm": "llm_ttft", "tts": "tts_first_byte", "stt": "stt_final", "tool": "tool"}


def lasting(arg: str, where: str) -> float:
    if not arg.startswith("for="):
        raise FaultError(f"{where}: unknown argument {arg!r}; expected for=DURATION")
    return seconds(arg[4:], where)


@kind
class SlowProvider(Fault):
    name = "slow-provider"
    usage = "slow-provider@60s:+800ms[:llm|:tts|:stt|:tool][:for=30s]"
    summary = ("add latency to one provider's samples in every running session (default llm),"
               " to the end of the run or for the given time")
    exclusive = False

    def parse_args(self, args: list[str], where: str) -> None:
        if not args or not args[0].startswith("+"):
            raise FaultError(f"{where}: say how much latency to add, like slow-provider@60s:+800ms")
        amount = args[0][1:]
        if amount.replace(".", "", 1).isdigit():
            amount += "ms"  # a bare number is milliseconds
        self.add_ms = seconds(amount, where) * 1000.0
        provider, self.lasts = "llm", None
        for arg in args[1:]:
            if arg in PROVIDERS:
                provider = arg
            elif arg.startswith("for="):
                self.lasts = lasting(arg, where)
            else:
                raise FaultError(f"{where}: unknown argument {arg!r}; give one of"
                                 f" {', '.join(PROVIDERS)} or for=DURATION")
        self.components = (PROVIDERS[provider],)
        assert PROVIDERS[provider] in names.INJECTED_COMPONENTS

    def apply(self, run: FaultScheduler) -> None:
        payload = {"add_ms": self.add_ms, "components": list(self.components)}
        where = run.backend.write_latency_override(payload)
        run.record(self.name, f"+{self.add_ms:g} ms on {', '.join(self.components)}"
                              + (f" for {self.lasts:g} s" if self.lasts else " to the end")
                              + (f" in {where}" if where else ""), target=ALL_AGENTS)
        if self.lasts is not None and not run.quit.wait(self.lasts):
            # An empty override rather than none: it can be written into a stopped container too.
            run.backend.write_latency_override({"add_ms": 0, "components": []})
            run.record(f"{self.name}:end", f"latency of {', '.join(self.components)} back to the profile",
                       target=ALL_AGENTS)


@kind
class PartitionAgent(Fault):
    name = "partition-agent"
    usage = "partition-agent@60s:for=20s"
    summary = ("cut the busiest agent worker's network to livekit-server for the given time (the"
               " process keeps running), then join it again")
    cuts_calls = True
    isolates_agents = True

    def parse_args(self, args: list[str], where: str) -> None:
        if len(args) != 1:
            raise FaultError(f"{where}: say how long the partition lasts, like partition-agent@60s:for=20s")
        self.lasts = lasting(args[0], where)

    def check(self, backend: str) -> None:
        super().check(backend)
        if backend == "native" and (why := netcut.unavailable()):
            raise FaultError(f"--fault {self.spec}: {why}; or run it with --compose")

    def apply(self, run: FaultScheduler) -> None:
        name, load = pick_agent(run)
        run.busy.add(name)
        try:
            at = time.time()
            detail = run.backend.cut_network(name)
            run.record(self.name, f"{name} ({load}) cut off from livekit-server: {detail}", at, target=name)
            run.quit.wait(self.lasts)  # a run that ends first still joins it again, below
        finally:
            try:
                run.record(f"{self.name}:end", f"{name} joined again: {run.backend.join_network(name)}",
                           target=name)
            finally:
                run.busy.discard(name)


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


def help_text() -> str:
    return ", ".join(k.usage for k in KINDS.values()) + " (repeatable; see docs/soak-and-faults.md)"


def markdown_table() -> str:
    rows = ["| fault | what it does | cuts calls | backends |", "|---|---|---|---|"]
    rows += [f"| `{k.usage}` | {k.summary} | {'yes' if k.cuts_calls else 'no'} | {', '.join(k.backends)} |"
             .replace("|:", "\\|:") for k in KINDS.values()]
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m rig.faults --markdown")
    print(markdown_table())
