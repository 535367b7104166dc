"""Shared by the agent benchmarks (agent_capacity, fidelity, overhead): a native stack with one
rig agent worker, K concurrent scripted callers on a real voice driver (what Locust runs), and
the worker's CPU and memory read from /proc.

Every caller turn is answered with the scripted LLM's fallback reply (the utterances match none
of the dialog's intents), so each reply carries exactly stt_final + llm_ttft + llm_token * words +
tts_first_byte of injected latency and no tool or task: with fixed profiles the injected total
of every turn is known.

Worker CPU = utime + stime + cutime + cstime summed over the live processes of the worker's
session (the stack starts each service as a session leader, so job processes and forkservers
carry its session id): a job process that exits is reaped by a member, whose cutime then holds
its CPU, so every CPU second is counted once, also across exits. Memory = PSS (smaps_rollup)
of the same processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.loadgen_capacity import Proc  # noqa: E402
from loadgen.conversation import Spec  # noqa: E402
from loadgen.convscript import Script, Turn  # noqa: E402
from rig import native, pins, procs  # noqa: E402

# Phrases that match no intent of agent/dialog.py: every reply is dialog.FALLBACK.
UTTERANCES = ("Can you repeat that, please?", "Sorry, I did not hear you.", "Say that once more.",
              "Hello, are you still there?", "I could not hear the last part.", "Pardon me?")
FALLBACK_WORDS = 6  # "Sorry, could you say that again?"
SCRIPT = Script(
    name="bench_fallback", path="<bench>", greeting=True, think_ms=(200.0, 400.0), settle_ms=900.0,
    dead_air_ms=8000.0, turn_timeout_ms=15000.0,
    turns=tuple(Turn(f"t{i + 1}", u) for i, u in enumerate(UTTERANCES)),
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def fixed_profile(llm_ttft: float, tts_first_byte: float, stt_final: float = 100.0,
                  llm_token: float = 10.0) -> dict[str, float]:
    return {"stt_final": stt_final, "llm_ttft": llm_ttft, "llm_token": llm_token,
            "tts_first_byte": tts_first_byte, "tool": 0.0}


def injected_s(p: dict[str, float]) -> float:
    """What the agent waits on in a fallback reply (seconds)."""
    return (p["stt_final"] + p["llm_ttft"] + p["llm_token"] * (FALLBACK_WORDS - 1)
            + p["tts_first_byte"]) / 1000.0


def write_profiles(profiles: dict[str, dict[str, float]]) -> Path:
    """An LKRIG_PROFILE_DIR with one fixed-latency profile file per name."""
    d = Path(tempfile.mkdtemp(prefix="lkrig-bench-profiles-"))
    for name, p in profiles.items():
        (d / f"{name}.yaml").write_text(
            "description: bench fixed profile\nseed: 0\n"
            + "".join(f"{k}: {{fixed: {v:g}}}\n" for k, v in p.items()))
    return d


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    p = pins.load()
    return {"nproc": os.cpu_count(), "cpu": model, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "livekit_server": p.livekit_server, "livekit_agents": p["LIVEKIT_AGENTS_VERSION"],
            "livekit_rtc": p["LIVEKIT_RTC_VERSION"]}


# --- the worker's processes ----------------------------------------------------------------------


def cpu_ticks(pid: int, children: bool = False) -> int:
    """utime + stime of `pid` in clock ticks, with its reaped children's (cutime + cstime)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    f = raw[raw.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)


def _tree_sample(sid: int) -> tuple[float, int, int]:
    """(CPU seconds incl. reaped children, PSS kB, processes) of session `sid`."""
    ticks = pss = n = 0
    for pid in procs.session_members(sid):
        try:
            ticks += cpu_ticks(pid, children=True)
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                    break
            n += 1
        except (OSError, ValueError, IndexError):
            continue  # exited between the listing and the read
    return ticks / CLK_TCK, pss, n


class WorkerMeter:
    """Samples the worker session's CPU and PSS every `interval` seconds in a thread."""

    def __init__(self, sid: int, interval: float = 1.0) -> None:
        self.sid, self.interval = sid, interval
        self.samples: list[tuple[float, float, int, int]] = []  # (monotonic, cpu_s, pss_kb, procs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), *_tree_sample(self.sid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> WorkerMeter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_pct(self, t0: float, t1: float) -> float | None:
        w = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(w) < 2:
            return None
        return 100.0 * (w[-1][1] - w[0][1]) / (w[-1][0] - w[0][0])

    def pss_mb(self, t0: float, t1: float, how: str = "median") -> float | None:
        w = [s[2] for s in self.samples if t0 <= s[0] <= t1]
        if not w:
            return None
        return (max(w) if how == "max" else statistics.median(w)) / 1024.0


# --- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    info: native.StackInfo
    worker_pid: int
    env: dict[str, str]


@contextlib.contextmanager
def stack(port_offset: int, run_dir: Path, env: dict[str, str],
          agent_module: str = native.AGENT_MODULE) -> Iterator[Stack]:
    """A native stack with one agent worker (`python -m agent_module start`); `env` is set for
    the agent (and this process)."""
    os.environ.update(env)
    run_dir.mkdir(parents=True, exist_ok=True)
    st = native.NativeStack(native.NativeOptions(
        agents=1, loadgen_workers=0, run_dir=run_dir, port_offset=port_offset,
        env_file=run_dir / ".env", agent_module=agent_module, say=lambda _m: None))
    info = st.start()
    try:
        child_env = dict(os.environ, LIVEKIT_URL=info.livekit_url, LIVEKIT_API_KEY=info.api_key,
                         LIVEKIT_API_SECRET=info.api_secret, PYTHONPATH=os.pathsep.join(filter(None, [
                             str(REPO), str(REPO / "instrument"), os.environ.get("PYTHONPATH")])))
        yield Stack(info, info.pids["agent-0"], child_env)
    finally:
        left = st.stop()
        if left:
            print(f"bench: could not stop {left}", file=sys.stderr)


# --- the callers ---------------------------------------------------------------------------------


@dataclass
class Load:
    sessions: int  # concurrent conversations, each restarted when it ends
    duration: float  # seconds from the first call to the end of the measurement window
    profiles: tuple[str, ...]  # call k of slot i uses profiles[(i + k) % len]
    warmup: float = 12.0  # seconds before the measurement window opens
    scenario: str = "seed"
    seed: int = 1


@dataclass
class LoadResult:
    turns: list[dict[str, Any]] = field(default_factory=list)  # in the window, with "profile"
    other_turns: dict[str, int] = field(default_factory=dict)  # outcomes of turns not ok
    conversations: dict[str, int] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)
    loadavg: tuple[float, float] = (0.0, 0.0)


async def drive(st: Stack, load: Load, agent_name: str) -> LoadResult:
    """Runs `load` on one voice driver; returns the turns whose end of utterance fell in the window."""
    res = LoadResult()
    waiters: dict[str, asyncio.Future[None]] = {}
    profile_of: dict[str, str] = {}

    def on_msg(_p: Proc, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "turn" and msg.get("kind") == "turn":
            r = msg["result"]
            if r["outcome"] == "ok" and r["latency_s"] is not None:
                res.turns.append({**r, "profile": profile_of.get(msg["call"], "?")})
            else:
                res.other_turns[r["outcome"]] = res.other_turns.get(r["outcome"], 0) + 1
        elif kind == "conversation":
            res.conversations[msg["outcome"]] = res.conversations.get(msg["outcome"], 0) + 1
        elif kind in ("closed", "rejected", "hung_up") or kind == "eof":
            for call in ([msg["call"]] if "call" in msg else list(waiters)):
                fut = waiters.pop(call, None)
                if fut and not fut.done():
                    fut.set_result(None)

    driver = Proc([sys.executable, "-m", "loadgen.driver", "--max-callers", str(load.sessions)],
                  on_msg, st.env)
    await driver.start()
    t0 = time.monotonic()
    deadline = t0 + load.duration
    res.window = (t0 + load.warmup, deadline)
    res.loadavg = (os.getloadavg()[0], 0.0)

    async def slot(i: int) -> None:
        await asyncio.sleep(i * 1.0)
        k = 0
        while time.monotonic() < deadline - 5:
            call = f"{i}-{k}"
            profile = load.profiles[(i + k) % len(load.profiles)]
            profile_of[call] = profile
            spec = Spec(script=SCRIPT, scenario=load.scenario, profile=profile,
                        seed=load.seed * 1000 + i * 100 + k, agent_name=agent_name)
            fut = waiters[call] = asyncio.get_running_loop().create_future()
            driver.send({"op": "start", "call": call, "spec": spec.to_dict()})
            k += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), max(0.1, deadline - time.monotonic()))
            if not fut.done():  # the window is over: hang up mid-call, wait for the teardown
                driver.send({"op": "cancel", "call": call})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fut, 30)
                return

    await asyncio.gather(*(slot(i) for i in range(load.sessions)))
    res.loadavg = (res.loadavg[0], os.getloadavg()[0])
    await driver.close()
    lo, hi = res.window
    res.turns = [t for t in res.turns if lo <= t["eou"] <= hi]
    return res


def _rounded(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x) for x in v]
    return v


def summary_line(**kv: Any) -> str:
    return json.dumps(_rounded(kv), default=str)


def append_result(path: str | Path, line: str) -> None:
    """One JSON line per result, appended: the tables of docs/benchmarks.md come from these files."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(line + "\n")


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every result line of `path`; says so on stderr when there is none."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        print(f"{path}: no results", file=sys.stderr)
    return rows
