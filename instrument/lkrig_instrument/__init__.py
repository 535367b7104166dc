"""Count livekit-agents speech-scheduling errors with one call: `instrument(session)`."""

from .hooks import SessionProbe, install_process_hooks, instrument
from .ledger import LEDGER

__all__ = ["LEDGER", "SessionProbe", "install_process_hooks", "instrument"]
