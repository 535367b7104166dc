"""Labels and timeouts for a user's own agent, from the environment (the rig sets them).

Label values must stay bounded (one Prometheus series per value), so they come from the
operator's environment or code, never from a caller: dispatch metadata is chosen by whoever
creates the room.
"""

from __future__ import annotations

import contextvars
import os
import re

from .hooks import STUCK_TIMEOUT_S

SCENARIO_ENV = "LKRIG_SCENARIO"  # default "byo"
PROFILE_ENV = "LKRIG_PROFILE"  # default "none"; the scripted providers set their profile
STUCK_TIMEOUT_ENV = "LKRIG_STUCK_TIMEOUT"  # seconds, default 30
ROOM_EVENTS_ENV = "LKRIG_ROOM_EVENTS"  # "1": tell the rig's callers about counted errors

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# The latency profile of the scripted providers this job uses (set by providers_or), which is
# then the session's `profile` label. A context variable: the job's entrypoint task sets it and
# the session started from that task reads it.
SCRIPTED_PROFILE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lkrig_scripted_profile", default=None)


class SettingError(ValueError):
    """An environment variable of the instrumentation holds a value it cannot use."""


def _name(var: str, default: str) -> str:
    value = os.environ.get(var, "").strip() or default
    if not _NAME.fullmatch(value):
        raise SettingError(
            f"{var}={value!r}: a label value must be 1-64 letters, digits, '_', '.' or '-'")
    return value


def scenario() -> str:
    return _name(SCENARIO_ENV, "byo")


def profile() -> str:
    return SCRIPTED_PROFILE.get() or _name(PROFILE_ENV, "none")


def stuck_timeout() -> float:
    raw = os.environ.get(STUCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return STUCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SettingError(f"{STUCK_TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0")
    return value


def room_events() -> bool:
    return os.environ.get(ROOM_EVENTS_ENV, "").strip() == "1"
