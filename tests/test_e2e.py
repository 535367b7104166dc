"""Real callers (livekit.rtc, real speech audio) talk to the real agent workers through
the real livekit-server, and the agent's scheduling errors show up in the real Prometheus.

One native stack for the module: livekit-server, 2 agent workers, Prometheus (no Locust).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lkrig_instrument import names
from stackutil import alive, native_stack, prom_query, wait_until

from agent import dialog, speech
from loadgen.detect import segment_audio
from rig import native

REPO = Path(__file__).resolve().parent.parent
GREETING_TURN = "greeting"
ASK = "What programs do you have for kids?"
ANSWER = "She is seven years old, and a girl."


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[native.StackInfo]:
    with native_stack(tmp_path_factory, "e2e-stack", agents=2, port_offset=5500) as info:
        yield info


def call(stack: native.StackInfo, scenario: str, profile: str, *says: str,
         seed: int = 1) -> dict[str, Any]:
    """One conversation through `python -m loadgen.cli`, as a user would run it."""
    env = {**os.environ, "LIVEKIT_URL": stack.livekit_url, "LIVEKIT_API_KEY": stack.api_key,
           "LIVEKIT_API_SECRET": stack.api_secret}
    cmd = [sys.executable, "-m", "loadgen.cli", "--agent-name", stack.agent_name,
           "--scenario", scenario, "--profile", profile, "--seed", str(seed), "--listen-first",
           "--join-timeout", "30", "--settle", "2.5"]
    for text in says:
        cmd += ["--say", text]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def voiced_seconds(text: str) -> float:
    """How long the caller's detector finds speech in the agent's rendering of `text` (the
    same segmenter the caller runs live, on the audio before Opus and the network)."""
    pcm, rate = asyncio.run(speech.render(text))
    samples = np.concatenate([np.zeros(rate // 2, np.int16), np.frombuffer(pcm, np.int16)])
    return sum(s.duration for s in segment_audio(samples, rate))


def heard_seconds(turn: dict[str, Any]) -> float:
    return sum(s["end"] - s["start"] for s in turn["segments"])


def said(turn: dict[str, Any]) -> list[str]:
    """What the agent reports it played in this turn, in playout order."""
    return [e["text"] for e in turn["events"] if e.get("event") == "said"]


def assert_heard(turn: dict[str, Any], texts: list[str]) -> None:
    """The agent played `texts` in this order, and the caller heard that much speech."""
    assert said(turn) == texts
    want = sum(voiced_seconds(t) for t in texts)
    got = heard_seconds(turn)
    assert abs(got - want) < 0.15 * want + 0.2, f"heard {got:.2f} s of speech, {texts} is {want:.2f} s"


def silence_after(turn: dict[str, Any], first: str) -> float:
    """Caller-measured silence between the end of `first` (the turn's first utterance) and the
    next speech: segments are walked until they hold `first`'s voiced length."""
    need, acc = 0.9 * voiced_seconds(first), 0.0
    segments = turn["segments"]
    for seg, nxt in itertools.pairwise(segments):
        acc += seg["end"] - seg["start"]
        if acc >= need:
            return nxt["start"] - seg["end"]
    raise AssertionError(f"no speech after {first!r}: {segments}")


def metric_total(prometheus_url: str, expr: str) -> float:
    result = prom_query(prometheus_url, expr)
    return sum(float(r["value"][1]) for r in result)


def worker_metrics(endpoint: native.AgentEndpoint) -> str:
    with urllib.request.urlopen(endpoint.metrics_url, timeout=5) as r:
        return r.read().decode()


def session_pid(result: dict[str, Any]) -> int:
    for turn in result["turns"]:
        for ev in turn["events"]:
            if ev.get("event") == "session":
                return int(ev["pid"])
    raise AssertionError(f"the agent never announced its session: {result['turns']}")


def test_seed_caller_hears_preamble_and_question_and_draining_is_counted(
        stack: native.StackInfo) -> None:
    before = metric_total(stack.prometheus_url,
                          'sum(lkrig_speech_scheduling_errors_total{kind="draining",scenario="seed"})')
    result = call(stack, "seed", "fast", ASK, ANSWER)
    assert result["join"]["outcome"] == "ok", result["join"]
    assert result["join"]["dispatch_to_join_s"] < 10
    greeting, ask, answer = result["turns"]
    assert_heard(greeting, [dialog.GREETING])
    assert_heard(ask, [dialog.PREAMBLE, dialog.TASK_QUESTION])  # no filler: it was refused
    assert [e["kind"] for e in ask["events"] if e.get("event") == "error"] == ["draining"]
    assert_heard(answer, [dialog.TASK_ACK, dialog.FINAL.format(profile="7 year old girl")])
    # the caller hears the whole conversation, and marks the turn the agent reported an error in
    assert [t["outcome"] for t in result["turns"]] == ["ok", "agent_error", "ok"]
    wait_until(lambda: metric_total(
        stack.prometheus_url,
        'sum(lkrig_speech_scheduling_errors_total{kind="draining",scenario="seed"})') >= before + 1,
        60, "the draining error in Prometheus")
    # exactly one: nothing else was counted for this call
    assert metric_total(stack.prometheus_url,
                        'sum(lkrig_speech_scheduling_errors_total{scenario="seed"})') == before + 1


def test_counts_outlive_the_job_process_and_every_metric_is_exported(
        stack: native.StackInfo) -> None:
    result = call(stack, "seed", "typical", ASK, ANSWER, seed=2)
    pid = session_pid(result)
    wait_until(lambda: not alive(pid), 60, f"job process {pid} to exit")
    # the worker's sampler (5 s ticks) folds the exited job's counts into its past files
    # (lkrig_instrument.carry), and what /metrics serves below is read after that
    dirs = [Path(a.multiproc_dir) for a in stack.agents]
    wait_until(lambda: not any(list(d.glob(f"*_{pid}.db")) for d in dirs), 30,
               f"job process {pid}'s files to be folded")
    assert any((d / "counter_past.db").exists() for d in dirs), [sorted(os.listdir(d)) for d in dirs]
    exported = "".join(worker_metrics(a) for a in stack.agents)
    for metric in names.AGENT_METRICS:
        for sample in metric.samples:
            if metric.type == "gauge" and f"\n{sample}{{" not in exported:
                # A live gauge (livesum) ends with its process: once the worker's sampler has
                # reaped the job's file, the series is gone. It must have been there while the
                # session ran, which Prometheus (2 s scrapes) saw.
                seen = prom_query(stack.prometheus_url, f"max_over_time({sample}[10m])")
                assert seen and max(float(r["value"][1]) for r in seen) >= 1, \
                    f"{sample}: neither on a worker's /metrics nor ever >= 1 in Prometheus"
                continue
            assert f"\n{sample}{{" in exported, f"{sample} is not on any worker's /metrics"
    drained = sum(float(line.rsplit(" ", 1)[1]) for line in exported.splitlines()
                  if line.startswith("lkrig_speech_scheduling_errors_total{")
                  and 'kind="draining"' in line and 'profile="typical"' in line)
    assert drained == 1


def test_filler_in_on_enter_is_heard_first_without_errors_and_shortens_the_silence(
        stack: native.StackInfo) -> None:
    seed = call(stack, "seed", "typical", ASK, seed=3)
    fix = call(stack, "fix_filler_in_on_enter", "typical", ASK, seed=3)
    seed_ask, fix_ask = seed["turns"][1], fix["turns"][1]
    assert_heard(seed_ask, [dialog.PREAMBLE, dialog.TASK_QUESTION])
    assert_heard(fix_ask, [dialog.PREAMBLE, dialog.FILLER, dialog.TASK_QUESTION])
    assert not [e for e in fix_ask["events"] if e.get("event") == "error"]
    # silence between the preamble and what follows it: the handoff plus the task's LLM and
    # TTS in the seed; only the filler's TTS first byte with the fix
    seed_gap = silence_after(seed_ask, dialog.PREAMBLE)
    fix_gap = silence_after(fix_ask, dialog.PREAMBLE)
    assert fix_gap < seed_gap, f"fix gap {fix_gap:.3f} s, seed gap {seed_gap:.3f} s"
    errors = metric_total(stack.prometheus_url,
                          'sum(lkrig_speech_scheduling_errors_total{scenario="fix_filler_in_on_enter"})')
    assert errors == 0


def test_six_concurrent_callers_on_two_workers_are_counted_per_worker(stack: native.StackInfo) -> None:
    async def six() -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(
            loop.run_in_executor(None, functools.partial(
                call, stack, "seed_nowait", "fast", ASK, seed=100 + i))
            for i in range(6)))

    results = asyncio.run(six())
    assert [r["join"]["outcome"] for r in results] == ["ok"] * 6, [r["join"] for r in results]
    expr = 'sum by (worker) (lkrig_agent_sessions_ended_total{scenario="seed_nowait"})'
    wait_until(lambda: metric_total(stack.prometheus_url, expr.replace(" by (worker)", "")) >= 6,
               60, "6 ended sessions in Prometheus")
    # Which worker takes which job is livekit-server's choice (it reads the load the workers
    # reported last, so six jobs at once may all go to one): the test asserts the counts per
    # worker, not the spread.
    per_worker = {a.name: 0.0 for a in stack.agents}
    for r in prom_query(stack.prometheus_url, expr):
        assert r["metric"]["worker"] in per_worker, r["metric"]
        per_worker[r["metric"]["worker"]] = float(r["value"][1])
    assert len(per_worker) == 2 and sum(per_worker.values()) == 6, per_worker
    # the workers' own /metrics agree with Prometheus, worker by worker
    for endpoint in stack.agents:
        own = sum(float(line.rsplit(" ", 1)[1]) for line in worker_metrics(endpoint).splitlines()
                  if line.startswith("lkrig_agent_sessions_ended_total{")
                  and 'scenario="seed_nowait"' in line)
        assert own == per_worker[endpoint.name], (endpoint.name, own, per_worker)
    # Reconcile. Every turn the agent committed cost exactly one refused filler. On a saturated
    # machine (VAD slower than real time) a caller may hang up on dead air before the agent
    # commits its turn, or before the agent's notices reach it: such a turn may then be missing
    # on the caller's side, never counted twice on the agent's.
    def events(kind: str) -> int:
        return sum(1 for r in results for t in r["turns"] for e in t["events"]
                   if e.get("event") == kind)

    answered = events("turn")
    turns = metric_total(stack.prometheus_url, 'sum(lkrig_agent_turns_total{scenario="seed_nowait"})')
    errors = metric_total(stack.prometheus_url,
                          'sum(lkrig_speech_scheduling_errors_total{scenario="seed_nowait"})')
    assert errors == turns <= 6
    assert events("error") <= answered <= turns
    assert answered >= 4, [[t["outcome"] for t in r["turns"]] for r in results]
