"""Stand-in for an agent worker, for supervisor tests only (the real one is agent/worker.py).

It honours the env contract the supervisor provides (health on AGENT_HEALTH_PORT, metrics on
AGENT_METRICS_PORT, PROMETHEUS_MULTIPROC_DIR) and, like livekit-agents, forks a child process
that would outlive it if the supervisor only signalled the worker itself.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading

from prometheus_client import CollectorRegistry, Gauge, start_http_server


def main() -> None:
    assert sys.argv[1:] == ["start"], sys.argv
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "AGENT_NAME"):
        assert os.environ.get(var), f"{var} not set"
    mp = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    stale = sorted(os.listdir(mp))  # must be empty: the supervisor clears it at start
    registry = CollectorRegistry()
    Gauge("standin_stale_files", "files found in the multiproc dir at start", registry=registry).set(
        len(stale)
    )
    start_http_server(int(os.environ["AGENT_METRICS_PORT"]), addr="127.0.0.1", registry=registry)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.path.join(mp, "standin-child.pid"), "w") as f:
        f.write(str(child.pid))

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", int(os.environ["AGENT_HEALTH_PORT"])), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # the supervisor waits for livekit-agents' own "registered worker" line, as for a real worker
    print(f"standin agent ready, registered worker: {os.environ['AGENT_NAME']} stale={stale}",
          flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
