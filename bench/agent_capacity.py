"""Benchmark: concurrent scripted sessions per agent worker, until the caller-measured turn
latency p95 rises 20 % over its 1-session value; worker CPU and memory per session.

Not a test. Each level runs K concurrent conversations (bench/agentload.py: fallback replies, a
fixed latency profile) against one rig agent worker on a fresh native stack, and prints a JSON
line; --report prints the table of every line in --out. The callers, livekit-server and the
worker share the machine, so on a small machine the knee is the machine's, not the worker's:
the table carries the 1-minute load average and the worker's own CPU.

    .venv/bin/python bench/agent_capacity.py --sessions 1,2
    .venv/bin/python bench/agent_capacity.py --sessions 3,4
    .venv/bin/python bench/agent_capacity.py --report
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import agentload as al

PROFILE = al.fixed_profile(llm_ttft=300, tts_first_byte=150)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "agent_capacity.jsonl"


async def run(args: argparse.Namespace) -> int:
    prof_dir = al.write_profiles({"bench_cap": PROFILE})
    levels = [int(x) for x in args.sessions.split(",")]
    env = {"LKRIG_PROFILE_DIR": str(prof_dir), "AGENT_LOAD_THRESHOLD": "0.99"}
    with al.stack(args.port_offset, Path(args.run_dir), env) as st, \
            al.WorkerMeter(st.worker_pid) as meter:
        await asyncio.sleep(4.0)  # idle baseline (the prewarmed job processes are up)
        idle_t1 = time.monotonic()
        for k in levels:
            load = al.Load(sessions=k, duration=args.duration, profiles=("bench_cap",),
                           warmup=args.warmup)
            res = await al.drive(st, load, st.info.agent_name)
            lo, hi = res.window
            lat = [t["latency_s"] for t in res.turns]
            excess = [x - al.injected_s(PROFILE) for x in lat]
            cpu = meter.cpu_pct(lo, hi)
            pss_idle = meter.pss_mb(idle_t1 - 4.0, idle_t1)
            pss = meter.pss_mb(lo, hi)
            line = {
                **al.machine(), "sessions": k, "duration_s": args.duration, "warmup_s": args.warmup,
                "turns": len(lat), "failed_turns": res.other_turns, "conversations": res.conversations,
                "latency_p50_s": al.pct(lat, 0.5), "latency_p95_s": al.pct(lat, 0.95),
                "excess_p50_s": al.pct(excess, 0.5), "excess_p95_s": al.pct(excess, 0.95),
                "worker_cpu_pct": cpu, "cpu_pct_per_session": cpu / k if cpu is not None else None,
                "pss_idle_mb": pss_idle, "pss_mb": pss,
                "pss_mb_per_session": (pss - pss_idle) / k if pss and pss_idle else None,
                "loadavg_1m": res.loadavg,
            }
            print(al.summary_line(**line), flush=True)
            al.append_result(args.out, al.summary_line(**line))
            await asyncio.sleep(3.0)  # let the last sessions end before the next level
    return 0


def report(path: Path) -> int:
    rows = al.read_results(path)
    if not rows:
        return 2
    base = [r["latency_p95_s"] for r in rows if r["sessions"] == 1 and r["latency_p95_s"]]
    b = statistics.median(base) if base else None
    print(f"{'sessions':>8} {'turns':>5} {'lat p50':>8} {'lat p95':>8} {'p95/1':>6} {'worker CPU':>10}"
          f" {'CPU/sess':>9} {'PSS MB':>7} {'MB/sess':>8} {'load 1m':>10}  date")
    for r in rows:
        ratio = f"{r['latency_p95_s'] / b:6.2f}" if b and r["latency_p95_s"] else "     -"
        print(f"{r['sessions']:>8} {r['turns']:>5} {r['latency_p50_s'] or 0:8.3f}"
              f" {r['latency_p95_s'] or 0:8.3f}"
              f" {ratio} {r['worker_cpu_pct'] or 0:9.1f}% {r['cpu_pct_per_session'] or 0:8.1f}%"
              f" {r['pss_mb'] or 0:7.0f} {r['pss_mb_per_session'] or 0:8.0f}"
              f" {r['loadavg_1m'][0]:4.1f}-{r['loadavg_1m'][1]:<4.1f}  {r['date']}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", default="1,2", help="comma-separated concurrent session counts")
    p.add_argument("--duration", type=float, default=80.0, help="seconds per level")
    p.add_argument("--warmup", type=float, default=al.Load.warmup,
                   help="seconds from the first call to the measurement window")
    p.add_argument("--port-offset", type=int, default=12900)
    p.add_argument("--run-dir", default=str(Path(tempfile.gettempdir()) / "lkrig-bench-agent"))
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here")
    p.add_argument("--report", action="store_true", help="print the table of --out and exit")
    args = p.parse_args()
    if args.report:
        return report(Path(args.out))
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
