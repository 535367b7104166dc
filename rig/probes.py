"""Health checks of the native stack's services: each function returns a check that answers
quickly (True once the service is ready), which the supervisor polls until it passes or the
service's time runs out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rig import procs

Check = Callable[[], bool]


def http_ok(url: str) -> Check:
    def check() -> bool:
        got = procs.http_get(url)
        return got is not None and got[0] == 200

    return check


def agent_registered(health_url: str, log: Path, since: int = 0) -> Check:
    """A worker answers its health check before it has registered with livekit-server, and a
    dispatch in between is dropped, not retried. livekit-agents logs "registered worker" (any
    worker, ours or a user's) once the server has accepted it; a restarted worker appends to
    its log, so only what follows byte `since` counts."""
    health = http_ok(health_url)

    def check() -> bool:
        try:
            with open(log, "rb") as f:
                f.seek(since)
                return health() and b"registered worker" in f.read()
        except OSError:
            return False

    return check


def livekit_ready(url: str, settle: float = 0.3) -> Check:
    """GET / answers 200, and kept answering for `settle` seconds.

    livekit-server v1.13.5 serves HTTP ~100 ms before it marks itself running, and a SIGTERM in
    that window is swallowed (Stop() returns early and the server runs on). Calling it healthy
    only after the window means a prompt `rig down` always stops it.
    """
    first_ok: list[float] = []

    def check() -> bool:
        got = procs.http_get(url)
        if got is None or got[0] != 200:
            first_ok.clear()
            return False
        if not first_ok:
            first_ok.append(time.monotonic())
        return time.monotonic() - first_ok[0] >= settle

    return check


def locust_workers(url: str, expected: int) -> Check:
    """The master's /stats/requests lists at least `expected` workers."""

    def check() -> bool:
        got = procs.http_get(url)
        if got is None or got[0] != 200:
            return False
        try:
            return len(json.loads(got[1]).get("workers", [])) >= expected
        except (ValueError, AttributeError):
            return False

    return check
