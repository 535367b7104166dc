"""Benchmark: the compose stack as a user meets it. Not a test.

Measures, on this machine's private engines (tests/dockerengine.py) and the base images'
stand-ins (scripts/setup.d/35-base-images.sh), with docker-compose.yml unchanged:
  * cold build: `docker compose build` of every image on an empty data root (every layer built,
    every package downloaded);
  * warm build: the same again on that data root (nothing changed: every layer cached);
  * the images' sizes;
  * `docker compose up` (every service but Grafana, on bridges, in the engine's own network
    namespace) to all healthy, to the first dashboard panel with data, and to the first datapoint
    of the dashboard's first panel ("Scheduling errors by kind"), for which one `seed` caller
    calls as soon as the stack is healthy (an idle stack counts no error).

    .venv/bin/python bench/compose_stack.py            # cold + warm build, then `up` twice
    .venv/bin/python bench/compose_stack.py --no-cold  # warm build on the kept data root only
    .venv/bin/python bench/compose_stack.py --no-cold --repeat 0  # that build only, no `up`
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "tools"))

from check_panels_live import PrometheusUnreachable, check_panels_live  # noqa: E402
from dockerengine import compose, compose_argv, import_standins, private_engine, run_in  # noqa: E402

from bench import agentload as al  # noqa: E402
from rig import envfile, paths  # noqa: E402

DASHBOARD = REPO / "grafana" / "dashboards" / "speech-scheduling.json"
BUILD_HOST = REPO / "tests" / "compose" / "build-host.yml"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "compose_stack.jsonl"
UP = ["livekit", "agent", "locust-master", "locust-worker", "prometheus"]


def build(data_root: Path, env_file: Path) -> tuple[float, dict[str, float]]:
    with private_engine(data_root=data_root) as client:
        import_standins(client)
        t = time.monotonic()
        r = compose(client, env_file, "build", files=(BUILD_HOST,), timeout=3600)
        took = time.monotonic() - t
        if r.returncode:
            raise SystemExit(f"docker compose build failed:\n{r.stderr[-4000:]}")
        sizes = {tag: img.attrs["Size"] / 1e6 for img in client.images.list() for tag in img.tags
                 if tag.startswith("lkrig-")}
    return took, sizes


def up_once(data_root: Path, env_file: Path, timeout: float) -> dict[str, Any]:
    with private_engine(data_root=data_root, netns=True) as client:
        t0 = time.monotonic()
        argv, env = compose_argv(client, env_file, "up", "-d", "--wait", "--wait-timeout",
                                 f"{timeout:.0f}", *UP)
        up = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        healthy: list[float] = []
        threading.Thread(target=lambda: (up.wait(), healthy.append(time.monotonic() - t0)),
                         daemon=True).start()
        caller: subprocess.Popen[str] | None = None
        any_data = first_panel = None
        any_panels: list[str] = []
        try:
            while time.monotonic() - t0 < timeout and first_panel is None:
                if healthy and caller is None:
                    if up.returncode:
                        raise SystemExit(f"docker compose up failed:\n{up.communicate()[1][-4000:]}")
                    argv, env = compose_argv(
                        client, env_file, "run", "--rm", "--no-deps", "locust-worker", "python", "-m",
                        "loadgen.cli", "--scenario", "seed", "--profile", "fast",
                        "--say", "Hi, I'd like to hear about your programs.")
                    caller = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
                try:
                    rep = run_in(client.netns, check_panels_live, "http://127.0.0.1:9090", [DASHBOARD])
                except PrometheusUnreachable:
                    rep = None
                ok = [r for r in rep.results if r.ok] if rep else []
                if ok and any_data is None:
                    any_data, any_panels = time.monotonic() - t0, sorted({r.panel for r in ok})
                if any(r.panel == "Scheduling errors by kind" for r in ok):
                    first_panel = time.monotonic() - t0
                time.sleep(0.5)
        finally:
            if caller is not None:
                caller.wait(120)
            compose(client, env_file, "down", "-v", "-t", "10", timeout=180)
    return {"all_healthy_s": healthy[0] if healthy else None, "first_data_s": any_data,
            "first_panels": any_panels, "first_panel_datapoint_s": first_panel,
            "loadavg_1m": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold build")
    ap.add_argument("--repeat", type=int, default=2,
                    help="`docker compose up` runs (warm); 0: the builds only, in one line")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lkrig-bench-compose-"))
    env_file = work / ".env"
    envfile.create_from_example(env_file, REPO / ".env.example")
    kept = paths.cache_dir() / "dockerd"
    result: dict[str, Any] = {}
    try:
        if not args.no_cold:
            cold_root = paths.cache_dir() / "dockerd-bench-cold"
            shutil.rmtree(cold_root, ignore_errors=True)
            try:
                result["cold_build_s"], _ = build(cold_root, env_file)
                result["cold_loadavg_1m"] = os.getloadavg()[0]
                result["warm_build_s"], result["image_mb"] = build(cold_root, env_file)
            finally:
                shutil.rmtree(cold_root, ignore_errors=True)
        kept_build_s, result["image_mb"] = build(kept, env_file)  # what `up` runs below
        result.setdefault("warm_build_s", kept_build_s)
        sizes = ", ".join(f"{k} {v:.0f}" for k, v in sorted(result["image_mb"].items()))
        print(f"build: cold {result.get('cold_build_s', float('nan')):.0f} s,"
              f" warm {result['warm_build_s']:.1f} s; images (MB): {sizes}")
        if args.repeat == 0:
            al.append_result(args.out, al.summary_line(**al.machine(), **result,
                                                       loadavg_1m=os.getloadavg()[0]))
            return 0
        print(f"{'run':>3} {'all healthy':>12} {'first data':>11} {'first panel':>12} {'load 1m':>8}"
              "  first panels")
        for i in range(args.repeat):
            r = up_once(kept, env_file, args.timeout)
            fmt = lambda v: f"{v:.1f} s" if isinstance(v, float) else "-"  # noqa: E731
            print(f"{i + 1:>3} {fmt(r['all_healthy_s']):>12} {fmt(r['first_data_s']):>11}"
                  f" {fmt(r['first_panel_datapoint_s']):>12} {r['loadavg_1m']:>8.1f}"
                  f"  {'; '.join(r['first_panels'])}", flush=True)
            al.append_result(args.out, al.summary_line(**al.machine(), **result, **r))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
