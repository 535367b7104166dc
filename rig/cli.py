"""`rig`: the command line of the LiveKit voice-agent load rig."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from rig import native

EXIT_USAGE = 2


def _err(msg: str) -> None:
    with contextlib.suppress(OSError):
        print(msg, file=sys.stderr, flush=True)


def _out(msg: str) -> None:
    # A closed stdout (`rig up | head`) must not abort a start or a teardown half-way.
    with contextlib.suppress(OSError):
        print(msg, flush=True)


def _print_urls(info: native.StackInfo) -> None:
    lines = [
        ("LiveKit", f"{info.livekit_url}  (metrics {info.livekit_metrics_url})"),
        ("Prometheus", info.prometheus_url),
    ]
    for agent in info.agents:
        lines.append((agent.name, f"health {agent.health_url}  metrics {agent.metrics_url}"))
    if info.locust_url:
        lines.append(("Locust", f"{info.locust_url}  (loadgen metrics {info.loadgen_metrics_url})"))
    lines.append(("Logs", info.logs_dir))
    width = max(len(name) for name, _ in lines)
    _out(f"rig up: all healthy in {info.startup_seconds:.1f} s")
    for name, value in lines:
        _out(f"  {name:<{width}}  {value}")


class _Stop(BaseException):
    """Raised from the signal handler: Ctrl-C or SIGTERM (`rig down`) asks us to stop."""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    # Only the first signal interrupts: a second Ctrl-C must not cut the teardown short.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signum)


def cmd_up(args: argparse.Namespace) -> int:
    if not args.native:
        _err(
            "rig up: only --native is supported here (no Docker engine); use `rig up --native`, "
            "or `docker compose up` where Docker runs"
        )
        return EXIT_USAGE
    opts = native.NativeOptions(
        agents=args.agents,
        loadgen_workers=args.loadgen_workers,
        run_dir=args.run_dir,
        logs=args.logs,
        port_offset=args.port_offset,
        env_file=args.env_file,
        agent_name=args.agent_name,
        agents_version=args.agents_version,
        agent_module=args.agent_module,
        agent_path=args.agent_path,
        agent_requirements=args.agent_requirements,
        die_with_supervisor=not args.detach,
    )
    stack = native.NativeStack(opts)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    rc = 1  # anything unforeseen counts as a failure, and stops what was started
    detached = False
    try:
        info = stack.start()
        _print_urls(info)
        if args.detach:
            stack.mark_detached()
            _out(f"rig up: running in the background; stop it with `rig down` (state in {opts.run_dir})")
            detached = True
            return 0
        _out("rig up: running; Ctrl-C (or `rig down`) stops everything")
        rc = 0
        while True:
            dead = stack.dead_service()
            if dead is not None:
                _err(f"rig up: {stack.describe_death(dead)}\nrig up: stopping the rest")
                rc = 1
                break
            time.sleep(0.5)
    except _Stop:
        _out("rig up: stopping")
        rc = 0 if stack.info and stack.info.startup_seconds else 130
    except native.StackError as exc:
        _err(f"rig up: {exc}")
        rc = 1
    finally:
        for sig in _STOP_SIGNALS:  # from here on nothing may interrupt the teardown
            signal.signal(sig, signal.SIG_IGN)
        if not detached:
            left = stack.stop()
            if left:
                _err(f"rig up: could not stop {'; '.join(left)}")
                rc = rc or 1
            elif rc == 0:
                _out("rig up: stopped; no process of the stack is left")
    return rc


def cmd_down(args: argparse.Namespace) -> int:
    try:
        native.down(args.run_dir, _out)
    except native.StackError as exc:
        _err(str(exc))
        return 1
    return 0


def _nonneg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rig", description="Load-and-soak test rig for LiveKit voice agents."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the stack (livekit-server, agents, Locust, Prometheus)")
    up.add_argument("--native", action="store_true", help="run everything as local processes (no Docker)")
    up.add_argument(
        "--agents", type=_nonneg, default=1, metavar="N", help="agent worker processes (default 1)"
    )
    up.add_argument(
        "--loadgen-workers",
        type=_nonneg,
        default=1,
        metavar="M",
        help="Locust worker processes (default 1; 0 = no Locust at all)",
    )
    up.add_argument(
        "--logs", type=Path, metavar="DIR", help="folder for one log per service (default RUN_DIR/logs)"
    )
    up.add_argument("--detach", action="store_true", help="return once healthy; stop later with `rig down`")
    up.add_argument(
        "--port-offset",
        type=_nonneg,
        default=0,
        metavar="K",
        help="shift every port by K, to run beside another stack (see docs/native-stack.md)",
    )
    up.add_argument(
        "--env-file", type=Path, default=native.REPO / ".env", help="LiveKit credentials (default .env)"
    )
    up.add_argument(
        "--agent-name", default="lkrig-agent", help="AGENT_NAME for the workers (default lkrig-agent)"
    )
    up.add_argument(
        "--agents-version",
        metavar="VERSION",
        help="livekit-agents version for the workers: the main pin (default) or the legacy pin",
    )
    up.add_argument(
        "--agent-module",
        default=native.AGENT_MODULE,
        metavar="MODULE",
        help=f"worker to run as `python -m MODULE start` (default {native.AGENT_MODULE}); MODULE:SERVER"
        " runs that AgentServer of a module without a __main__ block (docs/bring-your-own-agent.md)",
    )
    up.add_argument(
        "--agent-path",
        type=Path,
        metavar="DIR",
        help="folder holding your agent's package, put first on the workers' PYTHONPATH",
    )
    up.add_argument(
        "--agent-requirements",
        type=Path,
        metavar="FILE",
        help="your agent's requirements file, installed into a venv of its own (cached) that runs"
        " the workers; it picks the livekit-agents version",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop a stack started by `rig up --native`")
    down.set_defaults(func=cmd_down)

    for p in (up, down):
        p.add_argument(
            "--run-dir",
            type=Path,
            default=native.DEFAULT_RUN_DIR,
            help="state, generated configs and Prometheus data (default .rig/native)",
        )

    for name, text in (
        ("replay", "replay a scenario offline (no server) and count its errors; see `rig replay -h`"),
        ("run", "a headless load run with SLO gates, faults, reconciliation and a report; see `rig run -h`"),
        ("report", "an HTML and Markdown report of a time range; see `rig report -h`"),
        ("sweep", "a grid of short headless runs: error rate by kind per cell; see `rig sweep -h`"),
    ):
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Each of these has its own parser in its own module (replay possibly in another venv).
    if argv[:1] == ["replay"]:
        from rig import replay_cmd

        return replay_cmd.main(argv[1:])
    if argv[:1] == ["run"]:
        from rig import run_cmd

        return run_cmd.main(argv[1:])
    if argv[:1] == ["report"]:
        from rig import report_cmd

        return report_cmd.main(argv[1:])
    if argv[:1] == ["sweep"]:
        from rig import sweep_cmd

        return sweep_cmd.main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
