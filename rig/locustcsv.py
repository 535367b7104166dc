"""Locust's CSV output (`locust --csv PREFIX [--csv-full-history]`), read for the run report.

PREFIX_stats.csv holds the whole Locust run's totals per request type and name,
PREFIX_stats_history.csv one row per interval (only "Aggregated" rows unless --csv-full-history),
PREFIX_failures.csv the failures by error message.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path


class LocustCsvError(ValueError):
    """A CSV file is missing or is not what Locust writes."""


@dataclass
class LocustCsv:
    prefix: Path
    stats: list[dict[str, str]] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    def series(self, column: str, type_: str, name: str, t0: float, t1: float) -> list[tuple[float, float]]:
        """(unix time, value) of one history column for one request type and name, within [t0, t1]."""
        out = []
        for row in self.history:
            if row.get("Type") != type_ or row.get("Name") != name:
                continue
            t = number(row.get("Timestamp"))
            if t0 <= t <= t1:
                out.append((t, number(row.get(column))))
        return out

    def names(self, type_: str) -> list[str]:
        return sorted({r["Name"] for r in self.history if r.get("Type") == type_})


def number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def _read(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise LocustCsvError(f"{path}: not a Locust CSV (no column {', '.join(missing)})")
            return list(reader)
    except FileNotFoundError as e:
        raise LocustCsvError(
            f"{path}: no such file (is --locust-csv the prefix given to `locust --csv`?)"
        ) from e
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LocustCsvError(f"{path}: unreadable ({e})") from e


def load(prefix: Path) -> LocustCsv:
    base = str(prefix)
    data = LocustCsv(prefix)
    data.stats = _read(Path(base + "_stats.csv"), ("Type", "Name", "Request Count", "Failure Count"))
    data.history = _read(
        Path(base + "_stats_history.csv"),
        ("Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s"),
    )
    failures = Path(base + "_failures.csv")
    if failures.exists():  # Locust writes it always; an older run copied without it is still usable
        data.failures = _read(failures, ("Name", "Error", "Occurrences"))
    return data
