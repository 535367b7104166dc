"""`rig replay`: run a scenario offline (text mode, no server) N times and print the outcome
counts by error kind as JSON. Uses the worker's scenarios, providers and error counting.

    python -m agent.replay --scenario seed --profile fast --runs 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from lkrig_instrument import LEDGER, instrument

from . import dialog, latency, scenarios, session, speech
from .replay_io import CallerMicrophone, ClockedAudioOutput

CONVERSATION = (
    "What programs do you have for kids?",
    "She is seven years old, and a girl.",
)
BARGE_IN = "Um, okay, sure."
# lines after which the agent waits for the caller
TURN_ENDS = {dialog.GREETING, dialog.TASK_QUESTION, dialog.CANCELLED, dialog.TOOL_FAILED,
             dialog.FALLBACK}


@dataclass
class RunResult:
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    spoken: list[tuple[float, str, bool]] = field(default_factory=list)  # (start, text, cut)
    stuck: bool = False
    completed: bool = False
    # --timeline: (seconds since the run started, "said" | "error" | "log" | "end", detail)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    t0: float = 0.0  # when the run started (time.monotonic())

    def starts(self, text: str) -> float | None:
        return next((t for t, s, _ in self.spoken if s == text), None)


def _ends_turn(text: str) -> bool:
    return text in TURN_ENDS or text.startswith("We have ")


async def _wait(cond: Any, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


class LogTap(logging.Handler):
    """The framework's and asyncio's warnings and errors with their times, for --timeline: what a
    user's log would show, in the order the loop emitted it."""

    LOGGERS = ("asyncio", "livekit")  # livekit: livekit-agents, and livekit-rtc's event emitter

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(self.LOGGERS):
            return
        text = f"{record.name}: {record.getMessage().splitlines()[0]}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" [{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}]"
        self.records.append((time.monotonic(), text))


async def one_run(scenario: str, profile: latency.Profile, seed: int, *, time_scale: float,
                  barge_in_ms: float | None, turn_timeout: float, stuck_timeout: float,
                  vad: Any, running: dict[int, RunResult], tap: LogTap | None = None) -> RunResult:
    """One conversation. While it lasts, `running` maps its probe's id to it: what the rig counts
    for this session goes to it (replay()'s listener)."""
    result = RunResult()
    sess, agent = session.build(scenario, profile, seed, vad=vad if barge_in_ms is not None else None,
                                time_scale=time_scale, replay=True)
    sess.output.audio = ClockedAudioOutput(time_scale)
    mic = None
    if barge_in_ms is not None:
        mic = CallerMicrophone()
        sess.input.audio = mic
    probe = instrument(sess, scenario=scenario, profile=profile.name, stuck_timeout=stuck_timeout)
    t0 = result.t0 = time.monotonic()
    running[id(probe)] = result

    def on_item(ev: Any) -> None:
        item = ev.item
        if getattr(item, "type", "") == "message" and item.role == "assistant":
            started = (getattr(item, "metrics", None) or {}).get("started_speaking_at")
            at = started - time.time() + time.monotonic() - t0 if started else time.monotonic() - t0
            result.spoken.append((at, item.text_content or "", bool(item.interrupted)))
            said = (item.text_content or "") + (" [cut]" if item.interrupted else "")
            result.events.append((at, "said", said))

    sess.on("conversation_item_added", on_item)
    barge: asyncio.TimerHandle | None = None
    if mic is not None:
        pcm, rate = await speech.render(BARGE_IN)

        def on_state(ev: Any) -> None:
            nonlocal barge
            if ev.new_state == "speaking" and barge is None and len(result.spoken) >= 1:
                barge = asyncio.get_running_loop().call_later(
                    barge_in_ms / 1000.0, mic.play, pcm, rate)

        sess.on("agent_state_changed", on_state)

    def idle_after(n: int) -> Any:
        # a line that ends the turn has been said since n and no speech is playing: a filler that
        # plays after the task's question is waited for too, as a caller would
        return lambda: (any(_ends_turn(s) for _, s, _ in result.spoken[n:])
                        and sess.current_speech is None)

    try:
        await sess.start(agent)
        ok = await _wait(idle_after(0), turn_timeout)
        for text in CONVERSATION:
            if not ok:
                break
            n = len(result.spoken)
            probe.count_turn()
            sess.generate_reply(user_input=text)
            ok = await _wait(idle_after(n), turn_timeout)
            if ok and result.spoken[-1][1] in (dialog.TOOL_FAILED, dialog.FALLBACK):
                ok = False
        result.completed = ok and result.spoken[-1][1].startswith("We have ")
        if not result.completed:  # give the stuck-task watchdog its chance
            await _wait(lambda: probe.stuck, stuck_timeout + 1.0, 0.05)
    finally:
        result.stuck = probe.stuck
        try:
            where = type(sess.current_agent).__name__
        except RuntimeError:  # the session never started
            where = "none"
        result.events.append((time.monotonic() - t0, "end",
                              f"current agent {where}{', stuck' if probe.stuck else ''}"))
        try:
            await asyncio.wait_for(sess.aclose(), 5)
        except (TimeoutError, RuntimeError):
            pass
        probe.finish()
        del running[id(probe)]
        if tap is not None:  # every record emitted while this run ran (all of them with --runs 1)
            result.events += [(t - t0, "log", text) for t, text in tap.records if t >= t0]
        result.events.sort(key=lambda e: e[0])
    return result


def summarize(results: list[RunResult], args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    errors: collections.Counter[str] = collections.Counter()
    runs_with: collections.Counter[str] = collections.Counter()
    for r in results:
        errors.update(r.errors)
        runs_with.update(r.errors.keys())
    filler_played = [r for r in results if r.starts(dialog.FILLER) is not None]
    before = [r for r in filler_played
              if (q := r.starts(dialog.TASK_QUESTION)) is not None and r.starts(dialog.FILLER) < q]
    gaps = []  # silence between the preamble's end and the next agent speech
    for r in results:
        times = [t for t, s, _ in r.spoken if s == dialog.PREAMBLE]
        later = [t for t, s, _ in r.spoken if times and t > times[0] and s != dialog.PREAMBLE]
        if times and later:
            gaps.append(min(later) - times[0])
    return {
        "scenario": args.scenario,
        "profile": args.profile,
        "agents_version": session.AGENTS_VERSION,
        "runs": len(results),
        "barge_in_ms": args.barge_in_ms,
        "errors": dict(sorted(errors.items())),
        "runs_with_error": dict(sorted(runs_with.items())),
        "runs_without_error": sum(1 for r in results if not r.errors),
        "completed": sum(1 for r in results if r.completed),
        "stuck": sum(1 for r in results if r.stuck),
        "filler_played": len(filler_played),
        "filler_before_task_question": len(before),
        "preamble_start_to_next_speech_s_p50": round(statistics.median(gaps), 3) if gaps else None,
        "elapsed_s": round(elapsed, 2),
        **({"timelines": [[[round(t, 3), what, detail] for t, what, detail in r.events]
                          for r in results]} if args.timeline else {}),
    }


async def replay(args: argparse.Namespace) -> dict[str, Any]:
    profile = latency.load(args.profile)
    scenarios.load(args.scenario)
    vad = None
    if args.barge_in_ms is not None:
        from livekit.plugins import silero

        vad = silero.VAD.load()
    time_scale = 1.0 if args.barge_in_ms is not None else args.time_scale
    sem = asyncio.Semaphore(args.concurrency)
    tap = None
    if args.timeline:
        tap = LogTap()
        logging.getLogger().addHandler(tap)

    running: dict[int, RunResult] = {}
    # Counted while no run owned it: after its run ended (what a wedged session leaves behind,
    # cancelled below) or from no run's session. Kept apart, not lost: `errors` plus these is
    # what the metrics hold.
    outside: collections.Counter[str] = collections.Counter()

    def on_error(kind: str, labels: dict[str, str], owner: object) -> None:
        if (r := running.get(id(owner))) is None:
            outside[kind] += 1
        else:
            r.errors[kind] += 1
            r.events.append((time.monotonic() - r.t0, "error", kind))

    async def run(i: int) -> RunResult:
        async with sem:
            return await one_run(args.scenario, profile, args.seed + i, time_scale=time_scale,
                                 barge_in_ms=args.barge_in_ms, vad=vad,
                                 turn_timeout=args.turn_timeout, stuck_timeout=args.stuck_timeout,
                                 running=running, tap=tap)

    LEDGER.add_listener(on_error)
    try:
        t0 = time.monotonic()
        results = await asyncio.gather(*(asyncio.create_task(run(i)) for i in range(args.runs)))
        summary = summarize(list(results), args, time.monotonic() - t0)
        await cancel_leftovers()
    finally:
        LEDGER.remove_listener(on_error)
    summary["errors_outside_runs"] = dict(sorted(outside.items()))
    return summary


async def cancel_leftovers(timeout: float = 5.0) -> None:
    """Cancel what the runs left running, before the summary is returned and the metrics written.

    A wedged session's close can time out (before 1.4.3 it waits for the refused speech), leaving
    its tool task behind. asyncio.run would cancel it only after the summary was made, and the
    errors the framework logs for the cancelled tool would reach the metrics and not the summary.
    """
    deadline = time.monotonic() + timeout
    while (left := asyncio.all_tasks() - {asyncio.current_task()}) and time.monotonic() < deadline:
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=max(deadline - time.monotonic(), 0.0))
    for _ in range(20):  # a record the ledger counts a few loop iterations after its error
        await asyncio.sleep(0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rig replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", required=True, help=f"one of: {', '.join(scenarios.available())}")
    p.add_argument("--profile", default="fast",
                   help=f"latency profile name or YAML path ({', '.join(latency.available())})")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=10, help="sessions replayed at once")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="play audio and injected latency this many times faster (barge-in: 1)")
    p.add_argument("--barge-in-ms", type=float, default=None,
                   help="caller speaks (real audio, through VAD) this long into the preamble")
    p.add_argument("--turn-timeout", type=float, default=20.0)
    p.add_argument("--stuck-timeout", type=float, default=10.0,
                   help="seconds before an unfinished AgentTask or speech counts as stuck")
    p.add_argument("--verbose", action="store_true", help="show the framework's log lines")
    p.add_argument("--timeline", action="store_true",
                   help="add each run's timeline to the JSON: what was said, the errors counted, "
                        "the framework's and asyncio's warnings (all that happened while the run "
                        "ran: use --concurrency 1 for one run's own) and where the session ended")
    p.add_argument("--metrics-out", help="write this process's Prometheus metrics here at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # the counted errors are logged by the framework too; show them only with --verbose
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not args.verbose:
        logging.getLogger().handlers[0].setLevel(logging.CRITICAL)
    try:
        summary = asyncio.run(replay(args))
    except (scenarios.ScenarioError, latency.ProfileError, speech.EspeakMissing) as e:
        print(f"rig replay: {e}", file=sys.stderr)
        return 2
    if args.metrics_out:
        from prometheus_client import generate_latest

        with open(args.metrics_out, "wb") as f:
            f.write(generate_latest())
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
