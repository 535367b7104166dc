"""`rig replay`: offline replay of a scenario (agent/replay.py), on the livekit-agents version
asked for. The pinned version runs in this interpreter; an older pin (legacy, middle) runs in its
own venv, which scripts/setup installs at ~/.cache/lkrig/venv-agents-<version>."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata

from rig import pins
from rig.binaries import agents_venv_python
from rig.paths import REPO


def add_parser(sub: argparse._SubParsersAction) -> None:
    # The replay's own options (agent/replay.py, `rig replay -h`) go on to it as they are.
    p = sub.add_parser("replay", add_help=False,
                       help="replay a scenario offline (no server) and count its errors; see `rig replay -h`")
    p.add_argument("--agents-version", default=None)
    p.set_defaults(func=main, passes_rest=True)


def main(args: argparse.Namespace) -> int:
    rest = args.rest
    wanted = args.agents_version or pins.load()["LIVEKIT_AGENTS_VERSION"]
    try:
        here = metadata.version("livekit-agents")
    except metadata.PackageNotFoundError:
        here = None
    if wanted == here:
        from agent.replay import main as replay_main

        return replay_main(rest)
    python = agents_venv_python(wanted)
    if not python.exists():
        print(
            f"rig replay: livekit-agents {wanted} is not installed ({python} does not exist); "
            f"versions installed by scripts/setup: {here} and the older pins "
            f"{', '.join(pins.load()[k] for k in pins.OLDER_AGENTS)}",
            file=sys.stderr,
        )
        return 2
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run([str(python), "-m", "agent.replay", *rest], env=env).returncode
