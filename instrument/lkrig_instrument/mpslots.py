"""A bounded number of multiprocess files: job processes take turns in reused "slot" files.

prometheus_client's multiprocess mode gives every process its own file per metric type
(`counter_<pid>.db`, `histogram_<pid>.db`) and keeps the counter and histogram files of dead
processes, so that their counts outlive them. The worker's /metrics reads and merges every one of
them at every scrape. livekit-agents runs each job in a new process, so the files grow with the
jobs a worker has run, and so does the cost of each scrape: measured, 1 ms of the worker's CPU
per past job per scrape with the instrumentation's series, i.e. a worker that has run 1000 jobs
spends ~1 s per scrape, half a core at the native stack's 2 s interval.

Here a job process writes its counters, histograms and summaries to `<type>_slot<N>.db`
instead, where slot N is held by one live process at a time: the first of the lock files
`<dir>/.lkrig-slots/<N>.lock` that it can `flock(LOCK_EX)`, kept for the rest of its life (the
kernel releases it when the process ends, however it ends). A process that takes a slot over
opens the files its predecessors left and carries on from their values (prometheus_client reads
an existing file's values back when it opens it), so every sum /metrics serves is what it would
have been with one file per process; only the number of files changes: the most job processes
that were counting at once, instead of every job ever run.

What stays as it was:
  * gauges: per-pid files (`livesum` sums the live processes; process_sampler.reap_dead removes
    the dead ones);
  * the worker's own process (not a multiprocessing child): per-pid files; it is one process;
  * outside multiprocess mode (no PROMETHEUS_MULTIPROC_DIR when prometheus_client was
    imported), or with LKRIG_MULTIPROC_SLOTS=off, or where flock does not work: nothing
    changes (a process that cannot take a slot writes per-pid files).

The lock files live in a subdirectory, which livekit-agents' start-up cleanup (it deletes the
folder's files, not its subdirectories) leaves in place: a job process that outlives a killed
worker keeps its slot, and the restarted worker's jobs take other ones.

Only public prometheus_client API: `values.MultiProcessValue(process_identifier=...)` and the
module's `ValueClass`, which every metric child reads when it is created.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

SLOTS_ENV = "LKRIG_MULTIPROC_SLOTS"  # "off": per-process files, prometheus_client's default
LOCK_DIR = ".lkrig-slots"
MAX_SLOTS = 4096  # past this many live writers (never, in practice): per-process files

_lock = threading.RLock()
_installed = False
_pid_class: Any = None  # prometheus_client's own ValueClass: per-pid files
_slot_class: Any = None  # the slot-file ValueClass of this process, made on first use
_slot_fd: int | None = None
_slot_name: str | None = None


def _directory() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def _take_slot() -> str | None:
    """The first free slot of the multiprocess directory, locked for this process's life; None
    if there is none or locks do not work here."""
    import fcntl

    global _slot_fd
    directory = _directory()
    if not directory:
        return None
    try:
        locks = os.path.join(directory, LOCK_DIR)
        os.makedirs(locks, exist_ok=True)
        for n in range(MAX_SLOTS):
            fd = os.open(os.path.join(locks, f"{n}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live process holds it
                os.close(fd)
                continue
            except OSError:  # no flock on this filesystem
                os.close(fd)
                return None
            _slot_fd = fd
            return f"slot{n}"
    except OSError:
        return None
    return None


def _identifier() -> str:
    """prometheus_client's process_identifier for the slot files: distinct among live
    processes (the lock), stable for one process (cached; a fork starts over)."""
    name = _slot_name
    if name is None:
        with _lock:
            name = _slot_name or _choose()
    return name


def _choose() -> str:
    global _slot_name
    _slot_name = _take_slot() or str(os.getpid())
    return _slot_name


def _after_fork_in_child() -> None:
    """A forked child must not write to its parent's slot. Closing the inherited descriptor
    leaves the parent's lock in place (flock locks belong to the open file, which the parent
    still has open)."""
    global _lock, _slot_fd, _slot_name
    _lock = threading.RLock()
    if _slot_fd is not None:
        try:
            os.close(_slot_fd)
        except OSError:
            pass
    _slot_fd = None
    _slot_name = None


def _uses_slots() -> bool:
    # job processes are multiprocessing children of the worker (spawn or forkserver); the
    # worker itself is one long-lived process and keeps its per-pid files
    return multiprocessing.parent_process() is not None


def _value_class(typ: str, *args: Any, **kwargs: Any) -> Any:
    """Stands in for prometheus_client's ValueClass: gauges per pid, the rest in slot files."""
    global _slot_class
    if typ == "gauge":
        return _pid_class(typ, *args, **kwargs)
    cls = _slot_class
    if cls is None:
        from prometheus_client import values

        with _lock:
            if _slot_class is None:
                _slot_class = (values.MultiProcessValue(process_identifier=_identifier)
                               if _uses_slots() else _pid_class)
            cls = _slot_class
    return cls(typ, *args, **kwargs)


_value_class._multiprocess = True  # type: ignore[attr-defined]  # as prometheus_client's classes say


def install() -> bool:
    """Idempotent; call before this process creates its first counter or histogram child
    (lkrig_instrument.prom does at import). True if slot files are in use for this process's
    new counters and histograms."""
    global _installed, _pid_class
    from prometheus_client import values

    with _lock:
        if _installed:
            return True
        current = values.ValueClass
        if not getattr(current, "_multiprocess", False):
            return False  # single-process mode: values live in memory, no files
        if os.environ.get(SLOTS_ENV, "").strip().lower() in ("off", "0", "no", "false"):
            return False
        _pid_class = current
        values.ValueClass = _value_class
        _installed = True
    os.register_at_fork(after_in_child=_after_fork_in_child)
    return True


def slot() -> str | None:
    """The slot this process writes to, once it has written a counter or histogram."""
    return _slot_name if _slot_name and _slot_name.startswith("slot") else None
