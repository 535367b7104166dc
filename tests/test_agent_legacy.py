"""The seed scenario on the legacy pin (1.3.12): with caller sound during the tool's preamble,
the seed's pause becomes a circular wait raised by the framework and the session gets stuck."""

from __future__ import annotations

from pathlib import Path

from replayutil import replay

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


def test_seed_without_caller_sound_is_only_draining(tmp_path: Path) -> None:
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
        "--time-scale",
        "5",
    )
    assert r.rc == 0, r.stderr
    assert r.summary["errors"].get("circular_wait") is None
    assert r.summary["errors"]["draining"] == 3


def test_with_filler_scenario_is_refused_on_a_version_without_it(tmp_path: Path) -> None:
    r = replay(tmp_path, "--agents-version", LEGACY, "--scenario", "builtin_with_filler", "--runs", "1")
    assert r.rc == 2
    assert "RunContext.with_filler" in r.stderr and LEGACY in r.stderr
