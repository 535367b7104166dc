"""Faults injected at offsets into a `rig run`: `--fault NAME@OFFSET[:ARGS]`.

Each kind is one class below, registered with @kind: how it parses its arguments, whether it cuts
calls (the reconciliation then bounds the turns it may have lost), whether it holds the stop lock,
the backends it runs on, and `apply`, which uses only the primitives of rig.backends.base.Backend.
The `--fault` help text and the table in docs/soak-and-faults.md come from this registry
(`python -m rig.faults --markdown` prints the table). Adding a fault is one class here and its test.
"""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING, ClassVar

from lkrig_instrument import names

from rig import headless, netcut, promapi

if TYPE_CHECKING:
    from rig.backends.base import Backend
    from rig.faultrun import FaultScheduler

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

    def preflight(self, backend: Backend) -> None:
        """FaultError if the started stack cannot take this fault; before any load."""

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


def preflight(faults: list[Fault], backend: Backend) -> None:
    for f in faults:
        f.preflight(backend)


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


def node_load(url: str | None) -> tuple[float, float]:
    """(rooms, participants) a LiveKit node hosts now, from its own /metrics; (0, 0) if it does
    not answer."""
    if url is None:
        return 0.0, 0.0
    try:
        samples = promapi.scrape(url, timeout=2)
    except OSError:
        return 0.0, 0.0
    return promapi.total(samples, names.LIVEKIT_ROOMS), promapi.total(samples, names.LIVEKIT_PARTICIPANTS)


@kind
class KillLivekitNode(Fault):
    name = "kill-livekit-node"
    usage = "kill-livekit-node@3m"
    summary = ("SIGKILL the LiveKit node hosting the most rooms, of two or more sharing them through"
               " Redis (the compose profile multinode), then start it again; the rooms and"
               " participants it held are recorded, and the calls it cut fail named")
    cuts_calls = True
    backends = ("compose",)

    def preflight(self, backend: Backend) -> None:
        nodes = backend.livekit_nodes()
        if len(nodes) < 2:
            raise FaultError(f"--fault {self.spec}: {backend.label} runs {len(nodes)} LiveKit node"
                             f" ({', '.join(nodes) or 'none'}); a node kill needs two or more: start the"
                             " multinode profile (COMPOSE_PROFILES=multinode, see .env.example)")

    def apply(self, run: FaultScheduler) -> None:
        load = {name: node_load(url) for name, url in run.backend.livekit_nodes().items()
                if name not in run.busy}
        if len(load) < 2:
            raise RuntimeError(f"{len(load)} LiveKit node running in {run.backend.label}: none to kill"
                               " while another serves")
        name = max(load, key=lambda n: load[n])
        rooms, participants = load[name]
        run.stop_and_restart(name, f"{rooms:g} rooms, {participants:g} participants", "SIGKILL",
                             GONE_WAIT_S, self.name)


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
