"""A worker's counts outlive its restart: on the same PROMETHEUS_MULTIPROC_DIR, a worker started
again serves every count its earlier processes wrote, so its counters carry on (no reset).

livekit-agents empties the multiprocess directory when a worker starts (worker.py, before its
metrics server listens), which would drop every count of the earlier worker and its jobs, and
with them what Prometheus had not scraped yet when a worker was killed. So, in the worker process
only: `stash()` before the worker runs moves the counter, histogram and summary files into a
subdirectory (the framework deletes files, not directories, and the collector reads only the
top level), and `restore()` moves them back the moment the framework logs "starting worker":
after its clean-up, before /metrics answers. Prometheus never sees the counters dip, so neither
`rate()` nor `increase()` counts anything twice.

Gauges are not carried: a dead process's sessions are not active and its memory is not held.
A fresh run needs a fresh directory (the native stack makes one per run, a compose container
has its own until it is removed).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("lkrig.instrument")

SUBDIR = "carried"
_KINDS = ("counter_", "histogram_", "summary_")
_moving = threading.Lock()  # restore() against a collect() of this process


def _directory() -> Path | None:
    raw = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    return Path(raw) if raw else None


def _move(files: list[Path], into: Path) -> int:
    for db in files:
        target = into / db.name
        while target.exists():  # carried twice (a start that failed early), or a recycled pid
            target = target.with_name(target.stem + "_c.db")
        db.rename(target)
    return len(files)


def stash(directory: Path | None = None) -> int:
    """Move the earlier processes' counts aside; returns how many files. Call it in the worker
    process before the worker starts, never in a job process."""
    directory = directory or _directory()
    if directory is None or not directory.is_dir():
        return 0
    files = [p for p in directory.glob("*.db") if p.name.startswith(_KINDS)]
    if not files:
        return 0
    (directory / SUBDIR).mkdir(exist_ok=True)
    return _move(files, directory / SUBDIR)


def restore(directory: Path | None = None) -> int:
    """Bring the stashed counts back into the aggregate; returns how many files."""
    directory = directory or _directory()
    if directory is None or not (directory / SUBDIR).is_dir():
        return 0
    with _moving:
        moved = _move(sorted((directory / SUBDIR).glob("*.db")), directory)
        (directory / SUBDIR).rmdir()
    if moved:
        log.info("carried %d counter files of earlier processes over the worker's start", moved)
    return moved


class Collector:
    """The multiprocess aggregate of `directory` with what waits in its stash: for a /metrics
    that answers before the worker has started (lkrig_instrument.server.serve_metrics_alone),
    so its counters never dip while the earlier counts are set aside."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        with _moving:
            files = [str(p) for p in (*self.directory.glob("*.db"), *(self.directory / SUBDIR).glob("*.db"))]
            return MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
