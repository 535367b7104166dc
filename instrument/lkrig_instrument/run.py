"""Run a worker that has no `if __name__ == "__main__": cli.run_app(server)` of its own:

    python -m lkrig_instrument.run pkg.module:server start

imports `pkg.module`, takes its `server` (an AgentServer or WorkerOptions; without `:name`, the
module's only one) and hands it to livekit-agents' own `cli.run_app`, with the remaining
arguments. This is what `rig up --native --agent-module pkg.module:server` and the byo compose
file run.

If the module built its server without `lkrig_instrument.server_options()`, the runner still
serves the counters on AGENT_METRICS_PORT (prometheus_client's own server, same multiprocess
directory) and writes AGENT_READY_FILE, and says that the health port stays the server's own.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

USAGE = "usage: python -m lkrig_instrument.run pkg.module[:server] start [worker args]"


class RunError(RuntimeError):
    pass


def load_server(spec: str) -> Any:
    from livekit.agents import AgentServer, WorkerOptions

    kinds = (AgentServer, WorkerOptions)
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RunError(f"{spec}: cannot import {module_name} ({e}); is its folder on PYTHONPATH?") from e
    if attr:
        server = getattr(module, attr, None)
        if not isinstance(server, kinds):
            raise RunError(f"{spec}: {module_name}.{attr} is {type(server).__name__}, "
                           "not an AgentServer or WorkerOptions")
        return server
    found = [name for name, value in vars(module).items() if isinstance(value, kinds)]
    if len(found) != 1:
        raise RunError(f"{spec}: {module_name} has {len(found)} AgentServer/WorkerOptions objects "
                       f"({', '.join(found) or 'none'}); name one: {module_name}:NAME")
    return getattr(module, found[0])


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        server = load_server(argv[0])
    except RunError as e:
        print(f"lkrig_instrument.run: {e}", file=sys.stderr)
        return 2
    from livekit.agents import cli

    from . import capabilities
    from . import server as rig_server

    if not rig_server.used():
        rig_server.watch_ready_file()
        capabilities.report_once()
        port = rig_server.serve_metrics()
        if port is not None or os.environ.get("AGENT_HEALTH_PORT"):
            print(f"lkrig_instrument.run: {argv[0]} builds its server without "
                  "lkrig_instrument.server_options()"
                  + (f"; serving the counters on port {port} from this process" if port else "")
                  + "; its health port stays its own (AGENT_HEALTH_PORT="
                  f"{os.environ.get('AGENT_HEALTH_PORT', 'unset')} is not applied)",
                  file=sys.stderr, flush=True)
    sys.argv = [argv[0], *argv[1:]]
    cli.run_app(server)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
