"""Test support for tests/test_report.py: Locust users that only fire request events.

    locust -f tests/tools/csv_locustfile.py --headless -u 2 -r 2 -t 20s --csv PREFIX --csv-full-history

Gives Locust's real CSV writer (stats, stats history, failures) rows shaped like the rig's callers'
(type "turn" and "conversation") without a LiveKit server. Not part of the rig.
"""

from __future__ import annotations

import random

from locust import User, constant, task


class FakeCaller(User):
    wait_time = constant(0.2)

    @task
    def turn(self) -> None:
        failed = random.random() < 0.1
        self.environment.events.request.fire(
            request_type="turn",
            name="ask_programs",
            response_time=random.uniform(300, 1500),
            response_length=0,
            exception=RuntimeError("dead_air") if failed else None,
            context={},
        )
        if random.random() < 0.2:
            self.environment.events.request.fire(
                request_type="conversation",
                name="seed",
                response_time=random.uniform(5000, 9000),
                response_length=0,
                exception=None,
                context={},
            )
