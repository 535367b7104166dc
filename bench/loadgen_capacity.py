"""Benchmark: how many full callers a loadgen core sustains at real-time pacing (prints numbers).

Not a test. Runs the real voice drivers (`python -m loadgen.driver`, what Locust starts) against a
real livekit-server; the far end is bench/responder.py, a stand-in agent that costs little and
reports exactly when it spoke, so that

    turn-latency error = caller-measured onset of the reply - the reply's true first sample

(CLOCK_MONOTONIC is shared by every process on the host). The error has a fixed part (Opus
framing, jitter buffer, decode: the media path a real caller hears too) and a load-dependent
part; "spread" is the error minus its median at the lowest caller count, which is what load adds.

Per caller count N it prints: drivers' CPU (% of one core, each driver with its media engine)
per caller and callers per core, turn outcomes, error p50/p95, spread p95, frame-send jitter
p50/p99 (the media engine's microphone pacing), event-loop lag, threads, as one JSON line, also
appended to --out (bench/results/loadgen_capacity.jsonl).

    python bench/loadgen_capacity.py --callers 5,40,80,100 --duration 60 --driver-cpus 1 --far-cpus 0
    # uses LIVEKIT_URL/LIVEKIT_API_KEY/LIVEKIT_API_SECRET if set, else starts livekit-server
    # itself (rig.native, --port-offset, default 4000)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadgen.conversation import Spec  # noqa: E402
from loadgen.convscript import Script, Turn  # noqa: E402

# Upper bounds (ms) of the media engine's frame-send lateness histogram (loadgen/lkmedia/call.go).
SEND_BUCKETS_MS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0,
                   500.0, 1000.0, math.inf)
TEXTS = ("What programs do you have for kids?", "She is seven years old, and a girl.",
         "Do you have anything on Saturday morning?")
DEFAULT_OUT = REPO / "bench" / "results" / "loadgen_capacity.jsonl"
BENCH_SCRIPT = Script(
    name="bench", path="<bench>", greeting=False, think_ms=(300.0, 900.0), settle_ms=1000.0,
    dead_air_ms=5000.0, turn_timeout_ms=15000.0,
    turns=tuple(Turn(f"t{i + 1}", t) for i, t in enumerate(TEXTS)),
)


class Proc:
    """A child speaking JSON lines; messages go to `on_msg`."""

    def __init__(self, argv: list[str], on_msg: Any, env: dict[str, str]) -> None:
        self.argv, self.on_msg, self.env = argv, on_msg, env
        self.p: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.p = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=self.env, cwd=REPO, limit=1 << 22)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.p is not None and self.p.stdout is not None
        while line := await self.p.stdout.readline():
            with contextlib.suppress(ValueError):
                self.on_msg(self, json.loads(line))
        self.on_msg(self, {"type": "eof"})

    def send(self, msg: dict[str, Any]) -> None:
        assert self.p is not None and self.p.stdin is not None
        self.p.stdin.write((json.dumps(msg) + "\n").encode())

    async def close(self, timeout: float = 60.0) -> int | None:
        assert self.p is not None and self.p.stdin is not None
        with contextlib.suppress(Exception):
            self.p.stdin.close()
        try:
            rc = await asyncio.wait_for(self.p.wait(), timeout)
        except TimeoutError:
            self.p.kill()
            rc = await self.p.wait()
        if self.reader:
            await self.reader
        return rc


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def hist_pct(hist: list[int], p: float) -> float | None:
    total = sum(hist)
    if not total:
        return None
    acc = 0
    for bound, n in zip(SEND_BUCKETS_MS, hist, strict=True):
        acc += n
        if acc >= p * total:
            return bound
    return math.inf


async def run_level(n: int, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    drivers_n = math.ceil(n / args.per_driver)
    responders_n = math.ceil(n / args.rooms_per_responder)
    waiters: dict[str, asyncio.Future[None]] = {}
    owner: dict[str, Proc] = {}
    dead: list[float] = []  # when each driver's output ended
    turns: list[dict[str, Any]] = []
    outcomes: dict[str, int] = {}
    stats: dict[int, list[dict[str, Any]]] = {}

    def on_driver(proc: Proc, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "stats":
            stats.setdefault(id(proc), []).append({**msg, "t": time.monotonic()})
        elif kind == "turn" and msg["kind"] == "turn":
            turns.append(msg["result"])
        elif kind == "conversation":
            outcomes[msg["outcome"]] = outcomes.get(msg["outcome"], 0) + 1
        elif kind in ("closed", "rejected"):
            fut = waiters.pop(msg["call"], None)
            if fut and not fut.done():
                fut.set_result(None)
        elif kind == "eof":  # a driver died: its calls never close
            dead.append(time.monotonic())
            for call, p in list(owner.items()):
                if p is proc and call in waiters:
                    waiters.pop(call).set_result(None)

    driver_argv = [sys.executable, "-m", "loadgen.driver", "--max-callers", str(args.per_driver),
                   "--stats-interval", "1"]
    def pinned(argv: list[str], cpus: str | None) -> list[str]:
        return ["taskset", "-c", cpus, *argv] if cpus else argv

    drivers = [Proc(pinned(driver_argv, args.driver_cpus), on_driver, env) for _ in range(drivers_n)]
    responders = [Proc(pinned([sys.executable, str(REPO / "bench" / "responder.py")], args.far_cpus),
                       lambda *_: None, env) for _ in range(responders_n)]
    for p in drivers + responders:
        await p.start()
    t_start = time.monotonic()
    ramp = max(2.0, n / args.join_rate)
    measure_from = t_start + ramp + 5.0
    deadline = t_start + ramp + args.duration

    async def slot(i: int) -> None:
        await asyncio.sleep(i / args.join_rate)
        k = 0
        while time.monotonic() < deadline:
            room = f"bench-{uuid.uuid4().hex[:10]}"
            call = f"{i}-{k}"
            k += 1
            responders[i % responders_n].send({"op": "join", "room": room, "seed": i * 1000 + k})
            spec = Spec(script=BENCH_SCRIPT, scenario="bench", profile="bench", seed=i * 1000 + k,
                        agent_name="lkrig-bench-nobody", room=room)
            fut = waiters[call] = asyncio.get_running_loop().create_future()
            d = drivers[i % drivers_n]
            if d.p is None or d.p.returncode is not None:
                return
            owner[call] = d
            d.send({"op": "start", "call": call, "spec": spec.to_dict()})
            await fut

    load_before = os.getloadavg()[0]
    await asyncio.gather(*(slot(i) for i in range(n)))
    load_after = os.getloadavg()[0]
    if args.raw:
        with open(args.raw, "a") as f:
            for t in turns:
                f.write(json.dumps({"n": n, **t}) + "\n")
            for series in stats.values():
                for s in series:
                    f.write(json.dumps({"n": n, "stats": s}) + "\n")
    t_end = time.monotonic()
    rcs = [await p.close() for p in drivers + responders]

    # CPU of the drivers over the measurement window (after the ramp), from their own stats.
    cpu = media_cpu = 0.0
    wall = 0.0
    lag = []
    hist = [0] * len(SEND_BUCKETS_MS)
    threads = []
    for series in stats.values():
        window = [s for s in series if measure_from <= s["t"] <= deadline]
        if len(window) >= 2:
            cpu += window[-1]["cpu_s"] - window[0]["cpu_s"]
            media_cpu += window[-1]["cpu_s_media"] - window[0]["cpu_s_media"]
            wall = max(wall, window[-1]["wall_s"] - window[0]["wall_s"])
            lag += [s["lag_ms_p99"] for s in window]
            threads.append(max(s["threads"] for s in window))
        if series and series[-1].get("send_jitter_hist"):
            hist = [a + b for a, b in zip(hist, series[-1]["send_jitter_hist"], strict=True)]
    errors = []
    latencies = []
    for t in turns:
        if t["latency_s"] is None:
            continue
        latencies.append(t["latency_s"])
        truth = [e["speech_start"] for e in t["events"] if e.get("event") == "bench_reply"]
        if truth:
            errors.append((t["eou"] + t["latency_s"] - truth[0]) * 1000.0)
    cpu_pct = 100.0 * cpu / wall if wall else float("nan")
    per_caller = cpu_pct / n
    turn_outcomes: dict[str, int] = {}
    for t in turns:
        turn_outcomes[t["outcome"]] = turn_outcomes.get(t["outcome"], 0) + 1
    return {
        "callers": n, "drivers": drivers_n, "per_driver": args.per_driver,
        "driver_cpus": args.driver_cpus, "far_cpus": args.far_cpus,
        "wall_s": round(t_end - t_start, 1), "window_s": round(wall, 1),
        "driver_cpu_pct": round(cpu_pct, 1), "cpu_pct_per_caller": round(per_caller, 3),
        "media_engine_share": round(media_cpu / cpu, 2) if cpu else None,
        "callers_per_core": round(100.0 / per_caller, 1) if per_caller > 0 else None,
        "turns": turn_outcomes, "conversations": outcomes,
        "err_ms": errors,
        "latency_ms_p50": round(1000 * (pct(latencies, 0.5) or 0), 1),
        "send_jitter_ms_p50": hist_pct(hist, 0.5), "send_jitter_ms_p99": hist_pct(hist, 0.99),
        "loop_lag_ms_p99_max": round(max(lag), 1) if lag else None,
        "threads_per_driver_max": max(threads) if threads else None,
        "loadavg_1m": [round(load_before, 1), round(load_after, 1)],
        "exit_codes": rcs, "drivers_died_early": sum(1 for t in dead if t < t_end),
    }


def _cpu_range(part: str) -> range:
    lo, _, hi = part.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def summarize(res: dict[str, Any], baseline: float | None) -> dict[str, Any]:
    errs = res.pop("err_ms")
    out = dict(res)
    out["turns_measured"] = len(errs)
    out["err_ms_p50"] = round(statistics.median(errs), 1) if errs else None
    out["err_ms_p95"] = round(pct(errs, 0.95) or 0, 1) if errs else None
    if errs and baseline is not None:
        spread = [abs(e - baseline) for e in errs]
        out["spread_ms_p95"] = round(pct(spread, 0.95) or 0, 1)
    return out


async def amain(args: argparse.Namespace) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), str(REPO / "instrument"), os.environ.get("PYTHONPATH")])))
    stack = None
    if not all(env.get(k) for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")):
        from rig import native

        run_dir = Path(args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        stack = native.NativeStack(native.NativeOptions(
            agents=0, loadgen_workers=0, run_dir=run_dir, port_offset=args.port_offset,
            env_file=run_dir / ".env", say=lambda _m: None))
        info = stack.start()
        env.update(LIVEKIT_URL=info.livekit_url, LIVEKIT_API_KEY=info.api_key,
                   LIVEKIT_API_SECRET=info.api_secret)
        if args.far_cpus:  # the server shares the far end's cores, away from the drivers
            cpus = {int(c) for part in args.far_cpus.split(",") for c in _cpu_range(part)}
            for name, pid in info.pids.items():
                if name.startswith("livekit"):
                    os.sched_setaffinity(pid, cpus)
    # Render the utterances once, before any process needs them.
    from bench.responder import REPLY
    from loadgen.audio import render

    for text in (*TEXTS, REPLY):
        render(text)
    baseline = None
    try:
        for n in [int(x) for x in args.callers.split(",")]:
            res = await run_level(n, args, env)
            errs = res["err_ms"]
            if baseline is None and errs:
                baseline = statistics.median(errs)
            line = json.dumps(summarize(res, baseline))
            print(line, flush=True)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(line + "\n")
    finally:
        if stack is not None:
            left = stack.stop()
            if left:
                print(f"bench: could not stop {left}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    """The options; bench/lk_compare.py takes run_level's settings from here too (its defaults)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callers", default="5,20,40", help="comma-separated caller counts (first = baseline)")
    p.add_argument("--per-driver", type=int, default=50, help="callers per voice driver process")
    p.add_argument("--rooms-per-responder", type=int, default=100)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per level after the ramp")
    p.add_argument("--join-rate", type=float, default=4.0, help="new callers per second while ramping")
    p.add_argument("--driver-cpus", help="run the drivers (and their media engines) on these CPUs "
                   "only (taskset -c list, e.g. 1): callers per loadgen core, measured on one core")
    p.add_argument("--far-cpus", help="run the stand-in agents, and the livekit-server the benchmark "
                   "starts, on these CPUs (e.g. 0)")
    p.add_argument("--raw", help="append every turn result and driver stats line to this file")
    p.add_argument("--port-offset", type=int, default=4000)
    p.add_argument("--run-dir", default=str(Path(tempfile.gettempdir()) / "lkrig-bench"))
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines are appended here (one per level)")
    return p


def main() -> int:
    return asyncio.run(amain(parser().parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
