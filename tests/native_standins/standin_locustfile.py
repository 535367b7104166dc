"""Stand-in locustfile, for supervisor tests only (the real one is loadgen/locustfile.py).

Idle users; the master exports /metrics on LOADGEN_METRICS_PORT as the real load generator does.
"""

from __future__ import annotations

import os

from locust import User, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner


@events.init.add_listener
def _export_metrics(environment: Environment, **_kwargs: object) -> None:
    if isinstance(environment.runner, MasterRunner):
        from prometheus_client import start_http_server

        start_http_server(int(os.environ["LOADGEN_METRICS_PORT"]), addr="127.0.0.1")


class Idle(User):
    wait_time = constant(1)

    @task
    def nothing(self) -> None:
        pass
