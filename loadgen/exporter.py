"""The Locust master's one HTTP port: GET /metrics (the caller metrics and the run's series) and
POST /events (a fault's start or end, from `rig run`). Only the rig's own series are served: no
process_* or python_* defaults, so every name on the port is defined in lkrig_instrument.names.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from loadgen.runstate import MAX_EVENT_BYTES, EventError

EVENTS_PATH = "/events"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Prometheus scrapes every few seconds: no access log."""


def app(collectors: Iterable[Collector], on_event: Callable[[dict[str, Any]], None]) -> Any:
    registry = CollectorRegistry(auto_describe=False)
    for c in collectors:
        registry.register(c)
    metrics = make_wsgi_app(registry)

    def answer(start: Any, status: str, text: str) -> Iterator[bytes]:
        body = (text + "\n").encode()
        start(status, [("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(body)))])
        yield body

    def route(environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != EVENTS_PATH:
            return metrics(environ, start)  # type: ignore[no-any-return]
        if environ.get("REQUEST_METHOD") != "POST":
            return answer(start, "405 Method Not Allowed", f"POST a JSON event to {EVENTS_PATH}")
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = -1
        if not 0 < size <= MAX_EVENT_BYTES:
            return answer(start, "400 Bad Request", f"a JSON event of 1 to {MAX_EVENT_BYTES} bytes")
        try:
            event = json.loads(environ["wsgi.input"].read(size))
        except ValueError as e:
            return answer(start, "400 Bad Request", f"not a JSON event: {e}")
        try:
            on_event(event)
        except EventError as e:
            return answer(start, "400 Bad Request", str(e))
        return answer(start, "202 Accepted", "ok")

    return route


def serve(collectors: Iterable[Collector], on_event: Callable[[dict[str, Any]], None], port: int,
          host: str = "127.0.0.1") -> tuple[Any, threading.Thread]:
    """Starts the server in a daemon thread; returns it (shutdown() stops it) and the thread."""
    httpd = make_server(host, port, app(collectors, on_event), ThreadingWSGIServer,
                        handler_class=QuietHandler)
    t = threading.Thread(target=httpd.serve_forever, name="lkrig-exporter", daemon=True)
    t.start()
    return httpd, t
