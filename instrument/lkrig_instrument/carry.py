"""Counts outlive the processes that made them, and cost a scrape nothing once they are past.

prometheus_client's multiprocess mode keeps one file per process and kind, and /metrics merges
every file at every scrape. Two things here keep that exact and cheap over a soak:

* **Over a worker's restart.** livekit-agents empties the multiprocess directory when a worker
  starts (worker.py, before its servers listen), which would drop every count of the earlier
  worker and its jobs, and with them what Prometheus had not scraped yet when a worker was
  killed. So, in the worker process only, `stash()` before the worker runs moves the counter,
  histogram and summary files into a subdirectory (the framework deletes files, not
  directories, and the collector reads only the top level), and `restore()` folds them back
  when the framework logs "starting worker": after its clean-up.
* **Past processes.** A job process's files would stay forever, and the scrape cost with them
  (~1 ms per past job per scrape). `fold()` adds the counts of processes that no longer run into
  one `<kind>_past.db` per kind and removes their files, so a scrape reads the live processes
  and three more files whatever the number of past jobs (the worker's sampler calls it).

Both change what the files hold, not what they sum to: `Collector` serves the directory under
the same lock, so no scrape sees a count twice or not at all, and Prometheus never sees a
counter dip (neither `rate()` nor `increase()` counts anything twice). A fold is crash-safe: a
`<kind>_past.pending` names the files a new `<kind>_past.next` holds, and `recover()` finishes
or undoes a fold cut short by a kill (stash() runs it before anything else).

Gauges are not carried: a dead process's sessions are not active and its memory is not held
(process_sampler removes their files). A fresh run needs a fresh directory (the native stack
makes one per run, a compose container has its own until it is removed).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("lkrig.instrument")

SUBDIR = "carried"
KINDS = ("counter", "histogram", "summary")  # the files whose values only add up
LOCK = threading.Lock()  # a fold or restore against a collect() of this process


def _directory() -> Path | None:
    raw = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    return Path(raw) if raw else None


def kind_of(path: Path) -> str | None:
    """The kind of a process's counting file (`counter_123.db` -> counter), else None."""
    head = path.name.split("_", 1)[0]
    return head if head in KINDS and path.suffix == ".db" else None


def _paths(directory: Path, kind: str) -> tuple[Path, Path, Path]:
    base = directory / f"{kind}_past"
    return base.with_suffix(".db"), base.with_suffix(".next"), base.with_suffix(".pending")


def recover(directory: Path) -> None:
    """Finish or undo a fold that a kill cut short: before its commit (the `.next` still there)
    the old past file and the folded files still hold every count; after it, the files it
    folded in are removed."""
    for kind in KINDS:
        _, nxt, pending = _paths(directory, kind)
        if pending.exists():
            if not nxt.exists():
                for name in json.loads(pending.read_text()):
                    (directory / name).unlink(missing_ok=True)
            pending.unlink()
        nxt.unlink(missing_ok=True)


def _write_merged(sources: list[Path], into: Path) -> None:
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    # accumulate=False: histogram buckets stay per bucket, as the files hold them
    merged = MultiProcessCollector.merge([str(p) for p in sources], accumulate=False)  # type: ignore[no-untyped-call]
    into.unlink(missing_ok=True)
    out = MmapedDict(str(into))  # type: ignore[no-untyped-call]
    try:
        for metric in merged:
            for s in metric.samples:
                key = mmap_key(metric.name, s.name, list(s.labels), list(s.labels.values()),
                               metric.documentation)
                out.write_value(key, s.value, s.timestamp or 0.0)  # type: ignore[no-untyped-call]
    finally:
        out.close()  # type: ignore[no-untyped-call]


def _fold_kind(directory: Path, kind: str, files: list[Path]) -> None:
    past, nxt, pending = _paths(directory, kind)
    _write_merged([past, *files] if past.exists() else files, nxt)
    tmp = pending.with_suffix(".tmp")
    tmp.write_text(json.dumps([str(f.relative_to(directory)) for f in files]))
    tmp.replace(pending)
    nxt.replace(past)  # the commit: from here on the past file holds the folded counts
    for f in files:
        f.unlink(missing_ok=True)
    pending.unlink()


def fold(files: Iterable[Path], directory: Path | None = None) -> int:
    """Add the counts of `files` (of processes that no longer run, in `directory` or its stash)
    into the past file of their kind and remove them; returns how many files. Other files are
    left alone."""
    directory = directory or _directory()
    if directory is None:
        return 0
    by_kind: dict[str, list[Path]] = {}
    for f in files:
        if (kind := kind_of(f)) is not None and f != _paths(directory, kind)[0]:
            by_kind.setdefault(kind, []).append(f)
    with LOCK:
        recover(directory)
        for kind, group in by_kind.items():
            _fold_kind(directory, kind, sorted(group))
    return sum(map(len, by_kind.values()))


def stash(directory: Path | None = None) -> int:
    """Move the earlier processes' counts aside; returns how many files. Call it in the worker
    process before the worker starts, never in a job process."""
    directory = directory or _directory()
    if directory is None or not directory.is_dir():
        return 0
    recover(directory)
    files = [p for p in directory.glob("*.db") if kind_of(p)]
    if not files:
        return 0
    (directory / SUBDIR).mkdir(exist_ok=True)
    for db in files:
        target = directory / SUBDIR / db.name
        while target.exists():  # stashed twice (a start that failed early), or a recycled pid
            target = target.with_name(target.stem + "_c.db")
        db.rename(target)
    return len(files)


def restore(directory: Path | None = None) -> int:
    """Fold the stashed counts into the aggregate (every one of them is an earlier process's);
    returns how many files."""
    directory = directory or _directory()
    if directory is None or not (directory / SUBDIR).is_dir():
        return 0
    moved = fold(sorted((directory / SUBDIR).glob("*.db")), directory)
    with LOCK:
        (directory / SUBDIR).rmdir()
    if moved:
        log.info("carried %d counter files of earlier processes over the worker's start", moved)
    return moved


class Collector:
    """The multiprocess aggregate of `directory` with what waits in its stash, read under the
    lock that folds take, for the worker's /metrics (lkrig_instrument.server.serve_metrics)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        with LOCK:
            files = [str(p) for p in (*self.directory.glob("*.db"), *(self.directory / SUBDIR).glob("*.db"))]
            return MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
