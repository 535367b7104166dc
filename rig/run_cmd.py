"""`rig run`: a headless load run with faults, reconciliation, SLO gates and a report.

It starts a native stack (livekit-server, Prometheus, N agent workers), runs Locust headless
against it (a master and M workers), injects the --fault list at its offsets, waits for the
agents' counts to settle, reconciles every count, evaluates the SLO file over the run's
Prometheus, writes the report, and stops everything. With --compose it uses a `docker compose
up` stack instead, as it is (scaled as the user scaled it, left running): the run goes to its
Locust master through the web UI's API, the faults to its containers through the Docker SDK, and
every count is the growth during the run. Exit 0: every SLO and check passed; 1: one failed
(listed), or the run itself failed; 2: bad input, found before anything starts.
See docs/soak-and-faults.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rig import (
    backends,
    errorlines,
    explain,
    faultrun,
    faults,
    locust_web,
    native,
    paths,
    pins,
    reconcile,
    slo,
)
from rig.backends.base import LoadSpec
from rig.backends.containers import ComposeStackError
from rig.console import EXIT_USAGE, err, out, run_then_tear_down
from rig.loadrun import Outcome, load_run
from rig.promapi import Prometheus

SHAPES = ("none", "ramp", "step", "spike", "soak")
SCRAPE_WAIT_S = 5.0  # > two Prometheus scrape intervals (2 s): the settled counts are stored


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="a headless load run with SLO gates, faults, reconciliation and a report",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=10, metavar="U", help="peak callers (default 10)")
    p.add_argument("--spawn-rate", type=float, default=1.0, metavar="R", help="callers started per second")
    p.add_argument("--duration", default="60s", metavar="D", help="run time, like 90s, 5m, 1h (default 60s)")
    p.add_argument("--shape", choices=SHAPES, default="none", help="load shape (loadgen/shapes.py)")
    p.add_argument("--scenario", default="seed", metavar="S", help="agent scenario (agent/scenarios)")
    p.add_argument("--profile", default="typical", metavar="P", help="latency profile (agent/profiles)")
    p.add_argument("--script", default="seed", metavar="C", help="conversation script (loadgen/scripts)")
    p.add_argument("--network", default="perfect", metavar="N",
                   help="the callers' network: loss, delay, jitter, bandwidth both ways (loadgen/networks;"
                        " default perfect: none)")
    p.add_argument("--slo", type=Path, metavar="FILE", help="SLO file (YAML; examples in slo/)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC", help=faults.help_text())
    p.add_argument("--call-gap", type=float, default=1.0, metavar="G",
                   help="mean seconds a caller waits between calls (sets how many calls run at once)")
    p.add_argument("--seed", type=int, default=1, help="base seed of the conversations")
    p.add_argument("--out", type=Path, metavar="DIR", help="run folder (default .rig/runs/<start time>)")
    backends.add_arguments(p)
    p.set_defaults(func=main)


def check_load(args: argparse.Namespace) -> float:
    """The options of a load that `run` and `sweep` share; the duration in seconds (ValueError)."""
    from loadgen import convscript

    duration = faults.seconds(args.duration, "--duration")
    if duration <= 0:
        raise ValueError("--duration: must be > 0")
    if args.spawn_rate <= 0 or args.call_gap < 0:
        raise ValueError("--spawn-rate must be > 0 and --call-gap >= 0")
    scripts = convscript.load_all()
    if args.script not in scripts:
        raise ValueError(f"--script {args.script}: no such conversation script; available:"
                         f" {', '.join(sorted(scripts))}")
    return duration


def check_network(name: str, flag: str = "--network") -> None:
    """An unknown or malformed network profile (NetworkError, a ValueError: file, line, field)."""
    from loadgen import netprofile

    if name not in netprofile.available():
        raise ValueError(f"{flag} {name}: no such network profile; available:"
                         f" {', '.join(netprofile.available())}")
    netprofile.load(netprofile.available()[name])


def check_scenario(scenario: str, flag: str) -> None:
    from agent import scenarios

    if scenario not in scenarios.available():
        raise ValueError(f"{flag} {scenario}: no such scenario; available:"
                         f" {', '.join(scenarios.available())}")


def _validate(args: argparse.Namespace) -> tuple[float, list[faults.Fault], slo.Slo | None]:
    """Everything that can be wrong with the input, before anything starts (ValueError)."""
    from agent import latency

    duration = check_load(args)
    if args.users < 1:
        raise ValueError(f"--users {args.users}: must be at least 1")
    check_scenario(args.scenario, "--scenario")
    latency.load(args.profile)  # ProfileError names the file and field
    check_network(args.network)
    backend = backends.check_arguments(args)
    planned = [faults.parse(spec) for spec in args.fault]
    faults.check_backend(planned, backend)
    for f in planned:
        if f.at >= duration:
            raise ValueError(f"--fault {f.spec}: at {f.at:g} s, not inside the {duration:g} s run")
    return duration, planned, slo.load(args.slo) if args.slo else None


def main(args: argparse.Namespace) -> int:
    try:
        duration, planned, gate = _validate(args)
    except (ValueError, OSError, native.StackError) as e:  # FaultError, SloError, ProfileError, ScriptError
        err(f"rig run: {e}")
        return EXIT_USAGE
    folder: Path = args.out or paths.REPO / ".rig" / "runs" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        backend = backends.from_arguments(args, folder / "stack", any(f.isolates_agents for f in planned))
    except ComposeStackError as e:
        err(f"rig run: {e}")
        return 1
    scheduler = faultrun.FaultScheduler(backend, out)
    spec = LoadSpec(args.users, args.spawn_rate, duration, args.scenario, args.profile, args.script,
                    args.shape, args.call_gap, args.seed, args.network)

    def body() -> int:
        out(f"rig run: {backend.start()}")
        faults.preflight(planned, backend)
        o = load_run(backend, folder / "locust", spec, lambda m: out(f"rig run: {m}"), planned, scheduler)
        time.sleep(SCRAPE_WAIT_S)
        t1 = time.time()
        prom = Prometheus(backend.prometheus_url)
        cut = any(f.cuts_calls for f in planned) or scheduler.forced
        checks = reconcile.reconcile(o.result, o.growth, backend.logged_errors(o.t0), prom, o.t0, t1, cut,
                                     scheduler.lost_lines())
        verdicts = slo.evaluate(gate, prom, o.t0, t1) if gate else []
        logs = backend.agent_log_lines(o.t0)
        explained = explain_logs(logs)
        error_lines = errorlines.account(*errorlines.error_lines(logs), scheduler.records)
        checks.append(errorlines.check(error_lines))
        run_info = {**_run_info(args, duration, o, t1), **backend.run_info()}
        problems = o.problems
        (folder / "run.json").write_text(json.dumps({
            "run": run_info, "faults": scheduler.records, "problems": problems,
            "reconciliation": [asdict(c) for c in checks], "slo": verdicts, "explained": explained,
            "error_lines": error_lines}, indent=2))
        _print_summary(checks, verdicts, problems)
        if _report(backend.prometheus_url, o.t0, t1, folder, run_info, scheduler.records, verdicts,
                   explained, error_lines) is None:
            problems.append("no report written")
        failed = problems or not all(c.ok for c in checks) or not all(v["ok"] for v in verdicts)
        out(f"rig run: {'FAILED' if failed else 'passed'}; run folder {folder}")
        return 1 if failed else 0

    def teardown() -> list[str]:
        scheduler.join(15.0, restart=False)
        return backend.stop()

    expected = (native.StackError, ComposeStackError, locust_web.LocustWebError, faults.FaultError)
    return run_then_tear_down("rig run", body, teardown, expected)


def _run_info(args: argparse.Namespace, duration: float, o: Outcome, t1: float) -> dict[str, Any]:
    conversations, failed = o.result.requests("conversation")
    turns, failed_turns = o.result.requests("turn")
    try:
        versions = pins.load(pins.COMPOSE_FILE, os.environ).versions
    except pins.PinError:
        versions = {}
    return {
        "command": args.command_line,
        "users": args.users, "spawn_rate": args.spawn_rate, "duration_s": duration, "shape": args.shape,
        "scenario": args.scenario, "profile": args.profile, "script": args.script,
        "call_gap_s": args.call_gap, "seed": args.seed, "network": args.network, "faults": args.fault,
        "slo_file": str(args.slo) if args.slo else None,
        "t0": o.t0, "t1": t1, "conversations": conversations, "conversations_failed": failed,
        "turns": turns, "turns_failed": failed_turns, "versions": versions,
    }


def _print_summary(checks: list[reconcile.Check], verdicts: list[dict[str, Any]],
                   problems: list[str]) -> None:
    for c in checks:
        out(f"  {'ok  ' if c.ok else 'FAIL'} reconcile {c.name}: {c.detail}")
    for v in verdicts:
        value = "no data" if v["value"] is None else f"{v['value']:.4g}"
        out(f"  {'ok  ' if v['ok'] else 'FAIL'} slo {v['name']} = {value} (limit {v['limit']:g}):"
             f" {v['detail']}")
    for p in problems:
        out(f"  FAIL {p}")


def explain_logs(lines: list[str]) -> list[dict[str, Any]]:
    """Each distinct speech-scheduling error in the agents' logs, as `rig explain` reads it."""
    try:
        return [f.to_json() for f in explain.analyse("\n".join(lines)).findings]
    except explain.ExplainError:  # no log lines at all: nothing to explain
        return []


def _report(prom_url: str, t0: float, t1: float, folder: Path, run_info: dict[str, Any],
            fault_records: list[dict[str, Any]], verdicts: list[dict[str, Any]],
            explained: list[dict[str, Any]], error_lines: dict[str, Any]) -> Path | None:
    try:
        from rig import report
    except ImportError as e:
        err(f"rig run: cannot write the report ({e})")
        return None
    path = report.write_report(prom_url, t0, t1, folder, locust_csv_prefix=folder / "locust" / "locust",
                               run_info=run_info, faults=fault_records, slo=verdicts, explained=explained,
                               error_lines=error_lines)
    out(f"rig run: report {path}")
    return path
