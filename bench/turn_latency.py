"""Measures, on a fresh native stack: start-up to all-healthy, dispatch-to-join, and the
caller-measured turn latency against the latency the agent injected (a fixed profile).

    .venv/bin/python bench/turn_latency.py [--calls 10] [--agents 1]

Prints a table and appends its values as one JSON line to --out; not a test. The caller's
latency (end of utterance to first agent audio) is injected latency + the agent's end-of-turn
detection (VAD silence + endpointing delay) + transport; the spread of (measured - injected) is
what the rig adds or varies on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import agentload as al  # noqa: E402
from rig import native  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "turn_latency.jsonl"

FIXED = {"stt_final": 100, "llm_ttft": 300, "llm_token": 10, "tts_first_byte": 150, "tool": 0}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--agents", type=int, default=1)
    p.add_argument("--port-offset", type=int, default=7500)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here")
    p.add_argument("--run-dir", help="for the stack and the profile (default: a new temp dir)")
    args = p.parse_args()
    tmp = Path(args.run_dir or tempfile.mkdtemp(prefix="lkrig-bench-"))
    (tmp / "profiles").mkdir(parents=True, exist_ok=True)
    (tmp / "profiles" / "bench_fixed.yaml").write_text(
        "seed: 0\n" + "".join(f"{k}: {{fixed: {v}}}\n" for k, v in FIXED.items()))
    os.environ["LKRIG_PROFILE_DIR"] = str(tmp / "profiles")
    stack = native.NativeStack(native.NativeOptions(
        agents=args.agents, loadgen_workers=0, run_dir=tmp / "run", port_offset=args.port_offset,
        env_file=tmp / "run" / ".env"))
    info = stack.start()
    joins, excess = [], []
    try:
        env = {**os.environ, "LIVEKIT_URL": info.livekit_url, "LIVEKIT_API_KEY": info.api_key,
               "LIVEKIT_API_SECRET": info.api_secret}
        for i in range(args.calls):
            out = subprocess.run(
                [sys.executable, "-m", "loadgen.cli", "--agent-name", info.agent_name,
                 "--scenario", "fix_filler_in_on_enter", "--profile", "bench_fixed",
                 "--seed", str(i), "--listen-first", "--say", "Can you repeat that, please?"],
                capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
            result = json.loads(out.stdout)
            if result["join"]["outcome"] != "ok":
                print("call failed:", result["join"], file=sys.stderr)
                continue
            joins.append(result["join"]["dispatch_to_join_s"])
            turn = result["turns"][1]
            if turn["latency_s"] is not None:
                # a FALLBACK reply: stt_final + llm_ttft + tts_first_byte injected
                excess.append(turn["latency_s"] - (FIXED["stt_final"] + FIXED["llm_ttft"]
                                                   + FIXED["tts_first_byte"]) / 1000)
    finally:
        stack.stop()
    al.append_result(args.out, al.summary_line(
        **al.machine(), agents=args.agents, calls=args.calls, startup_s=info.startup_seconds,
        dispatch_to_join_s=joins, latency_minus_injected_s=excess))
    print(f"stack start to all-healthy ({args.agents} agent(s)): {info.startup_seconds:.1f} s")
    print(f"{'measure':<42}{'n':>4}{'p50':>9}{'p95':>9}{'min':>9}{'max':>9}")
    for name, vals in (("dispatch to agent join (s)", joins),
                       ("turn latency minus injected (s)", excess)):
        if vals:
            print(f"{name:<42}{len(vals):>4}{statistics.median(vals):>9.3f}{pct(vals, .95):>9.3f}"
                  f"{min(vals):>9.3f}{max(vals):>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
