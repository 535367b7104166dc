"""The scenarios' error counts on the pinned livekit-agents (1.8.9), replayed offline through the
same scenario, provider and counting code as the worker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from lkrig_instrument.taxonomy import CANCELLED_SUFFIX, DRAINING, kind_of_record
from replayutil import REPO, Replay, finish, replay, start

from agent import dialog

FAST = ("--time-scale", "10", "--concurrency", "25")


def test_seed_is_refused_as_draining_in_every_run(tmp_path: Path) -> None:
    r = replay(tmp_path, "--scenario", "seed", "--profile", "fast", "--runs", "20", "--verbose", *FAST)
    assert r.rc == 0, r.stderr
    assert r.summary["errors"] == {"draining": 20}
    # in the words of 1.4.3 and later: the message ends with the suffix
    raised = [line for line in r.stderr.splitlines() if line.startswith(f"RuntimeError: {DRAINING}")]
    assert raised == [f"RuntimeError: {DRAINING}{CANCELLED_SUFFIX}"] * 20
    assert r.summary["runs_with_error"] == {"draining": 20}
    assert r.summary["filler_played"] == 0
    # the refused filler does not break the conversation: the final answer still comes
    assert r.summary["completed"] == 20
    # counted once: the Prometheus counter says 20 too, and no other kind moved
    assert r.sample("lkrig_speech_scheduling_errors_total", kind="draining", scenario="seed") == 20
    others = sum(
        r.sample("lkrig_speech_scheduling_errors_total", kind=k, scenario="seed")
        for k in (
            "closing",
            "circular_wait",
            "scheduler_not_running",
            "task_unfinished",
            "filler_dropped",
            "tool_error_other",
        )
    )
    assert others == 0
    assert r.sample("lkrig_agent_speeches_done_total", outcome="rejected", source="say") == 20


def test_caller_sound_during_the_preamble_changes_nothing_on_current_versions(
        tmp_path: Path) -> None:
    """The same barge-in that wedges 1.3.12 (test_agent_legacy.py): real speech through silero
    VAD while the preamble plays. Since 1.4.0 the pause no longer awaits the paused speech."""
    r = replay(tmp_path, "--scenario", "seed", "--profile", "fast", "--runs", "3",
               "--barge-in-ms", "150", "--stuck-timeout", "6")
    assert r.rc == 0, r.stderr
    assert r.summary["errors"] == {"draining": 3}
    assert r.summary["stuck"] == 0 and r.summary["completed"] == 3


def test_seed_without_wait_for_playout_is_refused_too(tmp_path: Path) -> None:
    r = replay(tmp_path, "--scenario", "seed_nowait", "--profile", "typical", "--runs", "20", *FAST)
    assert r.rc == 0, r.stderr
    assert r.summary["errors"] == {"draining": 20}


def test_awaiting_own_handle_is_a_circular_wait_every_run(tmp_path: Path) -> None:
    r = replay(tmp_path, "--scenario", "await_own_handle", "--profile", "typical", "--runs", "20", *FAST)
    assert r.rc == 0, r.stderr
    assert r.summary["errors"] == {"circular_wait": 20}
    assert r.sample("lkrig_speech_scheduling_errors_total", kind="circular_wait") == 20
    assert r.summary["completed"] == 0  # the tool failed: the caller hears an apology instead


def test_with_filler_drops_are_counted_once_as_filler_dropped(tmp_path: Path) -> None:
    """with_filler says its filler once the session is idle. A refused filler shows up both as a
    rejected handle and as the framework's "filler stopped on an error" log line: one error,
    counted under one kind, as often as the framework logs it, whether or not it is refused (in
    text mode the task's activity has started by then; tests/test_decision_table.py has the cases
    where it is refused)."""
    r = replay(tmp_path, "--scenario", "builtin_with_filler", "--profile", "typical",
               "--runs", "20", "--verbose", *FAST)
    assert r.rc == 0, r.stderr
    logged = r.stderr.count("filler stopped on an error")
    assert r.summary["errors"].get("filler_dropped", 0) == logged
    assert "draining" not in r.summary["errors"]
    assert r.sample("lkrig_speech_scheduling_errors_total", kind="filler_dropped") == logged
    assert r.summary["filler_played"] + logged == 20  # every run: heard, or dropped and counted


def _logged_errors(timeline: list[list[Any]]) -> list[tuple[float, str, str]]:
    """(seconds into the run, kind, the error's text) of each speech-scheduling error the run's
    log shows, read with the rig's taxonomy."""
    out = []
    for t, what, detail in timeline:
        m = re.match(r"^[\w.]+: (?P<message>.*?)(?: \[\w+: (?P<error>.*)\])?$", detail)
        if what == "log" and m and (kind := kind_of_record(m["message"], m["error"])):
            out.append((t, kind, m["error"] or m["message"]))
    return out


def _said_at(timeline: list[list[Any]], line: str) -> float:
    return next(t for t, what, detail in timeline if what == "said" and detail.startswith(line))


def test_say_between_the_swap_and_the_start_is_closing_both_ways(tmp_path: Path) -> None:
    """The session emits the AgentHandoff item after it swaps the activities and before it starts
    or resumes the new one: a say() from a listener of it lands in that gap, on the way into the
    AgentTask and on the way back."""
    r = replay(tmp_path, "--scenario", "say_on_handoff", "--profile", "fast", "--runs", "2",
               "--concurrency", "1", "--time-scale", "5", "--timeline")
    assert r.rc == 0, r.stderr
    for timeline in r.summary["timelines"]:
        (t_in, kind_in, error_in), (t_back, kind_back, error_back) = _logged_errors(timeline)
        assert kind_in == kind_back == "closing"
        assert error_in == error_back == "AgentSession is closing, cannot use say()"
        assert _said_at(timeline, dialog.PREAMBLE) < t_in < _said_at(timeline, dialog.TASK_QUESTION)
        assert _said_at(timeline, dialog.TASK_ACK) < t_back < _said_at(timeline, "We have ")
        said = [d for _, what, d in timeline if what == "said"]
        assert dialog.FILLER not in said  # neither announcement plays
    assert r.summary["completed"] == 2
    # the event emitter catches the error and logs it under its own logger: the rig's counters,
    # which read the exception handler, asyncio's and livekit.agents' records, do not see it
    assert r.summary["errors"] == {}


def test_with_filler_into_a_task_slow_to_start_is_refused_as_closing(tmp_path: Path) -> None:
    """The task's toolset takes a second to set up: start() awaits it after the swap and before
    it resumes scheduling, so with_filler's say() comes in the "closing" gap."""
    r = replay(tmp_path, "--scenario", "with_filler_slow_task_start", "--profile", "fast",
               "--runs", "2", "--concurrency", "1", "--time-scale", "5", "--timeline")
    assert r.rc == 0, r.stderr
    for timeline in r.summary["timelines"]:
        (t, kind, error), = _logged_errors(timeline)
        assert kind == "filler_dropped" and error == "AgentSession is closing, cannot use say()"
        assert _said_at(timeline, dialog.PREAMBLE) < t < _said_at(timeline, dialog.TASK_QUESTION)
    assert r.summary["errors"] == {"filler_dropped": 2} and r.summary["filler_played"] == 0


FIXES = [(s, p) for s in ("fix_filler_in_on_enter", "fix_say_before_handoff") for p in ("typical", "spiky")]


@pytest.fixture(scope="module")
def fix_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Replay]:
    """200 runs per fix scenario and profile, two replays at a time (one per core)."""
    tmp = tmp_path_factory.mktemp("fixes")
    results: dict[tuple[str, str], Replay] = {}
    for i in range(0, len(FIXES), 2):
        batch = {
            key: start(
                tmp, "--scenario", key[0], "--profile", key[1], "--runs", "200", "--seed", "1000", *FAST
            )
            for key in FIXES[i : i + 2]
        }
        results.update({key: finish(*procs) for key, procs in batch.items()})
    return results


@pytest.mark.timeout(1500)  # the fixture's 800 replayed sessions run on the first of these
@pytest.mark.parametrize(("scenario", "profile"), FIXES)
def test_fix_scenarios_never_hit_a_scheduling_error(
    fix_runs: dict[tuple[str, str], Replay], scenario: str, profile: str
) -> None:
    r = fix_runs[(scenario, profile)]
    assert r.rc == 0, r.stderr
    assert r.summary["runs"] == 200
    assert r.summary["errors"] == {}
    assert r.summary["completed"] == 200
    assert r.summary["filler_played"] == 200
    total = sum(
        r.sample("lkrig_speech_scheduling_errors_total", kind=k)
        for k in (
            "draining",
            "closing",
            "circular_wait",
            "scheduler_not_running",
            "task_unfinished",
            "filler_dropped",
            "tool_error_other",
        )
    )
    assert total == 0


@pytest.mark.parametrize("profile", ["typical", "spiky"])
def test_filler_in_on_enter_is_heard_before_the_task_question(
    fix_runs: dict[tuple[str, str], Replay], profile: str
) -> None:
    assert fix_runs[("fix_filler_in_on_enter", profile)].summary["filler_before_task_question"] == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scenario", "no_such_scenario"), "unknown scenario 'no_such_scenario'"),
        (("--scenario", "seed", "--profile", "no_such_profile"), "no_such_profile.yaml: no such"),
    ],
)
def test_bad_names_fail_with_one_clear_error(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    r = replay(tmp_path, *args, "--runs", "1")
    assert r.rc == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.metrics == ""  # nothing ran


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("llm_ttft: {uniform: [300]}", "llm_ttft.uniform"),
        ("llm_ttft: {lognormal: {median: 0, sigma: 0.3}}", "llm_ttft.lognormal.median"),
        ("llm_ttft: {fixed: 100, spike: {p: 2, add: 5}}", "llm_ttft.spike.p"),
        ("llm_ttft: {fixd: 100}", "unknown key 'fixd'"),
        ("llm_ttfb: {fixed: 100}", "unknown field 'llm_ttfb'"),
        ("llm_ttft: [unclosed", "not valid YAML"),
    ],
)
def test_malformed_profile_names_file_and_field(tmp_path: Path, body: str, field: str) -> None:
    base = (REPO / "agent/profiles/fast.yaml").read_text().splitlines()
    lines = [body if line.startswith("llm_ttft:") else line for line in base]
    path = tmp_path / "broken.yaml"
    path.write_text("\n".join(lines) + "\n")
    r = replay(tmp_path, "--scenario", "seed", "--profile", str(path), "--runs", "1")
    assert r.rc == 2
    assert str(path) in r.stderr and field in r.stderr, r.stderr
