"""Load shapes for the callers: none (Locust's own users/ramp), ramp, step, spike, soak.

Locust uses the first LoadTestShape a locustfile defines, always; so there is one shape class,
`CallerShape` (from `shape_class()`), and the `--shape` option (a dropdown in the web UI) picks
what it does. It uses the common options (`use_common_options`), so the form keeps "Number of
users" (the peak), "Ramp up" (users started per second) and the run time, which each shape reads:

    none   Locust's default: go to the peak at the ramp-up rate, hold until the run time.
    ramp   rise linearly from 0 to the peak over 3/4 of the run time, hold the last quarter.
    step   --shape-steps equal steps up to the peak, each 1/steps of the run time.
    spike  1/5 of the peak for 2/5 of the run time, the peak for 1/5, back to 1/5.
    soak   up to the peak at the ramp-up rate, then hold for the run time (default 1 h).

Without a run time, none and soak run until stopped; ramp, step and spike assume 10 minutes.
"""

from __future__ import annotations

import math
from typing import Any

SHAPES = ("none", "ramp", "step", "spike", "soak")
DEFAULT_SHAPED_RUN_S = 600.0
DEFAULT_SOAK_S = 3600.0
# Locust workers report every 3 s (locust.runners.WORKER_REPORT_INTERVAL); one more to be sure.
DRAIN_REPORT_S = 4.0


def users_at(shape: str, t: float, peak: int, rate: float, run_time: float | None,
             steps: int = 5) -> tuple[int, float] | None:
    """(users, spawn rate) at `t` seconds into the run, or None when the run is over."""
    if shape == "none":
        return None if run_time and t >= run_time else (peak, rate)
    if shape == "soak":
        total = run_time or DEFAULT_SOAK_S
        return None if t >= total else (peak, rate)
    total = run_time or DEFAULT_SHAPED_RUN_S
    if t >= total:
        return None
    frac = t / total
    if shape == "ramp":
        users = math.ceil(peak * min(1.0, frac / 0.75))
        # Spawn as fast as needed to follow the line; the line itself sets the pace.
        return users, max(rate, peak / (0.75 * total))
    if shape == "step":
        steps = max(1, steps)
        users = math.ceil(peak * min(steps, int(frac * steps) + 1) / steps)
        return users, max(rate, peak / steps)
    if shape == "spike":
        base = max(1, math.ceil(peak / 5))
        users = peak if 0.4 <= frac < 0.6 else base
        return users, max(rate, float(peak))  # a spike arrives at once
    raise ValueError(f"unknown shape {shape!r} (choose from {', '.join(SHAPES)})")


class Drain:
    """The end of every shape: 0 users (each finishes its call within --stop-timeout), then one
    worker report interval for the last results, then the end of the run.

    Without it a headless distributed run loses its tail: on quit the master gives the workers
    0.5 s for their final report while their users are still hanging up.
    """

    def __init__(self) -> None:
        self.started: float | None = None
        self.drained_at: float | None = None

    def tick(self, t: float, user_count: int, stop_timeout: float) -> tuple[int, float] | None:
        if self.started is None:
            self.started = t
        if user_count == 0 and self.drained_at is None:
            self.drained_at = t
        if self.drained_at is not None and t - self.drained_at >= DRAIN_REPORT_S:
            return None
        if t - self.started > stop_timeout + DRAIN_REPORT_S + 30:
            return None  # users that ignore the stop are Locust's to kill
        return 0, 1000.0


def shape_class() -> type:
    """The LoadTestShape for the locustfile (built here so importing this module does not
    import locust, which monkey-patches the whole process with gevent)."""
    from locust import LoadTestShape

    class CallerShape(LoadTestShape):
        use_common_options = True

        def __init__(self) -> None:
            super().__init__()
            self._drain: Drain | None = None

        def reset_time(self) -> None:
            super().reset_time()
            self._drain = None

        def tick(self) -> tuple[int, float] | None:
            runner = self.runner
            opts: Any = runner.environment.parsed_options if runner else None
            if runner is None or opts is None:
                return None
            t = self.get_run_time()
            if self._drain is None:
                now = users_at(
                    str(getattr(opts, "shape", "none")), t,
                    int(opts.num_users or 1), float(opts.spawn_rate or 1),
                    float(opts.run_time) if opts.run_time else None,
                    int(getattr(opts, "shape_steps", 5) or 5),
                )
                if now is not None:
                    return now
                self._drain = Drain()
            return self._drain.tick(t, runner.user_count, float(runner.environment.stop_timeout or 0))

    return CallerShape
