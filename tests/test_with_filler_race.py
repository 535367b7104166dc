"""RunContext.with_filler's filler lands where one event-loop iteration puts it (1.8.9).

with_filler (delay 0) says the filler a fixed number of iterations after the session first
looks idle, and that moment falls inside the handoff into the AgentTask. The test makes the
front desk's pause longer by N iterations (tests/tools/replay_with_longer_pause.py) and reads
where the filler went: after the task's question, before it (the task's activity has started
but its on_enter has not run yet), or refused by the paused front desk and dropped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from replayutil import REPO, Replay, finish, outcome

from rig.explain_table import DECISIONS, FILLER_AFTER, FILLER_BEFORE, FILLER_NOT_HEARD

ORDER = [FILLER_AFTER, FILLER_BEFORE, FILLER_NOT_HEARD]  # the filler later in the handoff: later here
SHIFTS = [0, 1, 2, 3, 8]  # extra iterations in the front desk's pause


def _replay(tmp: Path, extra: int) -> tuple[subprocess.Popen[str], Path]:
    out = tmp / f"metrics-{extra}.txt"
    cmd = [sys.executable, str(REPO / "tests/tools/replay_with_longer_pause.py"), str(extra),
           "--scenario", "builtin_with_filler", "--profile", "fast", "--runs", "1",
           "--time-scale", "2", "--turn-timeout", "10", "--stuck-timeout", "8", "--timeline",
           "--metrics-out", str(out)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out


def test_one_iteration_in_the_handoff_moves_the_filler(tmp_path: Path) -> None:
    runs: dict[int, Replay] = {}
    for i in range(0, len(SHIFTS), 2):  # two at a time, one per core
        procs = {extra: _replay(tmp_path, extra) for extra in SHIFTS[i:i + 2]}
        runs.update({extra: finish(*p) for extra, p in procs.items()})
    cell = next(d for d in DECISIONS if d.scenario == "builtin_with_filler").current
    assert isinstance(cell, tuple)
    fates = {}
    for extra, r in runs.items():
        assert r.rc == 0, r.stderr
        (timeline,) = r.summary["timelines"]
        got = outcome(timeline)
        # every fate is one the decision table gives for the text-only 1.8.9 cell, answered
        assert any((got.errors, got.filler, got.end) == (o.errors, o.filler, o.end) for o in cell), timeline
        fates[extra] = got.filler
    print("extra iterations in the pause -> filler:", fates)
    # the longer the pause, the later the filler's moment falls in the handoff, never earlier
    ranks = [ORDER.index(fates[extra]) for extra in SHIFTS]
    assert ranks == sorted(ranks), fates
    # well inside the pause: refused by the paused front desk, counted once, not heard
    assert fates[8] == FILLER_NOT_HEARD and runs[8].summary["errors"] == {"filler_dropped": 1}
    # and a few iterations are all it takes to change the fate
    assert len({fates[extra] for extra in SHIFTS[:4]}) > 1, fates
