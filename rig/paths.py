"""Where the rig's files are: the repository it runs from, the files in it that several modules
read, and the cache it keeps between runs.

Every rig module takes these from here, except the two that also run as plain scripts, before
any venv exists or with nothing else of the repository at hand, and so find it by themselves:
rig/pins.py (scripts/setup, the image builds) and rig/envfile.py (`python3 rig/envfile.py`).
"""

from __future__ import annotations

from pathlib import Path

from lkrig_instrument import envnames

REPO = Path(__file__).resolve().parent.parent
INSTRUMENT = REPO / "instrument"  # the lkrig_instrument package, on every agent's PYTHONPATH
LIVEKIT_CONFIG = REPO / "livekit" / "livekit.yaml"  # the compose service mounts the same file
LOCUSTFILE = REPO / "loadgen" / "locustfile.py"


def cache_dir() -> Path:
    """What outlives a checkout's runs (binaries, venvs): $LKRIG_CACHE, else ~/.cache/lkrig, the
    folder scripts/setup fills."""
    return Path(envnames.get("LKRIG_CACHE") or Path.home() / ".cache" / "lkrig")
