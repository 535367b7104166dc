"""The load generator against the real native stack: livekit-server, the real agent worker, Locust with the
real voice drivers (real WebRTC callers speaking espeak-ng audio).

One stack for the module (`rig.native`, as `rig up --native --agents 1 --loadgen-workers 2`):
the web-UI test drives its Locust; the headless tests start their own headless master and two
workers against the same livekit-server and agent.

Sizing note: one agent session of the seed conversation costs ~0.25-0.3 of a core (measured on
this 2-core machine), a caller ~0.07. So the 10 callers hold ~4 calls at a time (--call-gap 50:
first calls spread over the minute), not 10: ten concurrent agent sessions plus their callers
starve every process on the machine ("VAD inference is slower than realtime", turns the agent
never commits), and the run would measure that instead of the load generator.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lkrig_instrument import names
from stackutil import alive, wait_until

from livekit import api
from rig import headless, native, procs
from rig.headless import drivers_of
from rig.promapi import scrape, total

REPO = Path(__file__).resolve().parent.parent
PORT_OFFSET = 6500
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[native.StackInfo]:
    run_dir = tmp_path_factory.mktemp("loadgen-stack")
    opts = native.NativeOptions(agents=1, loadgen_workers=2, run_dir=run_dir, port_offset=PORT_OFFSET,
                                env_file=run_dir / ".env")
    running = native.NativeStack(opts)
    with pytest.MonkeyPatch.context() as mp:
        # The callers share the machine: admit jobs on the agent's own CPU, not the machine's.
        mp.setenv("AGENT_LOAD", "process")
        info = running.start()
    try:
        log = Path(info.logs_dir) / "agent-0.log"
        # Healthy is not registered: a dispatch before registration is dropped by the server.
        wait_until(lambda: "registered worker" in log.read_text(errors="replace"), 60,
                   "the agent worker to register with livekit-server")
        yield info
    finally:
        left = running.stop()
        assert not left, f"teardown left processes running: {left}"


# ---- helpers ----------------------------------------------------------------------------------


def agent_totals(info: native.StackInfo) -> tuple[float, float]:
    """(lkrig_agent_turns_total, interrupted speeches) summed over every label set."""
    m = scrape(info.agents[0].metrics_url)
    return (total(m, names.TURNS.name),
            total(m, names.SPEECHES_DONE.name, outcome="interrupted"))


def settled_agent_totals(info: native.StackInfo) -> tuple[float, float]:
    """The agent's counts once they stop moving (sessions commit their last turn after the
    caller's last reply, and count it from their own process)."""
    last = agent_totals(info)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(2)
        now = agent_totals(info)
        if now == last:
            return now
        last = now
    return last


def rooms(info: native.StackInfo) -> list[str]:
    async def listing() -> list[str]:
        lk = api.LiveKitAPI(info.livekit_http_url, info.api_key, info.api_secret)
        try:
            return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
        finally:
            await lk.aclose()

    return asyncio.run(listing())


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def assert_nothing_left(info: native.StackInfo, drivers: set[int]) -> None:
    """No caller process (every voice driver seen is gone) and no room on the server."""
    wait_until(lambda: not any(alive(p) for p in drivers), 60, f"voice drivers {sorted(drivers)} to exit")
    wait_until(lambda: rooms(info) == [], 30, "livekit-server to list no room")


def run_headless(info: native.StackInfo, out: Path, users: int, run_time: str, *args: str) -> headless.Result:
    """A headless master with two workers (their own processes), until the master exits."""
    env = {**os.environ, "LIVEKIT_URL": info.livekit_url, "LIVEKIT_API_KEY": info.api_key,
           "LIVEKIT_API_SECRET": info.api_secret}
    run = headless.Headless(out, env, users, run_time, list(args), workers=2, spawn_rate=2,
                            agent_name=info.agent_name)
    run.start()
    try:
        run.wait()
        return run.result()
    finally:
        run.stop()


# ---- tests ------------------------------------------------------------------------------------


def test_headless_two_workers_ten_users_counts_match_the_agent_and_leave_nothing(
        stack: native.StackInfo, tmp_path: Path) -> None:
    turns_before, _ = settled_agent_totals(stack)
    t0 = time.monotonic()
    # First calls spread over the minute, ~25 s each: about 4 at a time (see the module doc).
    # Users spawn over 5 s (-r 2) and each waits up to --call-gap before its first call, so
    # 5 + 50 s keeps every first call inside the 60 s run.
    run = run_headless(stack, tmp_path, 10, "60s", "--scenario", "seed", "--latency-profile", "fast",
                       "--script", "seed", "--call-gap", "50")
    elapsed = time.monotonic() - t0
    assert "missing" not in run.log, run.log[-3000:]
    conversations, failed = run.requests("conversation", "seed")
    assert conversations >= 10, (conversations, run.stats)  # every user's first call starts in the minute
    # Every conversation completed or failed with a named outcome (never a crash or a driver loss).
    reasons = {}
    for row in run.failures:
        if row["Method"] == "conversation":
            m = re.match(r"CallFailure\([\"']([a-z_]+):", row["Error"])
            assert m and m.group(1) in names.CONVERSATION_OUTCOMES, row
            reasons[m.group(1)] = reasons.get(m.group(1), 0) + int(row["Occurrences"])
    assert sum(reasons.values()) == failed, (reasons, failed)
    # The seed scenario refuses its filler every time: the named reason shows on turn 1.
    assert reasons.get("agent_error", 0) >= 1, reasons
    # Locust's turns are the agent's turns: each utterance was committed once, nothing else was.
    locust_turns, _ = run.requests("turn")
    turns_after, _ = settled_agent_totals(stack)
    assert locust_turns > 0 and turns_after - turns_before == locust_turns, (locust_turns, turns_after,
                                                                            turns_before)
    # The master's Prometheus export (merged from both workers) says the same as Locust.
    m = run.caller_metrics
    assert total(m, names.CALLER_TURNS.name) == locust_turns
    assert total(m, names.CALLER_CONVERSATIONS.name) == conversations
    answered = total(m, f"{names.CALLER_TURN_LATENCY.name}_count")
    assert total(m, names.CALLER_TURNS.name, outcome="ok") <= answered <= locust_turns
    assert total(m, names.CALLERS_ACTIVE.name) == 0
    assert run.drivers, "no voice driver was ever seen"
    assert_nothing_left(stack, run.drivers)
    print(f"headless: {conversations} conversations, {locust_turns} turns, failures {reasons}, "
          f"{elapsed:.0f} s")


def test_barge_in_on_the_seed_is_counted_by_caller_and_agent(stack: native.StackInfo, tmp_path: Path) -> None:
    # The previous test's sessions end after its callers leave; until they have, the worker may
    # report itself full and a dispatch of this run would wait for nobody.
    wait_until(lambda: total(scrape(stack.agents[0].metrics_url), names.SESSIONS_ACTIVE.name) == 0, 60,
               "the agent to hold no session")
    turns_before, interrupted_before = settled_agent_totals(stack)
    run = run_headless(stack, tmp_path, 2, "15s", "--scenario", "seed", "--latency-profile", "fast",
                       "--script", "barge_in_preamble", "--call-gap", "1")
    barge_ins, barge_failed = run.requests("barge_in", "interrupt_preamble")
    conversations, conversations_failed = run.requests("conversation", "barge_in_preamble")
    why = (run.failures, run.requests("join", "dispatch_to_join"))
    # Every call that ends well barged in; a call that did not barge in ended with a named
    # failure before the preamble (no agent, dead air), which the rig counts as such.
    assert barge_ins >= 1 and barge_failed == 0, why
    assert conversations >= 2 and conversations - barge_ins <= conversations_failed, (conversations, why)
    turns_after, interrupted_after = settled_agent_totals(stack)
    # Each barge-in cut the agent's preamble: the agent counts one interrupted speech per barge-in,
    # and commits the barge-in as a user turn like any other.
    assert interrupted_after - interrupted_before == barge_ins
    locust_turns, _ = run.requests("turn")
    assert turns_after - turns_before == locust_turns
    assert run.requests("turn", "interrupt_preamble")[0] == barge_ins
    assert_nothing_left(stack, run.drivers)


ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_web_ui_starts_a_chosen_scenario_shows_turn_rows_and_stops_cleanly(stack: native.StackInfo) -> None:
    from playwright.sync_api import sync_playwright

    assert stack.locust_url is not None
    workers = [pid for name, pid in stack.pids.items() if name.startswith("locust-worker-")]
    assert len(workers) == 2 and not drivers_of(workers)
    threads_before = {pid: threads(pid) for pid in workers}
    scenario = "fix_filler_in_on_enter"
    seen: set[int] = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(stack.locust_url)
            page.get_by_label("Number of users").fill("2")
            page.get_by_label("Ramp up").fill("2")
            page.get_by_text("Custom parameters").click()
            page.locator("select[name=scenario]").select_option(scenario)
            page.locator("select[name=latencyProfile]").select_option("fast")
            page.locator("select[name=script]").select_option("seed")
            page.get_by_role("button", name="Start").click()
            # A turn row appears in the statistics table once a caller's first turn is answered.
            row = page.locator("tr", has=page.locator("td", has_text=re.compile(r"^turn$")))
            deadline = time.monotonic() + 90
            while row.count() == 0:
                assert time.monotonic() < deadline, "no turn row in the Locust UI after 90 s"
                seen |= drivers_of(workers)
                page.wait_for_timeout(500)
            assert "ask_programs" in row.first.inner_text()
            seen |= drivers_of(workers)
            page.get_by_role("button", name="Stop").click()
            wait_until(lambda: json.loads(procs.http_get(stack.locust_url + "/stats/requests")[1])
                       ["state"] == "stopped", 60, "Locust to report the run stopped")
        finally:
            browser.close()
    # The chosen scenario travelled with the dispatch: the agent counted turns under its name.
    agent = scrape(stack.agents[0].metrics_url)
    assert total(agent, names.TURNS.name, scenario=scenario, profile="fast") >= 1
    assert seen
    assert_nothing_left(stack, seen)
    assert not drivers_of(workers)
    # The Locust workers stay up for the next run, with no thread left over from this one.
    wait_until(lambda: all(threads(pid) <= threads_before[pid] for pid in workers), 30,
               f"Locust worker threads back to {threads_before}")


def test_a_run_through_the_web_api_counts_this_runs_turns_and_no_earlier_ones(
        stack: native.StackInfo, tmp_path: Path) -> None:
    """`rig run --compose` drives the compose stack's Locust master this way (rig.locust_web):
    the web UI's own API, on a master that has run before, in front of an agent that counted
    before. Every count must be this run's."""
    from rig import locust_web, locustcsv, reconcile

    assert stack.locust_url is not None and stack.loadgen_metrics_url is not None
    urls = [stack.agents[0].metrics_url]
    before = reconcile.settle(urls, quiet=4)
    assert before.turns > 0, "the earlier tests' turns are what this run must not count"
    run = locust_web.WebLocust(stack.locust_url, tmp_path, 3, 3, "30s",
                               {"scenario": "fix_filler_in_on_enter", "latency_profile": "fast",
                                "script": "seed", "shape": "none", "call_gap": "2", "seed": "11"},
                               metrics_url=stack.loadgen_metrics_url)
    run.start()
    # A run the master has taken but whose shape has not ticked yet still reads "ready": ask
    # again once it runs.
    while not run._started:
        assert run.running()
        run.poll()
        time.sleep(0.2)
    again = locust_web.WebLocust(stack.locust_url, tmp_path / "again", 1, 1, "10s", {})
    with pytest.raises(locust_web.LocustWebError, match="already running a test"):
        again.start()
    while run.running():
        run.poll()
        time.sleep(0.5)
    result = run.result()
    turns, _ = result.requests("turn")
    conversations, _ = result.requests("conversation")
    assert turns >= 3 and conversations >= 1, result.stats
    assert total(result.caller_metrics, names.CALLER_TURNS.name) == turns
    grown = reconcile.settle(urls, quiet=4).minus(before)
    assert grown.turns == turns, (grown, turns)
    csvs = locustcsv.load(tmp_path / "locust")  # what the report reads
    assert [r for r in csvs.stats if r["Type"] == "turn"]
    assert max(locustcsv.number(r["User Count"]) for r in csvs.history) == 3


def test_every_dashboard_panel_returns_data_from_the_stack_after_the_load(stack: native.StackInfo) -> None:
    """Every panel's query, variables resolved as Grafana opens the dashboard, answers
    from the native stack's own Prometheus, fed by the runs above (agent, livekit-server and the
    stack's Locust master, which the web-UI test drove)."""
    sys.path.insert(0, str(REPO / "tests" / "tools"))
    import check_panels_live

    # The window must reach back over the runs above; the Prometheus scrape is 2 s.
    kwargs: dict[str, Any] = {"rate_interval": "5m", "range_": "15m", "interval": "15s"}
    report = check_panels_live.wait_until_ok(stack.prometheus_url, 30, **kwargs)
    assert report.ok, "\n".join(report.failures)
    assert report.results and all(r.series > 0 for r in report.results)
    # The scenario variable resolves to the live label values: what the runs above chose.
    live = report.variables["speech-scheduling.json"]
    print(f"panels: {len(report.results)} queries answered; variables {live}")
