"""`rig replay`: offline replay of a scenario (agent/replay.py), on the livekit-agents version
asked for. The pinned version runs in this interpreter; another one (the legacy pin) runs in its
own venv, which scripts/setup installs at ~/.cache/lkrig/venv-agents-<version>."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from rig import pins

REPO = Path(__file__).resolve().parent.parent


def venv_python(version: str) -> Path:
    cache = Path(os.environ.get("RIG_CACHE") or Path.home() / ".cache" / "lkrig")
    return cache / f"venv-agents-{version}" / "bin" / "python"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rig replay", add_help=False)
    p.add_argument("--agents-version", default=None)
    known, rest = p.parse_known_args(argv)
    wanted = known.agents_version or pins.load()["LIVEKIT_AGENTS_VERSION"]
    try:
        here = metadata.version("livekit-agents")
    except metadata.PackageNotFoundError:
        here = None
    if wanted == here:
        from agent.replay import main as replay_main

        return replay_main(rest)
    python = venv_python(wanted)
    if not python.exists():
        print(
            f"rig replay: livekit-agents {wanted} is not installed ({python} does not exist); "
            f"versions installed by scripts/setup: {here} and the legacy pin "
            f"{pins.load()['LIVEKIT_AGENTS_LEGACY_VERSION']}",
            file=sys.stderr,
        )
        return 2
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run([str(python), "-m", "agent.replay", *rest], env=env).returncode
