"""Smoke tests of the benchmarks in bench/ (issue #17): benchmarks that nobody runs rot, so each
script runs here as a user runs it (`.venv/bin/python bench/X.py ...` from the repo root) at the
smallest size that still goes through its whole path (1-2 sessions or callers, 8-20 s), with its
results in tmp_path (--out). A test asserts the exit code and that the result line has the keys
the tables of docs/benchmarks.md and loadgen/README.md (and the scripts' --report) read: not
their values, which at these sizes on a shared machine mean nothing. The values checked are
correctness ones (lk_compare): publishers that send are seen by livekit-server, and an echo
room has an agent to echo.

Covered through the scripts that use them, not alone:
  * bench/agentload.py (a library): the stack, callers and /proc meter of agent_capacity,
    fidelity and overhead; its result-line helpers in every script;
  * bench/bare_agent.py (an agent worker module): overhead's `bare` setting runs it;
  * bench/responder.py (the stand-in agent, a process the scripts start): loadgen_capacity and
    the callers' and echo rooms' levels of lk_compare (bench/lkecho.py, bench/lkmeter.py);
  * bench/install-lk.sh and bench/lkpub: lk_compare runs install-lk.sh first; where the Go module
    proxy refuses the LiveKit CLI (as here) it runs lkpub (and `lkpub -echo`) instead, which scripts/setup.d/
    40-bench-tools.sh builds ahead (about a minute cold), with opusenc (Debian's opus-tools).

Not run: compose_stack.py's cold build (an empty data root: every layer and package, ~2 min) and
its `docker compose up` runs (the stack to healthy and to the first dashboard datapoint, about a
minute each, what tests/test_compose_images.py covers); its test runs `--help` and its cheapest
step, the build on the kept data root (seconds when warm) with the image sizes. On a machine
whose kept data root is still empty, that build is the first one (minutes); test_compose_images
then finds it done, as it shares the data root, so the suite pays it once either way.

On a shared machine, run it alone (under the machine's shared flock):
.venv/bin/python -m pytest tests/test_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

# Port offsets, one per test. Not 15000+: rig.ports caps --port-offset at 14000 (the RTC UDP range
# must end below 65536). No TCP port of these plans (up to 2 agents, Locust on) is in the plan of
# another test module's stack (offsets 0, 1000, 3100, 3300, 5500, 6500, 7500, 8500, 9600, 10700,
# 11800, 14000, up to 4 agents) or of a bench default (4000, 7500, 12900), and their RTC UDP
# ranges miss those of the stacks that may run beside them (the suite's session stack at 1000, a
# developer's at 0).
LOADGEN_CAPACITY, LK_COMPARE, AGENT_CAPACITY, FIDELITY = 12200, 12300, 12500, 12600
OVERHEAD, STARTUP, TURN_LATENCY = 13400, 13700, 11400

# A LIVEKIT_URL in the environment would make loadgen_capacity use that server, not its own.
ENV = {k: v for k, v in os.environ.items()
       if k not in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")}


def bench(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`python bench/SCRIPT ARGS` from the repo root; fails with the end of its output unless
    it exits 0."""
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    # the publishers' WebRTC stack logs a lot to stderr; what the scripts say is elsewhere
    said = [line for line in proc.stderr.splitlines() if "pion." not in line]
    assert proc.returncode == 0, (f"bench/{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                                  + "\n".join(said[-40:]))
    return proc


def results(out: Path) -> list[dict[str, Any]]:
    assert out.is_file(), f"no result file {out}"
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def has_keys(line: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in line]
    assert not missing, f"result line lacks {missing}: {line}"


# The machine and versions every line carries (agentload.machine()).
MACHINE = ("nproc", "cpu", "date", "livekit_server", "livekit_agents", "livekit_rtc")


@pytest.mark.parametrize(("script", "args", "offset", "keys"), [
    pytest.param("agent_capacity.py", ["--sessions", "1", "--duration", "12", "--warmup", "3"],
                 AGENT_CAPACITY,
                 ("sessions", "turns", "latency_p50_s", "latency_p95_s", "worker_cpu_pct",
                  "cpu_pct_per_session", "pss_idle_mb", "pss_mb", "pss_mb_per_session", "loadavg_1m"),
                 id="agent_capacity"),
    # two sessions: calls alternate between the profiles, so both are driven
    pytest.param("fidelity.py", ["--sessions", "2", "--duration", "20", "--warmup", "3"], FIDELITY,
                 ("sessions", "loadavg_1m", "latency_s"), id="fidelity"),
    pytest.param("overhead.py", ["--instrument", "on", "--sessions", "1", "--duration", "24",
                                 "--warmup", "3"], OVERHEAD,
                 ("instrument", "turns", "worker_cpu_pct", "cpu_ms_per_turn", "loadavg_1m"),
                 id="overhead"),
    # bench/bare_agent.py, the bare AgentSession the rig's agent is compared with
    pytest.param("overhead.py", ["--instrument", "bare", "--sessions", "1", "--duration", "24",
                                 "--warmup", "3"], OVERHEAD,
                 ("instrument", "turns", "worker_cpu_pct", "cpu_ms_per_turn", "loadavg_1m"),
                 id="overhead_bare"),
])
def test_agent_benchmark(tmp_path: Path, script: str, args: list[str], offset: int,
                         keys: tuple[str, ...]) -> None:
    """A native stack with one agent worker, a few scripted callers, one result line; then
    --report makes the docs' table from that line."""
    out = tmp_path / "results.jsonl"
    bench(script, *args, "--port-offset", str(offset), "--run-dir", str(tmp_path / "stack"),
          "--out", str(out))
    [line] = results(out)
    has_keys(line, *MACHINE, *keys)
    if script == "fidelity.py":
        assert set(line["latency_s"]) == {"bench_a", "bench_b"}  # its two profiles
    if script == "overhead.py":  # the worker (the rig's or the bare one) took the call and answered
        assert line["instrument"] == args[1] and line["turns"] > 0, line
    bench(script, "--report", "--out", str(out), timeout=60)


def test_loadgen_capacity(tmp_path: Path) -> None:
    """One caller on a voice driver against the stand-in responder; drivers pinned to one CPU and
    the far end (with livekit-server) to another, as docs run it."""
    cpus = sorted(os.sched_getaffinity(0))
    out = tmp_path / "loadgen_capacity.jsonl"
    bench("loadgen_capacity.py", "--callers", "1", "--duration", "8", "--driver-cpus", str(cpus[-1]),
          "--far-cpus", str(cpus[0]), "--port-offset", str(LOADGEN_CAPACITY),
          "--run-dir", str(tmp_path / "stack"), "--out", str(out))
    [line] = results(out)
    # loadgen/README.md's columns (spread_ms_p95 only exists once a turn was measured: not asked)
    has_keys(line, "callers", "drivers", "cpu_pct_per_caller", "callers_per_core", "err_ms_p50",
             "err_ms_p95", "send_jitter_ms_p99", "loop_lag_ms_p99_max", "turns", "conversations")
    assert (line["callers"], line["driver_cpus"], line["far_cpus"]) == (1, str(cpus[-1]), str(cpus[0]))


def test_lk_compare(tmp_path: Path) -> None:
    """One caller, one publisher and one echo room (lk's, or bench/lkpub's where lk cannot be
    built) on one livekit-server: the server must have received the publisher's packets, and
    the echo room must have had the stand-in agent to echo."""
    out = tmp_path / "lk_compare.jsonl"
    # 12 s is its least: the publishers' window (duration - 5 s) must hold one of the server's
    # 5-second packet counts
    bench("lk_compare.py", "--callers", "1", "--publishers", "1", "--echo-rooms", "1", "--duration", "12",
          "--port-offset", str(LK_COMPARE), "--run-dir", str(tmp_path / "stack"), "--out", str(out))
    callers, publishers, echo = results(out)
    for row in (callers, publishers, echo):
        has_keys(row, *MACHINE, "what", "n", "cpu_pct_per_participant", "loadavg_1m", "lk_unavailable")
        assert row["n"] == 1
    assert callers["what"] == "rig callers"
    has_keys(callers, "turns", "send_jitter_ms_p99")
    assert "publishers" in publishers["what"]
    assert publishers["rc"] == 0, "the publisher process failed"
    assert publishers["server_packets_per_s_per_publisher"] > 0, "livekit-server saw no packet"
    assert "echo rooms" in echo["what"]
    assert echo["rc"] == 0, "the echo process failed"
    assert echo["rooms_echoing"] == 1, "the echo room had no agent, or echoed nothing"
    assert echo["server_packets_per_s_per_room"] > 0, "livekit-server saw no packet"


def test_startup(tmp_path: Path) -> None:
    """`rig up --native` (1 agent, 1 Locust worker) to all healthy and the first panel with data,
    then Ctrl-C."""
    out = tmp_path / "startup.jsonl"
    bench("startup.py", "--repeat", "1", "--port-offset", str(STARTUP), "--timeout", "120",
          "--out", str(out))
    [line] = results(out)
    has_keys(line, *MACHINE, "agents", "loadgen_workers", "all_healthy_s", "first_panel_data_s",
             "first_panels", "stop_s", "rc", "loadavg_1m")


def test_turn_latency(tmp_path: Path) -> None:
    """One call with one turn on a fresh stack with one agent."""
    out = tmp_path / "turn_latency.jsonl"
    bench("turn_latency.py", "--calls", "1", "--port-offset", str(TURN_LATENCY),
          "--run-dir", str(tmp_path / "stack"), "--out", str(out))
    [line] = results(out)
    has_keys(line, *MACHINE, "agents", "calls", "startup_s", "dispatch_to_join_s",
             "latency_minus_injected_s")


def test_scrape_cost(tmp_path: Path) -> None:
    """Offline: 2 and 4 past jobs, 2 scrapes each."""
    out = tmp_path / "scrape_cost.jsonl"
    bench("scrape_cost.py", "--jobs", "2,4", "--scrapes", "2", "--out", str(out), timeout=120)
    [line] = results(out)
    has_keys(line, *MACHINE, "scrapes", "per_tick", "scrape_cpu_ms", "fold_cpu_ms_per_tick",
             "folded_ratio", "kept_ratio")
    assert set(line["scrape_cpu_ms"]) == {"kept@2", "folded@2", "kept@4", "folded@4"}
    assert set(line["fold_cpu_ms_per_tick"]) == {"2", "4"}


@pytest.mark.timeout(1800)  # an empty kept data root makes this the images' first build
def test_compose_stack(tmp_path: Path) -> None:
    """`--help`, and the build on the kept data root only (`--no-cold --repeat 0`): no cold build,
    no `docker compose up` (see the module's docstring)."""
    assert "--no-cold" in bench("compose_stack.py", "--help", timeout=60).stdout
    out = tmp_path / "compose_stack.jsonl"
    bench("compose_stack.py", "--no-cold", "--repeat", "0", "--out", str(out), timeout=1500)
    [line] = results(out)
    has_keys(line, *MACHINE, "warm_build_s", "image_mb", "loadavg_1m")
    # the two images docker-compose.yml builds without a profile
    assert {"lkrig-agent:latest", "lkrig-loadgen:latest"} <= set(line["image_mb"])
