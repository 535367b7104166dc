"""Count livekit-agents speech-scheduling errors with one call: `instrument(session)`, or for every
session of a worker, one import: `from lkrig_instrument import AgentSession`.

`names` (the metric names) imports without livekit-agents; so does this package. The
livekit-dependent parts load on first use.
"""

from __future__ import annotations

from typing import Any

from .hooks import SessionProbe, install_process_hooks, instrument
from .ledger import LEDGER

__all__ = [
    "LEDGER",
    "AgentSession",
    "SessionProbe",
    "install_process_hooks",
    "instrument",
    "providers_or",
    "server_options",
]

_LAZY = {
    "AgentSession": ".session",  # subclasses livekit-agents' AgentSession: imports livekit
    "providers_or": ".providers",
    "server_options": ".server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
