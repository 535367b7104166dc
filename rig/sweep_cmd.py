"""`rig sweep`: a grid of short headless runs, and per cell the scheduling-error rate by kind.

Every combination of --scenarios x --profiles x --users is one cell: a headless Locust run of
--duration against one native stack started for the whole grid (livekit-server, Prometheus, N
agent workers). Per cell: errors per 1000 agent turns by kind, turns, conversations by outcome and
the callers' turn latency p95; written as a table (sweep.md, sweep.csv) and plots (sweep.svg,
sweep.html). Exit 0: the grid completed (the sweep measures, it does not gate); 1: a cell's run
failed; 2: bad input, found before anything starts; 130: interrupted. See docs/soak-and-faults.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from rig import faults, headless, native, reconcile, sweep
from rig.cli import _STOP_SIGNALS, EXIT_USAGE, _err, _out, _raise_stop, _Stop
from rig.run_cmd import LOCUST_SLACK_S, watch_run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rig sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", required=True, metavar="S1,S2",
                   help="agent scenarios, comma-separated (agent/scenarios)")
    p.add_argument("--profiles", default="typical", metavar="P1,P2",
                   help="latency profiles, comma-separated (agent/profiles; default typical)")
    p.add_argument("--users", default="4", metavar="U1,U2",
                   help="callers per cell, comma-separated (default 4)")
    p.add_argument("--duration", default="60s", metavar="D", help="run time of each cell (default 60s)")
    p.add_argument("--script", default="seed", metavar="C", help="conversation script (loadgen/scripts)")
    p.add_argument("--call-gap", type=float, default=1.0, metavar="G",
                   help="mean seconds a caller waits between calls (sets how many calls run at once)")
    p.add_argument("--spawn-rate", type=float, default=1.0, metavar="R", help="callers started per second")
    p.add_argument("--agents", type=int, default=2, metavar="N", help="agent workers (default 2)")
    p.add_argument("--loadgen-workers", type=int, default=1, metavar="M", help="Locust workers (default 1)")
    p.add_argument("--seed", type=int, default=1, help="base seed of the conversations")
    p.add_argument("--out", type=Path, metavar="DIR", help="sweep folder (default .rig/sweeps/<start time>)")
    p.add_argument("--port-offset", type=int, default=0, metavar="K", help="shift every port by K")
    p.add_argument("--env-file", type=Path, default=native.REPO / ".env", help="LiveKit credentials")
    return p


def _names(text: str, flag: str) -> list[str]:
    items = [x.strip() for x in text.split(",")]
    if not text.strip() or "" in items:
        raise ValueError(f"{flag} {text!r}: expected comma-separated names, like a,b")
    dup = next((x for x in items if items.count(x) > 1), None)
    if dup:
        raise ValueError(f"{flag} {text}: {dup} is given twice")
    return items


def _validate(args: argparse.Namespace) -> tuple[float, list[sweep.Cell]]:
    """Everything that can be wrong with the input, before anything starts (ValueError)."""
    from agent import latency, scenarios
    from loadgen import convscript

    duration = faults.seconds(args.duration, "--duration")
    if duration <= 0:
        raise ValueError("--duration: must be > 0")
    scenario_list = _names(args.scenarios, "--scenarios")
    for s in scenario_list:
        if s not in scenarios.available():
            raise ValueError(f"--scenarios: {s}: no such scenario; available:"
                             f" {', '.join(scenarios.available())}")
    profile_list = _names(args.profiles, "--profiles")
    for p in profile_list:
        latency.load(p)  # ProfileError names the file and field
    users: list[int] = []
    for u in _names(args.users, "--users"):
        if not u.isdigit() or int(u) < 1:
            raise ValueError(f"--users {args.users}: {u!r} is not a whole number of callers >= 1")
        users.append(int(u))
    if len(set(users)) != len(users):
        raise ValueError(f"--users {args.users}: a value is given twice")
    scripts = convscript.load_all()
    if args.script not in scripts:
        raise ValueError(f"--script {args.script}: no such conversation script; available:"
                         f" {', '.join(sorted(scripts))}")
    for flag, value in (("--agents", args.agents), ("--loadgen-workers", args.loadgen_workers)):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    if args.spawn_rate <= 0 or args.call_gap < 0:
        raise ValueError("--spawn-rate must be > 0 and --call-gap >= 0")
    native.compute_ports(args.port_offset, args.agents)  # StackError: an offset out of range
    return duration, sweep.grid(scenario_list, profile_list, users)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        duration, cells = _validate(args)
    except (ValueError, OSError, native.StackError) as e:  # FaultError, ProfileError, ScriptError
        _err(f"rig sweep: {e}")
        return EXIT_USAGE
    out: Path = args.out or native.REPO / ".rig" / "sweeps" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    # Per cell: the run, Locust's stop timeout at most for the calls in flight, the settle.
    per_cell = duration + 30
    _out(f"rig sweep: {len(cells)} cells of {duration:g} s; about {len(cells) * per_cell / 60:.0f} min")
    stack = native.NativeStack(native.NativeOptions(
        agents=args.agents, loadgen_workers=0, scrape_loadgen=True, run_dir=out / "stack",
        port_offset=args.port_offset, env_file=args.env_file))
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    params: dict[str, Any] = {
        "command": "rig sweep " + " ".join(argv), "started": time.time(), "duration_s": duration,
        "script": args.script, "call_gap_s": args.call_gap, "spawn_rate": args.spawn_rate,
        "agents": args.agents, "loadgen_workers": args.loadgen_workers, "seed": args.seed}
    done: list[sweep.Measured] = []
    loc: headless.Headless | None = None
    rc = 1
    try:
        info = stack.start()
        # every process the sweep starts, to check that none outlives it
        pids: dict[str, int] = params.setdefault("pids", {})
        pids.update(info.pids)
        _out(f"rig sweep: stack healthy in {info.startup_seconds:.1f} s; Prometheus {info.prometheus_url}")
        urls = [a.metrics_url for a in info.agents]
        env = {**os.environ, "LIVEKIT_URL": info.livekit_url, "LIVEKIT_API_KEY": info.api_key,
               "LIVEKIT_API_SECRET": info.api_secret}
        idle = faults.NativeFaults(stack, _out)  # no fault: only for watch_run's bookkeeping
        before = reconcile.agent_totals(urls)
        for i, cell in enumerate(cells, 1):
            name = f"{i:02d}-{cell.scenario}-{cell.profile}-{cell.users}u"
            _out(f"rig sweep: cell {i}/{len(cells)}: {cell.scenario}, {cell.profile}, {cell.users} users")
            loc_out = out / "cells" / name
            loc = headless.Headless(
                loc_out, env, cell.users, f"{duration:g}s",
                ["--scenario", cell.scenario, "--latency-profile", cell.profile, "--script", args.script,
                 "--call-gap", f"{args.call_gap:g}", "--seed", str(args.seed + 10_000 * i),
                 "--exit-code-on-error", "0"],
                workers=args.loadgen_workers, spawn_rate=args.spawn_rate, agent_name=info.agent_name,
                master_port=info.ports.locust_master, metrics_port=info.ports.loadgen_metrics)
            t0 = time.time()
            loc.start()
            pids.update({f"locust-{p.pid}": p.pid for p in loc.processes})
            problems = watch_run(lambda: _death(stack), loc, idle,
                                 time.monotonic() + duration + headless.STOP_TIMEOUT_S + LOCUST_SLACK_S)
            result = loc.result()
            pids.update({f"driver-{pid}": pid for pid in result.drivers})
            loc = None
            if result.rc != 0:
                problems.append(f"Locust exited with code {result.rc}; see {loc_out / 'master.log'}")
            after = reconcile.settle(urls)
            m = sweep.measure(cell, result, before, after, t0, time.time(), problems)
            before = after
            done.append(m)
            _out(f"  turns {m.turns_locust} (agent {m.turns_agent:g}), errors per 1k turns "
                 + (", ".join(f"{k} {sweep._num(m.per_1k(k), 1)}" for k in m.errors) or "none")
                 + f", p95 {sweep._num(m.turn_latency_p95_s, 2) or 'n/a'} s"
                 + "".join(f"\n  note: {n}" for n in m.notes))
            if stack.dead_service() is not None:
                break  # a dead service is in the cell's problems; the next cells would measure it
        rc = 0 if len(done) == len(cells) and all(m.ok for m in done) else 1
    except _Stop:
        _out("rig sweep: interrupted; stopping everything")
        rc = 130
    except native.StackError as e:
        _err(f"rig sweep: {e}")
        rc = 1
    except Exception:  # a bug or an unforeseen state: say so, and still stop everything
        _err(f"rig sweep: failed:\n{traceback.format_exc()}")
        rc = 1
    finally:
        for sig in _STOP_SIGNALS:  # nothing may interrupt the teardown
            signal.signal(sig, signal.SIG_IGN)
        left = loc.stop() if loc else []
        left_stack = stack.stop()
        if left or left_stack:
            _err(f"rig sweep: could not stop {left_stack} {left}")
            rc = rc or 1
    if done:
        params["finished"] = time.time()
        paths = sweep.write_outputs(done, out, params)
        _out(sweep.markdown_table(done))
        _out(f"rig sweep: {len(done)} of {len(cells)} cells; table {paths['md']}, plot {paths['html']}")
    return rc


def _death(stack: native.NativeStack) -> str | None:
    svc = stack.dead_service()
    return stack.describe_death(svc) if svc is not None else None
