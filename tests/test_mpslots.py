"""Issue 8, item 5: job processes take turns in reused multiprocess files (lkrig_instrument.mpslots):
the number of files stays bounded, every sum /metrics serves stays the same, and the counts of a
process (killed or not) outlive it."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess

L = {"scenario": "t", "profile": "t", "agents_version": "t"}


def aggregate(d: Path) -> dict:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(d))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in registry.collect() for s in m.samples}


def _job(d: str, turns: int, hold: str | None, fork: bool) -> None:
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == d  # before prometheus_client's import
    from lkrig_instrument import mpslots, names, process_sampler, prom

    for _ in range(turns):
        prom.inc(names.TURNS, L)
    prom.observe(names.TURN_SECONDS, {**L, "stage": "e2e"}, 0.3)
    process_sampler.sample("job")
    if fork:
        pid = os.fork()
        if pid == 0:
            prom.inc(names.TURNS, L, 100)
            os._exit(0 if mpslots.slot() not in (None,) else 3)
        os.waitpid(pid, 0)
    if hold is not None:  # a file, not an Event: a SIGKILLed waiter would wedge an Event
        deadline = time.monotonic() + 60
        while not os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.05)


def run_jobs(d: Path, n: int, turns: int = 1, fork: bool = False, ctx: str = "spawn") -> None:
    c = mp.get_context(ctx)
    for _ in range(n):
        p = c.Process(target=_job, args=(str(d), turns, None, fork))
        start(p, d)
        p.join(60)
        assert p.exitcode == 0


def start(p: mp.process.BaseProcess, d: Path) -> None:
    old = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(d)
    try:
        p.start()
    finally:
        if old is None:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = old


def turns(values: dict) -> float:
    return sum(v for (name, _), v in values.items() if name == "agent_turns_total")


@pytest.fixture(autouse=True)
def _default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LKRIG_MULTIPROC_SLOTS", raising=False)


def test_sequential_jobs_share_one_file_per_type_and_keep_every_count(tmp_path: Path) -> None:
    run_jobs(tmp_path, 12, turns=2)
    dbs = sorted(p.name for p in tmp_path.glob("*.db") if not p.name.startswith("gauge_"))
    assert dbs == ["counter_slot0.db", "histogram_slot0.db"], dbs
    v = aggregate(tmp_path)
    assert turns(v) == 24
    assert v[("agent_turn_seconds_count", (("agents_version", "t"), ("profile", "t"),
                                           ("scenario", "t"), ("stage", "e2e")))] == 12


def test_concurrent_jobs_take_distinct_slots_and_a_killed_ones_counts_survive(tmp_path: Path) -> None:
    c = mp.get_context("spawn")
    hold = str(tmp_path / "release")
    procs = [c.Process(target=_job, args=(str(tmp_path), 5, hold, False)) for _ in range(3)]
    for p in procs:
        start(p, tmp_path)
    deadline = time.monotonic() + 60
    while turns(aggregate(tmp_path)) < 15 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert turns(aggregate(tmp_path)) == 15
    counters = sorted(p.name for p in tmp_path.glob("counter_*.db"))
    assert counters == ["counter_slot0.db", "counter_slot1.db", "counter_slot2.db"]
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].join(10)
    assert turns(aggregate(tmp_path)) == 15  # the dead one's count stays
    run_jobs(tmp_path, 2, turns=1)  # the freed slot is taken over and carried on from
    assert turns(aggregate(tmp_path)) == 17
    assert len(list(tmp_path.glob("counter_*.db"))) == 3
    Path(hold).touch()
    for p in procs[1:]:
        p.join(30)
    run_jobs(tmp_path, 1, turns=1)
    assert turns(aggregate(tmp_path)) == 18
    assert len(list(tmp_path.glob("counter_*.db"))) == 3


def test_gauges_stay_per_pid_and_are_reaped(tmp_path: Path) -> None:
    from lkrig_instrument import process_sampler

    run_jobs(tmp_path, 3)
    live = list(tmp_path.glob("gauge_livesum_*.db"))
    assert len(live) == 3 and all(p.stem.rsplit("_", 1)[1].isdigit() for p in live)
    assert len(process_sampler.reap_dead(str(tmp_path))) == 3
    assert not list(tmp_path.glob("gauge_livesum_*.db"))
    assert turns(aggregate(tmp_path)) == 3


def test_a_forked_child_writes_to_a_slot_of_its_own(tmp_path: Path) -> None:
    run_jobs(tmp_path, 2, turns=1, fork=True)
    assert turns(aggregate(tmp_path)) == 2 + 200
    assert sorted(p.name for p in tmp_path.glob("counter_*.db")) == ["counter_slot0.db",
                                                                      "counter_slot1.db"]


def test_off_and_non_multiprocessing_processes_keep_per_pid_files(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LKRIG_MULTIPROC_SLOTS", "off")
    (tmp_path / "off").mkdir()
    run_jobs(tmp_path / "off", 2)
    assert len(list((tmp_path / "off").glob("counter_*.db"))) == 2
    assert not list((tmp_path / "off").glob("*slot*"))
    monkeypatch.delenv("LKRIG_MULTIPROC_SLOTS")
    plain = tmp_path / "plain"
    plain.mkdir()
    code = ("from lkrig_instrument import names, prom; "
            "prom.inc(names.TURNS, {'scenario': 't', 'profile': 't', 'agents_version': 't'})")
    for _ in range(2):  # e.g. the worker's own process: not a multiprocessing child
        subprocess.run([sys.executable, "-c", code], check=True,
                       env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(plain)})
    assert len(list(plain.glob("counter_*.db"))) == 2
    assert turns(aggregate(plain)) == 2


def test_the_worker_cleanup_leaves_the_locks_of_live_processes(tmp_path: Path) -> None:
    """livekit-agents empties the folder's files at start, not its subdirectories: a job that
    outlives its worker keeps its slot against the next worker's jobs."""
    c = mp.get_context("spawn")
    hold = str(tmp_path / "release")
    orphan = c.Process(target=_job, args=(str(tmp_path), 1, hold, False))
    start(orphan, tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "counter_slot0.db").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for f in tmp_path.iterdir():  # livekit/agents/worker.py's cleanup
        if f.is_file():
            f.unlink()
    run_jobs(tmp_path, 1, turns=4)
    assert sorted(p.name for p in tmp_path.glob("counter_*.db")) == ["counter_slot1.db"]
    assert turns(aggregate(tmp_path)) == 4
    Path(hold).touch()
    orphan.join(30)
