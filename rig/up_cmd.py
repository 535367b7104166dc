"""`rig up --native`: the whole stack as local processes, until Ctrl-C or `rig down`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rig import native, paths, placement
from rig.console import EXIT_USAGE, err, out, run_then_tear_down


def nonneg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=native.DEFAULT_RUN_DIR,
                   help="state, generated configs and Prometheus data (default .rig/native)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="start the stack (livekit-server, agents, Locust, Prometheus)")
    up.add_argument("--native", action="store_true", help="run everything as local processes (no Docker)")
    up.add_argument("--agents", type=nonneg, default=1, metavar="N",
                    help="agent worker processes (default 1)")
    up.add_argument("--loadgen-workers", type=nonneg, default=1, metavar="M",
                    help="Locust worker processes (default 1; 0 = no Locust at all)")
    up.add_argument("--logs", type=Path, metavar="DIR",
                    help="folder for one log per service (default RUN_DIR/logs)")
    up.add_argument("--detach", action="store_true", help="return once healthy; stop later with `rig down`")
    up.add_argument("--port-offset", type=nonneg, default=0, metavar="K",
                    help="shift every port by K, to run beside another stack (see docs/native-stack.md)")
    up.add_argument("--env-file", type=Path, default=paths.REPO / ".env",
                    help="LiveKit credentials (default .env)")
    up.add_argument("--agent-name", default="lkrig-agent",
                    help="AGENT_NAME for the workers (default lkrig-agent)")
    up.add_argument("--agents-version", metavar="VERSION",
                    help="livekit-agents version for the workers: the main pin (default), "
                         "the legacy or the middle pin")
    up.add_argument("--agent-module", default=native.AGENT_MODULE, metavar="MODULE",
                    help=f"worker to run as `python -m MODULE start` (default {native.AGENT_MODULE});"
                         " MODULE:SERVER runs that AgentServer of a module without a __main__ block"
                         " (docs/bring-your-own-agent.md)")
    up.add_argument("--agent-path", type=Path, metavar="DIR",
                    help="folder holding your agent's package, put first on the workers' PYTHONPATH")
    up.add_argument("--agent-requirements", type=Path, metavar="FILE",
                    help="your agent's requirements file, installed into a venv of its own (cached) that"
                         " runs the workers; it picks the livekit-agents version")
    add_run_dir(up)
    hosts = up.add_argument_group("across hosts (docs/native-stack.md)")
    hosts.add_argument("--only", metavar="ROLES",
                       help=f"run only these roles here, comma-separated: {', '.join(placement.ROLES)}"
                            " (default all)")
    hosts.add_argument("--bind", default=placement.LOOPBACK, metavar="ADDR",
                       help="this host's address: every service here listens on it, and livekit-server"
                            " advertises it as its only ICE address (default 127.0.0.1)")
    hosts.add_argument("--livekit-url", metavar="URL",
                       help="the LiveKit the agents and callers here join (default this host's)")
    hosts.add_argument("--master-host", metavar="ADDR",
                       help="the Locust master the workers here join (default this host's)")
    hosts.add_argument("--redis", metavar="HOST:PORT",
                       help="livekit-server shares rooms with the other nodes of this Redis (multinode)")
    hosts.add_argument("--sd-dir", type=Path, metavar="DIR",
                       help="a folder the hosts share: each writes its scrape targets there, and"
                            " Prometheus reads them all (file_sd)")
    hosts.add_argument("--livekit-config", type=Path, default=paths.LIVEKIT_CONFIG, metavar="FILE",
                       help="livekit-server's config (default livekit/livekit.yaml); --bind and"
                            " --redis are applied on top of it")
    up.set_defaults(func=main)


def print_urls(info: native.StackInfo) -> None:
    lines = [("LiveKit", info.livekit_url + (f"  (metrics {info.livekit_metrics_url})"
                                             if info.livekit_metrics_url else "  (on another host)"))]
    if info.prometheus_url:
        lines.append(("Prometheus", info.prometheus_url))
    for agent in info.agents:
        lines.append((agent.name, f"health {agent.health_url}  metrics {agent.metrics_url}"))
    if info.locust_url:
        lines.append(("Locust", f"{info.locust_url}  (loadgen metrics {info.loadgen_metrics_url})"))
    lines.append(("Logs", info.logs_dir))
    width = max(len(name) for name, _ in lines)
    out(f"rig up: all healthy in {info.startup_seconds:.1f} s")
    for name, value in lines:
        out(f"  {name:<{width}}  {value}")


def main(args: argparse.Namespace) -> int:
    if not args.native:
        err("rig up: only --native is supported here (no Docker engine); use `rig up --native`, "
            "or `docker compose up` where Docker runs")
        return EXIT_USAGE
    try:
        where = placement.Placement(
            roles=placement.parse_roles(args.only) if args.only else frozenset(placement.ROLES),
            bind=args.bind, livekit_url=args.livekit_url, master_host=args.master_host, redis=args.redis,
            sd_dir=args.sd_dir, livekit_config=args.livekit_config)
        where.check()
    except native.StackError as exc:
        err(f"rig up: {exc}")
        return EXIT_USAGE
    opts = native.NativeOptions(
        agents=args.agents, loadgen_workers=args.loadgen_workers, run_dir=args.run_dir, logs=args.logs,
        port_offset=args.port_offset, env_file=args.env_file, agent_name=args.agent_name,
        agents_version=args.agents_version, agent_module=args.agent_module, agent_path=args.agent_path,
        agent_requirements=args.agent_requirements, die_with_supervisor=not args.detach, where=where)
    stack = native.NativeStack(opts)
    detached = False

    def body() -> int:
        nonlocal detached
        print_urls(stack.start())
        if args.detach:
            stack.mark_detached()
            out(f"rig up: running in the background; stop it with `rig down` (state in {opts.run_dir})")
            detached = True
            return 0
        out("rig up: running; Ctrl-C (or `rig down`) stops everything")
        while True:
            dead = stack.dead_service()
            if dead is not None:
                err(f"rig up: {stack.describe_death(dead)}\nrig up: stopping the rest")
                return 1
            time.sleep(0.5)

    def stopped() -> int:
        out("rig up: stopping")
        return 0 if stack.info and stack.info.startup_seconds else 130

    def teardown() -> list[str]:
        return [] if detached else stack.stop()

    rc = run_then_tear_down("rig up", body, teardown, (native.StackError,), stopped)
    if rc == 0 and not detached:
        out("rig up: stopped; no process of the stack is left")
    return rc
