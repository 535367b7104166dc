"""Sizing on paper (docs/scaling.md): agent cores, loadgen cores, Locust workers, LiveKit nodes and
Prometheus series for N concurrent calls, from the rig's measured costs.

Not a benchmark: it runs nothing. Every coefficient is defined once, here: the measured ones are
computed from the result lines in bench/results/*.jsonl (the same lines docs/benchmarks.md and
loadgen/README.md tabulate), the series counts from instrument/lkrig_instrument/names.py and
prometheus/rules/*.yml, the rest are constants with their source beside them. docs/scaling.md
holds this script's output between generated markers; tests/test_scaling_doc.py fails when the
two differ.

    .venv/bin/python bench/sizing.py --coefficients    # the coefficient table
    .venv/bin/python bench/sizing.py --table           # calls -> cores, workers, nodes, series
    .venv/bin/python bench/sizing.py --series          # Prometheus series per unit
    .venv/bin/python bench/sizing.py --calls 250 --worker-cores 4   # your own sizes
    .venv/bin/python bench/sizing.py --update-doc      # rewrite docs/scaling.md's generated blocks
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "instrument")]

from lkrig_instrument import names  # noqa: E402

RESULTS = REPO / "bench" / "results"
RULES = REPO / "prometheus" / "rules"
DOC = REPO / "docs" / "scaling.md"
# A generated block of docs/scaling.md: the command whose output it holds, the output, the end.
BLOCK = re.compile(r"(<!-- generated: \.venv/bin/python bench/sizing\.py (?P<args>[^>]*?) -->\n)"
                   r"(?P<body>.*?)\n(?=<!-- end generated -->)", re.S)
TABLE_CALLS = (100, 1_000, 10_000)

# ---- what is not in bench/results: constants and where each comes from ------------------------

# Keep every host at two-thirds busy (docs/scaling.md, "Headroom").
HEADROOM = 1.5
# Cores of one agent worker (one livekit-agents worker process with its job processes). Two: the
# benchmark measured one worker with 1-4 sessions on a 2-core machine; 2 cores at two-thirds busy
# hold 5 sessions, the nearest size to what was measured.
AGENT_WORKER_CORES = 2
# LiveKit's audio-only benchmark (lk load-test publishers of 20 kb/s), 100 publishers x 100 subscribers
# in one room on a 16-core c2-standard-16: 100 tracks in, 9,900 out, 0.020 % packet loss (the next
# row, 10,090 out, lost 1.5 %).
LIVEKIT_BENCH_TRACKS = 100 + 9_900
LIVEKIT_NODE_CORES = 16
LIVEKIT_BENCH_URL = "https://docs.livekit.io/transport/self-hosting/benchmark/"
LIVEKIT_BENCH_TABLE = "github.com/livekit/livekit-docs, docs/deploy/7-benchmark.md, \"Audio only\""
# A call: the caller and the agent each publish one audio track and subscribe to the other's.
TRACKS_PER_CALL = 4
# One Locust worker process per this many callers (each worker is one process, one core).
CALLERS_PER_LOCUST_WORKER = 500
LOCUST_DOCS_URL = "https://docs.locust.io/en/2.19.0/running-distributed.html"
# Series measured with `promtool tsdb dump` on the Prometheus data a bench/overhead.py run left in
# its --run-dir (2026-12-06 00:41-00:47 UTC, four fresh stacks, 2 sessions each):
LIVEKIT_SERIES_PER_NODE = 494 + 65  # the largest node_id's livekit_* series, + go_/process_
PROMETHEUS_SELF_SERIES = 418  # job prometheus
# livekit-agents 1.8.9 (livekit/agents/telemetry/metrics.py): lk_agents_proc_initialize_duration_
# seconds (6 buckets: 9 series) and three gauges, one nodename each; the dump above holds 12 per
# stack (lk_agents_worker_load keeps a pid label: one more per worker process started).
LK_AGENTS_SERIES_PER_WORKER = 9 + 3
# Prometheus adds these to every target: up, scrape_duration_seconds, scrape_samples_scraped,
# scrape_samples_post_metric_relabeling, scrape_series_added.
SCRAPE_SERIES_PER_TARGET = 5
SCRAPE_INTERVAL_S = 5  # prometheus/prometheus.yml (compose) and the chart's ServiceMonitor
BYTES_PER_SAMPLE = 2  # the top of Prometheus's "1-2 bytes per sample" (storage.md)


# ---- the measured coefficients, from bench/results ---------------------------------------------


def _lines(name: str) -> list[dict[str, Any]]:
    with (RESULTS / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def agent_rows() -> list[dict[str, Any]]:
    """The capacity run of docs/benchmarks.md section 2 (one worker, 1-4 sessions)."""
    return [r for r in _lines("agent_capacity.jsonl") if r["date"].startswith("2026-11-25")]


def agent_cpu_fit() -> tuple[float, float]:
    """Worker CPU (cores) = base + per_session x sessions, least squares over the capacity run."""
    rows = agent_rows()
    xs = [float(r["sessions"]) for r in rows]
    ys = [r["worker_cpu_pct"] / 100.0 for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def loadgen_row() -> dict[str, Any]:
    """loadgen/README.md's precision limit: 80 callers on one core, DTX microphone (2026-12-02)."""
    rows = [r for r in _lines("loadgen_capacity.jsonl")
            if r["note"].endswith("DTX microphone") and r["callers"] == 80]
    (row,) = rows
    return row


@dataclass(frozen=True)
class Coefficients:
    agent_base: float  # cores per agent worker, whatever its sessions
    agent_per_session: float  # cores per further session
    agent_idle_mb: float  # PSS of an idle worker with its prewarmed job processes
    agent_mb_per_session: float
    callers_per_core: int  # loadgen drivers and media engines, at the precision limit
    cpu_per_caller: float  # cores, at that limit
    callers_per_locust_worker: int
    livekit_tracks_per_node: int
    livekit_node_cores: int
    headroom: float
    agent_worker_cores: int


def coefficients(agent_worker_cores: int = AGENT_WORKER_CORES) -> Coefficients:
    base, per_session = agent_cpu_fit()
    rows = agent_rows()
    lg = loadgen_row()
    return Coefficients(
        agent_base=base,
        agent_per_session=per_session,
        agent_idle_mb=max(r["pss_idle_mb"] for r in rows),
        agent_mb_per_session=max(r["pss_mb_per_session"] for r in rows),
        callers_per_core=int(lg["callers"]),
        cpu_per_caller=lg["cpu_pct_per_caller"] / 100.0,
        callers_per_locust_worker=CALLERS_PER_LOCUST_WORKER,
        livekit_tracks_per_node=LIVEKIT_BENCH_TRACKS,
        livekit_node_cores=LIVEKIT_NODE_CORES,
        headroom=HEADROOM,
        agent_worker_cores=agent_worker_cores,
    )


# ---- Prometheus series, from names.py and the rules ---------------------------------------------


def _closed_product(m: names.Metric) -> int:
    return math.prod(len(v) for v in m.values.values())


def _per_label_set(m: names.Metric) -> int:
    """Series of one metric for one value of each of its open labels (every closed value)."""
    per = len(m.buckets) + 3 if m.type == "histogram" else 1  # buckets, +Inf, _sum, _count
    return _closed_product(m) * per


def open_label_bounds() -> dict[str, int]:
    """How many values each open label takes in this repo (names.OPEN_LABELS says where from): the
    callers' scenario and profile are files (loadgen/locustfile.py refuses others); an agent's are
    the same, or byo and none for a bring-your-own agent that names none (hooks.instrument)."""
    scenarios = [p for p in (REPO / "agent" / "scenarios").glob("*.py") if not p.stem.startswith("_")]
    return {
        "scenario": len(scenarios),
        "profile": len(list((REPO / "agent" / "profiles").glob("*.yaml"))),
        "network": len(list((REPO / "loadgen" / "networks").glob("*.yaml"))),
    }


@dataclass(frozen=True)
class Series:
    agent_per_label_set: int  # per worker, per (scenario, profile, agents_version)
    agent_per_worker: int  # per worker, whatever ran on it (the role gauges)
    caller_per_label_set: int  # per (scenario, profile, network), on the one Locust master
    run_fixed: int  # the master's run metrics without the fault timestamps
    fault_phases: int  # fault timestamps: phases x (3 agent kinds x workers + livekit + all-agents)
    rules_per_label_set: int  # recording rules, per (scenario, profile, agents_version)
    rules_per_worker: int
    rules_per_worker_label_set: int


def _rule_records() -> list[str]:
    records = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            records += [r["record"] for r in group["rules"] if "record" in r]
    return records


_CLOSED_BY_LEVEL = {"kind": names.ERROR_KINDS, "stage": names.TURN_STAGES, "role": names.PROCESS_ROLES,
                    "phase": names.TASK_PHASES}


def series() -> Series:
    agent = [m for m in names.AGENT_METRICS if "scenario" in m.labels]
    role = [m for m in names.AGENT_METRICS if "scenario" not in m.labels]
    rules = {"label_set": 0, "worker": 0, "worker_label_set": 0}
    for record in _rule_records():
        level = record.split(":")[0].split("_")
        n = math.prod(len(_CLOSED_BY_LEVEL[part]) for part in level if part in _CLOSED_BY_LEVEL)
        key = ("worker_label_set" if "scenario" in level else "worker") if "worker" in level else "label_set"
        rules[key] += n
    timestamps = [names.FAULT_TIMESTAMP]
    return Series(
        agent_per_label_set=sum(_per_label_set(m) for m in agent),
        agent_per_worker=sum(_per_label_set(m) for m in role),
        caller_per_label_set=sum(_per_label_set(m) for m in names.CALLER_METRICS),
        run_fixed=sum(_per_label_set(m) for m in names.RUN_METRICS if m not in timestamps),
        fault_phases=len(names.EVENT_PHASES),
        rules_per_label_set=rules["label_set"],
        rules_per_worker=rules["worker"],
        rules_per_worker_label_set=rules["worker_label_set"],
    )


def series_total(workers: int, nodes: int, label_sets: int = 1, s: Series | None = None) -> int:
    """Every series of a stack with `workers` agent workers and `nodes` LiveKit nodes, each worker
    having run `label_sets` (scenario, profile, agents_version) sets, the callers as many
    (scenario, profile, network) sets; no fault run (faults add at most fault_series())."""
    s = s or series()
    per_worker = (s.agent_per_label_set * label_sets + s.agent_per_worker + LK_AGENTS_SERIES_PER_WORKER
                  + s.rules_per_worker + s.rules_per_worker_label_set * label_sets)
    targets = workers + nodes + 2  # + Prometheus itself, + the Locust master
    return (workers * per_worker + nodes * LIVEKIT_SERIES_PER_NODE + PROMETHEUS_SELF_SERIES
            + (s.caller_per_label_set + s.rules_per_label_set) * label_sets + s.run_fixed
            + SCRAPE_SERIES_PER_TARGET * targets)


def fault_series(workers: int, s: Series | None = None) -> int:
    """The most fault timestamps a run can add: kill, drain, partition name a worker; restart-livekit
    names livekit, slow-provider all-agents (rig/faults.py)."""
    s = s or series()
    return s.fault_phases * (3 * workers + 2)


# ---- the sizing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    calls: int
    sessions_per_worker: int
    agent_workers: int
    agent_cores: int
    agent_memory_gb: float
    driver_cores: int
    locust_workers: int
    loadgen_cores: int
    livekit_nodes: int
    series: int
    samples_per_s: float
    disk_gb_per_day: float


def sessions_per_worker(c: Coefficients) -> int:
    return math.floor((c.agent_worker_cores / c.headroom - c.agent_base) / c.agent_per_session)


def size(calls: int, c: Coefficients | None = None) -> Size:
    c = c or coefficients()
    per_worker = sessions_per_worker(c)
    workers = math.ceil(calls / per_worker)
    drivers = math.ceil(calls / c.callers_per_core)
    locust = math.ceil(calls / c.callers_per_locust_worker)
    nodes = max(1, math.ceil(calls * TRACKS_PER_CALL * c.headroom / c.livekit_tracks_per_node))
    n_series = series_total(workers, nodes)
    samples = n_series / SCRAPE_INTERVAL_S
    return Size(
        calls=calls, sessions_per_worker=per_worker, agent_workers=workers,
        agent_cores=workers * c.agent_worker_cores,
        agent_memory_gb=(workers * c.agent_idle_mb + calls * c.agent_mb_per_session) / 1000.0,
        driver_cores=drivers, locust_workers=locust, loadgen_cores=drivers + locust,
        livekit_nodes=nodes, series=n_series, samples_per_s=samples,
        disk_gb_per_day=samples * 86_400 * BYTES_PER_SAMPLE / 1e9,
    )


# ---- markdown -----------------------------------------------------------------------------------


def coefficients_markdown(c: Coefficients | None = None) -> str:
    c = c or coefficients()
    lg = loadgen_row()
    rows = agent_rows()
    pss = sorted(r["pss_mb_per_session"] for r in rows)
    idle = sorted(r["pss_idle_mb"] for r in rows)
    dtx = [r for r in _lines("loadgen_capacity.jsonl") if r["note"].endswith("DTX microphone")]
    lo, hi = (f(r["cpu_pct_per_caller"] for r in dtx) / 100.0 for f in (min, max))
    few, many = (f(r["callers"] for r in dtx) for f in (min, max))
    lines = [
        "| name | value | what | source | how far to trust it |",
        "|---|---|---|---|---|",
        f"| `agent_per_session` | {c.agent_per_session:.3f} core | CPU of each session on an agent worker "
        "(least-squares slope over 1-4 sessions) | benchmarks.md section 2; `agent_capacity.jsonl`, "
        "2026-11-25 | CPU time is \"fairly robust\" (benchmarks.md), but the same 2-session load cost a "
        "third less on 2026-12-06 (section 5: 32-36 % against 57 % of a core); only 1-4 sessions per "
        "worker measured; the rig's scripted agent (silero VAD, no provider network I/O), not yours |",
        f"| `agent_base` | {c.agent_base:.3f} core | CPU of a worker whatever its sessions (the fit's "
        "intercept: main process, IPC, scrapes) | the same fit | an intercept of 4 points on a loaded "
        "machine: +-0.05 core would not surprise |",
        f"| `agent_mb_per_session` | {c.agent_mb_per_session:.0f} MB | PSS per session (the largest of "
        f"{pss[0]:.0f}-{pss[-1]:.0f}) | benchmarks.md section 2 | measured; 4 levels |",
        f"| `agent_idle_mb` | {c.agent_idle_mb:.0f} MB | PSS of an idle worker with its prewarmed job "
        f"processes (the largest of {idle[0]:.0f}-{idle[-1]:.0f}) | benchmarks.md section 2 | measured "
        "with 2 prewarmed processes; livekit-agents 1.8.9 prewarms one per CPU it sees "
        "(`num_idle_processes`), so a worker that sees more CPUs idles bigger |",
        f"| `callers_per_core` | {c.callers_per_core} | loadgen callers (drivers with their media engines) "
        f"per core at a turn-latency error of {lg['err_ms_p95']:.0f} ms p95 | loadgen/README.md, \"Sizing "
        f"and measurements\"; `loadgen_capacity.jsonl`, {lg['note'].split(' ~')[0]} | a knee, which "
        "benchmarks.md says not to trust on this machine: one run per level, pacing broke between 80 "
        "and 100; the Locust worker process is not in it |",
        f"| `cpu_per_caller` | {c.cpu_per_caller:.4f} core | the same callers' CPU each, at that level "
        f"({c.callers_per_core} x {c.cpu_per_caller:.4f} = {c.callers_per_core * c.cpu_per_caller:.2f} "
        f"of the core) | the same row | CPU time: fairly robust; {lo:.4f}-{hi:.4f} over "
        f"{few}-{many} callers (more per caller when fewer share a driver) |",
        f"| `callers_per_locust_worker` | {c.callers_per_locust_worker} | callers one Locust worker "
        "process serves (its greenlets relay the drivers' messages and fire Locust's events) | not "
        f"measured; Locust's docs ({LOCUST_DOCS_URL}): one worker per core, \"many hundreds of requests "
        "per second\" per process | a guess within the docs' bound: a caller makes ~0.2 Locust "
        "requests/s (join, greeting, turns, conversation), so 500 callers are ~100 requests/s |",
        f"| `livekit_tracks_per_node` | {c.livekit_tracks_per_node:,} | audio tracks in + out one "
        f"{c.livekit_node_cores}-core livekit-server node carried at 0.020 % packet loss ({TRACKS_PER_CALL} "
        f"per call) | LiveKit's audio-only benchmark ({LIVEKIT_BENCH_URL}; the table: "
        f"{LIVEKIT_BENCH_TABLE}) | not measured by the rig; one large room, not thousands of 2-party "
        "rooms; no date or version given for the audio rows; a forwarded track is counted like a "
        "received one, which flatters a call (1 receiver per track, not 99) |",
        f"| `headroom` | {c.headroom:g} | every host at two-thirds busy | \"Headroom\" below | a choice, "
        "argued below |",
    ]
    return "\n".join(lines)


def _gb(x: float) -> str:
    return f"{x:,.0f} GB" if x >= 10 else f"{x:.1f} GB"


def table_markdown(calls: tuple[int, ...] = TABLE_CALLS, c: Coefficients | None = None) -> str:
    c = c or coefficients()
    sizes = [size(n, c) for n in calls]
    per = sizes[0].sessions_per_worker
    cores = "core" if c.agent_worker_cores == 1 else "cores"
    lines = [
        f"| concurrent calls | agent workers ({c.agent_worker_cores} {cores}, {per} sessions each) | agent "
        "cores | agent memory | loadgen cores (drivers + Locust workers) | Locust workers | LiveKit nodes "
        f"({c.livekit_node_cores} cores) | Prometheus series | samples/s ({SCRAPE_INTERVAL_S} s scrape) | "
        f"Prometheus disk per day ({BYTES_PER_SAMPLE} B/sample) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        lines.append(
            f"| {s.calls:,} | {s.agent_workers:,} | {s.agent_cores:,} | {_gb(s.agent_memory_gb)} | "
            f"{s.loadgen_cores:,} ({s.driver_cores:,} + {s.locust_workers:,}) | {s.locust_workers:,} | "
            f"{s.livekit_nodes:,} | {s.series:,} | {s.samples_per_s:,.0f} | {_gb(s.disk_gb_per_day)} |")
    return "\n".join(lines)


def series_markdown() -> str:
    s = series()
    bounds = open_label_bounds()
    rows = [
        "| metric | type | closed label values (x histogram samples: buckets, +Inf, sum, count) | "
        "series per label set |",
        "|---|---|---|---|",
    ]
    for m in (*names.AGENT_METRICS, *names.CALLER_METRICS, *names.RUN_METRICS):
        parts = [f"{k} {len(v)}" for k, v in m.values.items()]
        if m.type == "histogram":
            parts.append(f"({len(m.buckets)} buckets + 3)")
        n = f"{_per_label_set(m)} (per target)" if "target" in m.labels else str(_per_label_set(m))
        rows.append(f"| `{m.name}` | {m.type} | {' x '.join(parts) or '-'} | {n} |")
    per_set = s.agent_per_label_set
    per_worker = s.agent_per_worker + LK_AGENTS_SERIES_PER_WORKER + SCRAPE_SERIES_PER_TARGET
    agent_sets = bounds["scenario"] * bounds["profile"] + 1  # + (byo, none)
    caller_sets = bounds["scenario"] * bounds["profile"] * bounds["network"]
    totals = [
        "",
        "| unit | series | grows with |",
        "|---|---|---|",
        f"| agent worker, per (scenario, profile, agents_version) it ran | {per_set} + "
        f"{s.rules_per_worker_label_set} recorded | workers x label sets |",
        f"| agent worker, whatever it ran (role gauges {s.agent_per_worker}, livekit-agents' own "
        f"{LK_AGENTS_SERIES_PER_WORKER}, scrape {SCRAPE_SERIES_PER_TARGET}) | {per_worker} + "
        f"{s.rules_per_worker} recorded | workers |",
        f"| callers, per (scenario, profile, network), on the Locust master | {s.caller_per_label_set} | "
        "label sets, not Locust workers (the master merges them) |",
        f"| recording rules, per (scenario, profile, agents_version) | {s.rules_per_label_set} | "
        "label sets |",
        f"| the run (Locust master) | {s.run_fixed}, + up to {s.fault_phases} x (3 x workers + 2) fault "
        "timestamps | faults run |",
        f"| livekit-server, per node (measured) | {LIVEKIT_SERIES_PER_NODE} | nodes, and again at "
        "each restart (new node_id) |",
        f"| Prometheus itself (measured), its scrape series | {PROMETHEUS_SELF_SERIES} + "
        f"{SCRAPE_SERIES_PER_TARGET} | - |",
        "",
        f"Open labels in this repo: scenario {bounds['scenario']} files (agent/scenarios), profile "
        f"{bounds['profile']} (agent/profiles), network {bounds['network']} (loadgen/networks); "
        "agents_version one per version run; an agent may also say byo and none (a bring-your-own "
        "agent that names neither) or any LKRIG_SCENARIO of its own. Every agent label set on one worker: "
        f"{agent_sets} sets, {per_set * agent_sets:,} series per version; every caller label set: "
        f"{caller_sets} sets, {s.caller_per_label_set * caller_sets:,} series.",
    ]
    return "\n".join(rows + totals)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--coefficients", action="store_true", help="the coefficient table")
    p.add_argument("--table", action="store_true", help="the sizing table for 100, 1,000, 10,000 calls")
    p.add_argument("--series", action="store_true", help="Prometheus series per unit")
    p.add_argument("--calls", type=int, nargs="+", help="size these numbers of concurrent calls instead")
    p.add_argument("--worker-cores", type=int, default=AGENT_WORKER_CORES,
                   help=f"cores per agent worker (default {AGENT_WORKER_CORES})")
    return p


def render(argv: list[str]) -> str:
    """What `bench/sizing.py ARGV` prints (docs/scaling.md's generated blocks are these)."""
    p = parser()
    a = p.parse_args(argv)
    if a.worker_cores < 1 or any(n < 1 for n in a.calls or ()):
        p.error("--calls and --worker-cores take positive numbers")
    c = coefficients(a.worker_cores)
    if sessions_per_worker(c) < 1:
        p.error(f"a {a.worker_cores}-core worker holds no session at {1 / c.headroom:.0%} busy")
    blocks = []
    if a.coefficients:
        blocks.append(coefficients_markdown(c))
    if a.table or a.calls or not (a.coefficients or a.series):
        blocks.append(table_markdown(tuple(a.calls or TABLE_CALLS), c))
    if a.series:
        blocks.append(series_markdown())
    return "\n\n".join(blocks)


def update_doc(doc: Path = DOC) -> bool:
    """Rewrite every generated block of `doc` with its command's output; True if anything changed."""
    text = doc.read_text(encoding="utf-8")
    new = BLOCK.sub(lambda m: m.group(1) + render(m["args"].split()) + "\n", text)
    if new != text:
        doc.write_text(new, encoding="utf-8")
    return new != text


def main() -> None:
    if sys.argv[1:] == ["--update-doc"]:
        print(f"{DOC.relative_to(REPO)}: {'updated' if update_doc() else 'up to date'}")
        return
    print(render(sys.argv[1:]))


if __name__ == "__main__":
    main()
