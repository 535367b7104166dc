"""Past processes' counts folded into one file per kind (lkrig_instrument.carry.fold): every
count stays, exactly, through the fold, a fold cut short at any step, and scrapes running
beside it; the number of files a scrape reads stays that of the live processes plus one per
kind. The scrape cost this bounds is measured by bench/scrape_cost.py."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lkrig_instrument import carry, names, process_sampler
from prometheus_client.utils import floatToGoString

REPO = Path(__file__).resolve().parents[1]
LABELS = {"scenario": "seed", "profile": "fast", "agents_version": "1.8.9"}
# A job process's counting: `amount` handoffs, one turn of `amount` seconds, and a summary of
# its own (prometheus_client's third kind that only adds up); it stays alive while stdin is open.
JOB = """
import sys
from prometheus_client import Summary
from lkrig_instrument import names, prom
amount = float(sys.argv[1])
labels = {"scenario": "seed", "profile": "fast", "agents_version": "1.8.9"}
prom.inc(names.HANDOFFS, labels, amount)
prom.observe(names.TURN_SECONDS, {**labels, "stage": "e2e"}, amount)
Summary("lkrig_test_job_seconds", "a summary a job wrote").observe(amount)
print("counted", flush=True)
sys.stdin.read()
"""
PID_MAX_PLUS = 1 << 23  # above Linux's largest pid_max (2**22): no process runs with such pids


def job(mp: Path, amount: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp),
           "PYTHONPATH": str(REPO / "instrument")}
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(amount)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "counted\n"
    return proc


def finished_jobs(mp: Path, amounts: list[float]) -> None:
    for amount in amounts:
        proc = job(mp, amount)
        proc.communicate("", timeout=30)


def served(mp: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in carry.Collector(mp).collect() for s in m.samples}


def value(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


def assert_counts(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], amounts: list[float]) -> None:
    """What `amounts` jobs counted, read back: exact for counts, to float rounding for sums
    (the fold adds them in another order)."""
    assert value(got, "lkrig_agent_handoffs_total", **LABELS) == sum(amounts)
    turns, stage = names.TURN_SECONDS.name, {**LABELS, "stage": "e2e"}
    assert value(got, f"{turns}_count", **stage) == len(amounts)
    assert value(got, f"{turns}_sum", **stage) == pytest.approx(sum(amounts), rel=1e-12)
    for le in (*names.TURN_SECONDS.buckets, float("inf")):
        at_most = sum(a <= le for a in amounts)
        assert value(got, f"{turns}_bucket", **stage, le=floatToGoString(le)) == at_most, le
    assert value(got, "lkrig_test_job_seconds_count") == len(amounts)
    assert value(got, "lkrig_test_job_seconds_sum") == pytest.approx(sum(amounts), rel=1e-12)


def counting_files(mp: Path) -> list[str]:
    return sorted(p.name for p in mp.iterdir() if carry.kind_of(p))


def test_the_sampler_folds_what_finished_jobs_counted_and_leaves_a_running_job_alone(
        tmp_path: Path) -> None:
    mp = tmp_path / "multiproc"
    mp.mkdir()
    amounts = [0.25, 1.5, 3.0, 7.0]
    finished_jobs(mp, amounts[:2])
    assert len(counting_files(mp)) == 6  # a counter, a histogram and a summary file per job
    running = job(mp, amounts[2])
    try:
        assert process_sampler.reap_dead(str(mp)) != []
        assert_counts(served(mp), amounts[:3])
        kept = [f for f in counting_files(mp) if "_past" not in f]
        assert kept == sorted(f"{k}_{running.pid}.db" for k in carry.KINDS)
        finished_jobs(mp, amounts[3:])  # folded into the past files already there
        process_sampler.reap_dead(str(mp))
        assert_counts(served(mp), amounts)
    finally:
        running.communicate("", timeout=30)
    process_sampler.reap_dead(str(mp))
    assert counting_files(mp) == sorted(f"{k}_past.db" for k in carry.KINDS)
    assert_counts(served(mp), amounts)
    assert sorted(p.name for p in mp.iterdir() if not p.name.startswith("gauge_")) == counting_files(mp)


def copies(mp: Path, template: Path, count: int) -> list[float]:
    """`count` past jobs that each counted what the template job did (one real job's files,
    under pids no process can have)."""
    for i in range(count):
        for kind in carry.KINDS:
            shutil.copy(template / f"{kind}_{template.name}.db", mp / f"{kind}_{PID_MAX_PLUS + i}.db")
    return [float(template.name.split("-")[0])] * count


def template_job(tmp_path: Path, amount: float) -> Path:
    """A directory named '<amount>-<pid>' holding one finished job's three files, renamed to
    that name."""
    work = tmp_path / "template-work"
    work.mkdir()
    proc = job(work, amount)
    proc.communicate("", timeout=30)
    out = tmp_path / f"{amount}-{proc.pid}"
    out.mkdir()
    for kind in carry.KINDS:
        (work / f"{kind}_{proc.pid}.db").rename(out / f"{kind}_{out.name}.db")
    return out


class Killed(BaseException):
    """The fold's process dies here."""


def test_a_fold_cut_short_at_any_step_is_finished_or_undone_without_losing_a_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    template = template_job(tmp_path, 2.0)
    steps = 0
    while True:  # kill the fold at its 1st, 2nd, ... file operation until one runs to the end
        mp = tmp_path / f"multiproc-{steps}"
        mp.mkdir()
        amounts = copies(mp, template, 3)
        process_sampler.reap_dead(str(mp))  # a past file to fold into
        amounts += copies(mp, template, 2)
        left = [steps]

        def dying(real, *args, left=left, **kwargs):  # type: ignore[no-untyped-def]
            if left[0] == 0:
                raise Killed
            left[0] -= 1
            return real(*args, **kwargs)

        with monkeypatch.context() as m:
            for op in ("replace", "unlink", "write_text"):
                real = getattr(Path, op)
                m.setattr(Path, op, lambda self, *a, real=real, **k: dying(real, self, *a, **k))
            try:
                process_sampler.reap_dead(str(mp))
                finished = True
            except Killed:
                finished = False
        carry.stash(mp)  # what the next worker start does first (it recovers), then its restore
        carry.restore(mp)
        assert_counts(served(mp), amounts)
        assert sorted(p.name for p in mp.iterdir()) == sorted(f"{k}_past.db" for k in carry.KINDS), steps
        if finished:
            break
        steps += 1
    assert steps >= 8, "the fold takes a write, a rename to commit, and a removal per file at least"


def test_scrapes_beside_folds_see_every_count_exactly_once(tmp_path: Path) -> None:
    mp = tmp_path / "multiproc"
    mp.mkdir()
    template = template_job(tmp_path, 0.5)
    per_round, rounds = 20, 15
    seen: list[float] = []
    failed: list[BaseException] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            try:
                seen.append(value(served(mp), "lkrig_agent_handoffs_total", **LABELS))
            except Exception as e:  # a file folded away between the listing and its read
                failed.append(e)

    def fold_rounds() -> None:
        try:
            for r in range(rounds):
                for i in range(per_round):
                    n = PID_MAX_PLUS + r * per_round + i
                    for kind in carry.KINDS:
                        shutil.copy(template / f"{kind}_{template.name}.db", mp / f"{kind}_{n}.db.new")
                        os.replace(mp / f"{kind}_{n}.db.new", mp / f"{kind}_{n}.db")
                process_sampler.reap_dead(str(mp))
        finally:
            done.set()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    fold_rounds()
    scraper.join(timeout=60)
    # a job's three files appear one by one, so a scrape may see part of a round's jobs, but
    # never a job twice, and never fewer than it saw before
    assert not failed, failed[:3]
    assert len(seen) > rounds, "the scrapes did not overlap the folds"
    assert all(later >= earlier for earlier, later in itertools.pairwise(seen)), seen
    assert all(v * 2 == int(v * 2) and v <= per_round * rounds * 0.5 for v in seen), seen
    assert_counts(served(mp), [0.5] * per_round * rounds)
    assert len(counting_files(mp)) == len(carry.KINDS)
