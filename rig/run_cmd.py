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
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rig import compose_faults, compose_stack, faults, headless, locust_web, native, pins, reconcile, slo
from rig.cli import _STOP_SIGNALS, EXIT_USAGE, _err, _out, _raise_stop, _Stop
from rig.compose_stack import ComposeStackError
from rig.promapi import Prometheus

SHAPES = ("none", "ramp", "step", "spike", "soak")
SCRAPE_WAIT_S = 5.0  # > two Prometheus scrape intervals (2 s): the settled counts are stored
LOCUST_SLACK_S = 120.0  # past duration + stop timeout, a Locust still running is a hang


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rig run", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=10, metavar="U", help="peak callers (default 10)")
    p.add_argument("--spawn-rate", type=float, default=1.0, metavar="R", help="callers started per second")
    p.add_argument("--duration", default="60s", metavar="D", help="run time, like 90s, 5m, 1h (default 60s)")
    p.add_argument("--shape", choices=SHAPES, default="none", help="load shape (loadgen/shapes.py)")
    p.add_argument("--scenario", default="seed", metavar="S", help="agent scenario (agent/scenarios)")
    p.add_argument("--profile", default="typical", metavar="P", help="latency profile (agent/profiles)")
    p.add_argument("--script", default="seed", metavar="C", help="conversation script (loadgen/scripts)")
    p.add_argument("--slo", type=Path, metavar="FILE", help="SLO file (YAML; examples in slo/)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="kill-agent@120s, drain-agent@90s, restart-livekit@3m, slow-provider@60s:+800ms[:tts]"
                        " (repeatable; see docs/soak-and-faults.md)")
    p.add_argument("--agents", type=int, default=2, metavar="N", help="agent workers (default 2)")
    p.add_argument("--loadgen-workers", type=int, default=1, metavar="M", help="Locust workers (default 1)")
    p.add_argument("--call-gap", type=float, default=1.0, metavar="G",
                   help="mean seconds a caller waits between calls (sets how many calls run at once)")
    p.add_argument("--seed", type=int, default=1, help="base seed of the conversations")
    p.add_argument("--out", type=Path, metavar="DIR", help="run folder (default .rig/runs/<start time>)")
    p.add_argument("--port-offset", type=int, default=0, metavar="K", help="shift every port by K")
    p.add_argument("--env-file", type=Path, default=native.REPO / ".env", help="LiveKit credentials")
    p.add_argument("--compose", nargs="?", const="lkrig", metavar="PROJECT",
                   help="run against the compose project PROJECT (default lkrig), already up, instead"
                        " of a native stack; --agents, --loadgen-workers and --port-offset do not apply")
    return p


def _validate(args: argparse.Namespace) -> tuple[float, list[faults.Fault], slo.Slo | None]:
    """Everything that can be wrong with the input, before anything starts (ValueError)."""
    from agent import latency, scenarios
    from loadgen import convscript

    duration = faults.seconds(args.duration, "--duration")
    if duration <= 0:
        raise ValueError("--duration: must be > 0")
    for flag, value, low in (("--users", args.users, 1), ("--agents", args.agents, 1),
                             ("--loadgen-workers", args.loadgen_workers, 1)):
        if value < low:
            raise ValueError(f"{flag} {value}: must be at least {low}")
    if args.spawn_rate <= 0 or args.call_gap < 0:
        raise ValueError("--spawn-rate must be > 0 and --call-gap >= 0")
    if args.scenario not in scenarios.available():
        raise ValueError(f"--scenario {args.scenario}: no such scenario; available:"
                         f" {', '.join(scenarios.available())}")
    latency.load(args.profile)  # ProfileError names the file and field
    scripts = convscript.load_all()
    if args.script not in scripts:
        raise ValueError(f"--script {args.script}: no such conversation script; available:"
                         f" {', '.join(sorted(scripts))}")
    if args.compose is not None:
        given = [f for f, v, default in (("--agents", args.agents, 2), ("--port-offset", args.port_offset, 0),
                                         ("--loadgen-workers", args.loadgen_workers, 1)) if v != default]
        if given:
            raise ValueError(f"{', '.join(given)}: not with --compose (scale the compose services:"
                             " `docker compose up -d --scale agent=N --scale locust-worker=M`)")
    planned = [faults.parse(spec) for spec in args.fault]
    for f in planned:
        if f.at >= duration:
            raise ValueError(f"--fault {f.spec}: at {f.at:g} s, not inside the {duration:g} s run")
    return duration, planned, slo.load(args.slo) if args.slo else None


class _Native:
    """The native stack this run starts and stops, and headless Locust processes."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.stack = native.NativeStack(native.NativeOptions(
            agents=args.agents, loadgen_workers=0, scrape_loadgen=True, run_dir=out / "stack",
            port_offset=args.port_offset, env_file=args.env_file))
        self.injector: faults.FaultScheduler = faults.NativeFaults(self.stack, _out)
        self.args, self.out = args, out
        self.loc: headless.Headless | None = None

    def start(self, duration: float) -> headless.Headless:
        a = self.args
        info = self.info = self.stack.start()
        _out(f"rig run: stack healthy in {info.startup_seconds:.1f} s; Prometheus {info.prometheus_url}")
        self.prometheus_url = info.prometheus_url
        self.loc = headless.Headless(
            self.out / "locust", {**os.environ, "LIVEKIT_URL": info.livekit_url,
                                  "LIVEKIT_API_KEY": info.api_key, "LIVEKIT_API_SECRET": info.api_secret},
            a.users, f"{duration:g}s",
            ["--scenario", a.scenario, "--latency-profile", a.profile, "--script", a.script,
             "--shape", a.shape, "--call-gap", f"{a.call_gap:g}", "--seed", str(a.seed),
             "--exit-code-on-error", "0"],
            workers=a.loadgen_workers, spawn_rate=a.spawn_rate, agent_name=info.agent_name,
            master_port=info.ports.locust_master, metrics_port=info.ports.loadgen_metrics)
        self.loc.start()
        return self.loc

    def dead(self) -> str | None:
        svc = self.stack.dead_service()
        if svc is None or svc.name in self.injector.busy:
            return None
        return self.stack.describe_death(svc)

    def agent_totals(self) -> reconcile.AgentTotals:
        return reconcile.settle([a.metrics_url for a in self.info.agents])

    def logged_errors(self, t0: float) -> dict[str, int]:
        return reconcile.logged_errors([Path(self.info.logs_dir) / f"{a.name}.log" for a in self.info.agents])

    def run_info(self, result: headless.Result) -> dict[str, Any]:
        # every process this run started that is known at the end, to check none outlives it
        assert self.loc is not None
        return {"agents": self.args.agents, "loadgen_workers": self.args.loadgen_workers,
                "pids": {**self.info.pids, **{f"locust-{p.pid}": p.pid for p in self.loc.processes},
                         **{f"driver-{pid}": pid for pid in result.drivers}}}

    def join_timeout(self) -> float:
        return faults.DRAIN_WAIT_S + self.stack.opts.agent_timeout

    def teardown(self) -> list[str]:
        left = self.loc.stop() if self.loc else []
        left_stack = self.stack.stop()
        return [*left_stack, *(f"locust pid {p}" for p in left)]


class _Compose:
    """A compose project that is up: used as it is, and left running."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        try:
            self.faults = compose_faults.ComposeFaults(args.compose, _out)
        except Exception as e:  # no docker package, no engine: docker.errors.DockerException
            raise ComposeStackError(
                f"cannot reach the Docker engine ({type(e).__name__}: {e}); is it running, and"
                " DOCKER_HOST right?") from e
        self.injector: faults.FaultScheduler = self.faults
        self.stack = compose_stack.ComposeStack(self.faults)
        self.args, self.out = args, out

    def start(self, duration: float) -> locust_web.WebLocust:
        a, st = self.args, self.stack
        st.check()
        self.prometheus_url = st.prometheus_url
        before = reconcile.agent_totals(st.agent_metrics_urls())
        if before.sessions_active > 0:
            raise ComposeStackError(
                f"{before.sessions_active:g} agent sessions are active in compose project {a.compose!r}:"
                " another load is running; stop it first")
        self.before = before
        self.loc = locust_web.WebLocust(
            st.locust_url, self.out / "locust", a.users, a.spawn_rate, f"{duration:g}s",
            {"scenario": a.scenario, "latency_profile": a.profile, "script": a.script, "shape": a.shape,
             "call_gap": f"{a.call_gap:g}", "seed": str(a.seed)},
            metrics_url=st.caller_metrics_url)
        self.loc.start()
        _out(f"rig run: compose project {a.compose!r}: Locust {st.locust_url}, Prometheus"
             f" {self.prometheus_url}, {len(st.agents())} agent containers")
        return self.loc

    def dead(self) -> str | None:
        return self.stack.dead()

    def agent_totals(self) -> reconcile.AgentTotals:
        return reconcile.settle(self.stack.agent_metrics_urls()).minus(self.before)

    def logged_errors(self, t0: float) -> dict[str, int]:
        return reconcile.logged_errors_in(self.stack.agent_log_lines(t0))

    def run_info(self, result: headless.Result) -> dict[str, Any]:
        return {"compose_project": self.args.compose, "agents": len(self.stack.agents()),
                "loadgen_workers": len(self.faults.containers("locust-worker"))}

    def join_timeout(self) -> float:
        return faults.DRAIN_WAIT_S + 180.0

    def teardown(self) -> list[str]:
        loc = getattr(self, "loc", None)
        if loc is not None:
            loc.stop()  # a run cut short; the stack itself is the user's and stays up
        return []


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        duration, planned, gate = _validate(args)
    except (ValueError, OSError) as e:  # FaultError, SloError, ProfileError, ScriptError
        _err(f"rig run: {e}")
        return EXIT_USAGE
    out: Path = args.out or native.REPO / ".rig" / "runs" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    try:
        backend: _Native | _Compose = _Compose(args, out) if args.compose is not None else _Native(args, out)
    except ComposeStackError as e:
        _err(f"rig run: {e}")
        return 1
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    injector = backend.injector
    loc: headless.Headless | locust_web.WebLocust | None = None
    rc = 1
    try:
        loc = backend.start(duration)
        t0, started = time.time(), time.monotonic()
        _out(f"rig run: Locust running ({args.users} users, {duration:g} s, shape {args.shape});"
             f" logs in {loc.out}")
        injector.schedule(planned, started)
        problems = watch_run(backend.dead, loc, injector,
                             started + duration + headless.STOP_TIMEOUT_S + LOCUST_SLACK_S)
        result = loc.result()
        if result.rc != 0:
            problems.append(f"Locust exited with code {result.rc}; see {loc.out / 'master.log'}")
        injector.join(backend.join_timeout())
        problems += injector.errors
        _out("rig run: load done; waiting for the agents' counts to settle")
        totals = backend.agent_totals()
        time.sleep(SCRAPE_WAIT_S)
        t1 = time.time()
        prom = Prometheus(backend.prometheus_url)
        cut = any(f.kind in ("kill-agent", "restart-livekit") for f in planned)
        checks = reconcile.reconcile(result, totals, backend.logged_errors(t0), prom, t0, t1, cut)
        verdicts = slo.evaluate(gate, prom, t0, t1) if gate else []
        run_info = {**_run_info(args, duration, t0, t1, result), **backend.run_info(result)}
        (out / "run.json").write_text(json.dumps({
            "run": run_info, "faults": injector.records, "problems": problems,
            "reconciliation": [asdict(c) for c in checks], "slo": verdicts}, indent=2))
        _print_summary(checks, verdicts, problems)
        report = _report(backend.prometheus_url, t0, t1, out, run_info, injector.records, verdicts)
        if report is None:
            problems.append("no report written")
        failed = problems or not all(c.ok for c in checks) or not all(v["ok"] for v in verdicts)
        rc = 1 if failed else 0
        _out(f"rig run: {'FAILED' if failed else 'passed'}; run folder {out}")
    except _Stop:
        _out("rig run: interrupted; stopping everything")
        rc = 130
    except (native.StackError, ComposeStackError, locust_web.LocustWebError) as e:
        _err(f"rig run: {e}")
        rc = 1
    except Exception:  # a bug or an unforeseen state: say so, and still stop everything
        _err(f"rig run: failed:\n{traceback.format_exc()}")
        rc = 1
    finally:
        for sig in _STOP_SIGNALS:  # nothing may interrupt the teardown
            signal.signal(sig, signal.SIG_IGN)
        injector.join(15.0, restart=False)
        left = backend.teardown()
        if left:
            _err(f"rig run: could not stop {left}")
            rc = rc or 1
    return rc


def watch_run(dead: Callable[[], str | None], loc: headless.Headless | locust_web.WebLocust,
              injector: faults.FaultScheduler, deadline: float) -> list[str]:
    """Until the Locust run ends; a service that dies on its own, or a Locust that outlives
    its own stop timeout, ends the run with a named problem."""
    while loc.running():
        loc.poll()
        injector.service()
        if (death := dead()) is not None:
            loc.stop()
            return [death]
        if time.monotonic() > deadline:
            loc.stop()
            return [f"Locust still running {LOCUST_SLACK_S:.0f} s after its run time and stop timeout"
                    " (a hang)"]
        time.sleep(0.5)
    return []


def _run_info(args: argparse.Namespace, duration: float, t0: float, t1: float,
              result: headless.Result) -> dict[str, Any]:
    conversations, failed = result.requests("conversation")
    turns, failed_turns = result.requests("turn")
    try:
        versions = pins.load(pins.COMPOSE_FILE, os.environ).versions
    except pins.PinError:
        versions = {}
    return {
        "command": "rig run " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["run"] else sys.argv[1:]),
        "users": args.users, "spawn_rate": args.spawn_rate, "duration_s": duration, "shape": args.shape,
        "scenario": args.scenario, "profile": args.profile, "script": args.script,
        "call_gap_s": args.call_gap, "seed": args.seed, "faults": args.fault,
        "slo_file": str(args.slo) if args.slo else None,
        "t0": t0, "t1": t1, "conversations": conversations, "conversations_failed": failed,
        "turns": turns, "turns_failed": failed_turns, "versions": versions,
    }


def _print_summary(checks: list[reconcile.Check], verdicts: list[dict[str, Any]],
                   problems: list[str]) -> None:
    for c in checks:
        _out(f"  {'ok  ' if c.ok else 'FAIL'} reconcile {c.name}: {c.detail}")
    for v in verdicts:
        value = "no data" if v["value"] is None else f"{v['value']:.4g}"
        _out(f"  {'ok  ' if v['ok'] else 'FAIL'} slo {v['name']} = {value} (limit {v['limit']:g}):"
             f" {v['detail']}")
    for p in problems:
        _out(f"  FAIL {p}")


def _report(prom_url: str, t0: float, t1: float, out: Path, run_info: dict[str, Any],
            fault_records: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> Path | None:
    try:
        from rig import report
    except ImportError as e:
        _err(f"rig run: cannot write the report ({e})")
        return None
    path = report.write_report(prom_url, t0, t1, out, locust_csv_prefix=out / "locust" / "locust",
                               run_info=run_info, faults=fault_records, slo=verdicts)
    _out(f"rig run: report {path}")
    return path
