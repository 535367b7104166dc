"""Leave a process that used livekit.rtc without running interpreter finalization.

At a normal exit, Python 3.11 finalizes while the FFI's tokio threads may still deliver events;
a native thread that then asks for the GIL is ended with pthread_exit, whose forced unwind crosses
Rust frames that cannot unwind, and the process aborts ("panic in a function that cannot unwind",
exit -6) after its work is done. Flushing and calling os._exit skips that race.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
