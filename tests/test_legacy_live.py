"""The seed on the legacy pin (1.3.12) in a real room, the caller talking over the tool's preamble.

The offline replay of the same case (tests/test_agent_legacy.py, --barge-in-ms) gets the circular
wait the framework raises from its pause, every run. It needs the preamble still paused, not
interrupted, when the tool's AgentTask pauses the agent, and the replay has that for two reasons
that a real room does not share: its audio output's pause() does not hold playout, so the tool's
`wait_for_playout()` returns while the preamble is paused; and its barge-in has no transcript, so
nothing turns the pause into an interruption. Here the caller's barge-in is words with a transcript
(loadgen/scripts/barge_in_preamble.yaml), and RoomIO's pause() holds the preamble until that
transcript interrupts it (docs/speech-scheduling.md, section 4, which cites the lines).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lkrig_instrument import names
from stackutil import native_stack, wait_until
from test_loadgen_live import assert_nothing_left, run_headless

from rig import native, pins
from rig.promapi import scrape, total

LEGACY = pins.load()["LIVEKIT_AGENTS_LEGACY_VERSION"]
PORT_OFFSET = 7500
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def legacy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[native.StackInfo]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_LOAD", "process")  # the callers share the machine (test_loadgen_live.py)
        with native_stack(tmp_path_factory, "legacy-stack", agents=1, port_offset=PORT_OFFSET,
                          agents_version=LEGACY) as info:
            log = Path(info.logs_dir) / "agent-0.log"
            wait_until(lambda: "registered worker" in log.read_text(errors="replace"), 60,
                       "the legacy agent worker to register with livekit-server")
            yield info


def errors_by_kind(info: native.StackInfo) -> dict[str, float]:
    m = scrape(info.agents[0].metrics_url)
    return {k: total(m, names.SPEECH_SCHEDULING_ERRORS.name, kind=k) for k in names.ERROR_KINDS}


def test_a_barge_in_with_words_interrupts_the_preamble_and_leaves_only_the_refusal(
        legacy_stack: native.StackInfo, tmp_path: Path) -> None:
    run = run_headless(legacy_stack, tmp_path, 2, "40s", "--scenario", "seed", "--latency-profile",
                       "fast", "--script", "barge_in_preamble", "--call-gap", "1")
    barge_ins, barge_failed = run.requests("barge_in", "interrupt_preamble")
    assert barge_ins >= 2 and barge_failed == 0, run.stats

    def settled() -> tuple[dict[str, float], float]:
        m = scrape(legacy_stack.agents[0].metrics_url)
        return errors_by_kind(legacy_stack), total(m, names.SPEECHES_DONE.name, outcome="interrupted")

    # the sessions count from their own processes, the last ones while they close
    wait_until(lambda: settled()[0]["draining"] >= barge_ins, 60, "the agent to count every refusal")
    errors, interrupted = settled()
    # every barge-in interrupted its preamble for real (its words' transcript), so the pause found
    # no paused speech to await: no circular wait, only the filler's refusal, once per call
    assert interrupted >= barge_ins, (interrupted, barge_ins)
    assert errors["circular_wait"] == 0, errors
    assert errors["draining"] == barge_ins, (errors, barge_ins)
    assert_nothing_left(legacy_stack, run.drivers)
    print(f"legacy live: {barge_ins} barge-ins, {interrupted:.0f} interrupted speeches, errors "
          f"{ {k: n for k, n in errors.items() if n} }")
