"""Profiles, the dialog policy, and the documents generated from code."""

from __future__ import annotations

import random
import statistics
import subprocess
import sys

import pytest
from replayutil import REPO

from agent import dialog, latency, scenarios


@pytest.mark.parametrize("name", latency.available())
def test_every_shipped_profile_loads(name: str) -> None:
    profile = latency.load(name)
    assert set(profile.components) == set(latency.COMPONENTS)


def test_distributions_draw_what_they_declare() -> None:
    rng = random.Random(5)
    uniform = latency._distribution({"uniform": [100, 200]}, "t")
    draws = [uniform.sample_ms(rng) for _ in range(2000)]
    assert 100 <= min(draws) and max(draws) <= 200
    assert 140 < statistics.mean(draws) < 160
    lognormal = latency._distribution({"lognormal": {"median": 300, "sigma": 0.4}}, "t")
    assert 280 < statistics.median(lognormal.sample_ms(rng) for _ in range(4000)) < 320
    spiky = latency._distribution({"fixed": 10, "spike": {"p": 0.1, "add": 1000}}, "t")
    spikes = sum(spiky.sample_ms(rng) > 500 for _ in range(5000))
    assert 400 < spikes < 600


def test_a_session_draws_the_same_latencies_for_the_same_seeds() -> None:
    profile = latency.load("spiky")
    def draws(seed: int) -> list[float]:
        lat = latency.Latency(profile, seed)
        return [lat.seconds(c) for c in latency.COMPONENTS for _ in range(5)]

    assert draws(7) == draws(7) != draws(8)


@pytest.mark.parametrize(
    ("text", "age", "gender"),
    [("She is seven years old, and a girl.", 7, "female"),
     ("My son is 12.", 12, "male"),
     ("I'd rather not say.", None, None)],
)
def test_dialog_reads_age_and_gender(text: str, age: int | None, gender: str | None) -> None:
    assert dialog.parse_age(text) == age
    assert dialog.parse_gender(text) == gender


def test_dialog_follows_the_front_desk_conversation() -> None:
    desk = {"get_programs"}
    task = {"record_child_profile", "cancel_task"}
    first = dialog.next_reply("user", "What programs do you have for kids?", None, desk)
    assert (first.text, first.tool) == (dialog.PREAMBLE, "get_programs")
    assert dialog.next_reply("user", "What programs do you have for kids?", None, task).text == \
        dialog.TASK_QUESTION
    answer = dialog.next_reply("user", "She is seven years old, and a girl.", None, task)
    assert answer.tool == "record_child_profile" and answer.args == {"age": 7, "gender": "female"}
    refusal = dialog.next_reply("user", "I'd rather not say.", None, task)
    assert refusal.tool == "cancel_task"
    result = dialog.tool_result({"age": 7, "gender": "female"})
    assert dialog.next_reply("tool_output", result, "get_programs", desk).text == \
        "We have soccer and swimming for a 7 year old girl."
    assert dialog.next_reply("tool_output", "An internal error occurred", "get_programs",
                             desk).text == dialog.TOOL_FAILED


def test_metrics_doc_is_generated_from_the_names() -> None:
    generated = subprocess.run([sys.executable, "-m", "lkrig_instrument"], capture_output=True,
                               text=True, check=True).stdout
    assert (REPO / "docs/metrics.md").read_text() == generated, \
        "docs/metrics.md is stale: python -m lkrig_instrument > docs/metrics.md"


def test_agent_readme_describes_every_scenario_and_profile() -> None:
    readme = (REPO / "agent/README.md").read_text()
    for name in scenarios.available():
        assert f"### `{name}`" in readme
    for name in latency.available():
        assert f"`{name}`" in readme

