"""A venv of its own for a user's agent: `rig up --native --agent-requirements FILE`.

The user's requirements file decides the livekit-agents version (and their plugins), so their
agent runs on *their* version, next to the rig's own venvs rather than inside one. Added to it:
the instrumentation package (`instrument/`, for the metric names and counters) and pyyaml (the
rig's scripted providers read latency profiles). The repo and instrument/ reach it through the
agent's PYTHONPATH, as for the legacy venv.

Built once per (requirements text, instrument/pyproject.toml, Python); a stamp in the venv skips
pip when nothing changed. A lock keeps two `rig up` from building the same venv at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rig.paths import INSTRUMENT, cache_dir

STAMP = ".lkrig-byo-stamp"
PIP_TIMEOUT_S = 1800.0


class ByoError(RuntimeError):
    """The user's requirements cannot be installed; the message says which file and why."""


def _base_python() -> str:
    # venvs are made from the interpreter the rig runs on (>= 3.11, what setup chose)
    return getattr(sys, "_base_executable", None) or sys.executable


def stamp(requirements: Path) -> str:
    h = hashlib.sha256(b"lkrig-byo-v1\n")
    h.update(sys.version.encode() + b"\n")
    h.update(requirements.read_bytes())
    h.update((INSTRUMENT / "pyproject.toml").read_bytes())
    return h.hexdigest()


def venv_dir(requirements: Path) -> Path:
    return cache_dir() / "byo-venvs" / stamp(requirements)[:16]


def ensure_venv(requirements: Path, say: Callable[[str], None]) -> Path:
    """The python of a venv with the user's requirements installed; builds it if needed."""
    if not requirements.is_file():
        raise ByoError(f"--agent-requirements {requirements}: no such file")
    try:
        want = stamp(requirements)
    except OSError as e:
        raise ByoError(f"--agent-requirements {requirements}: cannot read it ({e.strerror})") from e
    venv = venv_dir(requirements)
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file = venv / STAMP
        if python.exists() and stamp_file.exists() and stamp_file.read_text().strip() == want:
            return python
        say(f"rig up: installing {requirements} into {venv} (first run: a few minutes)")
        shutil.rmtree(venv, ignore_errors=True)
        _run([_base_python(), "-m", "venv", str(venv)], f"cannot create a venv at {venv}")
        _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "-r", str(requirements.resolve()), str(INSTRUMENT), "pyyaml>=6.0.3,<7"],
             f"pip could not install {requirements}; fix the file or its pins. pip said:")
        check = subprocess.run([str(python), "-c", "import livekit.agents"], capture_output=True,
                               text=True, timeout=120)
        if check.returncode != 0:
            raise ByoError(f"{requirements}: installs no livekit-agents (`import livekit.agents` "
                           f"fails in {venv}); add e.g. livekit-agents[silero]==1.8.9")
        stamp_file.write_text(want + "\n")
    return python


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ByoError(f"{what} ({e})") from e
    if done.returncode != 0:
        tail = "\n    ".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ByoError(f"{what}\n    {tail}")
