"""A SIGKILLed worker loses the log lines of errors its job processes had counted but not yet
logged: the count is a file write, the line travels livekit-agents' log pipe (a queue and a
thread in the job, a socket, a thread in the worker). Here that pipe is the framework's own
(ipc/log_queue.py) between two processes the test starts, and the worker is frozen before the
job counts, so exactly those lines are in flight when both are killed. rig.reconcile reads the
gap from the folder and the log, and the error check accepts the run only with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lkrig_instrument import carry

from rig import reconcile

REPO = Path(__file__).resolve().parents[1]
WORKER = """
import logging, socket, sys
from livekit.agents.ipc.log_queue import LogQueueListener
from livekit.agents.utils.aio import duplex_unix
out = logging.StreamHandler(sys.stdout)
out.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
logging.getLogger().addHandler(out)
sock = socket.socket(fileno=int(sys.argv[1]))
listener = LogQueueListener(duplex_unix._Duplex.open(sock), lambda record: None)
listener.start()
listener._thread.join()
"""
JOB = """
import logging, socket, sys
from livekit.agents.ipc.log_queue import LogQueueHandler
from livekit.agents.utils.aio import duplex_unix
from lkrig_instrument.ledger import LEDGER
sock = socket.socket(fileno=int(sys.argv[1]))
handler = LogQueueHandler(duplex_unix._Duplex.open(sock))
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
for line in sys.stdin:
    for _ in range(int(line)):
        LEDGER.count(sys.argv[2])
    print("counted", flush=True)
handler.close()  # as a job process ends (ipc/job_proc_lazy_main.py): its thread sends the rest
"""


def start(script: str, end: socket.socket, mp: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp), "PYTHONPATH": str(REPO / "instrument")}
    return subprocess.Popen([sys.executable, "-c", script, str(end.fileno()), *args], env=env,
                            pass_fds=[end.fileno()], text=True, **kw)  # type: ignore[call-overload]


def count(job: subprocess.Popen[str], n: int) -> None:
    assert job.stdin is not None and job.stdout is not None
    job.stdin.write(f"{n}\n")
    job.stdin.flush()
    assert job.stdout.readline() == "counted\n"


def wait_for_lines(log: Path, n: int) -> None:
    deadline = time.monotonic() + 30
    while sum(reconcile.logged_errors([log]).values()) < n:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_lines_in_flight_at_a_kill_are_the_gap_between_folder_and_log(tmp_path: Path) -> None:
    mp, log = tmp_path / "multiproc", tmp_path / "agent-0.log"
    mp.mkdir()
    procs: list[subprocess.Popen[str]] = []
    try:
        # An earlier job: counted twice, logged, exited, folded into the past file.
        ours, theirs = socket.socketpair()
        with open(log, "w") as f:
            procs.append(worker := start(WORKER, theirs, mp, stdout=f, stderr=subprocess.STDOUT))
        procs.append(job := start(JOB, ours, mp, "draining", stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        ours.close()
        theirs.close()
        count(job, 2)
        wait_for_lines(log, 2)
        assert job.stdin is not None
        job.stdin.close()
        job.wait(timeout=30)
        assert carry.fold(list(mp.glob("*.db")), mp) >= 1 and (mp / "counter_past.db").exists()

        # The next job: one error logged, then three counted while the worker is frozen.
        ours, theirs = socket.socketpair()
        worker.kill()
        worker.wait(timeout=30)
        with open(log, "a") as f:
            procs.append(worker := start(WORKER, theirs, mp, stdout=f, stderr=subprocess.STDOUT))
        procs.append(job := start(JOB, ours, mp, "tool_error_other", stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE))
        ours.close()
        theirs.close()
        count(job, 1)
        wait_for_lines(log, 3)
        worker.send_signal(signal.SIGSTOP)
        count(job, 3)
        for p in (job, worker):
            p.kill()
            p.wait(timeout=30)
    finally:
        for p in procs:
            p.kill()

    counted = reconcile.errors_in_folder(mp)
    logged = reconcile.logged_errors([log])
    assert counted == {"draining": 2, "tool_error_other": 4}, counted
    assert logged == {"draining": 2, "tool_error_other": 1}, log.read_text()
    gap = reconcile.log_gap(counted, logged)
    assert gap == {"tool_error_other": 3}

    # The run's check: exact with the gap, failing without it or with a line too many.
    assert all(c.ok for c in reconcile.error_checks(logged, counted, counted, gap))
    plain = {c.name: c for c in reconcile.error_checks(logged, counted, counted, {})}
    assert not plain["errors tool_error_other: agent logs == agent counter == Prometheus"].ok
    assert plain["errors draining: agent logs == agent counter == Prometheus"].ok
    too_many = {**logged, "tool_error_other": 5}
    extra = reconcile.log_gap(counted, too_many)
    assert extra == {"tool_error_other": -1}
    assert not all(c.ok for c in reconcile.error_checks(too_many, counted, counted, extra))
