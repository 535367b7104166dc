"""Benchmark: does the caller-measured turn latency move by exactly what the agent injects?

Not a test. Two fixed latency profiles that differ only in LLM time-to-first-token and TTS
first byte (A: +0, B: +500 ms in total) run side by side on one agent worker (calls alternate
between them, same script: bench/agentload.py). A caller's turn latency is injected latency +
the agent's end-of-turn detection (VAD silence + endpointing, a near-constant ~0.8 s) + media
path; subtracting A from B cancels everything but the injected difference, so

    error p50 = (p50 latency B - p50 latency A) - (injected B - injected A)
    error p95 = (p95 latency B - p95 latency A) - (injected B - injected A)

is what the rig's measurement adds or loses (goal: 10 ms p50, 25 ms p95). The 90 % interval is a
bootstrap over the turns. --report pools every run in --out.

    .venv/bin/python bench/fidelity.py --duration 150
    .venv/bin/python bench/fidelity.py --report
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import agentload as al

PROFILES = {
    "bench_a": al.fixed_profile(llm_ttft=200, tts_first_byte=100),
    "bench_b": al.fixed_profile(llm_ttft=450, tts_first_byte=350),
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "fidelity.jsonl"


def errors(a: list[float], b: list[float]) -> tuple[float, float]:
    """(p50 error, p95 error) in seconds."""
    diff = al.injected_s(PROFILES["bench_b"]) - al.injected_s(PROFILES["bench_a"])
    return (al.pct(b, 0.5) - al.pct(a, 0.5) - diff,  # type: ignore[operator]
            al.pct(b, 0.95) - al.pct(a, 0.95) - diff)  # type: ignore[operator]


def bootstrap(a: list[float], b: list[float], n: int = 2000,
              ) -> tuple[tuple[float, float], tuple[float, float]]:
    """90 % intervals of the p50 and p95 errors."""
    rng = random.Random(0)
    e50, e95 = [], []
    for _ in range(n):
        x = errors(rng.choices(a, k=len(a)), rng.choices(b, k=len(b)))
        e50.append(x[0])
        e95.append(x[1])
    return ((al.pct(e50, 0.05), al.pct(e50, 0.95)),  # type: ignore[return-value]
            (al.pct(e95, 0.05), al.pct(e95, 0.95)))


def table(a: list[float], b: list[float], runs: str) -> None:
    if len(a) < 2 or len(b) < 2:
        print(f"too few turns: A {len(a)}, B {len(b)}", file=sys.stderr)
        return
    e50, e95 = errors(a, b)
    (l50, h50), (l95, h95) = bootstrap(a, b)
    print(f"runs: {runs}")
    print(f"{'profile':<10}{'injected':>10}{'turns':>7}{'lat p50':>9}{'lat p95':>9}")
    for name, xs in (("bench_a", a), ("bench_b", b)):
        print(f"{name:<10}{al.injected_s(PROFILES[name]) * 1000:>8.0f}ms{len(xs):>7}"
              f"{al.pct(xs, 0.5):>9.3f}{al.pct(xs, 0.95):>9.3f}")
    print(f"error p50: {e50 * 1000:+.1f} ms (90% interval {l50 * 1000:+.1f} .. {h50 * 1000:+.1f})")
    print(f"error p95: {e95 * 1000:+.1f} ms (90% interval {l95 * 1000:+.1f} .. {h95 * 1000:+.1f})")


async def run(args: argparse.Namespace) -> int:
    env = {"LKRIG_PROFILE_DIR": str(al.write_profiles(PROFILES)), "AGENT_LOAD_THRESHOLD": "0.99"}
    with al.stack(args.port_offset, Path(args.run_dir), env) as st:
        load = al.Load(sessions=args.sessions, duration=args.duration, profiles=tuple(PROFILES),
                       warmup=args.warmup)
        res = await al.drive(st, load, st.info.agent_name)
    lat = {p: [t["latency_s"] for t in res.turns if t["profile"] == p] for p in PROFILES}
    line = al.summary_line(**al.machine(), sessions=args.sessions, duration_s=args.duration,
                           warmup_s=args.warmup, failed_turns=res.other_turns, loadavg_1m=res.loadavg,
                           latency_s=lat)
    al.append_result(args.out, line)
    table(lat["bench_a"], lat["bench_b"], "this run")
    return 0


def report(path: Path) -> int:
    rows = al.read_results(path)
    if not rows:
        return 2
    a = [x for r in rows for x in r["latency_s"]["bench_a"]]
    b = [x for r in rows for x in r["latency_s"]["bench_b"]]
    runs = "; ".join(f"{r['date']} ({r['sessions']} sessions, load {r['loadavg_1m'][0]:.1f}-"
                     f"{r['loadavg_1m'][1]:.1f})" for r in rows)
    table(a, b, runs)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=2, help="concurrent conversations")
    p.add_argument("--duration", type=float, default=150.0, help="seconds")
    p.add_argument("--warmup", type=float, default=al.Load.warmup,
                   help="seconds from the first call to the measurement window")
    p.add_argument("--port-offset", type=int, default=12900)
    p.add_argument("--run-dir", default=str(Path(tempfile.gettempdir()) / "lkrig-bench-fidelity"))
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here")
    p.add_argument("--report", action="store_true", help="pool every run in --out and print")
    args = p.parse_args()
    if args.report:
        return report(Path(args.out))
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
