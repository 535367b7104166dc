"""`rig run` end to end, as CI runs it, on the real native stack (livekit-server, 2 real agent
workers, Prometheus, Locust with real WebRTC callers), driven through the `rig` console script.

* A 3-minute soak of 2 workers and 12 callers, a worker SIGKILLed at 1 min and livekit-server
  restarted at 2 min, with the fix scenario: it finishes, nothing hangs or is left, every count
  reconciles, every ERROR line of the agents' logs is accounted for, the fault gate
  (slo/faults.yaml) passes, and the report is written. (A drain is tested on its own, below: after
  a kill and a LiveKit restart, a drained worker can wait on a call those left hanging.)
* A worker drained at 12 s of a 50 s run, with a 60 s grace: it held conversations, takes no
  new job, exits on its own within the grace, and every count reconciles exactly (a drain that
  finishes in time cuts nothing).
* A short run of the seed scenario under the same gate fails it on draining errors (exit 1),
  with every count still reconciled exactly (no cutting fault: no turn may be missing anywhere);
  an LLM slowed by +800 ms mid-run shows in the injected-latency histogram after the fault only.

Both read back the run's own Prometheus data (stack/prometheus-data) after `rig run` has stopped
everything, with a Prometheus of their own on the run's port (no scraping).

Sizing (see tests/test_loadgen_live.py): one agent session costs ~0.3 of a core on this 2-core
machine, so 12 users with --call-gap 60 hold ~3-4 calls at a time. The report's rendering is
tested elsewhere (tests of rig/report.py); here only that `rig run` wrote it.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lkrig_instrument import names
from stackutil import REPO, RIG, alive, clean_drain, listening, rig_env, wait_until

from rig import binaries
from rig.promapi import Prometheus, PrometheusUnreachable

SOAK_OFFSET = 9600
SEED_OFFSET = 10700
DRAIN_OFFSET = 12900
pytestmark = pytest.mark.timeout(600)


def rig_run(out: Path, offset: int, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str],
                                                                         dict[str, Any]]:
    proc = subprocess.run(
        [str(RIG), "run", "--out", str(out), "--port-offset", str(offset), "--env-file", str(out / ".env"),
         "--agents", "2", "--loadgen-workers", "1", "--slo", str(REPO / "slo" / "faults.yaml"), *args],
        capture_output=True, text=True, timeout=timeout, env=rig_env(), cwd=REPO)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    path = out / "run.json"
    return proc, json.loads(path.read_text()) if path.exists() else {}


def assert_nothing_left(run: dict[str, Any], offset: int) -> None:
    pids = run["run"]["pids"]
    assert any(name.startswith("driver-") for name in pids), "no voice driver was ever seen"
    assert not [name for name, pid in pids.items() if alive(pid)], pids
    for port in (7880, 9090, 9100, 9101, 8100, 8101, 9646, 5557):
        assert not listening(port + offset), f"port {port + offset} still listening"


def verdicts(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in run["slo"]}


@contextlib.contextmanager
def stored_prometheus(out: Path, offset: int) -> Iterator[Prometheus]:
    """A Prometheus over the finished run's data, scraping nothing, on the run's own port."""
    port = 9090 + offset
    config = out / "readback-prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1h"}}))
    with open(out / "readback-prometheus.log", "wb") as log:
        popen = subprocess.Popen(
            [str(binaries.resolve_prometheus()), f"--config.file={config}",
             f"--storage.tsdb.path={out / 'stack' / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")

    def up() -> bool:
        with contextlib.suppress(PrometheusUnreachable):
            prom.check()
            return True
        assert popen.poll() is None, (out / "readback-prometheus.log").read_text()[-2000:]
        return False

    try:
        wait_until(up, 60, "the read-back Prometheus")
        yield prom
    finally:
        popen.terminate()
        popen.wait(timeout=30)


def fault_times(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in run["faults"]}


def test_bad_input_exits_2_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "slo.yaml"
    bad.write_text("version: 1\nscheduling_errors_per_1k_turns: {drainnig: 0}\n")
    for args, said in (
        (["--slo", str(bad)], f"{bad}:scheduling_errors_per_1k_turns.drainnig: unknown kind"),
        (["--fault", "kill-agent@10m"], "--fault kill-agent@10m: at 600 s, not inside the 60 s run"),
        (["--fault", "slow-provider@10s:+800ms:gpu"], "unknown argument 'gpu'"),
        (["--profile", "nope"], "nope"),
        (["--compose", "--agents", "3"], "--agents: not with --compose"),
    ):
        proc = subprocess.run([str(RIG), "run", "--out", str(tmp_path / "out"), *args], capture_output=True,
                              text=True, timeout=60, env=rig_env(), cwd=REPO)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "out").exists()


def test_a_soak_with_a_kill_and_a_livekit_restart_passes_the_fault_gate(
        tmp_path: Path) -> None:
    t = time.monotonic()
    proc, run = rig_run(tmp_path, SOAK_OFFSET, "--users", "12", "--spawn-rate", "2", "--duration", "3m",
                        "--scenario", "fix_filler_in_on_enter", "--profile", "fast", "--script", "seed",
                        "--call-gap", "60", "--fault", "kill-agent@1m", "--fault", "restart-livekit@2m",
                        timeout=450)
    elapsed = time.monotonic() - t
    assert run, "no run.json"
    assert not run["problems"], run["problems"]
    # The faults happened at their offsets, and each service came back.
    t0 = run["run"]["t0"]
    at = {f["name"]: f["at"] - t0 for f in run["faults"]}
    assert set(at) == {"kill-agent", "kill-agent:restarted", "restart-livekit",
                       "restart-livekit:restarted"}, at
    assert 60 <= at["kill-agent"] < 75 and 120 <= at["restart-livekit"] < 135, at
    # Every count reconciles; the kill cut calls, so the turn check is the bounded one.
    checks = {c["name"]: c for c in run["reconciliation"]}
    # A kill and a LiveKit restart on a loaded 2-core machine: whether livekit-agents then logs an
    # ERROR line the rig cannot name (a job process that crashes or will not exit) is not this
    # test's to control. What it controls: each such line is listed in run.json and fails the run.
    lines = checks.pop("agent logs: every ERROR line accounted for")
    unexplained = run["error_lines"]["unexplained"]
    assert lines["ok"] == (not unexplained) and ("unexplained" in lines["detail"]) == bool(unexplained), lines
    assert all(c["ok"] for c in checks.values()), checks
    assert "turns: agent == Locust (within turns cut by a lost agent)" in checks, checks
    assert run["run"]["turns"] >= 40, run["run"]
    # The gate: the fix scenario has no draining error, whatever the faults cost.
    v = verdicts(run)
    assert v["scheduling_errors_per_1k_turns.draining"]["value"] == 0, v
    assert all(x["ok"] for x in v.values()), v
    assert proc.returncode == (0 if lines["ok"] else 1), (proc.returncode, unexplained)
    assert (tmp_path / "report.html").stat().st_size > 0 and (tmp_path / "report.md").stat().st_size > 0
    assert_nothing_left(run, SOAK_OFFSET)
    print(f"soak: {elapsed:.0f} s wall, {run['run']['conversations']} conversations, {run['run']['turns']}"
          f" turns, faults at {at}")
    with stored_prometheus(tmp_path, SOAK_OFFSET) as prom:
        dashboard_after_faults(prom.url, run)


def dashboard_after_faults(prom_url: str, run: dict[str, Any]) -> None:
    """The dashboard over the run's own data, as an operator opens it after the soak: every panel
    has data, the browser stand-in of Grafana (tests/tools/dashboard_browser.py) shows an
    annotation at each fault run.json records, under its kind, no legend names a worker by
    address, and each variable changes the query of every panel that claims to filter by it."""
    sys.path.insert(0, str(REPO / "tests" / "tools"))
    import check_panels_live
    import dashboard_browser as db

    # Evaluated while the load still ran, after the last fault: the stack is gone by now, and a
    # gauge of a target that is gone has no value at an instant after it (staleness).
    during = max(f["at"] for f in run["faults"]) + 30
    report = check_panels_live.wait_until_ok(prom_url, 30, rate_interval="5m", range_="10m",
                                             interval="15s", at=during)
    assert report.ok, "\n".join(report.failures)
    board = REPO / "grafana" / "dashboards" / "speech-scheduling.json"
    start, end = run["run"]["t0"] - 30, run["run"]["t1"] + 30
    datasource = {**db.provisioned_datasource(), "timeInterval": "2s"}  # the native scrape
    shown = db.render(board, prom_url, start, end, datasource=datasource)
    starts = [(f["name"], f["target"], f["at"]) for f in run["faults"] if ":" not in f["name"]]
    assert {name for name, _, _ in starts} == {"kill-agent", "restart-livekit"}, run["faults"]
    assert db.faults_annotated(shown, starts, scrape_interval=2) == []
    assert db.ip_legends(shown) == []
    probes = db.probe_variables(board, prom_url, start, end, datasource=datasource)
    assert db.unfiltered_queries(json.loads(board.read_text()), probes) == []


def test_seed_scenario_fails_the_gate_on_draining_errors_with_exact_counts_and_a_slow_llm(
        tmp_path: Path) -> None:
    t = time.monotonic()
    proc, run = rig_run(tmp_path, SEED_OFFSET, "--users", "4", "--spawn-rate", "4", "--duration", "35s",
                        "--scenario", "seed", "--profile", "fast", "--script", "seed", "--call-gap", "5",
                        "--fault", "slow-provider@20s:+800ms:llm", timeout=300)
    elapsed = time.monotonic() - t
    assert run and not run["problems"], run.get("problems")
    checks = {c["name"]: c for c in run["reconciliation"]}
    assert all(c["ok"] for c in checks.values()), checks
    # No fault: the exact turn check, and the draining errors counted in logs, counter and Prometheus.
    assert "turns: agent == Locust" in checks, checks
    assert "errors draining: agent logs == agent counter == Prometheus" in checks, checks
    v = verdicts(run)["scheduling_errors_per_1k_turns.draining"]
    assert not v["ok"] and v["value"] > 0, v
    assert proc.returncode == 1
    assert "FAIL slo scheduling_errors_per_1k_turns.draining" in proc.stdout
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.md").exists()
    # The report explains the errors as `rig explain` does, from the agents' logs: the seed's
    # pattern (a filler through create_task while the tool hands off), its fix and its section.
    draining = [f for f in run["explained"] if f["kind"] == "draining"]
    assert draining and all(f["row"]["id"] == "create_task_say" for f in draining), run["explained"]
    assert all(f["doc"].startswith("docs/speech-scheduling.md#") and f["fix"] for f in draining), draining
    report_md = (tmp_path / "report.md").read_text()
    assert "## Speech-scheduling errors explained" in report_md and draining[0]["doc"] in report_md
    assert_nothing_left(run, SEED_OFFSET)
    slow = assert_llm_slowed_after_the_fault_only(run, tmp_path)
    print(f"seed: {elapsed:.0f} s wall, {run['run']['turns']} turns, draining {v['detail']}; {slow}")


def assert_llm_slowed_after_the_fault_only(run: dict[str, Any], out: Path) -> str:
    """The fast profile draws the LLM's first token in 80-150 ms: before the fault every sample
    is <= 0.2 s; after it every one is > 0.75 s (>= 0.88 s). Samples drawn just before the fault
    but scraped after it (one 2 s scrape interval) are left out of both windows."""
    fault = fault_times(run)["slow-provider"]
    assert fault["detail"] == "+800 ms on llm_ttft to the end", fault
    assert 20 <= fault["at"] - run["run"]["t0"] < 23, fault
    bucket = f'{names.INJECTED_LATENCY.name}_bucket{{component="llm_ttft"}}'
    with stored_prometheus(out, SEED_OFFSET) as prom:
        before = prom.counter_delta(bucket, run["run"]["t0"], fault["at"], by="le")
        after = prom.counter_delta(bucket, fault["at"] + 3.0, run["run"]["t1"], by="le")
    said = f"LLM samples before the fault by le {before}, after {after}"
    assert before.get("+Inf", 0) >= 1 and before.get("0.2") == before["+Inf"], said
    assert after.get("+Inf", 0) >= 1 and after.get("0.75") == 0, said
    return said


def test_a_drained_worker_takes_no_new_job_lets_its_calls_finish_and_exits_within_its_grace(
        tmp_path: Path) -> None:
    proc, run = rig_run(tmp_path, DRAIN_OFFSET, "--users", "4", "--spawn-rate", "4", "--duration", "50s",
                        "--scenario", "fix_filler_in_on_enter", "--profile", "fast", "--script", "seed",
                        "--call-gap", "5", "--fault", "drain-agent@12s:grace=60s", timeout=400)
    assert run and not run["problems"], run.get("problems")
    victim = re.match(r"agent-\d", run["faults"][0]["detail"])
    assert victim, run["faults"]
    said = clean_drain(run, (tmp_path / "stack" / "logs" / f"{victim.group()}.log").read_text().splitlines())
    # Nothing was cut and nothing lost: the exact turn check, every check passing.
    checks = {c["name"]: c for c in run["reconciliation"]}
    assert "turns: agent == Locust" in checks and all(c["ok"] for c in checks.values()), checks
    assert proc.returncode == 0, proc.returncode
    assert_nothing_left(run, DRAIN_OFFSET)
    print(f"drain: {said}; {checks}")
