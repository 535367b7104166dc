"""The load generator's parts that need no LiveKit server: conversation scripts (and their
errors), the caller metrics' cross-worker aggregation and exposition, the load shapes, the
frame-pacing measure, and the voice driver's process contract. Real processes where there is
one (Locust, the driver); the live runs are in test_loadgen_live.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from lkrig_instrument import names
from prometheus_client.parser import text_string_to_metric_families

from loadgen import convscript, exporter, metrics, runstate, shapes  # none imports locust (gevent)
from loadgen.conversation import Spec, check_expectations, conversation_outcome
from loadgen.results import TurnResult

REPO = Path(__file__).resolve().parent.parent


# ---- conversation scripts -------------------------------------------------------------------


def test_shipped_scripts_load_and_cover_seed_refusal_and_barge_in() -> None:
    scripts = convscript.load_all()
    assert {"seed", "refusal", "barge_in_preamble"} <= set(scripts)
    seed = scripts["seed"]
    assert [t.say for t in seed.turns] == ["What programs do you have for kids?",
                                           "She is seven years old, and a girl."]
    assert "rather not" in scripts["refusal"].turns[1].say  # agent/dialog.py's refusal pattern
    barge = scripts["barge_in_preamble"]
    assert barge.has_barge_in and not seed.has_barge_in
    # The barge-in follows the question whose reply starts with the tool's preamble.
    i = next(i for i, t in enumerate(barge.turns) if t.barge_in)
    assert barge.turns[i - 1].say == seed.turns[0].say
    assert barge.turns[i].barge_in.for_ms > 500  # longer than the agent's min interruption
    # Scripts cross the driver pipe as dicts: nothing is lost on the way.
    for s in scripts.values():
        assert convscript.Script.from_dict(json.loads(json.dumps(s.to_dict()))) == s


GOOD = """\
version: 1
greeting: true
turns:
  - id: ask
    say: What programs do you have for kids?
  - id: age
    say: She is seven.
    barge_in: {at_ms: 300, for_ms: 800}
"""


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("    barge_in: {at_ms: 300, for_ms: 800}", "    barge_in: {at_ms: soon}",
         ":8: turns[1].barge_in.at_ms: expected a number >= 0, got 'soon'"),
        ("  - id: age\n", "  - id: age\n    sya: typo\n", ":7: turns[1].sya: unknown field"),
        ("  - id: age", "  - id: ask", ":6: turns[1].id: duplicate turn id 'ask'"),
        ("    say: She is seven.\n", "", ":6: turns[1]: missing field 'say'"),
        ("version: 1", "version: 2", ":1: version: unsupported version 2"),
        ("greeting: true", "greeting: yes please", ":2: greeting: expected true or false"),
        ("turns:", "think_ms: [900, 300]\nturns:", ":3: think_ms: high (300) is below low (900)"),
        ("greeting: true\nturns:\n  - id: ask\n    say: What programs do you have for kids?\n",
         "greeting: false\nturns:\n",
         ":6: turns[0].barge_in: the first turn can only barge in on the greeting; set greeting: true"),
        ("turns:", "turns: [", ":4: not valid YAML"),
        ("    say: She is seven.", "    say: ''", ":7: turns[1].say: expected non-empty text"),
    ],
)
def test_a_malformed_script_is_one_error_with_file_line_and_field(
        tmp_path: Path, old: str, new: str, where: str) -> None:
    assert old in GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(convscript.ScriptError) as err:
        convscript.load(path, display="bad.yaml")
    assert str(err.value).startswith("bad.yaml" + where), str(err.value)


def test_locust_refuses_to_start_with_a_malformed_script(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(GOOD.replace("at_ms: 300", "at_ms: -5"))
    env = {**os.environ, "LOADGEN_SCRIPTS_DIR": str(tmp_path), "LIVEKIT_URL": "ws://127.0.0.1:9",
           "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32, "LOADGEN_METRICS_PORT": str(_free_port())}
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadgen/locustfile.py", "--headless", "-u", "1", "-t", "5s"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("loadgen: ")]
    assert lines == [f"loadgen: {tmp_path / 'broken.yaml'}:8: turns[1].barge_in.at_ms: "
                     "expected a number >= 0, got -5"], done.stderr


def test_expectations_and_outcomes() -> None:
    turn = convscript.Turn("ask", "hi", expect=convscript.Expect(agent_turn=True, max_latency_ms=900))
    heard = TurnResult("ask", "ok", latency_s=1.2, events=[{"event": "turn", "turn": "ask"}])
    assert check_expectations(turn, heard) == "max_latency_ms: 1200 > 900"
    missed = TurnResult("ask", "ok", latency_s=0.5, events=[{"event": "turn", "turn": "other"}])
    assert check_expectations(turn, missed) == "agent_turn: the agent reported no turn for this utterance"
    assert conversation_outcome("ok", ["ok", "agent_error", "dead_air"]) == "agent_error"
    assert conversation_outcome("no_agent", []) == "no_agent"
    assert conversation_outcome("ok", ["ok", "ok"]) == "completed"
    spec = Spec(convscript.load_all()["seed"], scenario="seed", profile="fast", seed=7)
    assert Spec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# ---- metrics ----------------------------------------------------------------------------------


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_from_two_workers_add_up_on_the_master_and_use_only_registered_names() -> None:
    lab = {"scenario": "seed", "profile": "fast", "network": "4g"}
    workers = [metrics.Recorder(), metrics.Recorder()]
    latencies = [[0.02, 0.4, 1.2], [0.4, 25.0]]  # below the first bucket and above the last too
    agg = metrics.Aggregate()
    for i, (rec, lats) in enumerate(zip(workers, latencies, strict=True)):
        cm = metrics.CallerMetrics(rec)
        cm.joined({"outcome": "ok", "dispatch_to_join_s": 0.5}, **lab)
        for lat in lats:
            cm.turn({"outcome": "ok", "latency_s": lat, "gaps_s": [0.3]}, **lab)
        cm.turn({"outcome": "dead_air", "latency_s": None, "gaps_s": []}, **lab)
        cm.joined({"outcome": "no_agent", "reason": "agent_join_timeout"}, **lab)
        cm.conversation("dead_air", **lab)
        # Two reports per worker, like Locust's periodic report and its final one.
        agg.merge(f"w{i}", json.loads(json.dumps(rec.drain())))
        cm.left(**lab)
        agg.merge(f"w{i}", json.loads(json.dumps(rec.drain())))
    workers[0].gauge_add(names.CALLERS_ACTIVE, 3, **lab)
    agg.merge("w0", workers[0].drain())
    port = _free_port()
    state = runstate.RunState()
    server, thread = exporter.serve([metrics.AggregateCollector(agg), state], state.fault_event, port)
    try:
        got = _scrape(port)
    finally:
        server.shutdown()
        thread.join(5)
    sel = tuple(sorted(lab.items()))
    assert got[("lkrig_caller_turn_latency_seconds_count", sel)] == 5
    assert got[("lkrig_caller_turn_latency_seconds_sum", sel)] == pytest.approx(0.02 + 0.4 + 1.2 + 0.4 + 25.0)
    bucket = {float(dict(k[1])["le"]): v for k, v in got.items()
              if k[0] == "lkrig_caller_turn_latency_seconds_bucket"}
    assert bucket[0.025] == 1 and bucket[0.5] == 3 and bucket[1.5] == 4 and bucket[20.0] == 4
    assert bucket[float("inf")] == 5
    assert got[("lkrig_caller_turns_total", tuple(sorted({**lab, "outcome": "ok"}.items())))] == 5
    assert got[("lkrig_caller_turns_total", tuple(sorted({**lab, "outcome": "dead_air"}.items())))] == 2
    assert got[("lkrig_caller_dead_air_total", sel)] == 2
    assert got[("lkrig_caller_silence_gap_seconds_count", sel)] == 5
    assert got[("lkrig_caller_dispatch_to_join_seconds_count", sel)] == 2
    assert got[("lkrig_caller_rooms_without_agent_total", sel)] == 2
    dead_air = tuple(sorted({**lab, "outcome": "dead_air"}.items()))
    assert got[("lkrig_caller_conversations_total", dead_air)] == 2
    assert got[("lkrig_callers_active", sel)] == 3  # both workers left their call; w0 now has 3
    allowed = {s for m in names.CALLER_METRICS + names.RUN_METRICS for s in m.samples}
    assert {name for name, _ in got} <= allowed
    agg.forget("w0")
    assert agg.value(names.CALLERS_ACTIVE, **lab) == 0


def _post(port: int, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events", data=body)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class FakeRunner:
    """What RunState reads of Locust's runner at scrape time."""

    def __init__(self) -> None:
        self.user_count, self.worker_count = 7, 2
        self.stats = type("Stats", (), {"total": type("Total", (), {"fail_ratio": 0.25})()})()


def test_the_master_serves_posted_fault_events_and_the_run_and_refuses_bad_ones() -> None:
    state = runstate.RunState()
    state.runner = FakeRunner()
    port = _free_port()
    server, thread = exporter.serve([state], state.fault_event, port)
    try:
        at = time.time() - 30
        assert _post(port, json.dumps({"fault": "kill-agent", "target": "agent-2", "phase": "start",
                                       "at": at}).encode())[0] == 202
        assert _post(port, json.dumps({"fault": "kill-agent", "target": "agent-2", "phase": "end",
                                       "at": at + 4}).encode())[0] == 202
        state.run_event("start", at - 10)
        bad = [
            (b"not json", "not a JSON event"),
            (b"[1]", "an event is a JSON object"),
            (json.dumps({"fault": "nuke", "target": "agent-2", "phase": "start", "at": at}).encode(),
             "fault 'nuke'"),
            (json.dumps({"fault": "kill-agent", "target": "10.0.0.1:9100 x", "phase": "start",
                         "at": at}).encode(), "target"),
            (json.dumps({"fault": "kill-agent", "target": "agent-2", "phase": "middle",
                         "at": at}).encode(), "phase 'middle'"),
            (json.dumps({"fault": "kill-agent", "target": "agent-2", "phase": "start",
                         "at": "soon"}).encode(), "at 'soon'"),
        ]
        for body, says in bad:
            code, text = _post(port, body)
            assert (code, says in text) == (400, True), (body, code, text)
        got = _scrape(port)
    finally:
        server.shutdown()
        thread.join(5)
    ts = {dict(k[1])["phase"]: v for k, v in got.items()
          if k[0] == names.FAULT_TIMESTAMP.name and dict(k[1])["target"] == "agent-2"}
    assert ts == {"start": at, "end": at + 4}
    # the refused events added no series and counted nothing
    assert {dict(k[1])["fault"] for k in got if k[0] == names.FAULT_TIMESTAMP.name} == {"kill-agent"}
    counts = {dict(k[1])["fault"]: v for k, v in got.items() if k[0] == names.FAULTS.name}
    assert counts == {**{k: 0.0 for k in names.FAULT_KINDS}, "kill-agent": 1.0}
    assert got[(names.RUN_TIMESTAMP.name, (("phase", "start"),))] == at - 10
    assert got[(names.LOCUST_USERS.name, ())] == 7
    assert got[(names.LOCUST_WORKERS.name, ())] == 2
    assert got[(names.LOCUST_FAIL_RATIO.name, ())] == 0.25


def test_a_prepared_run_serves_every_caller_series_at_zero_until_calls_report() -> None:
    lab = {"scenario": "seed", "profile": "fast", "network": "4g"}
    agg = metrics.Aggregate()
    agg.prepare(**lab)

    def served() -> dict[tuple[str, Any], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in agg.families() for s in fam.samples}

    before = served()
    sel = tuple(sorted(lab.items()))
    # Every caller metric is there before any call, at zero, with every outcome a panel sums by.
    for m in names.CALLER_METRICS:
        assert any(name in m.samples for name, _ in before), m.name
    assert all(v == 0 for v in before.values())
    outcomes = {dict(k[1])["outcome"] for k in before if k[0] == "lkrig_caller_conversations_total"}
    assert outcomes == set(names.CONVERSATION_OUTCOMES)
    turn_outcomes = {dict(k[1])["outcome"] for k in before if k[0] == "lkrig_caller_turns_total"}
    assert turn_outcomes == set(names.TURN_OUTCOMES)
    # The first report then moves series that already exist: rate() sees that first turn.
    rec = metrics.Recorder()
    metrics.CallerMetrics(rec).turn({"outcome": "ok", "latency_s": 0.4, "gaps_s": []}, **lab)
    agg.merge("w0", rec.drain())
    after = served()
    assert after[("lkrig_caller_turn_latency_seconds_count", sel)] == 1
    assert after[("lkrig_caller_turns_total", tuple(sorted({**lab, "outcome": "ok"}.items())))] == 1
    assert after[("lkrig_caller_dead_air_total", sel)] == 0
    assert set(after) == set(before)


def test_a_worker_that_stops_reporting_no_longer_counts_as_active_callers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lab = {"scenario": "seed", "profile": "fast", "network": "4g"}
    rec, agg = metrics.Recorder(), metrics.Aggregate()
    rec.gauge_add(names.CALLERS_ACTIVE, 4, **lab)
    agg.merge("w0", rec.drain())
    assert agg.value(names.CALLERS_ACTIVE, **lab) == 4
    monkeypatch.setattr(metrics, "GAUGE_STALE_S", -1.0)  # as if its last report were long ago
    assert agg.value(names.CALLERS_ACTIVE, **lab) == 0


def test_recorder_rejects_labels_the_metric_does_not_have() -> None:
    with pytest.raises(ValueError, match="lkrig_caller_turns_total"):
        metrics.Recorder().inc(names.CALLER_TURNS, scenario="seed", profile="fast")


# ---- shapes -----------------------------------------------------------------------------------


def test_shapes_follow_their_definition() -> None:
    u = shapes.users_at
    assert u("none", 5, 10, 2, 60) == (10, 2) and u("none", 60, 10, 2, 60) is None
    assert u("none", 10_000, 10, 2, None) == (10, 2)
    assert [u("ramp", t, 20, 1, 100)[0] for t in (0, 37.5, 75, 99)] == [0, 10, 20, 20]
    assert [u("step", t, 20, 1, 100, steps=4)[0] for t in (0, 24, 25, 99)] == [5, 5, 10, 20]
    assert [u("spike", t, 20, 1, 100)[0] for t in (0, 39, 40, 59, 60, 99)] == [4, 4, 20, 20, 4, 4]
    assert u("spike", 50, 20, 1, 100)[1] >= 20  # a spike arrives at once
    assert u("soak", 3599, 30, 3, None) == (30, 3) and u("soak", 3600, 30, 3, None) is None
    for shape in ("ramp", "step", "spike"):
        assert u(shape, 600, 10, 1, None) is None  # 10 minutes when no run time is set
    with pytest.raises(ValueError, match="unknown shape"):
        u("zigzag", 0, 1, 1, None)


def test_every_shape_ends_with_a_drain_that_waits_for_users_and_one_more_report() -> None:
    d = shapes.Drain()
    assert d.tick(60.0, 10, stop_timeout=30) == (0, 1000.0)  # users still finishing their calls
    assert d.tick(75.0, 3, stop_timeout=30) == (0, 1000.0)
    assert d.tick(80.0, 0, stop_timeout=30) == (0, 1000.0)  # all gone: one report interval more
    assert d.tick(80.0 + shapes.DRAIN_REPORT_S, 0, stop_timeout=30) is None
    stuck = shapes.Drain()
    stuck.tick(0.0, 5, stop_timeout=10)
    assert stuck.tick(10 + shapes.DRAIN_REPORT_S + 31, 5, stop_timeout=10) is None


# ---- the voice driver as a process ------------------------------------------------------------


def _driver(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "loadgen.driver", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def test_driver_without_credentials_names_them_and_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    p = _driver(env)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert "LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET not set" in err


def test_driver_rejects_bad_ops_and_exits_cleanly_on_end_of_input() -> None:
    env = {**os.environ, "LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k",
           "LIVEKIT_API_SECRET": "s" * 32}
    p = _driver(env, "--max-callers", "1", "--stats-interval", "0.2")
    assert p.stdin is not None and p.stdout is not None
    ready = json.loads(p.stdout.readline())
    assert ready["type"] == "ready" and ready["max_callers"] == 1
    p.stdin.write("not json\n")
    p.stdin.write(json.dumps({"op": "start", "call": "x", "spec": {"script": {}}}) + "\n")
    p.stdin.flush()
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msg = json.loads(p.stdout.readline())
        seen.append(msg)
        if msg["type"] == "rejected":
            break
    assert seen[-1]["call"] == "x" and seen[-1]["reason"].startswith("bad spec")
    stats = [m for m in seen if m["type"] == "stats"]
    p.stdin.close()  # end of input: the driver hangs up and leaves
    rest = [json.loads(line) for line in p.stdout]
    assert p.wait(timeout=30) == 0
    assert rest[-1] == {"type": "bye", "left": []}
    assert "malformed op line" in p.stderr.read()  # type: ignore[union-attr]
    assert stats == [] or stats[0]["callers"] == 0


def test_failure_reasons_are_read_from_every_shape_locust_writes() -> None:
    # rows as Locust 2.47 wrote them in a soak's locust_failures.csv (a bare reason, a reason with
    # a detail, a kind in brackets, an expectation)
    from rig.headless import Result

    rows = [{"Method": "turn", "Error": "CallFailure('dead_air')", "Occurrences": "6"},
            {"Method": "turn", "Error": "CallFailure('agent_error (tool_error_other)')", "Occurrences": "1"},
            {"Method": "turn", "Error": "CallFailure('expectation failed: agent_turn: no turn')",
             "Occurrences": "4"},
            {"Method": "turn", "Error": 'CallFailure("agent_lost: the agent left the room")',
             "Occurrences": "2"},
            {"Method": "join", "Error": "CallFailure('no_agent: agent_join_timeout')", "Occurrences": "12"}]
    r = Result(rc=0, stats=[], failures=rows, caller_metrics={}, drivers=set(), log="")
    assert r.failure_counts("turn") == {"dead_air": 6, "agent_error": 1, "expectation": 4, "agent_lost": 2}
    assert r.failure_counts("join") == {"no_agent": 12}


def test_a_driver_whose_media_engine_dies_says_so_and_exits_1() -> None:
    env = {**os.environ, "LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k",
           "LIVEKIT_API_SECRET": "s" * 32}
    p = _driver(env, "--max-callers", "1")
    assert p.stdout is not None
    ready = json.loads(p.stdout.readline())
    assert ready["type"] == "ready" and ready["media_pid"] != p.pid
    os.kill(ready["media_pid"], signal.SIGKILL)
    rest = [json.loads(line) for line in p.stdout]
    assert p.wait(timeout=30) == 1
    assert rest[-1] == {"type": "bye", "left": []}
    assert f"the media engine (pid {ready['media_pid']}) exited with code -9" in p.stderr.read()  # type: ignore[union-attr]
