"""One Locust run against a Backend, from start to settled counts: what `rig run` does once and
`rig sweep` does per cell. Faults, if any, run beside it (rig.faultrun.FaultScheduler)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rig import faultrun, faults, headless, reconcile
from rig.backends.base import Backend, Load, LoadSpec

LOCUST_SLACK_S = 120.0  # past duration + stop timeout, a Locust still running is a hang


@dataclass
class Outcome:
    result: headless.Result
    growth: reconcile.AgentTotals  # what the agents counted during the run, once settled
    problems: list[str]  # what failed the run, in words
    t0: float  # unix seconds at the start
    t1: float  # unix seconds once the counts settled


def load_run(backend: Backend, out: Path, spec: LoadSpec, say: Callable[[str], None],
             planned: Sequence[faults.Fault] = (),
             scheduler: faultrun.FaultScheduler | None = None) -> Outcome:
    """Start the load (and the faults at their offsets), watch it to its end, wait for the
    faults to finish and their restarts, and for the agents' counts to settle."""
    before = reconcile.agent_totals(backend.agent_metrics_urls())
    load = backend.start_load(out, spec)
    try:
        t0, started = time.time(), time.monotonic()
        say(f"Locust running ({spec.users} users, {spec.duration:g} s, shape {spec.shape});"
            f" logs in {load.out}")
        if scheduler is not None:
            scheduler.schedule(list(planned), started)
        problems = watch(backend.dead, load, scheduler,
                         started + spec.duration + headless.STOP_TIMEOUT_S + LOCUST_SLACK_S)
        result = load.result()
    except BaseException:
        load.stop()
        raise
    if result.rc != 0:
        problems.append(f"Locust exited with code {result.rc}; see {load.out / 'master.log'}")
    if scheduler is not None:
        scheduler.join(backend.drain_grace + backend.restart_timeout)
        problems += scheduler.errors
    say("load done; waiting for the agents' counts to settle")
    after = reconcile.settle(backend.agent_metrics_urls())
    return Outcome(result, after.minus(before), problems, t0, time.time())


def watch(dead: Callable[[], str | None], load: Load, scheduler: faultrun.FaultScheduler | None,
          deadline: float) -> list[str]:
    """Until the Locust run ends; a service that dies on its own, or a Locust that outlives its
    own stop timeout, ends the run with a named problem."""
    while load.running():
        load.poll()
        if scheduler is not None:
            scheduler.service()
        if (death := dead()) is not None:
            load.stop()
            return [death]
        if time.monotonic() > deadline:
            load.stop()
            return [f"Locust still running {LOCUST_SLACK_S:.0f} s after its run time and stop timeout"
                    " (a hang)"]
        time.sleep(0.5)
    return []
