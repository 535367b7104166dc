"""The echo rooms of bench/lk_compare.py: `lk perf agent-load-test --rooms N` (or `lkpub -echo`,
its stand-in) against bench/responder.py as the agent.

lk opens one room at a time, publishes its echo participant's track, dispatches ECHO_AGENT and
waits for an agent-kind participant to join before the next room. The responder does not
register as a worker (lk's dispatch stays pending): a watcher joins it to every new room as an
agent-kind participant that speaks its reply every TALK_EVERY_S, and lk's echo participant sends
every payload it hears back 5 s later, undecoded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import loadgen_capacity as lc
from bench.lkmeter import incoming_packets, proc_cpu_s

REPO = Path(__file__).resolve().parent.parent
ECHO_AGENT = "lkrig-bench-echo"
# A caller's turn: ~2.2 s of speech (the three bench utterances), 0.3-0.7 s, the agent's 2.6 s
# reply, 0.3-0.9 s of thought: about 6 s with each side speaking ~40 % of it. The echo room's
# agent speaks the same reply every 6 s and the echo sends it back: as much audio each way.
TALK_EVERY_S = 6.0
ECHO_ROOM_PREFIX = "room-"  # lk's room-<i>-<guid>; lkpub -echo -room-prefix room


class Output:
    """Drains one of a child's pipes into lines; `marked` is set at a line containing `mark`."""

    def __init__(self, stream: asyncio.StreamReader, mark: str, marked: asyncio.Event) -> None:
        self.lines: list[str] = []
        self.marked = marked
        self.task = asyncio.ensure_future(self.read(stream, mark))

    async def read(self, stream: asyncio.StreamReader, mark: str) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self.lines.append(text)
            if mark in text:
                self.marked.set()


async def join_new_rooms(env: dict[str, str], responder: lc.Proc) -> None:
    """The agent side of the echo rooms: every new room gets bench/responder.py, talking."""
    from livekit import api

    seen: set[str] = set()
    async with api.LiveKitAPI(env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]) as lkapi:
        while True:
            for room in (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms:
                if room.name.startswith(ECHO_ROOM_PREFIX) and room.name not in seen:
                    seen.add(room.name)
                    responder.send({"op": "join", "room": room.name, "seed": len(seen),
                                    "talk_every": TALK_EVERY_S})
            await asyncio.sleep(0.2)


def rooms_echoing(lk: bool, stdout: list[str]) -> int:
    """Rooms whose echo participant had an agent to echo: lk's table rows with no cross (agent
    joined, its track subscribed, the echo track published); lkpub's count of rooms that sent
    back at least one payload."""
    if lk:
        return sum(1 for line in stdout if ECHO_ROOM_PREFIX in line and "✓" in line and "✗" not in line)
    done = [json.loads(line) for line in stdout if line.startswith('{"done"')]
    return int(done[-1]["echoed"]) if done else 0


async def run_echo(binary: Path, n: int, duration: float, env: dict[str, str], lk: bool,
                   metrics_url: str) -> dict[str, Any]:
    """CPU of `n` echo rooms' participants over `duration` s after every room has its agent (5 s
    settle), the packets per second per room livekit-server received meanwhile (both ways: the
    agent's and the echo's), and how many rooms echoed."""
    if lk:
        # it ends on SIGINT (printing its table) once the window is measured
        argv = [str(binary), "perf", "agent-load-test", "--url", env["LIVEKIT_URL"], "--api-key",
                env["LIVEKIT_API_KEY"], "--api-secret", env["LIVEKIT_API_SECRET"], "--rooms", str(n),
                "--agent-name", ECHO_AGENT, "--duration", f"{duration + 5 * n + 120:.0f}s"]
        mark = "started successfully"
    else:
        argv = [str(binary), "-echo", "-n", str(n), "-room-prefix", ECHO_ROOM_PREFIX.rstrip("-"),
                "-duration", f"{duration + 1:.0f}s"]
        mark = '"ready"'
    responder = lc.Proc([sys.executable, str(REPO / "bench" / "responder.py")], lambda *_: None, env)
    await responder.start()
    watcher = asyncio.ensure_future(join_new_rooms(env, responder))
    load0, t_start = os.getloadavg()[0], time.monotonic()
    p = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE, limit=1 << 20)
    assert p.stdout is not None and p.stderr is not None
    ready = asyncio.Event()  # lk logs its line to stderr, lkpub prints its JSON to stdout
    out, err = Output(p.stdout, mark, ready), Output(p.stderr, mark, ready)
    try:
        marked, exited = asyncio.ensure_future(ready.wait()), asyncio.ensure_future(p.wait())
        await asyncio.wait({marked, exited}, timeout=35.0 * n, return_when=asyncio.FIRST_COMPLETED)
        marked.cancel()
        if not ready.is_set():
            said = "\n".join((out.lines + err.lines)[-20:])
            raise RuntimeError(f"{Path(argv[0]).name}: the echo rooms never all had their agent "
                               f"(exit code {p.returncode}):\n{said}")
        ramp_s = time.monotonic() - t_start
        await asyncio.sleep(5.0)
        t0, c0, k0 = time.monotonic(), proc_cpu_s(p.pid), incoming_packets(metrics_url)
        await asyncio.sleep(duration - 5.0)
        t1, c1, k1 = time.monotonic(), proc_cpu_s(p.pid), incoming_packets(metrics_url)
        if lk:
            p.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(p.wait(), 60.0)
    except BaseException:
        p.kill()
        raise
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, out.task, err.task, return_exceptions=True)
        await responder.close()
    if lk:
        print("\n".join(out.lines[-(n + 8):]))  # lk's own report: its table
    pct = 100.0 * (c1 - c0) / (t1 - t0)
    return {"rooms": n, "cpu_pct": pct, "cpu_pct_per_room": pct / n, "rc": rc,
            "rooms_echoing": rooms_echoing(lk, out.lines), "ramp_s": round(ramp_s, 1),
            "server_packets_per_s_per_room": (k1 - k0) / (t1 - t0) / n,
            "loadavg_1m": [load0, os.getloadavg()[0]]}
