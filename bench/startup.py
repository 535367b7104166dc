"""Benchmark: native stack start-up, as a user sees it.

Not a test. Runs `rig up --native` (livekit-server, Prometheus, agent worker(s), Locust master and
worker(s)) and measures, from the command's start:
  * all-healthy: the line `rig up: all healthy in ...` (every health check passed; the agent
    worker registered with livekit-server);
  * first non-empty dashboard query: the first time a panel query of
    grafana/dashboards/speech-scheduling.json (variables resolved as Grafana does, with
    tests/tools/check_panels_live.py) answers with data from the stack's Prometheus.
Then Ctrl-C (SIGINT) stops the stack and the time to a clean exit is measured too. No traffic is
sent: the first panels with data are the server's and the worker's own gauges.

    .venv/bin/python bench/startup.py --repeat 2
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tools"))

from check_panels_live import PrometheusUnreachable, check_panels_live  # noqa: E402

from bench import agentload as al  # noqa: E402
from rig import ports  # noqa: E402

DASHBOARD = REPO / "grafana" / "dashboards" / "speech-scheduling.json"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "startup.jsonl"


def one(args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    rig = Path(sys.executable).parent / "rig"
    argv = [str(rig), "up", "--native", "--port-offset", str(args.port_offset), "--run-dir", str(run_dir),
            "--env-file", str(run_dir / ".env"), "--agents", str(args.agents),
            "--loadgen-workers", str(args.loadgen_workers)]
    prom = f"http://127.0.0.1:{ports.PROMETHEUS_PORT + args.port_offset}"
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    healthy: list[float] = []
    said: list[str] = []

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            said.append(line.rstrip())
            if line.startswith("rig up: all healthy in") and not healthy:
                healthy.append(time.monotonic() - t0)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    first_data: float | None = None
    panels: list[str] = []
    try:
        deadline = t0 + args.timeout
        while time.monotonic() < deadline and p.poll() is None:
            if healthy or args.query_before_healthy:
                try:
                    rep = check_panels_live(prom, [DASHBOARD])
                except PrometheusUnreachable:
                    rep = None
                ok = [r for r in rep.results if r.ok] if rep else []
                if ok:
                    first_data = time.monotonic() - t0
                    panels = sorted({r.panel for r in ok})
                    break
            time.sleep(0.25)
    finally:
        t_stop = time.monotonic()
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            rc = p.wait(90)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        stopped = time.monotonic() - t_stop
        reader.join(5)
    if not healthy:
        print("\n".join(said[-20:]), file=sys.stderr)
    return {"all_healthy_s": healthy[0] if healthy else None,
            "self_reported": next((s for s in said if s.startswith("rig up: all healthy")), None),
            "first_panel_data_s": first_data, "first_panels": panels, "stop_s": stopped, "rc": rc,
            "loadavg_1m": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--agents", type=int, default=1)
    ap.add_argument("--loadgen-workers", type=int, default=1)
    ap.add_argument("--port-offset", type=int, default=12900)
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds per start before giving up")
    ap.add_argument("--query-before-healthy", action="store_true",
                    help="poll the dashboard from the start, not only once all is healthy")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here")
    args = ap.parse_args()
    print(f"{'run':>3} {'all healthy':>12} {'first panel data':>17} {'stop':>6} {'load 1m':>8}  first panels")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="lkrig-bench-startup-") as d:
            r = one(args, Path(d))
        line = al.summary_line(**al.machine(), agents=args.agents, loadgen_workers=args.loadgen_workers, **r)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(line + "\n")
        fmt = lambda v: f"{v:.1f} s" if isinstance(v, float) else "-"  # noqa: E731
        print(f"{i + 1:>3} {fmt(r['all_healthy_s']):>12} {fmt(r['first_panel_data_s']):>17}"
              f" {fmt(r['stop_s']):>6} {r['loadavg_1m']:>8.1f}  {'; '.join(r['first_panels'])}",  # type: ignore[arg-type]
              flush=True)
        if r["rc"] not in (0, 130):
            print(f"rig up exited {r['rc']}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
