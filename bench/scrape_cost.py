"""Benchmark: the worker's CPU per /metrics scrape after 10 and after 2,000 finished jobs, with
the past jobs' files kept (prometheus_client's multiprocess mode as it comes) and folded into
one file per kind (lkrig_instrument.carry.fold, which the worker's sampler runs every tick).

Not a test. Every past job is one real session's files: `agent.replay` runs one seed
conversation (scripted providers, the instrumentation on) into a multiprocess directory, and
its counter and histogram files are copied under pids no process can have, all at once for the
kept directory, --per-tick at a time with a fold after each for the folded one (as jobs end
between two ticks of the sampler). A scrape is what the worker's /metrics does: carry.Collector
over the directory, then the text exposition. Its cost is process CPU time
(time.process_time), the median of --scrapes scrapes; the sizes are scraped alternately in the
same run. The goal (#17): folded after 2,000 jobs within 10 % of folded after 10.

    .venv/bin/python bench/scrape_cost.py                 # --jobs 10,2000 --scrapes 30
    .venv/bin/python bench/scrape_cost.py --jobs 2,20 --scrapes 3 --out "$(mktemp)"   # seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "instrument")]

from lkrig_instrument import carry, process_sampler  # noqa: E402

from bench import agentload as al  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "scrape_cost.jsonl"
FAKE_PID = 1 << 23  # above Linux's largest pid_max: no process runs with these pids


def one_session(into: Path) -> dict[str, Path]:
    """The files one replayed seed conversation wrote, by kind."""
    into.mkdir(parents=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(into),
           "PYTHONPATH": os.pathsep.join([str(REPO / "instrument"), str(REPO)])}
    subprocess.run([sys.executable, "-m", "agent.replay", "--scenario", "seed", "--runs", "1",
                    "--concurrency", "1", "--time-scale", "0.05", "--stuck-timeout", "0.5",
                    "--turn-timeout", "2"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    files = {kind: f for f in into.glob("*.db") if (kind := carry.kind_of(f))}
    if not files:
        raise SystemExit(f"scrape_cost: the replay wrote no counting file into {into}")
    return files


def past_jobs(directory: Path, session: dict[str, Path], count: int, first: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + count):
        for kind, f in session.items():
            shutil.copy(f, directory / f"{kind}_{FAKE_PID + i}.db")


def folded_jobs(directory: Path, session: dict[str, Path], count: int, per_tick: int) -> list[float]:
    """`count` jobs ending `per_tick` at a time, each batch folded as the worker's sampler does
    every tick; returns each fold's CPU ms."""
    costs = []
    for first in range(0, count, per_tick):
        past_jobs(directory, session, min(per_tick, count - first), first)
        t0 = time.process_time()
        process_sampler.reap_dead(str(directory))
        costs.append((time.process_time() - t0) * 1000)
    return costs


def scrape_cpu_ms(directory: Path) -> float:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(carry.Collector(directory))
    gc.collect()  # the garbage of the scrape before (kept@2000's is large) is not this one's
    t0 = time.process_time()
    generate_latest(registry)
    return (time.process_time() - t0) * 1000


def speeches(directory: Path) -> float:
    return sum(s.value for m in carry.Collector(directory).collect() for s in m.samples
               if s.name == "lkrig_agent_speeches_created_total")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", default="10,2000", help="past jobs, comma-separated (first is the baseline)")
    p.add_argument("--scrapes", type=int, default=30, help="scrapes per directory")
    p.add_argument("--per-tick", type=int, default=10,
                   help="jobs that end between two ticks of the worker's sampler (5 s)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="append one JSON line here")
    args = p.parse_args(argv)
    try:
        sizes = [int(n) for n in args.jobs.split(",")]
    except ValueError:
        p.error(f"--jobs {args.jobs!r}: expected whole numbers, e.g. 10,2000")
    if len(sizes) < 2 or min(sizes) < 1 or args.scrapes < 1 or args.per_tick < 1:
        p.error("--jobs needs two or more sizes of at least 1, --scrapes and --per-tick at least 1")
    with tempfile.TemporaryDirectory(prefix="lkrig-scrape-cost-") as tmp:
        root = Path(tmp)
        session = one_session(root / "session")
        dirs: dict[tuple[str, int], Path] = {}
        fold_ms: dict[int, float] = {}
        for n in sizes:
            dirs["kept", n], dirs["folded", n] = root / f"kept-{n}", root / f"folded-{n}"
            past_jobs(dirs["kept", n], session, n)
            fold_ms[n] = statistics.median(folded_jobs(dirs["folded", n], session, n, args.per_tick))
            counts = {way: speeches(dirs[way, n]) for way in ("kept", "folded")}
            if counts["kept"] != counts["folded"] or counts["kept"] == 0:
                raise SystemExit(f"scrape_cost: {n} jobs: counts differ after the fold: {counts}")
        samples: dict[tuple[str, int], list[float]] = {k: [] for k in dirs}
        # the sizes alternate, so drift of the machine hits each alike; the kept directories
        # apart, as a 2,000-file scrape leaves the caches cold for whatever runs next
        for way in ("folded", "kept"):
            for _ in range(args.scrapes):
                for n in sizes:
                    samples[way, n].append(scrape_cpu_ms(dirs[way, n]))
    med = {key: statistics.median(v) for key, v in samples.items()}
    base, top = sizes[0], sizes[-1]
    result = {**al.machine(), "loadavg_1m": os.getloadavg()[0], "scrapes": args.scrapes,
              "files_per_job": len(session), "per_tick": args.per_tick,
              "scrape_cpu_ms": {f"{way}@{n}": round(med[way, n], 3) for way, n in med},
              "fold_cpu_ms_per_tick": {str(n): round(ms, 1) for n, ms in fold_ms.items()},
              "folded_ratio": round(med["folded", top] / med["folded", base], 3),
              "kept_ratio": round(med["kept", top] / med["kept", base], 3)}
    print(f"scrape CPU, median of {args.scrapes} (load {result['loadavg_1m']:.2f}):")
    for n in sizes:
        print(f"  {n:>6} past jobs: kept {med['kept', n]:8.2f} ms   folded {med['folded', n]:6.2f} ms"
              f"   (a tick's fold of {args.per_tick}: median {fold_ms[n]:.1f} ms)")
    print(f"  folded {top}/{base}: {result['folded_ratio']:.3f}x (goal <= 1.10);"
          f" kept {top}/{base}: {result['kept_ratio']:.1f}x")
    al.append_result(args.out, json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
