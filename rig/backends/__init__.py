"""The stacks a load runs on (rig.backends.base.Backend): the command-line options that choose
one, their checks, and the one that the options name."""

from __future__ import annotations

import argparse
from pathlib import Path

from rig import pins
from rig.backends.base import Backend
from rig.binaries import resolve_agents_python
from rig.paths import REPO
from rig.ports import compute_ports

DEFAULT_AGENTS, DEFAULT_LOADGEN_WORKERS, DEFAULT_PORT_OFFSET = 2, 1, 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, default=DEFAULT_AGENTS, metavar="N",
                   help=f"agent workers (default {DEFAULT_AGENTS})")
    p.add_argument("--loadgen-workers", type=int, default=DEFAULT_LOADGEN_WORKERS, metavar="M",
                   help=f"Locust workers (default {DEFAULT_LOADGEN_WORKERS})")
    p.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET, metavar="K",
                   help="shift every port by K")
    p.add_argument("--agents-version", metavar="VERSION",
                   help="livekit-agents version of the agent workers: the main pin (default), the"
                        " legacy or the middle pin (docker-compose.yml x-versions)")
    p.add_argument("--env-file", type=Path, default=REPO / ".env", help="LiveKit credentials")
    p.add_argument("--compose", nargs="?", const="lkrig", metavar="PROJECT",
                   help="run against the compose project PROJECT (default lkrig), already up, instead"
                        " of a native stack; --agents, --agents-version, --loadgen-workers and --port-offset"
                        " do not apply")


def check_arguments(args: argparse.Namespace) -> str:
    """The backend's name ("native" or "compose"); ValueError for options it does not take."""
    if args.compose is not None:
        if args.agents_version is not None:
            raise ValueError("--agents-version: not with --compose (its agent image installs the main"
                             " pin; run the older pins natively)")
        given = [flag for flag, value, default in (
            ("--agents", args.agents, DEFAULT_AGENTS),
            ("--port-offset", args.port_offset, DEFAULT_PORT_OFFSET),
            ("--loadgen-workers", args.loadgen_workers, DEFAULT_LOADGEN_WORKERS)) if value != default]
        if given:
            raise ValueError(f"{', '.join(given)}: not with --compose (scale the compose services:"
                             " `docker compose up -d --scale agent=N --scale locust-worker=M`)")
        return "compose"
    for flag, value in (("--agents", args.agents), ("--loadgen-workers", args.loadgen_workers)):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    compute_ports(args.port_offset, args.agents)  # StackError: an offset out of range
    resolve_agents_python(args.agents_version, pins.load())  # StackError: not pinned, or no venv
    return "native"


def from_arguments(args: argparse.Namespace, run_dir: Path, isolate_agents: bool = False) -> Backend:
    """The backend the checked options name (natively with each agent in a cgroup of its own if
    `isolate_agents`). Reaching a compose project may fail (rig.backends.containers.ComposeStackError)."""
    if args.compose is not None:
        from rig.backends.compose import ComposeBackend  # needs the docker package

        return ComposeBackend(args.compose)
    from rig.backends.native import NativeBackend

    return NativeBackend(agents=args.agents, loadgen_workers=args.loadgen_workers, run_dir=run_dir,
                         port_offset=args.port_offset, env_file=args.env_file, isolate_agents=isolate_agents,
                         agents_version=args.agents_version)
