"""Soak signals: RSS and open fds per worker and per job process (summed by
role, dead processes reaped), asyncio tasks per session, speech handles unfinished at session
end: sampled, exported through the multiprocess directory, alerted on, and live on the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lkrig_instrument import names, process_sampler
from prometheus_client import CollectorRegistry, multiprocess
from replayutil import replay
from stackutil import alive, native_stack, prom_query, wait_until

from rig import native

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tests" / "tools"
MiB = 1024 * 1024

# A process of the agent's kind: samples itself under ROLE into PROMETHEUS_MULTIPROC_DIR, counts
# one unfinished handle (a counter, which must outlive it), prints its pid, then waits for stdin.
CHILD = """
import os, sys, time
from lkrig_instrument import names, process_sampler, prom
role, interval, grow = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
if interval > 0:
    process_sampler.start(role, interval)
else:
    process_sampler.sample(role)
prom.inc(names.SPEECH_HANDLES_UNFINISHED, {"scenario": "t", "profile": "t", "agents_version": "t"})
print(os.getpid(), flush=True)
if grow:
    time.sleep(0.5)
    held = bytearray(grow * 1024 * 1024)
    for i in range(0, len(held), 4096):
        held[i] = 1  # touch every page: resident, not just reserved
sys.stdin.read()
"""


def child(mp_dir: Path, role: str, interval: float = 0.0,
          grow_mib: int = 0) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO / "instrument"), str(REPO)])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, role, str(interval), str(grow_mib)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def aggregate(mp_dir: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the worker's /metrics serves from the directory: (sample name, labels) -> value."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(mp_dir))  # type: ignore[no-untyped-call]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in registry.collect() for s in m.samples}


def gauge(values: dict[Any, float], metric: names.Metric, role: str) -> float | None:
    return values.get((metric.name, (("role", role),)))


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


# --- the readings -----------------------------------------------------------------------------
def test_rss_and_open_fds_follow_what_the_process_holds(tmp_path: Path) -> None:
    fds = process_sampler.open_fds()
    files = [open(tmp_path / f"f{i}", "w") for i in range(20)]
    try:
        assert process_sampler.open_fds() == fds + 20
    finally:
        for f in files:
            f.close()
    assert process_sampler.open_fds() == fds
    rss = process_sampler.resident_memory_bytes()
    held = bytearray(64 * MiB)
    for i in range(0, len(held), 4096):
        held[i] = 1
    grown = process_sampler.resident_memory_bytes() - rss
    assert 56 * MiB < grown < 80 * MiB, grown / MiB
    # the same figure `ps` reports (RSS in KiB), within what a moment's allocation moves
    ps = int(subprocess.run(["ps", "-o", "rss=", "-p", str(os.getpid())], capture_output=True,
                            text=True, check=True).stdout) * 1024
    assert abs(process_sampler.resident_memory_bytes() - ps) < 4 * MiB
    del held


def test_an_unknown_role_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'jobs'.*worker, job"):
        process_sampler.start("jobs")
    with pytest.raises(ValueError, match="'parent'"):
        process_sampler.sample("parent")


# --- multiprocess aggregation ----------------------------------------------------------------
def test_job_processes_are_summed_by_role_and_a_killed_ones_share_is_reaped(tmp_path: Path) -> None:
    mp = tmp_path / "multiproc"
    mp.mkdir()
    a, pid_a = child(mp, "job")
    b, pid_b = child(mp, "job")
    try:
        both = aggregate(mp)
        assert gauge(both, names.PROCESSES, "job") == 2
        rss_both = gauge(both, names.PROCESS_RESIDENT_MEMORY, "job")
        assert rss_both is not None and 2 * 10 * MiB < rss_both < 2 * 200 * MiB
        fds_both = gauge(both, names.PROCESS_OPEN_FDS, "job")
        assert fds_both is not None and fds_both >= 2 * 3  # stdin, stdout, stderr at least
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        # livesum alone keeps a dead process's last values: this is why the worker reaps
        assert gauge(aggregate(mp), names.PROCESSES, "job") == 2
        assert process_sampler.reap_dead(str(mp)) == [pid_a]
        one = aggregate(mp)
        assert gauge(one, names.PROCESSES, "job") == 1
        rss_one = gauge(one, names.PROCESS_RESIDENT_MEMORY, "job")
        assert rss_one is not None and 10 * MiB < rss_one < rss_both
        assert process_sampler.reap_dead(str(mp)) == []  # the survivor is left alone
        # the dead job's counts are kept: only live gauges go
        unfinished = sum(v for (name, _), v in one.items()
                         if name == names.SPEECH_HANDLES_UNFINISHED.name)
        assert unfinished == 2
        assert pid_b not in process_sampler.reap_dead(str(mp))
    finally:
        stop(a)
        stop(b)


def test_the_worker_sampler_follows_growth_and_reaps_exited_jobs_by_itself(tmp_path: Path) -> None:
    mp = tmp_path / "multiproc"
    mp.mkdir()
    job, job_pid = child(mp, "job")
    worker, _ = child(mp, "worker", interval=0.2, grow_mib=96)
    try:
        first = gauge(aggregate(mp), names.PROCESS_RESIDENT_MEMORY, "worker")
        assert first is not None
        wait_until(lambda: (gauge(aggregate(mp), names.PROCESS_RESIDENT_MEMORY, "worker") or 0)
                   > first + 80 * MiB, 10, "the worker's RSS sample to grow by its 96 MiB")
        assert gauge(aggregate(mp), names.PROCESSES, "job") == 1
        job.communicate("", timeout=10)  # exits normally, leaving its gauge file behind
        wait_until(lambda: gauge(aggregate(mp), names.PROCESSES, "job") is None, 10,
                   "the worker's sampler to reap the exited job's gauges")
        assert not list(mp.glob(f"gauge_live*_{job_pid}.db"))
        assert gauge(aggregate(mp), names.PROCESSES, "worker") == 1
    finally:
        stop(job)
        stop(worker)


# --- counts carried over a worker's start (lkrig_instrument.carry) ----------------------------
def _worker(mp_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The rig's real agent worker on `mp_dir`; livekit-server is not needed for its /metrics
    (the worker serves it before it connects, and keeps retrying a closed port)."""
    from rig import headless

    port = headless.free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir), "AGENT_METRICS_PORT": str(port),
           "AGENT_HEALTH_PORT": str(headless.free_port()), "LIVEKIT_URL": f"ws://127.0.0.1:{headless.free_port()}",
           "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32,
           "PYTHONPATH": os.pathsep.join([str(REPO / "instrument"), str(REPO)])}
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "agent.worker", "start"], cwd=REPO, env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/metrics"


def _served(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    from rig import promapi

    try:
        return promapi.scrape(url, timeout=2)
    except OSError:
        return None


def test_a_job_process_importing_the_worker_module_leaves_the_running_jobs_counts_alone(
        tmp_path: Path) -> None:
    """A job process imports the user's module (which calls server_options(), so
    watch_worker_start()) while multiprocessing unpickles its target, before parent_process() is
    set. Seen on the BYO stack: the second job's import stashed the first job's live counter
    file, and Prometheus lost that job's counts. Here the worker has armed itself, a job is
    running (its counter file), and a spawned job imports such a module: the file stays put."""
    mp = tmp_path / "multiproc"
    mp.mkdir()
    (tmp_path / "jobmod.py").write_text(
        "from lkrig_instrument import server\n"
        "server.watch_worker_start()  # at import, as server_options() does\n"
        "def target():\n    pass\n")
    running = mp / "counter_4242.db"
    subprocess.run([sys.executable, "-c", (
        "import multiprocessing as m, pathlib, sys\nfrom lkrig_instrument import server\n"
        "if __name__ == '__main__':\n"
        "    server.watch_worker_start()  # the worker, before it runs: nothing to stash yet\n"
        f"    pathlib.Path({str(running)!r}).write_bytes(b'')  # a job starts and counts\n"
        "    import jobmod\n"
        "    p = m.get_context('spawn').Process(target=jobmod.target); p.start(); p.join()\n"
        "    assert p.exitcode == 0")], check=True, cwd=tmp_path,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp),
             "PYTHONPATH": os.pathsep.join([str(REPO / "instrument"), str(tmp_path)])})
    assert running.exists() and not (mp / "carried").exists(), sorted(mp.rglob("*"))


def test_a_worker_started_again_on_its_folder_serves_every_count_of_its_earlier_processes(
        tmp_path: Path) -> None:
    mp = tmp_path / "multiproc"
    mp.mkdir()
    job, _ = child(mp, "job")  # a job that counted one unfinished handle, then was killed
    job.kill()
    job.wait(timeout=10)
    # A job process importing a worker module (so calling server_options()) moves nothing aside.
    subprocess.run([sys.executable, "-c", (
        "import multiprocessing as m\nfrom lkrig_instrument import server\n"
        "if __name__ == '__main__':\n"
        "    p = m.get_context('spawn').Process(target=server.watch_worker_start); p.start(); p.join()\n"
        "    assert p.exitcode == 0")], check=True, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp),
        "PYTHONPATH": str(REPO / "instrument")})
    assert [p.name for p in mp.glob("counter_*.db")], "the job's counter file must stay put"
    unfinished = names.SPEECH_HANDLES_UNFINISHED.name
    log = tmp_path / "worker.log"
    for start in (1, 2):  # the second start carries the first one's carried counts again
        worker, url = _worker(mp, log)
        try:
            served = wait_until(lambda url=url: _served(url), 60, f"start {start}: the worker's /metrics")
            # the first answer already holds the count: Prometheus never sees it dip
            assert sum(v for (n, _), v in served.items() if n == unfinished) == 1, (
                f"start {start}: {log.read_text()[-3000:]}")
            # a dead job is no process once the worker's sampler has reaped its gauge files (its
            # first tick may come after the first scrape: failed CI once)
            wait_until(lambda url=url: gauge(_served(url) or {}, names.PROCESSES, "job") in (None, 0.0),
                       3 * process_sampler.INTERVAL_S + 10, f"start {start}: the dead job's gauges reaped")
            # folded back once livekit-agents has logged its start (served meanwhile from the stash)
            wait_until(lambda: not (mp / "carried").exists(), 30, f"start {start}: the stash folded back")
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


# --- per session ------------------------------------------------------------------------------
def _sample_value(metric_name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(metric_name, labels) or 0.0


def test_a_session_closing_with_a_pending_speech_counts_it_once_with_its_tasks() -> None:
    from livekit.agents import AgentSession
    from livekit.agents.voice.events import CloseEvent, CloseReason, SpeechCreatedEvent
    from livekit.agents.voice.speech_handle import SpeechHandle
    from lkrig_instrument import instrument

    async def run() -> dict[str, float]:
        session: AgentSession[None] = AgentSession()
        probe = instrument(session, scenario="soak_unit", profile="none")
        full = probe.labels
        before = {
            "unfinished": _sample_value(names.SPEECH_HANDLES_UNFINISHED.name, full),
            "end": _sample_value(names.SESSION_ASYNCIO_TASKS.name + "_count", {**full, "phase": "end"}),
        }
        pending, played = SpeechHandle.create(), SpeechHandle.create()
        for handle in (pending, played):
            session.emit("speech_created", SpeechCreatedEvent(
                user_initiated=True, source="say", speech_handle=handle))
        played._mark_done()
        await asyncio.sleep(0)
        session.emit("close", CloseEvent(reason=CloseReason.USER_INITIATED))
        session.emit("close", CloseEvent(reason=CloseReason.USER_INITIATED))  # counted once
        return {
            "unfinished": _sample_value(names.SPEECH_HANDLES_UNFINISHED.name, full) - before["unfinished"],
            "end": _sample_value(names.SESSION_ASYNCIO_TASKS.name + "_count",
                                 {**full, "phase": "end"}) - before["end"],
            "tasks": _sample_value(names.SESSION_ASYNCIO_TASKS.name + "_sum", {**full, "phase": "end"}),
        }

    got = asyncio.run(run())
    assert got["unfinished"] == 1
    assert got["end"] == 1
    assert got["tasks"] >= 1  # at least the task that ran the session


def test_a_session_event_the_framework_cannot_send_is_counted_as_such_and_as_no_error() -> None:
    """livekit-agents' own SessionHost writing to a room it is not connected to: the failure the
    soaks logged ("room session transport is closed"), counted once per event by its own metric."""
    from livekit.agents import AgentSession, utils
    from livekit.agents.voice.remote_session import RoomSessionTransport, SessionHost
    from livekit.protocol import agent_pb
    from lkrig_instrument import LEDGER, instrument

    from livekit import rtc

    async def run() -> tuple[float, int]:
        probe = instrument(AgentSession(), scenario="soak_unit", profile="none")
        before = _sample_value(names.SESSION_EVENTS_UNSENT.name, probe.labels)
        errors = sum(LEDGER.counts.values())
        host = SessionHost(RoomSessionTransport(rtc.Room()))
        events = utils.aio.Chan[agent_pb.agent_session.AgentSessionMessage]()
        for _ in range(2):
            events.send_nowait(agent_pb.agent_session.AgentSessionMessage())
        events.close()
        await host._write_loop(events)
        return _sample_value(names.SESSION_EVENTS_UNSENT.name, probe.labels) - before, \
            sum(LEDGER.counts.values()) - errors

    unsent, errors = asyncio.run(run())
    assert (unsent, errors) == (2, 0)


def test_replayed_sessions_export_their_tasks_at_the_end_and_no_unfinished_handle(tmp_path: Path) -> None:
    r = replay(tmp_path, "--scenario", "fix_say_before_handoff", "--profile", "fast", "--runs", "3",
               "--time-scale", "10", "--concurrency", "3")
    assert r.rc == 0, r.stderr
    assert r.sample(names.SESSION_ASYNCIO_TASKS.name + "_count", phase="end") == 3
    assert r.sample(names.SESSION_ASYNCIO_TASKS.name + "_sum", phase="end") >= 3
    assert r.sample(names.SPEECH_HANDLES_UNFINISHED.name, scenario="fix_say_before_handoff") == 0


# --- the alert rule ---------------------------------------------------------------------------
MUTATIONS = {
    "threshold": ("* 3600 > 64 * 1024 * 1024", "* 3600 > 16 * 1024 * 1024"),
    "one window only": ("\n          and\n          deriv(lkrig_process_resident_memory_bytes"
                        "{role=\"worker\"}[15m] offset 15m) * 3600 > 64 * 1024 * 1024\n", "\n"),
    "jobs too": ('lkrig_process_resident_memory_bytes{role="worker"}', "lkrig_process_resident_memory_bytes"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_the_memory_growth_rule_test_notices_a_changed_rule(tmp_path: Path, case: str) -> None:
    sys.path.insert(0, str(TOOLS))
    import prom_check

    prom = tmp_path / "prometheus"
    shutil.copytree(REPO / "prometheus", prom)
    assert prom_check.test_rules(prom_check.test_files(prom)) == []
    rules = prom / "rules" / "speech-scheduling.yml"
    old, new = MUTATIONS[case]
    text = rules.read_text()
    assert old in text, old
    rules.write_text(text.replace(old, new))
    problems = prom_check.test_rules(prom_check.test_files(prom))
    assert len(problems) == 1 and "AgentWorkerMemoryGrowing" in problems[0], problems


# --- live: a real worker, a real caller -------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[native.StackInfo]:
    with native_stack(tmp_path_factory, "soak-stack", agents=1, port_offset=11800) as info:
        yield info


def _exported(stack: native.StackInfo) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with __import__("urllib.request").request.urlopen(stack.agents[0].metrics_url, timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_a_live_worker_exports_soak_signals_for_worker_and_job_processes(stack: native.StackInfo) -> None:
    from test_e2e import ASK, call, session_pid

    mp_dir = Path(stack.run_dir) / "multiproc" / "agent-0"
    before = _exported(stack)
    assert (gauge(before, names.PROCESS_RESIDENT_MEMORY, "worker") or 0) > 50 * MiB
    assert (gauge(before, names.PROCESS_OPEN_FDS, "worker") or 0) > 10
    assert gauge(before, names.PROCESSES, "worker") == 1
    result = call(stack, "fix_filler_in_on_enter", "fast", ASK, seed=4)
    assert result["join"]["outcome"] == "ok", result["join"]
    pid = session_pid(result)
    after = _exported(stack)
    # the job process (and any idle one the pool keeps warm) under role job
    assert (gauge(after, names.PROCESSES, "job") or 0) >= 1
    assert (gauge(after, names.PROCESS_RESIDENT_MEMORY, "job") or 0) > 50 * MiB
    assert (gauge(after, names.PROCESS_OPEN_FDS, "job") or 0) > 10
    labels = (("agents_version", "1.8.9"), ("profile", "fast"), ("scenario", "fix_filler_in_on_enter"))
    # the session closed: its tasks at the end were observed, and no handle was left pending
    ended = (names.SESSION_ASYNCIO_TASKS.name + "_count", tuple(sorted((*labels, ("phase", "end")))))
    wait_until(lambda: _exported(stack).get(ended, 0) >= 1, 30, "the session's end-of-session sample")
    assert _exported(stack).get((names.SPEECH_HANDLES_UNFINISHED.name, labels)) == 0
    # the job process exits; its RSS leaves the sum within a sample or two, it does not linger
    wait_until(lambda: not alive(pid), 30, f"job process {pid} to exit")
    wait_until(lambda: not list(mp_dir.glob(f"gauge_live*_{pid}.db")), 15,
               f"the worker to reap job {pid}'s gauges")
    # Prometheus has both roles, as the Soak row reads them
    for role in names.PROCESS_ROLES:
        wait_until(lambda role=role: prom_query(
            stack.prometheus_url, f'lkrig_process_resident_memory_bytes{{role="{role}"}} > 0'),
            20, f"Prometheus to have the {role} RSS")
    _soak_row_answers(stack)


def _soak_row_answers(stack: native.StackInfo) -> None:
    """Every Soak-row panel of the dashboard answers from this stack's Prometheus."""
    sys.path.insert(0, str(TOOLS))
    import check_panels_live

    board = json.loads((REPO / "grafana" / "dashboards" / "speech-scheduling.json").read_text())
    rows = [i for i, p in enumerate(board["panels"]) if p["type"] == "row"]
    start = next(i for i in rows if board["panels"][i]["title"] == "Soak")
    end = next((i for i in rows if i > start), len(board["panels"]))
    # a collapsed row holds its panels; an expanded one is followed by them
    board["panels"] = board["panels"][start]["panels"] or board["panels"][start + 1:end]
    assert len(board["panels"]) >= 4
    path = Path(stack.run_dir) / "soak-row.json"
    path.write_text(json.dumps(board))
    report = check_panels_live.wait_until_ok(stack.prometheus_url, 30, dashboards=[path],
                                             rate_interval="5m", range_="5m", interval="15s")
    assert report.ok, "\n".join(report.failures)

