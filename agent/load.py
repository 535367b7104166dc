"""Worker load for job admission.

The framework's default load is the machine's CPU use, which on a machine that also runs the
LiveKit server and the callers (the native stack, CI) says more about the callers than about the
agent. AGENT_LOAD=process measures only this worker and its job processes instead, as a share of
the machine's cores. The threshold stays the framework's (0.7 in `start` mode) unless
AGENT_LOAD_THRESHOLD overrides it.
"""

from __future__ import annotations

import time

import psutil


class ProcessTreeLoad:
    def __init__(self) -> None:
        self._me = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._last: tuple[float, float] | None = None
        self._value = 0.0

    def _cpu_seconds(self) -> float:
        total = 0.0
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def __call__(self) -> float:
        now, cpu = time.monotonic(), self._cpu_seconds()
        if self._last is not None and now - self._last[0] >= 0.25:
            used = max(cpu - self._last[1], 0.0) / (now - self._last[0])
            self._value = min(used / self._cores, 1.0)
            self._last = (now, cpu)
        elif self._last is None:
            self._last = (now, cpu)
        return self._value
