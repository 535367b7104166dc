"""The seed scenario on the legacy pin (1.3.12): its refusal leaves the filler's speech pending, so
the AgentTask's hand-back never finishes; with caller sound during the tool's preamble, the pause
becomes a circular wait raised by the framework and the handoff never finishes either."""

from __future__ import annotations

from pathlib import Path

from lkrig_instrument.taxonomy import CANCELLED_SUFFIX, DRAINING
from replayutil import replay

from agent import dialog
from rig import pins

LEGACY = pins.load()["LIVEKIT_AGENTS_LEGACY_VERSION"]


def test_seed_with_barge_in_is_a_circular_wait_and_a_stuck_session(tmp_path: Path) -> None:
    r = replay(
        tmp_path,
        "--agents-version",
        LEGACY,
        "--scenario",
        "seed",
        "--profile",
        "fast",
        "--runs",
        "3",
        "--barge-in-ms",
        "150",
        "--stuck-timeout",
        "4",
    )
    assert r.rc == 0, r.stderr
    assert r.summary["agents_version"] == LEGACY
    # in each run: the filler's refusal (the short pre-1.4.3 message), then the circular wait
    # raised from inside `await CollectAgeGender(...)`, then the framework's own complaints
    # about the wedged handoff
    assert r.summary["errors"] == {"draining": 3, "circular_wait": 3, "task_unfinished": 3,
                                   "scheduler_not_running": 3}
    assert r.summary["stuck"] == 3 and r.summary["completed"] == 0
    assert r.sample("lkrig_speech_scheduling_errors_total", kind="circular_wait") == 3
    assert r.sample("lkrig_agent_stuck_sessions_total", scenario="seed") == 3


def test_seed_without_caller_sound_drains_and_the_hand_back_never_finishes(tmp_path: Path) -> None:
    r = replay(tmp_path, "--agents-version", LEGACY, "--scenario", "seed", "--profile", "fast",
               "--runs", "3", "--time-scale", "5", "--turn-timeout", "8", "--stuck-timeout", "4",
               "--timeline", "--verbose")
    assert r.rc == 0, r.stderr
    assert r.summary["agents_version"] == LEGACY
    # the filler's refusal, once a run, in the words of livekit-agents < 1.4.3: the message ends at
    # "draining/pausing"; no circular wait without caller sound
    assert r.summary["errors"] == {"draining": 3}
    raised = [line for line in r.stderr.splitlines() if line.startswith(f"RuntimeError: {DRAINING}")]
    assert raised == [f"RuntimeError: {DRAINING}"] * 3
    assert CANCELLED_SUFFIX not in r.stderr
    for timeline in r.summary["timelines"]:
        said = [detail for _, what, detail in timeline if what == "said"]
        # the AgentTask runs to its end: it asks, the caller answers, it records the answer
        assert said == [dialog.GREETING, dialog.PREAMBLE, dialog.TASK_QUESTION, dialog.TASK_ACK]
        # ... and the session makes the front desk its agent again, but the hand-back never
        # finishes: get_programs does not return, the answer is never said, the session is stuck
        assert timeline[-1][1:] == ["end", "current agent FrontDeskAgent, stuck"]
    assert r.summary["completed"] == 0 and r.summary["stuck"] == 3


def test_with_filler_scenario_is_refused_on_a_version_without_it(tmp_path: Path) -> None:
    r = replay(tmp_path, "--agents-version", LEGACY, "--scenario", "builtin_with_filler", "--runs", "1")
    assert r.rc == 2
    assert "RunContext.with_filler" in r.stderr and LEGACY in r.stderr
