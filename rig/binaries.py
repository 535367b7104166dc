"""The programs the native stack runs, found and checked before anything starts.

livekit-server is the build of the pinned version that scripts/setup leaves in the cache (or
LIVEKIT_SERVER_BIN); Prometheus is the one on PATH (or PROMETHEUS_BIN). The agents run on this
interpreter (the main livekit-agents pin), on the venv of an older pin (legacy, middle) that
scripts/setup leaves in the cache, or on a venv built from a user's requirements (rig.byo). Where
scripts/setup puts things in the cache is said here only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rig import byo, pins
from rig.paths import cache_dir
from rig.stackerror import StackError


def livekit_server_path(version: str) -> Path:
    """Where scripts/setup (scripts/install-livekit-server.sh) builds livekit-server `version`."""
    return cache_dir() / "livekit-server" / version / "livekit-server"


def agents_venv_python(version: str) -> Path:
    """The python of the venv scripts/setup installs livekit-agents `version` into (an older pin)."""
    return cache_dir() / f"venv-agents-{version}" / "bin" / "python"


def resolve_livekit_server(version: str, compose_file: Path) -> Path:
    env = os.environ.get("LIVEKIT_SERVER_BIN")
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StackError(
                f"LIVEKIT_SERVER_BIN={env} is not an executable file; point it at a livekit-server {version}"
                " binary, or unset it to use the one scripts/setup builds"
            )
    else:
        path = livekit_server_path(version)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StackError(
                f"livekit-server {version} (pinned in {compose_file}) is not installed:"
                f" no executable at {path};"
                " run scripts/setup (or bash scripts/install-livekit-server.sh), or set LIVEKIT_SERVER_BIN"
            )
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{path} --version failed ({exc}); is it a livekit-server binary?") from exc
    got = out.strip().rsplit(" ", 1)[-1] if out.strip() else "nothing"
    if got.lstrip("v") != version.lstrip("v"):
        raise StackError(f"{path} reports version {got!r}, but {compose_file} pins livekit-server {version}")
    return path


def resolve_prometheus() -> Path:
    env = os.environ.get("PROMETHEUS_BIN")
    found = env or shutil.which("prometheus")
    if not found or not os.access(found, os.X_OK):
        where = f"PROMETHEUS_BIN={env} is not executable" if env else "no `prometheus` on PATH"
        raise StackError(f"Prometheus not found ({where}); run scripts/setup (Debian package prometheus)")
    return Path(found)


def resolve_agents_python(version: str | None, pinned: pins.Pins) -> Path:
    main = pinned["LIVEKIT_AGENTS_VERSION"]
    older = [pinned[k] for k in pins.OLDER_AGENTS]
    if version in (None, main):
        return Path(sys.executable)
    if version in older:
        python = agents_venv_python(version)
        if not python.exists():
            raise StackError(
                f"no venv for livekit-agents {version} at {python.parent.parent}; run scripts/setup"
            )
        return python
    raise StackError(f"--agents-version {version}: {pinned.source} pins {main}, {' and '.join(older)} only")


def agents_python(
    version: str | None, requirements: Path | None, pinned: pins.Pins, say: Callable[[str], None]
) -> Path:
    """The python the agent workers run on: a venv with the user's `requirements` (built on first
    use), else the one of livekit-agents `version` (None: the main pin)."""
    if requirements is None:
        return resolve_agents_python(version, pinned)
    try:
        return byo.ensure_venv(requirements, say)
    except byo.ByoError as exc:
        raise StackError(str(exc)) from exc
