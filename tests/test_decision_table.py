"""docs/speech-scheduling.md's decision table, cell by cell, and why the errors look inconsistent.

Each row is a scenario file; each cell is what its replay ends with on a pin (1.8.9, 1.4.2, 1.3.12),
without and with caller sound during the tool's preamble (real speech through silero VAD). The
expected cells are rig/explain_table.py's DECISIONS, which the doc prints and rig explain's rows
name; the replay's --timeline gives, run by run, what was said, what the rig counted and what the
framework and asyncio logged, in order.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from lkrig_instrument.taxonomy import kind_of_record
from replayutil import REPO, Replay, finish, outcome, start

from agent import dialog
from rig import pins
from rig.explain_table import (
    ANSWERED,
    DECISIONS,
    ROWS,
    STUCK,
    decision_markdown,
)

PIN = pins.load()["LIVEKIT_AGENTS_VERSION"]
LEGACY = pins.load()["LIVEKIT_AGENTS_LEGACY_VERSION"]
MIDDLE = pins.load()["LIVEKIT_AGENTS_MIDDLE_VERSION"]
SILENT, BARGE = "silent", "barge_in"
# Silent callers: two runs one after the other (each run's log is its own), at twice real time.
# A barge-in plays real speech 150 ms into the preamble, so it runs in real time. The timeouts
# are longer than the longest turn and task of the fixes (the filler, then the task's question).
OPTIONS = {
    SILENT: ("--runs", "2", "--concurrency", "1", "--time-scale", "2", "--turn-timeout", "10",
             "--stuck-timeout", "8"),
    BARGE: ("--runs", "1", "--barge-in-ms", "150", "--turn-timeout", "20", "--stuck-timeout", "15"),
}
# seed_task_kept: the seed with the filler's task kept in a variable of the tool
KEPT = [(PIN, "seed_task_kept", SILENT), (LEGACY, "seed_task_kept", SILENT),
        (LEGACY, "seed_task_kept", BARGE)]


def _cells() -> list[tuple[str, str, str]]:
    cells = []
    for d in DECISIONS:
        cells += [(PIN, d.scenario, SILENT), (PIN, d.scenario, BARGE)]
        for older, has_api in ((LEGACY, d.legacy), (MIDDLE, d.middle)):
            cells += [(older, d.scenario, SILENT)] + ([(older, d.scenario, BARGE)] if has_api else [])
    return cells


CELLS = _cells()


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Replay]:
    """Every cell's replay and the kept-task ones, four at a time, each started as soon as one ends.
    A replay mostly waits on its scripted latencies (the load average stays under one with two at
    a time), so four fit two cores. The real-time barge-ins go first, so that no long one is left
    running alone at the end."""
    tmp = tmp_path_factory.mktemp("decisions")
    keys = sorted(CELLS + KEPT, key=lambda k: k[2] != BARGE)

    def run(k: tuple[str, str, str]) -> Replay:
        return finish(*start(tmp, "--agents-version", k[0], "--scenario", k[1], "--profile", "fast",
                             "--timeline", "--verbose", *OPTIONS[k[2]]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(keys, pool.map(run, keys), strict=True))


@pytest.mark.timeout(1500)  # the fixture's replays run on the first of these
@pytest.mark.parametrize(("version", "scenario", "caller"), CELLS,
                         ids=[f"{s}-{v}-{c}" for v, s, c in CELLS])
def test_each_cell_is_what_the_replay_ends_with(replays: dict[tuple[str, str, str], Replay],
                                                version: str, scenario: str, caller: str) -> None:
    r = replays[(version, scenario, caller)]
    d = next(d for d in DECISIONS if d.scenario == scenario)
    if version in (LEGACY, MIDDLE) and {LEGACY: d.legacy, MIDDLE: d.middle}[version] is None:
        assert r.rc == 2 and "RunContext.with_filler" in r.stderr, r.stderr  # refused, named
        return
    assert r.rc == 0, r.stderr
    assert r.summary["agents_version"] == version
    want = {(PIN, SILENT): d.current, (PIN, BARGE): d.current_barge,
            (LEGACY, SILENT): d.legacy, (LEGACY, BARGE): d.legacy_barge,
            (MIDDLE, SILENT): d.middle, (MIDDLE, BARGE): d.middle_barge}[(version, caller)]
    assert want is not None
    endings = want if isinstance(want, tuple) else (want,)  # a race's endings: any one per run
    errors: Counter[str] = Counter()
    for timeline in r.summary["timelines"]:
        got = outcome(timeline)
        assert any((got.errors, got.end) == (w.errors, w.end)
                   and (w.filler is None or got.filler == w.filler) for w in endings), timeline
        errors.update(got.errors)
    # the rig's own totals agree with the runs' timelines
    runs = len(r.summary["timelines"])
    assert r.summary["errors"] == dict(errors)
    # and the metrics hold those plus what the rig counted after a run had ended (a wedged
    # session's tool, cancelled by the replay before it reports)
    errors.update(r.summary["errors_outside_runs"])
    assert r.errors_in_metrics() == dict(sorted(errors.items()))
    assert r.summary["completed"] == (runs if all(w.end == ANSWERED for w in endings) else 0)


@pytest.mark.parametrize("version", [LEGACY, MIDDLE])
def test_a_wedged_session_leaves_its_tool_to_the_end(
        replays: dict[tuple[str, str, str], Replay], version: str) -> None:
    """Row 1 before 1.4.3: the close of a stuck session never finishes, so the replay cancels its
    tool."""
    r = replays[(version, "seed", SILENT)]
    runs = len(r.summary["timelines"])
    assert r.summary["stuck"] == runs
    assert r.summary["errors_outside_runs"] == {"scheduler_not_running": runs, "tool_error_other": runs}


def test_the_doc_prints_the_table_and_rig_explain_names_the_same_scenarios() -> None:
    doc = (REPO / "docs/speech-scheduling.md").read_text()
    assert decision_markdown() in doc
    for d in DECISIONS:
        assert (REPO / d.path).exists(), d.path
        for row_id in d.rows:
            assert ROWS[row_id].scenario.split()[0] == d.path, row_id
    # every pattern rig explain can name with a scenario is a row of the table
    named = {row.scenario.split()[0] for row in ROWS.values() if row.scenario}
    assert named <= {d.path for d in DECISIONS}


def _code(path: Path) -> list[str]:
    """A scenario's lines after its docstring."""
    text = path.read_text()
    return text[text.index('"""', 3) + 3:].splitlines()


def test_the_verdicts_diff_is_the_fix_scenario() -> None:
    """The doc's paste-able diff turns the report's code (seed) into fix_filler_in_on_enter."""
    doc = (REPO / "docs/speech-scheduling.md").read_text()
    diff = re.search(r"```diff\n(.*?)```", doc, re.S)
    assert diff is not None
    seed = _code(REPO / "agent/scenarios/seed.py")
    fix = _code(REPO / "agent/scenarios/fix_filler_in_on_enter.py")
    removed = [line[1:] for line in diff[1].splitlines() if line.startswith("-") and line[1:].strip()]
    added = [line[1:] for line in diff[1].splitlines() if line.startswith("+") and line[1:].strip()]
    kept = [line[1:] for line in diff[1].splitlines() if line.startswith(" ")]
    assert all(line in seed and line in fix for line in kept)
    # what the diff removes and adds is all that tells the two scenarios' code apart, apart from
    # the import the removed lines needed and blank lines
    assert [line for line in seed if line not in fix and line.strip()] == ["import asyncio", *removed]
    assert [line for line in fix if line not in seed and line.strip()] == added


# -- why the errors look inconsistent ------------------------------------------------------------

_LOGGED = re.compile(r"^(?P<logger>[\w.]+): (?P<message>.*?)(?: \[(?P<type>\w+): (?P<error>.*)\])?$")


def logged(timeline: list[list[Any]]) -> list[tuple[float, str]]:
    """The speech-scheduling errors of the run's log, as the rig's taxonomy (and rig explain)
    reads them: (seconds into the run, kind)."""
    out = []
    for t, what, detail in timeline:
        m = _LOGGED.match(detail) if what == "log" else None
        if m and (kind := kind_of_record(m["message"], m["error"])):
            out.append((t, kind))
    return out


def said_at(timeline: list[list[Any]], line: str) -> float:
    return next(t for t, what, detail in timeline if what == "said" and detail.startswith(line))


def test_a_fire_and_forget_refusal_is_logged_only_when_its_task_is_freed(
        replays: dict[tuple[str, str, str], Replay]) -> None:
    """Nobody awaits the filler's task, so its exception reaches the log only through asyncio's
    "Task exception was never retrieved", which Task.__del__ emits when the task is freed."""
    # the report's code: nothing refers to the task, it is freed as soon as it fails, before the
    # task's question is even said
    seed = replays[(PIN, "seed", SILENT)].summary["timelines"][0]
    (t, kind), = logged(seed)
    assert kind == "draining" and t < said_at(seed, dialog.TASK_QUESTION)
    assert any(d.startswith("asyncio: Task exception was never retrieved") for _, w, d in seed if w == "log")
    # the same refusal with the task kept in a variable of the tool: logged when the tool's frame
    # lets go of it, after the task has handed back (its acknowledgement said) and before the
    # answer that follows the tool
    kept = replays[(PIN, "seed_task_kept", SILENT)]
    assert kept.rc == 0, kept.stderr
    for timeline in kept.summary["timelines"]:
        (t, kind), = logged(timeline)
        assert kind == "draining"
        assert said_at(timeline, dialog.TASK_ACK) < t < said_at(timeline, "We have ")
    # on 1.3.12 the kept task's tool never returns (the hand-back waits for the refused speech):
    # the call hangs and its log shows no error at all; the rig counts the refusal when the
    # session ends, from the handle still pending
    hung = replays[(LEGACY, "seed_task_kept", SILENT)]
    assert hung.rc == 0, hung.stderr
    for timeline in hung.summary["timelines"]:
        assert logged(timeline) == []
        assert outcome(timeline).end == STUCK
        ended = next(t for t, what, _ in timeline if what == "end")
        assert [(w, d) for t, w, d in timeline if w == "error"] == [("error", "draining")]
        assert all(t > ended for t, w, _ in timeline if w == "error")


def test_on_1_3_12_caller_sound_adds_a_circular_wait_after_the_draining_error(
        replays: dict[tuple[str, str, str], Replay]) -> None:
    """One error, the other, or both, from the same code: which the log shows depends on whether
    the caller made sound during the preamble and on when the filler's task is freed."""
    silent = replays[(LEGACY, "seed", SILENT)].summary["timelines"][0]
    assert [k for _, k in logged(silent)] == ["draining"]
    # with caller sound the pause raises the circular wait in the same turn, after the refusal
    # (the refusal comes first: the pause reaches _close_session only after the filler's first
    # step ran); the wedge's own complaints follow
    barge = replays[(LEGACY, "seed", BARGE)].summary["timelines"][0]
    kinds = logged(barge)
    assert [k for _, k in kinds] == ["draining", "circular_wait", "task_unfinished",
                                     "scheduler_not_running"]
    assert said_at(barge, dialog.PREAMBLE) < kinds[0][0] <= kinds[1][0]
    # the same with the filler's task kept alive: the circular wait's traceback holds the tool's
    # frame, and so the task (the rig's ledger keeps the exceptions it counted): only the circular
    # wait and the wedge reach the log
    kept = replays[(LEGACY, "seed_task_kept", BARGE)]
    assert kept.rc == 0, kept.stderr
    assert [k for _, k in logged(kept.summary["timelines"][0])] == [
        "circular_wait", "task_unfinished", "scheduler_not_running"]
