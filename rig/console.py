"""What every `rig` command shares with its user: output that survives a closed stdout, one-line
errors, the usage exit code, and a stop on Ctrl-C or SIGTERM that cannot cut a teardown short."""

from __future__ import annotations

import contextlib
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from types import FrameType

EXIT_USAGE = 2  # bad input, found before anything starts
EXIT_INTERRUPTED = 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def out(msg: str) -> None:
    # A closed stdout (`rig up | head`) must not abort a start or a teardown half-way.
    with contextlib.suppress(OSError):
        print(msg, flush=True)


def err(msg: str) -> None:
    with contextlib.suppress(OSError):
        print(msg, file=sys.stderr, flush=True)


class Stop(BaseException):
    """Ctrl-C or SIGTERM (`rig down`) asked the command to stop; raised where it was."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    # Only the first signal interrupts: a second Ctrl-C must not cut the teardown short.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stop(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside: the first stop signal raises Stop. On the way out, however it is left, every stop
    signal is ignored, so the teardown that follows runs to its end."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def run_then_tear_down(cmd: str, body: Callable[[], int], teardown: Callable[[], list[str]],
                       errors: tuple[type[Exception], ...] = (),
                       interrupted: Callable[[], int] | None = None) -> int:
    """The skeleton of every command that starts something: run `body` (its exit code) with a stop
    signal raising Stop, then always `teardown`, uninterruptible, whose leftovers fail the command.
    `errors` are expected failures, said in one line; anything else is a bug, said with its
    traceback. `interrupted` says what a stop signal means (default: "interrupted", exit 130)."""
    try:
        with stop_on_signals():
            rc = body()
    except Stop:
        if interrupted is None:
            out(f"{cmd}: interrupted; stopping everything")
            rc = EXIT_INTERRUPTED
        else:
            rc = interrupted()
    except errors as e:
        err(f"{cmd}: {e}")
        rc = 1
    except Exception:  # a bug or an unforeseen state: say so, and still stop everything
        err(f"{cmd}: failed:\n{traceback.format_exc()}")
        rc = 1
    left = teardown()
    if left:
        err(f"{cmd}: could not stop {'; '.join(left)}")
        rc = rc or 1
    return rc
