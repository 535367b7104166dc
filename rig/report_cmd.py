"""`rig report`: an HTML page and a Markdown summary of a time range (see rig/report.py)."""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rig import native, ports, report, stackstate
from rig.console import EXIT_USAGE, err, out
from rig.promapi import PrometheusUnreachable, QueryError

EXIT_UNREACHABLE = 1
_RELATIVE = re.compile(r"-(\d+(?:\.\d+)?)(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float) -> float:
    """Unix seconds, ISO-8601 (without a zone: UTC), `now`, or relative to now: -30s, -30m, -2h, -1d."""
    text = text.strip()
    if text == "now":
        return now
    m = _RELATIVE.fullmatch(text)
    if m:
        return now - float(m[1]) * _UNITS[m[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use unix seconds, ISO-8601 (2026-01-31T12:00:00Z), now, or -30m"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _prometheus_from_run_dir(run_dir: Path) -> str:
    state = stackstate.read_state(run_dir)
    url = ((state or {}).get("info") or {}).get("prometheus_url")
    if not url:
        raise report.ReportError(
            f"{run_dir}: no native stack state with a Prometheus URL"
            " (is it the --run-dir of `rig up --native`?)"
        )
    return str(url)


def _run_json(path: Path) -> dict[str, Any]:
    """run_info, faults, slo, explained and error_lines from a JSON object; `rig run`'s run.json
    (run_info under "run") too."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise report.ReportError(f"--run-json {path}: unreadable ({e})") from e
    if not isinstance(data, dict) or not {"run_info", "run", "faults", "slo"} & set(data):
        raise report.ReportError(
            f"--run-json {path}: expected an object with run_info (or run), faults and/or slo"
        )
    info = data.get("run_info", data.get("run"))
    for key, want in (("run_info", dict), ("faults", list), ("slo", list), ("explained", list),
                      ("error_lines", dict)):
        value = info if key == "run_info" else data.get(key)
        if value is not None and not isinstance(value, want):
            raise report.ReportError(f"--run-json {path}: {key} must be a JSON {want.__name__}")
    return {"run_info": info, "faults": data.get("faults"), "slo": data.get("slo"),
            "explained": data.get("explained"), "error_lines": data.get("error_lines")}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="an HTML and Markdown report of a time range",
        description="Write DIR/report.html (self-contained, plots) and DIR/report.md for a time range "
        "of a run, from Prometheus and optionally Locust's CSV.",
    )
    p.add_argument(
        "--from",
        dest="t0",
        required=True,
        metavar="T0",
        help="start: unix seconds, ISO-8601 (no zone = UTC), now, or relative like -30m",
    )
    p.add_argument("--to", dest="t1", default="now", metavar="T1", help="end, same forms (default now)")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for report.html and report.md"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--prometheus", metavar="URL", help="Prometheus base URL (default http://127.0.0.1:9090)"
    )
    src.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="a native stack's run folder (`rig up --native --run-dir`): use its Prometheus",
    )
    p.add_argument(
        "--locust-csv",
        type=Path,
        metavar="PREFIX",
        help="Locust's `--csv` prefix: reads PREFIX_stats.csv, PREFIX_stats_history.csv, PREFIX_failures.csv",
    )
    p.add_argument(
        "--run-json",
        type=Path,
        metavar="FILE",
        help="JSON object with run_info (parameters, versions), faults and slo lists; `rig run`'s run.json",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        t0, t1 = parse_time(args.t0, now), parse_time(args.t1, now)
        if t1 <= t0:
            raise report.ReportError(f"--to ({args.t1}) must be after --from ({args.t0})")
        url = args.prometheus or (
            _prometheus_from_run_dir(args.run_dir)
            if args.run_dir
            else f"http://127.0.0.1:{ports.PROMETHEUS_PORT}"
        )
        extra = _run_json(args.run_json) if args.run_json else {}
        html = report.write_report(
            url,
            t0,
            t1,
            args.out,
            locust_csv_prefix=args.locust_csv,
            run_info=extra.get("run_info"),
            faults=extra.get("faults"),
            slo=extra.get("slo"),
            explained=extra.get("explained"),
            error_lines=extra.get("error_lines"),
        )
    except (ValueError, native.StackError) as e:  # ReportError, LocustCsvError, a bad time
        err(f"rig report: {e}")
        return EXIT_USAGE
    except (PrometheusUnreachable, QueryError) as e:
        err(f"rig report: {e}")
        return EXIT_UNREACHABLE
    out(f"rig report: wrote {html} and {html.with_suffix('.md')}")
    return 0

