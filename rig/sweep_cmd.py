"""`rig sweep`: a grid of short headless runs, and per cell the scheduling-error rate by kind.

Every combination of --scenarios x --profiles x --networks x --users is one cell: a headless run of
--duration against one stack for the whole grid: a native one started for it (livekit-server,
Prometheus, N agent workers), or with --compose a `docker compose up` project, used as it is.
Per cell: errors per 1000 agent turns by kind, turns, conversations by outcome and the callers'
turn latency p95; written as a table (sweep.md, sweep.csv) and plots (sweep.svg,
sweep.html). Exit 0: the grid completed (the sweep measures, it does not gate); 1: a cell's run
failed; 2: bad input, found before anything starts; 130: interrupted. See docs/soak-and-faults.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rig import backends, locust_web, native, paths, pins, sweep
from rig.backends.base import LoadSpec
from rig.backends.containers import ComposeStackError
from rig.console import EXIT_USAGE, err, out, run_then_tear_down
from rig.loadrun import load_run
from rig.run_cmd import check_load, check_network, check_scenario


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="a grid of short headless runs: error rate by kind per cell",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", required=True, metavar="S1,S2",
                   help="agent scenarios, comma-separated (agent/scenarios)")
    p.add_argument("--profiles", default="typical", metavar="P1,P2",
                   help="latency profiles, comma-separated (agent/profiles; default typical)")
    p.add_argument("--networks", default="perfect", metavar="N1,N2",
                   help="the callers' networks, comma-separated (loadgen/networks; default perfect)")
    p.add_argument("--users", default="4", metavar="U1,U2",
                   help="callers per cell, comma-separated (default 4)")
    p.add_argument("--duration", default="60s", metavar="D", help="run time of each cell (default 60s)")
    p.add_argument("--script", default="seed", metavar="C", help="conversation script (loadgen/scripts)")
    p.add_argument("--call-gap", type=float, default=1.0, metavar="G",
                   help="mean seconds a caller waits between calls (sets how many calls run at once)")
    p.add_argument("--spawn-rate", type=float, default=1.0, metavar="R", help="callers started per second")
    p.add_argument("--seed", type=int, default=1, help="base seed of the conversations")
    p.add_argument("--out", type=Path, metavar="DIR", help="sweep folder (default .rig/sweeps/<start time>)")
    backends.add_arguments(p)
    p.set_defaults(func=main)


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
    from agent import latency

    duration = check_load(args)
    scenario_list = _names(args.scenarios, "--scenarios")
    for s in scenario_list:
        check_scenario(s, "--scenarios:")
    profile_list = _names(args.profiles, "--profiles")
    for p in profile_list:
        latency.load(p)  # ProfileError names the file and field
    network_list = _names(args.networks, "--networks")
    for n in network_list:
        check_network(n, "--networks:")
    users: list[int] = []
    for u in _names(args.users, "--users"):
        if not u.isdigit() or int(u) < 1:
            raise ValueError(f"--users {args.users}: {u!r} is not a whole number of callers >= 1")
        users.append(int(u))
    backends.check_arguments(args)
    return duration, sweep.grid(scenario_list, profile_list, users, tuple(network_list))


def main(args: argparse.Namespace) -> int:
    try:
        duration, cells = _validate(args)
    except (ValueError, OSError, native.StackError) as e:  # FaultError, ProfileError, ScriptError
        err(f"rig sweep: {e}")
        return EXIT_USAGE
    folder: Path = args.out or paths.REPO / ".rig" / "sweeps" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        backend = backends.from_arguments(args, folder / "stack")
    except ComposeStackError as e:
        err(f"rig sweep: {e}")
        return 1
    # Per cell: the run, Locust's stop timeout at most for the calls in flight, the settle.
    per_cell = duration + 30
    out(f"rig sweep: {len(cells)} cells of {duration:g} s; about {len(cells) * per_cell / 60:.0f} min")
    params: dict[str, Any] = {
        "command": args.command_line, "started": time.time(), "duration_s": duration,
        "script": args.script, "call_gap_s": args.call_gap, "spawn_rate": args.spawn_rate,
        "agents": args.agents, "loadgen_workers": args.loadgen_workers, "seed": args.seed,
        "agents_version": args.agents_version or pins.load()["LIVEKIT_AGENTS_VERSION"]}
    done: list[sweep.Measured] = []

    def body() -> int:
        out(f"rig sweep: {backend.start()}")
        for i, cell in enumerate(cells, 1):
            name = f"{i:02d}-{cell.scenario}-{cell.profile}-{cell.network}-{cell.users}u"
            out(f"rig sweep: cell {i}/{len(cells)}: {cell.scenario}, {cell.profile}, {cell.network},"
                f" {cell.users} users")
            spec = LoadSpec(cell.users, args.spawn_rate, duration, cell.scenario, cell.profile, args.script,
                            call_gap=args.call_gap, seed=args.seed + 10_000 * i, network=cell.network)
            o = load_run(backend, folder / "cells" / name, spec, lambda m: None)
            m = sweep.measure(cell, o.result, o.growth, o.t0, o.t1, o.problems)
            done.append(m)
            out(f"  turns {m.turns_locust} (agent {m.turns_agent:g}), errors per 1k turns "
                + (", ".join(f"{k} {sweep.num(m.per_1k(k), 1)}" for k in m.errors) or "none")
                + f", p95 {sweep.num(m.turn_latency_p95_s, 2) or 'n/a'} s"
                + "".join(f"\n  note: {n}" for n in m.notes))
            if backend.dead() is not None:
                break  # a dead service is in the cell's problems; the next cells would measure it
        return 0 if len(done) == len(cells) and all(m.ok for m in done) else 1

    def teardown() -> list[str]:
        left = backend.stop()
        params.update(backend.run_info())  # every process started, to check that none outlives it
        return left

    rc = run_then_tear_down("rig sweep", body, teardown,
                            (native.StackError, ComposeStackError, locust_web.LocustWebError))
    if done:
        params["finished"] = time.time()
        written = sweep.write_outputs(done, folder, params)
        out(sweep.markdown_table(done))
        out(f"rig sweep: {len(done)} of {len(cells)} cells; table {written['md']}, plot {written['html']}")
    return rc
