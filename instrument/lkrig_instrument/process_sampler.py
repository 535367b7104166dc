"""Soak signals of the agent's processes: resident memory and open file descriptors, per role.

`start("worker")` runs in the livekit-agents worker process once the worker has started
(agent/worker.py on `worker_started`; server.py on the framework's "starting worker" log line
for a user's worker), `start("job")` in each job process (the rig's prewarm, and instrument()
for every session). Each started process samples itself every INTERVAL_S from a daemon thread,
reading /proc/self/statm and /proc/self/fd: two small reads, no psutil walk of the tree.

Why "livesum" gauges and a reaper: in prometheus_client's multiprocess mode each process writes
its own file and /metrics aggregates the files in PROMETHEUS_MULTIPROC_DIR. "livesum" sums the
processes of one role into one series (a bounded `role` label, no per-pid series churning over
a soak), but it counts a file until someone calls mark_process_dead() for its pid, and
livekit-agents never does: a SIGKILLed or exited job would keep its last RSS "alive". So the
worker's sampler also reaps: every tick, the files of pids that no longer exist are removed
(which also ends a dead job's share of lkrig_agent_sessions_active and lk_agents_active_job_count,
the other live gauges), and their counts are folded into one file per kind (carry.fold), which
keeps a scrape's cost flat over thousands of jobs. The worker must start sampling only after
the framework's own start-up has emptied the directory, or its file would be deleted under it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from pathlib import Path

from . import carry, names, prom

log = logging.getLogger("lkrig.instrument")

INTERVAL_S = 5.0
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PROCESS_FILE = re.compile(r"(?:gauge_live[a-z]*|counter|histogram|summary)_(\d+)\.db")

_started: dict[int, str] = {}  # pid -> role: one sampler per process, even after a fork
_lock = threading.Lock()


def resident_memory_bytes(proc: Path = Path("/proc/self")) -> int:
    """RSS from statm (pages; its second field), as `ps` and psutil report it."""
    return int((proc / "statm").read_text().split()[1]) * _PAGE_SIZE


def open_fds(proc: Path = Path("/proc/self")) -> int:
    """Entries of /proc/PID/fd; listing it opens one descriptor, which is not counted."""
    return max(len(os.listdir(proc / "fd")) - (1 if proc == Path("/proc/self") else 0), 0)


def asyncio_tasks(loop: asyncio.AbstractEventLoop | None = None) -> int:
    """Tasks not yet done on `loop` (the running one by default)."""
    return len(asyncio.all_tasks(loop))


def sample(role: str) -> None:
    """Write this process's RSS and fd count under `role` (one sample; the thread repeats it)."""
    if role not in names.PROCESS_ROLES:
        raise ValueError(f"process role {role!r}: expected one of {', '.join(names.PROCESS_ROLES)}")
    labels = {"role": role}
    prom.gauge_set(names.PROCESS_RESIDENT_MEMORY, labels, resident_memory_bytes())
    prom.gauge_set(names.PROCESS_OPEN_FDS, labels, open_fds())
    prom.gauge_set(names.PROCESSES, labels, 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def reap_dead(directory: str | None = None) -> list[int]:
    """For every pid with a file in the multiprocess directory that no longer runs: its live
    gauges removed (mark_process_dead), its counts folded into the past files (carry.fold), so
    that a scrape reads only what runs now; returns those pids. A no-op outside multiprocess
    mode."""
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not directory:
        return []
    from prometheus_client import multiprocess

    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    owners = {e: int(m.group(1)) for e in entries if (m := _PROCESS_FILE.fullmatch(e))}
    dead = sorted({pid for pid in owners.values() if not _alive(pid)})
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    carry.fold([Path(directory, e) for e, pid in owners.items() if pid in dead], Path(directory))
    return dead


def _tick(role: str) -> None:
    if role == "worker":
        reap_dead()
    sample(role)


def _run(role: str, interval: float) -> None:
    failed = False
    while True:
        time.sleep(interval)
        try:
            _tick(role)
            failed = False
        except Exception:  # a sampler must never take its process down; say it once per streak
            if not failed:
                log.warning("soak sampler (%s) failed", role, exc_info=True)
            failed = True


def start(role: str, interval: float = INTERVAL_S) -> bool:
    """Sample this process under `role` every `interval` seconds from now on (idempotent per
    process; the first role wins). False where there is no /proc to read (not Linux)."""
    if role not in names.PROCESS_ROLES:
        raise ValueError(f"process role {role!r}: expected one of {', '.join(names.PROCESS_ROLES)}")
    if not Path("/proc/self/statm").exists():
        log.info("soak sampler: no /proc here, process memory and fds are not exported")
        return False
    with _lock:
        if os.getpid() in _started:
            return True
        _started[os.getpid()] = role
    _tick(role)  # at once: short jobs and the first scrape see the series
    threading.Thread(target=_run, args=(role, interval), name=f"lkrig-sampler-{role}",
                     daemon=True).start()
    return True


def started_role() -> str | None:
    return _started.get(os.getpid())
