"""A voice driver: one plain-asyncio process hosting up to --max-callers concurrent callers.

Locust (gevent) never touches livekit.rtc: it starts drivers (loadgen/pool.py) and talks to them
with JSON lines. This process never imports gevent, so the SDK's threads, locks and executor
work as designed; all timing is measured here, next to the media.

    stdin  (ops):      {"op": "start", "call": "<id>", "spec": Spec.to_dict()}
                       {"op": "cancel", "call": "<id>"}     hang up now (teardown still runs)
                       {"op": "stop"}  or end of input      hang up everything, then exit 0
    stdout (messages): {"type": "ready", "pid": N, "max_callers": N, "event_routing": bool}
                       the conversation messages of loadgen/conversation.py (each with "call")
                       {"type": "rejected", "call": "<id>", "reason": "..."}
                       {"type": "stats", "cpu_s": .., "wall_s": .., "callers": .., "lag_ms_max": ..,
                        "lag_ms_p99": .., "threads": ..}    every --stats-interval seconds
                       {"type": "bye", "left": [call ids whose teardown did not finish]}

Credentials come from LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET and never appear on
the pipe. SIGINT is ignored (a Ctrl-C reaches the whole process group; Locust decides when the
callers hang up); SIGTERM means stop.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from typing import Any

from loadgen.conversation import Conversation, Spec
from loadgen.hard_exit import exit_now

STATS_INTERVAL_S = 2.0
# Teardown of one caller is at most ~5 steps x CallerConfig.teardown_timeout_s; after this the
# driver exits anyway and names the calls that did not finish.
SHUTDOWN_TIMEOUT_S = 30.0


class LagMonitor:
    """Event-loop lag: how late a 50 ms sleep wakes up. A loaded driver shows it first."""

    def __init__(self, period_s: float = 0.05) -> None:
        self.period_s = period_s
        self.samples: deque[float] = deque(maxlen=2000)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.period_s)
            self.samples.append(max(0.0, loop.time() - t - self.period_s))

    def take(self) -> tuple[float, float]:
        """(max, p99) in ms since the last take()."""
        xs = sorted(self.samples)
        self.samples.clear()
        if not xs:
            return 0.0, 0.0
        return xs[-1] * 1000.0, xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000.0


class SendPacing:
    """How late each mic frame reaches AudioSource.capture_frame against a real-time schedule.

    Within one utterance (a run of frames with no idle gap), frame i may be handed over as soon
    as the source's queue has room for it: at run_start + max(0, audio_before_i - queue). The
    lateness against that is the "frame-send jitter"; once it exceeds the queue the listener
    hears a gap. Wraps the class method (timing only, behaviour unchanged).
    """

    # Upper bounds (ms) of the cumulative lateness histogram sent with every stats message.
    BUCKETS_MS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0,
                  500.0, 1000.0, float("inf"))

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.hist = [0] * len(self.BUCKETS_MS)
        self._runs: dict[int, list[float]] = {}  # id(source) -> [run_start, audio_s, last_call]

    def record(self, source_id: int, now: float, frame_s: float, queue_s: float) -> None:
        run = self._runs.get(source_id)
        if run is None or now > run[0] + run[1] + 0.1:  # the queue had long run dry: new utterance
            run = self._runs[source_id] = [now, 0.0, now]
        else:
            ideal = run[0] + max(0.0, run[1] - queue_s)
            late = max(0.0, now - ideal)
            self.samples.append(late)
            self.hist[bisect.bisect_left(self.BUCKETS_MS, late * 1000.0)] += 1
        run[1] += frame_s
        run[2] = now

    def take(self) -> tuple[float, float, int]:
        """(p50, p99) in ms and the number of frames since the last take()."""
        stale = time.monotonic() - 10.0  # sources of finished calls (ids get reused)
        self._runs = {k: r for k, r in self._runs.items() if r[2] >= stale}
        xs = sorted(self.samples)
        self.samples = []
        if not xs:
            return 0.0, 0.0, 0
        return (xs[len(xs) // 2] * 1000.0, xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000.0,
                len(xs))

    def install(self, queue_frames: int = 2) -> None:
        from livekit import rtc

        orig = rtc.AudioSource.capture_frame
        pacing = self

        async def capture_frame(src: rtc.AudioSource, frame: rtc.AudioFrame) -> None:
            frame_s = frame.samples_per_channel / frame.sample_rate
            pacing.record(id(src), time.monotonic(), frame_s, queue_frames * frame_s)
            await orig(src, frame)

        rtc.AudioSource.capture_frame = capture_frame  # type: ignore[method-assign]


class Driver:
    def __init__(self, args: argparse.Namespace, out: asyncio.StreamWriter | None) -> None:
        self.args = args
        self._out = out
        self.calls: dict[str, asyncio.Task[None]] = {}
        self.lag = LagMonitor()
        self.pacing = SendPacing()
        self.routed = False
        self._stopping = asyncio.Event()
        self._api: Any = None
        self._utterances: Any = None
        self._url = os.environ.get("LIVEKIT_URL", "")
        self._key = os.environ.get("LIVEKIT_API_KEY", "")
        self._secret = os.environ.get("LIVEKIT_API_SECRET", "")

    def emit(self, msg: dict[str, Any]) -> None:
        line = json.dumps(msg, separators=(",", ":")) + "\n"
        if self._out is None:
            sys.stdout.write(line)
            sys.stdout.flush()
        elif not self._out.is_closing():
            self._out.write(line.encode())

    def _make_caller(self, spec: Spec) -> Any:
        from loadgen.caller import Caller, CallerConfig

        s = spec.script
        cfg = CallerConfig(
            self._url, self._key, self._secret,
            agent_name=spec.agent_name, scenario=spec.scenario, profile=spec.profile, seed=spec.seed,
            dead_air_timeout_s=s.dead_air_ms / 1000.0, turn_timeout_s=s.turn_timeout_ms / 1000.0,
            settle_s=s.settle_ms / 1000.0, send_chunk_ms=self.args.chunk_ms,
            recv_frame_ms=self.args.recv_frame_ms, recv_sample_rate=self.args.recv_rate,
        )
        return Caller(cfg, lkapi=self._api, utterances=self._utterances, room_name=spec.room)

    def start_call(self, call_id: str, raw_spec: dict[str, Any]) -> None:
        if call_id in self.calls:
            self.emit({"type": "rejected", "call": call_id, "reason": "duplicate call id"})
            return
        if len(self.calls) >= self.args.max_callers:
            self.emit({"type": "rejected", "call": call_id,
                       "reason": f"driver full ({self.args.max_callers} callers)"})
            return
        try:
            spec = Spec.from_dict(raw_spec)
        except (KeyError, TypeError, ValueError) as e:
            self.emit({"type": "rejected", "call": call_id, "reason": f"bad spec: {e!r}"[:300]})
            return
        conv = Conversation(call_id, spec, self._make_caller, self.emit)
        task = asyncio.get_running_loop().create_task(conv.run(), name=f"call-{call_id}")
        self.calls[call_id] = task
        task.add_done_callback(lambda _t: self.calls.pop(call_id, None))

    def cancel_call(self, call_id: str) -> None:
        task = self.calls.get(call_id)
        if task is not None:
            task.cancel()

    async def _stats(self) -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(self.args.stats_interval)
            cpu = os.times()
            lag_max, lag_p99 = self.lag.take()
            send_p50, send_p99, frames = self.pacing.take()
            self.emit({"type": "stats", "cpu_s": round(cpu.user + cpu.system, 3),
                       "wall_s": round(time.monotonic() - t0, 3), "callers": len(self.calls),
                       "lag_ms_max": round(lag_max, 2), "lag_ms_p99": round(lag_p99, 2),
                       "send_jitter_ms_p50": round(send_p50, 2), "send_jitter_ms_p99": round(send_p99, 2),
                       "frames": frames, "send_jitter_hist": self.pacing.hist,
                       "threads": _thread_count(),
                       **({"cpu_by_thread": thread_cpu()} if self.args.thread_cpu else {})})

    async def _read_ops(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return  # the parent went away: hang up everything
            try:
                msg = json.loads(line)
                op = msg["op"]
            except (ValueError, KeyError, TypeError):
                print(f"loadgen.driver: ignoring a malformed op line: {line[:200]!r}", file=sys.stderr)
                continue
            if op == "start":
                self.start_call(str(msg.get("call")), msg.get("spec") or {})
            elif op == "cancel":
                self.cancel_call(str(msg.get("call")))
            elif op == "stop":
                return
            else:
                print(f"loadgen.driver: unknown op {op!r}", file=sys.stderr)

    async def run(self, reader: asyncio.StreamReader) -> int:
        import aiohttp

        from livekit import api
        from loadgen.audio import UtteranceCache
        from loadgen.caller import CallerConfig

        missing = [n for n, v in (("LIVEKIT_URL", self._url), ("LIVEKIT_API_KEY", self._key),
                                  ("LIVEKIT_API_SECRET", self._secret)) if not v]
        if missing:
            print(f"loadgen.driver: {', '.join(missing)} not set in the environment", file=sys.stderr)
            return 2
        defaults = CallerConfig(self._url, self._key, self._secret)
        self._utterances = UtteranceCache(defaults.lead_ms, defaults.trail_ms)
        http_url = "http" + self._url[2:] if self._url.startswith("ws") else self._url
        self._api = api.LiveKitAPI(http_url, self._key, self._secret,
                                   timeout=aiohttp.ClientTimeout(total=defaults.api_timeout_s))
        if self.args.event_routing == "on":
            from loadgen import ffi_routing

            self.routed = ffi_routing.install()
        self.pacing.install()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        helpers = [loop.create_task(self.lag.run()), loop.create_task(self._stats())]
        self.emit({"type": "ready", "pid": os.getpid(), "max_callers": self.args.max_callers,
                   "event_routing": self.routed})
        ops = loop.create_task(self._read_ops(reader))
        stop = loop.create_task(self._stopping.wait())
        await asyncio.wait({ops, stop}, return_when=asyncio.FIRST_COMPLETED)
        ops.cancel()
        stop.cancel()
        left = await self.shutdown()
        for h in helpers:
            h.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._api.aclose()
        self.emit({"type": "bye", "left": left})
        return 0

    async def shutdown(self) -> list[str]:
        """Hangs up every call; returns the ids whose teardown did not finish in time."""
        tasks = dict(self.calls)
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.wait(tasks.values(), timeout=SHUTDOWN_TIMEOUT_S)
        return [cid for cid, t in tasks.items() if not t.done()]


def thread_cpu() -> dict[str, float]:
    """CPU seconds by thread name (digits stripped) from /proc: where a driver's time goes."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1 : st.rindex(")")].rstrip("0123456789-_ #") or "?"
        fields = st[st.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadgen.driver", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-callers", type=int, default=10)
    p.add_argument("--chunk-ms", type=int, default=20, help="mic capture chunk")
    p.add_argument("--recv-frame-ms", type=int, default=20, help="AudioStream frame size")
    p.add_argument("--recv-rate", type=int, default=48000, help="AudioStream sample rate")
    p.add_argument("--event-routing", choices=("on", "off"), default="on",
                   help="route FFI events by handle (loadgen/ffi_routing.py; pinned SDK versions only)")
    p.add_argument("--stats-interval", type=float, default=STATS_INTERVAL_S)
    p.add_argument("--thread-cpu", action="store_true",
                   help="add CPU seconds by thread name to every stats message (benchmarks)")
    return p


async def _amain(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(), sys.stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    driver = Driver(args, writer)
    try:
        return await driver.run(reader)
    finally:
        with contextlib.suppress(Exception):
            await writer.drain()
        transport.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_callers < 1:
        print("loadgen.driver: --max-callers must be >= 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return asyncio.run(_amain(args))


if __name__ == "__main__":
    exit_now(main())
