"""The callers' media engine: one `lkmedia` process (loadgen/lkmedia, Go) for many calls.

The conversation logic and its timing rules stay in Python (loadgen/caller.py,
loadgen/conversation.py); the per-frame work (WebRTC, Opus, pacing the microphone, segmenting
the agent's audio) runs in the Go process, which sends back only what a caller decides on:
participants, tracks, data packets, speech edges and when an utterance was played. Times are
CLOCK_MONOTONIC seconds on both sides.

    engine = await MediaEngine.start()
    room = engine.room("call-1", handler)     # handler.on_media(event) for that call's events
    await room.join("lkrig-abc", "caller-abc", timeout_s=10)
    speech_start, eou = await room.play(utterance)
    await room.leave()
    await engine.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lkrig_instrument import envnames

from loadgen.audio import Utterance

SOURCE_DIR = Path(__file__).resolve().parent / "lkmedia"
READY_TIMEOUT_S = 30.0


class MediaError(RuntimeError):
    """The media engine is missing, would not start, or died."""


@dataclass(frozen=True)
class Played:
    """An utterance as played: CLOCK_MONOTONIC when its first and last speech samples left the
    microphone, and the one-way delay the call's uplink impairment added to the packets that
    carried them (0 without one; a lost packet's drawn delay all the same, eou_lost says so)."""

    speech_start: float
    eou: float
    start_delay: float = 0.0
    eou_delay: float = 0.0
    eou_lost: bool = False


def _source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(SOURCE_DIR.iterdir()):
        if p.suffix in (".go", ".mod", ".sum") and not p.name.endswith("_test.go"):
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def binary_path() -> Path:
    """Where the build of this checkout's sources lives (scripts/setup builds it)."""
    override = os.environ.get("LKMEDIA_BIN")
    if override:
        return Path(override)
    cache = Path(envnames.get("LKRIG_CACHE") or Path.home() / ".cache" / "lkrig")
    return cache / "lkmedia" / _source_hash() / "lkmedia"


def ensure_binary() -> Path:
    """The engine's binary, built from loadgen/lkmedia with `go build` the first time this
    checkout's sources are used (needs Go and libopus-dev; scripts/setup installs both)."""
    path = binary_path()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    if os.environ.get("LKMEDIA_BIN"):
        raise MediaError(f"LKMEDIA_BIN={path} is not an executable file")
    go = shutil.which("go")
    if go is None:
        raise MediaError("building the media engine needs the Go toolchain ('go' on PATH)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".lkmedia.{os.getpid()}")
    build = subprocess.run([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=SOURCE_DIR,
                           capture_output=True, text=True, timeout=900, check=False)
    if build.returncode != 0:
        hint = " (libopus-dev missing? apt-get install libopus-dev pkg-config)" \
            if "opus" in build.stderr else ""
        raise MediaError(f"could not build the media engine in {SOURCE_DIR}{hint}: "
                         f"{build.stderr.strip()[-800:]}")
    os.replace(tmp, path)  # concurrent builders: the last rename wins, each file is whole
    return path


class Handler(Protocol):
    def on_media(self, event: dict[str, Any]) -> None: ...


class MediaEngine:
    """The lkmedia process and the routing of its events to the calls' handlers."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.last_stats: dict[str, Any] = {}
        self.on_stats: Callable[[dict[str, Any]], None] | None = None
        self._handlers: dict[str, Handler] = {}
        self._waiters: dict[tuple[str, str, int], asyncio.Future[dict[str, Any]]] = {}
        self._seq = 0
        self._reader: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()
        self.exit_detail = ""

    @classmethod
    async def start(cls, stats_interval_s: float = 2.0, env: dict[str, str] | None = None) -> MediaEngine:
        binary = await asyncio.to_thread(ensure_binary)
        proc = await asyncio.create_subprocess_exec(
            str(binary), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env if env is not None else dict(os.environ), limit=1 << 20)
        engine = cls(proc)
        assert proc.stdout is not None
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
            ready = json.loads(first) if first else {}
        except (TimeoutError, ValueError):
            ready = {}
        if ready.get("ev") != "ready":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            rc = await proc.wait()
            raise MediaError(f"the media engine {binary} did not start (exit code {rc}); its "
                             "stderr is above")
        engine._send({"op": "config", "stats_every": stats_interval_s})
        engine._reader = asyncio.get_running_loop().create_task(engine._read())
        return engine

    # ---- plumbing ----------------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> bool:
        stdin = self.proc.stdin
        if self.exited.is_set() or stdin is None or stdin.is_closing():
            return False
        stdin.write((json.dumps(msg, separators=(",", ":")) + "\n").encode())
        return True

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _expect(self, call: str, ev: str, key: int) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[(call, ev, key)] = fut
        return fut

    def _resolve(self, call: str, ev: str, key: int, msg: dict[str, Any]) -> bool:
        fut = self._waiters.pop((call, ev, key), None)
        if fut is not None and not fut.done():
            fut.set_result(msg)
            return True
        return False

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for line in self.proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    print(f"loadgen.media: not JSON from lkmedia: {line[:200]!r}", file=sys.stderr)
                    continue
                self._dispatch(msg)
        finally:
            rc = await self.proc.wait()
            self.exit_detail = f"the media engine (pid {self.pid}) exited with code {rc}"
            self.exited.set()
            gone = {"ev": "engine_exit", "detail": self.exit_detail, "t": time.monotonic()}
            for fut in self._waiters.values():
                if not fut.done():
                    fut.set_result(gone)
            self._waiters.clear()
            for call, h in list(self._handlers.items()):
                h.on_media({**gone, "id": call})

    def _dispatch(self, msg: dict[str, Any]) -> None:
        ev, call = msg.get("ev"), msg.get("id", "")
        if ev == "stats":
            self.last_stats = msg
            if self.on_stats is not None:
                self.on_stats(msg)
            return
        if ev in ("joined", "join_failed"):
            self._resolve(call, "join", 0, msg)
        elif ev == "left":
            self._resolve(call, "left", 0, msg)
            self._handlers.pop(call, None)
            return
        elif ev == "played":
            self._resolve(call, "played", int(msg.get("play", 0)), msg)
            return
        elif ev == "data_sent":
            self._resolve(call, "data_sent", int(msg.get("seq", 0)), msg)
            return
        h = self._handlers.get(call)
        if h is not None:
            h.on_media(msg)

    # ---- API -----------------------------------------------------------------------------

    def room(self, call_id: str, handler: Handler) -> MediaRoom:
        self._handlers[call_id] = handler
        return MediaRoom(self, call_id)

    @property
    def calls(self) -> int:
        return len(self._handlers)

    async def close(self, timeout_s: float = 30.0) -> int | None:
        """End of input: the engine hangs up every call it still has, then exits."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        try:
            await asyncio.wait_for(self.exited.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.exited.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        return self.proc.returncode


class MediaRoom:
    """One call's view of the engine."""

    def __init__(self, engine: MediaEngine, call_id: str) -> None:
        self.engine = engine
        self.id = call_id
        self._play = 0

    async def _wait(self, fut: asyncio.Future[dict[str, Any]], timeout_s: float | None) -> dict[str, Any]:
        # Never cancel the future on a timeout: a late reply must still find it.
        done, _ = await asyncio.wait({fut}, timeout=timeout_s)
        if not done:
            raise TimeoutError
        return fut.result()

    async def join(self, room: str, identity: str, timeout_s: float, *, as_agent: bool = False,
                   listen: bool = True, network: dict[str, Any] | None = None, trace: bool = False,
                   listen_all: bool = False) -> dict[str, Any]:
        """{"ev": "joined", "connect_s", "participants": [...]} or {"ev": "join_failed", "step",
        "error"}; the engine bounds it by timeout_s. as_agent: join as an agent-kind participant;
        listen=False: subscribe to nothing; listen_all: hear every participant, not only agents.
        network: this call's impairment (loadgen.netprofile.Network.engine(seed); None: none);
        trace: a "tx" event per RTP packet sent and an "rx" one per packet received."""
        fut = self.engine._expect(self.id, "join", 0)
        op: dict[str, Any] = {"op": "join", "id": self.id, "room": room, "identity": identity,
                              "timeout_s": timeout_s, "as_agent": as_agent, "no_listen": not listen}
        if network is not None:
            op["network"] = network
        if trace:
            op["trace"] = True
        if listen_all:
            op["listen_all"] = True
        if not self.engine._send(op):
            return {"ev": "join_failed", "step": "connect_error", "error": "the media engine is not running"}
        return await self._wait(fut, None)

    async def play(self, u: Utterance, not_before: float = 0.0) -> tuple[float, float]:
        """Plays `u` from the next 20 ms frame at or after `not_before`; returns (speech start,
        end of utterance) as played, once the last speech sample has been sent (the trailing
        silence goes on after). Cancelling it stops the utterance."""
        p = await self.play_ex(u, not_before)
        return p.speech_start, p.eou

    async def play_ex(self, u: Utterance, not_before: float = 0.0) -> Played:
        """play(), with what the call's uplink impairment added to the packets that carried the
        first and the last speech sample."""
        if not u.source:
            raise ValueError("utterance has no rendered source file")
        self._play += 1
        n = self._play
        played = self.engine._expect(self.id, "played", n)
        layout = {"file": u.source, "offset": u.source_offset, "speech": u.speech_end - u.speech_start,
                  "lead": u.speech_start, "trail": u.pcm.size - u.speech_end}
        self.engine._send({"op": "play", "id": self.id, "play": n, "layout": layout,
                           "not_before": not_before})
        try:
            msg = await self._wait(played, None)
        except asyncio.CancelledError:
            self.engine._send({"op": "stop_play", "id": self.id})
            raise
        if msg.get("error") or msg.get("cancelled") or msg.get("ev") == "engine_exit":
            raise MediaError(f"play: {msg.get('error') or msg.get('detail') or 'cancelled'}")
        return Played(float(msg["speech_start"]), float(msg["eou"]), float(msg.get("start_delay") or 0.0),
                      float(msg.get("eou_delay") or 0.0), bool(msg.get("eou_lost")))

    async def publish_data(self, topic: str, payload: str, timeout_s: float) -> None:
        """Reliable data packet; raises on failure or after timeout_s."""
        seq = self.engine._next_seq()
        fut = self.engine._expect(self.id, "data_sent", seq)
        self.engine._send({"op": "data", "id": self.id, "seq": seq, "topic": topic, "payload": payload})
        msg = await self._wait(fut, timeout_s)
        if msg.get("error") or msg.get("ev") == "engine_exit":
            raise MediaError(msg.get("error") or msg.get("detail") or "data not sent")

    async def leave(self, timeout_s: float = 5.0) -> list[str]:
        """Stops the microphone, disconnects; returns what went wrong (nothing: [])."""
        fut = self.engine._expect(self.id, "left", 0)
        if not self.engine._send({"op": "leave", "id": self.id, "timeout_s": timeout_s}):
            self.engine._handlers.pop(self.id, None)
            return []
        try:
            msg = await self._wait(fut, timeout_s * 3)
        except TimeoutError:
            return ["leave: no answer from the media engine"]
        return list(msg.get("errors") or [])
