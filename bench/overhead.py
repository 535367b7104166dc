"""Benchmark: the rig's own cost inside the agent worker: worker CPU with and without the
lkrig_instrument probe (`instrument(session)`; LKRIG_INSTRUMENT=off in agent/worker.py skips it)
at the same load, and next to a bare livekit-agents session (`bare`: bench/bare_agent.py, no
rig code at all, the same VAD, replies and delays).

Not a test. One run = one setting on a fresh native stack, the same load every time (K
concurrent conversations of bench/agentload.py, same seeds, same fixed profile). Run the two
settings alternately, more than once: on a shared machine the run-to-run spread is larger than
the effect, and --report shows both.

    .venv/bin/python bench/overhead.py --instrument off,on,off,on
    .venv/bin/python bench/overhead.py --instrument bare,on,bare,on
    .venv/bin/python bench/overhead.py --report
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import agentload as al
from bench.bare_agent import DELAY_NAMES
from rig import native

PROFILE = al.fixed_profile(llm_ttft=300, tts_first_byte=150)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "overhead.jsonl"
SETTINGS = ("on", "off", "bare")
BARE_AGENT = "bench.bare_agent"


async def run(args: argparse.Namespace, instrument: str) -> int:
    env = {"LKRIG_PROFILE_DIR": str(al.write_profiles({"bench_ovh": PROFILE})),
           "AGENT_LOAD_THRESHOLD": "0.99", "LKRIG_INSTRUMENT": instrument,
           # the bare agent's own delays: the profile's, fixed (bench/bare_agent.py)
           "BARE_AGENT_DELAYS_MS": ",".join(f"{k}={PROFILE[k]:g}" for k in DELAY_NAMES)}
    module = BARE_AGENT if instrument == "bare" else native.AGENT_MODULE
    with al.stack(args.port_offset, Path(args.run_dir), env, module) as st, \
            al.WorkerMeter(st.worker_pid) as meter:
        load = al.Load(sessions=args.sessions, duration=args.duration, profiles=("bench_ovh",),
                       warmup=args.warmup)
        res = await al.drive(st, load, st.info.agent_name)
        lo, hi = res.window
        cpu = meter.cpu_pct(lo, hi)
    turns = len(res.turns)
    line = al.summary_line(
        **al.machine(), instrument=instrument, sessions=args.sessions, duration_s=args.duration,
        warmup_s=args.warmup,
        turns=turns, failed_turns=res.other_turns, worker_cpu_pct=cpu,
        cpu_ms_per_turn=(cpu or 0) * 10 * (hi - lo) / turns if turns else None,
        loadavg_1m=res.loadavg)
    print(line, flush=True)
    al.append_result(args.out, line)
    return 0


def report(path: Path) -> int:
    rows = al.read_results(path)
    if not rows:
        return 2
    print(f"{'instrument':<11}{'turns':>6}{'worker CPU':>12}{'CPU ms/turn':>13}{'load 1m':>11}  date")
    for r in rows:
        print(f"{r['instrument']:<11}{r['turns']:>6}{r['worker_cpu_pct']:>11.1f}%"
              f"{r['cpu_ms_per_turn'] or 0:>13.0f}{r['loadavg_1m'][0]:>6.1f}-{r['loadavg_1m'][1]:<4.1f}"
              f"  {r['date']}")
    med = {s: statistics.median([r["worker_cpu_pct"] for r in rows if r["instrument"] == s] or [0])
           for s in SETTINGS}
    if med["on"] and med["off"]:
        print(f"median worker CPU: on {med['on']:.1f}%, off {med['off']:.1f}%:"
              f" overhead {100 * (med['on'] - med['off']) / med['off']:+.1f} %")
    per_turn = {s: statistics.median([r["cpu_ms_per_turn"] for r in rows
                                      if r["instrument"] == s and r["cpu_ms_per_turn"]] or [0])
                for s in ("on", "bare")}
    if per_turn["on"] and per_turn["bare"]:
        print(f"median CPU per turn: rig agent {per_turn['on']:.0f} ms, bare session "
              f"{per_turn['bare']:.0f} ms: {per_turn['on'] / per_turn['bare']:.2f}x")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instrument", help="the agent's LKRIG_INSTRUMENT, on or off, or bare (a bare "
                   "AgentSession, bench/bare_agent.py); a list (off,on,bare,on) runs each in turn, "
                   "a fresh stack each")
    p.add_argument("--sessions", type=int, default=2)
    p.add_argument("--duration", type=float, default=90.0)
    p.add_argument("--warmup", type=float, default=al.Load.warmup,
                   help="seconds before the measurement window opens")
    p.add_argument("--port-offset", type=int, default=12900)
    p.add_argument("--run-dir", default=str(Path(tempfile.gettempdir()) / "lkrig-bench-overhead"))
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here")
    p.add_argument("--report", action="store_true", help="print the table of --out and exit")
    args = p.parse_args()
    if args.report:
        return report(Path(args.out))
    if args.instrument is None:
        p.error("--instrument on|off|bare is required (or --report)")
    settings = args.instrument.split(",")
    if bad := [s for s in settings if s not in SETTINGS]:
        p.error(f"--instrument {args.instrument!r}: {bad[0]!r} is not one of {', '.join(SETTINGS)}")
    for instrument in settings:
        if code := asyncio.run(run(args, instrument)):
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
