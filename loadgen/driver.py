"""A voice driver: one plain-asyncio process hosting up to --max-callers concurrent callers.

Locust (gevent) never touches the media: it starts drivers (loadgen/pool.py) and talks to them
with JSON lines. A driver runs the conversations (loadgen/conversation.py) and hands the media
of all its calls to one media engine process (loadgen/media.py: WebRTC, Opus, pacing, speech
edges, in Go); all timing is measured there and here, next to the media, never in Locust.

    stdin  (ops):      {"op": "start", "call": "<id>", "spec": Spec.to_dict()}
                       {"op": "cancel", "call": "<id>"}     hang up now (teardown still runs)
                       {"op": "stop"}  or end of input      hang up everything, then exit 0
    stdout (messages): {"type": "ready", "pid": N, "max_callers": N, "media_pid": N}
                       the conversation messages of loadgen/conversation.py (each with "call")
                       {"type": "rejected", "call": "<id>", "reason": "..."}
                       {"type": "stats", "cpu_s": .., "cpu_s_media": .., "wall_s": .., "callers": ..,
                        "lag_ms_max": .., "lag_ms_p99": .., "send_jitter_ms_p50"/"_p99": ..,
                        "send_jitter_hist": [..], "threads": ..}   every --stats-interval seconds
                       (cpu_s: this process and its media engine together)
                       {"type": "bye", "left": [call ids whose teardown did not finish]}

Credentials come from LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET and never appear on
a pipe. SIGINT is ignored (a Ctrl-C reaches the whole process group; Locust decides when the
callers hang up); SIGTERM means stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from typing import Any

from loadgen.conversation import Conversation, Spec
from loadgen.media import MediaEngine, MediaError

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


class Driver:
    def __init__(self, args: argparse.Namespace, out: asyncio.StreamWriter | None) -> None:
        self.args = args
        self._out = out
        self.calls: dict[str, asyncio.Task[None]] = {}
        self.lag = LagMonitor()
        self._stopping = asyncio.Event()
        self._media: MediaEngine | None = None
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
            network=spec.network,
            dead_air_timeout_s=s.dead_air_ms / 1000.0, turn_timeout_s=s.turn_timeout_ms / 1000.0,
            settle_s=s.settle_ms / 1000.0,
        )
        return Caller(cfg, lkapi=self._api, utterances=self._utterances, room_name=spec.room,
                      media=self._media)

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
            media = self._media.last_stats if self._media is not None else {}
            media_cpu = float(media.get("cpu_s", 0.0))
            self.emit({"type": "stats", "cpu_s": round(cpu.user + cpu.system + media_cpu, 3),
                       "cpu_s_media": round(media_cpu, 3),
                       "wall_s": round(time.monotonic() - t0, 3), "callers": len(self.calls),
                       "lag_ms_max": round(lag_max, 2), "lag_ms_p99": round(lag_p99, 2),
                       "send_jitter_ms_p50": round(media.get("send_jitter_ms_p50", 0.0), 2),
                       "send_jitter_ms_p99": round(media.get("send_jitter_ms_p99", 0.0), 2),
                       "frames": media.get("frames", 0), "send_jitter_hist": media.get("send_jitter_hist"),
                       "threads": _thread_count(), "media_goroutines": media.get("goroutines", 0)})

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
        try:
            # The engine's stats come a little more often than ours, so each of ours is fresh.
            self._media = await MediaEngine.start(stats_interval_s=self.args.stats_interval / 2)
        except MediaError as e:
            print(f"loadgen.driver: {e}", file=sys.stderr)
            return 2
        defaults = CallerConfig(self._url, self._key, self._secret)
        self._utterances = UtteranceCache(defaults.lead_ms, defaults.trail_ms)
        http_url = "http" + self._url[2:] if self._url.startswith("ws") else self._url
        self._api = api.LiveKitAPI(http_url, self._key, self._secret,
                                   timeout=aiohttp.ClientTimeout(total=defaults.api_timeout_s))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        helpers = [loop.create_task(self.lag.run()), loop.create_task(self._stats())]
        self.emit({"type": "ready", "pid": os.getpid(), "max_callers": self.args.max_callers,
                   "media_pid": self._media.pid})
        ops = loop.create_task(self._read_ops(reader))
        stop = loop.create_task(self._stopping.wait())
        # A dead media engine ends the driver too: its calls are gone (each already reported
        # agent_lost), and the pool starts a new driver for the next calls.
        engine_gone = loop.create_task(self._media.exited.wait())
        await asyncio.wait({ops, stop, engine_gone}, return_when=asyncio.FIRST_COMPLETED)
        for t in (ops, stop, engine_gone):
            t.cancel()
        if self._media.exited.is_set():
            print(f"loadgen.driver: {self._media.exit_detail}", file=sys.stderr)
        left = await self.shutdown()
        for h in helpers:
            h.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._api.aclose()
        died = self._media.exited.is_set()
        media_rc = await self._media.close()
        if media_rc:
            print(f"loadgen.driver: the media engine exited with code {media_rc}", file=sys.stderr)
        self.emit({"type": "bye", "left": left})
        return 1 if died else 0

    async def shutdown(self) -> list[str]:
        """Hangs up every call; returns the ids whose teardown did not finish in time."""
        tasks = dict(self.calls)
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.wait(tasks.values(), timeout=SHUTDOWN_TIMEOUT_S)
        return [cid for cid, t in tasks.items() if not t.done()]


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadgen.driver", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-callers", type=int, default=10)
    p.add_argument("--stats-interval", type=float, default=STATS_INTERVAL_S)
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
    sys.exit(main())
