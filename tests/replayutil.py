"""Runs `rig replay` the way a user does, as a subprocess, and parses its JSON and metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lkrig_instrument import names

from agent import dialog
from rig.explain_table import (
    ANSWERED,
    APOLOGY,
    FILLER_AFTER,
    FILLER_BEFORE,
    FILLER_NOT_HEARD,
    STUCK,
    Outcome,
)

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Replay:
    rc: int
    summary: dict[str, Any]
    stderr: str
    metrics: str

    def sample(self, name: str, **labels: str) -> float:
        """Sum of the exported samples of `name` whose labels include `labels`."""
        total, found = 0.0, False
        for line in self.metrics.splitlines():
            if not line.startswith(name + "{"):
                continue
            body = line[len(name) + 1 : line.rindex("}")]
            pairs = dict(p.split("=", 1) for p in body.split(",") if "=" in p)
            if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
                found = True
        assert found, f"no {name} sample with {labels} in the replay's metrics"
        return total

    def errors_in_metrics(self) -> dict[str, int]:
        """The exported speech-scheduling error counts by kind, the zero ones left out."""
        counts: dict[str, int] = {}
        for line in self.metrics.splitlines():
            if line.startswith(names.SPEECH_SCHEDULING_ERRORS.name + "{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                counts[kind] = counts.get(kind, 0) + int(float(line.rsplit(" ", 1)[1]))
        return {k: n for k, n in sorted(counts.items()) if n}


def start(tmp: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    out = tmp / f"metrics-{abs(hash(args))}.txt"
    cmd = [sys.executable, "-m", "rig.cli", "replay", *args, "--metrics-out", str(out)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out


def finish(proc: subprocess.Popen[str], out: Path, timeout: float = 600) -> Replay:
    stdout, stderr = proc.communicate(timeout=timeout)
    summary = json.loads(stdout) if proc.returncode == 0 else {}
    return Replay(proc.returncode, summary, stderr, out.read_text() if out.exists() else "")


def replay(tmp: Path, *args: str, timeout: float = 600) -> Replay:
    return finish(*start(tmp, *args), timeout=timeout)


def said(timeline: list[list[Any]]) -> list[str]:
    """The lines the agent said, in order, from a run's --timeline."""
    return [detail.removesuffix(" [cut]") for _, what, detail in timeline if what == "said"]


def outcome(timeline: list[list[Any]]) -> Outcome:
    """How the run ended (rig/explain_table.py's Outcome), from its timeline alone."""
    lines = said(timeline)
    errors = tuple(detail for _, what, detail in timeline if what == "error")
    if dialog.FILLER not in lines:
        filler = FILLER_NOT_HEARD
    elif dialog.TASK_QUESTION in lines and lines.index(dialog.TASK_QUESTION) < lines.index(dialog.FILLER):
        filler = FILLER_AFTER
    else:
        filler = FILLER_BEFORE
    if any(s.startswith("We have ") for s in lines):
        end = ANSWERED
    elif dialog.TOOL_FAILED in lines:
        end = APOLOGY
    else:
        end = STUCK
    return Outcome(errors, filler, end)
