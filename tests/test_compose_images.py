"""`docker compose up` for real: every image docker-compose.yml builds, built from its Dockerfile
as a user's `docker compose build` does; the stack up with every service but Grafana, on compose's
own bridge network; loaded through `rig run --compose`, counted and reconciled; the multinode
profile; `docker compose down -v` leaving nothing.

No registry is reachable here, so the base images are stand-ins under their exact names
(scripts/setup.d/35-base-images.sh; docs/compose-standins.md says what differs). Grafana has no
image or package here: the run leaves it out.

Two private engines on one kept data root (tests/dockerengine.py), so a rerun reuses the images
and their build cache: a build engine on this machine's network (the images' RUN steps reach the
package registries: tests/compose/build-host.yml), then an engine in a network namespace of its
own, where the stack runs on bridges with its ports published on that namespace's 127.0.0.1, as
on a workstation. `rig run --compose` runs inside that namespace.

The compose file, the Dockerfiles, .dockerignore and the rig's commands are the user's, unchanged.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dockerengine import compose, compose_argv, import_standins, private_engine, run_in
from lkrig_instrument import names
from stackutil import REPO, RIG, clean_drain, rig_env, wait_until

from rig import envfile, paths, promapi, reconcile
from rig.backends.containers import PROJECT_LABEL, metrics_url
from rig.promapi import Prometheus

pytestmark = pytest.mark.timeout(1800)

PROJECT = "lkrig"  # docker-compose.yml's name, and `rig run --compose`'s default
DATA_ROOT = paths.cache_dir() / "dockerd"
BUILD_HOST = REPO / "tests" / "compose" / "build-host.yml"
BYO = REPO / "tests" / "byo_agent"
UP = ["livekit", "agent", "locust-master", "locust-worker", "prometheus"]  # all but grafana
AGENTS, WORKERS = 2, 2


@dataclass
class Stack:
    client: Any
    work: Path
    env_file: Path

    def compose(self, *args: str, files: tuple[Path, ...] = (), timeout: float = 600,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return compose(self.client, self.env_file, *args, files=files, timeout=timeout, env=env)

    def rig(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`rig ARGS` inside the engine's network namespace, where the stack's ports are."""
        proc = subprocess.run(
            ["nsenter", f"--net={self.client.netns}", str(RIG), *args], capture_output=True, text=True,
            timeout=timeout, cwd=REPO, env=rig_env(DOCKER_HOST=f"unix://{self.client.sock}"))
        print(proc.stdout[-6000:], proc.stderr[-3000:])
        return proc

    def prometheus(self) -> Prometheus:
        return Prometheus("http://127.0.0.1:9090")

    def query(self, fn: Any, *args: Any) -> Any:
        """fn(prometheus, *args) from inside the namespace."""
        return run_in(self.client.netns, fn, self.prometheus(), *args)

    def containers(self, service: str) -> list[Any]:
        return self.client.containers.list(filters={"label": [
            f"{PROJECT_LABEL}={PROJECT}", f"com.docker.compose.service={service}"]})


def _ok(proc: subprocess.CompletedProcess[str], what: str) -> str:
    assert proc.returncode == 0, \
        f"{what} failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Every image docker-compose.yml builds (with the providers profile). The bring-your-own-agent
    image (docker-compose.byo.yml) is not among them: its named build context needs BuildKit 0.11
    (Docker Engine 23), and this machine's engine is Debian's 20.10."""
    work = tmp_path_factory.mktemp("compose-images")
    env_file = work / ".env"
    envfile.create_from_example(env_file, REPO / ".env.example")
    with private_engine(data_root=DATA_ROOT) as client:
        imported = import_standins(client)
        t = time.monotonic()
        _ok(compose(client, env_file, "--profile", "providers", "build", files=(BUILD_HOST,), timeout=1500),
            "docker compose build")
        took = time.monotonic() - t
        sizes = {t: img.attrs["Size"] / 1e6 for img in client.images.list() for t in img.tags
                 if t.startswith("lkrig-")}
    print(f"\nstand-ins imported now: {imported or 'none (kept)'}; build {took:.0f} s"
          f" (load {os.getloadavg()[0]:.1f}); images MB: "
          + ", ".join(f"{k} {v:.0f}" for k, v in sorted(sizes.items())))
    return work, env_file


@pytest.fixture(scope="module")
def stack(built: tuple[Path, Path]) -> Iterator[Stack]:
    work, env_file = built
    with private_engine(data_root=DATA_ROOT, netns=True) as client:
        s = Stack(client, work, env_file)
        t = time.monotonic()
        up = s.compose("up", "-d", "--wait", "--wait-timeout", "400", "--scale", f"agent={AGENTS}",
                       "--scale", f"locust-worker={WORKERS}", *UP, timeout=500)
        try:
            if up.returncode:
                tails = "\n".join(f"--- {c.name} ({c.status})\n{c.logs(tail=40).decode(errors='replace')}"
                                  for c in client.containers.list(all=True))
                pytest.fail(f"docker compose up failed:\n{up.stdout}\n{up.stderr}\n{tails}")
            print(f"docker compose up: all healthy after {time.monotonic() - t:.0f} s")
            yield s
        finally:
            s.compose("down", "-v", "-t", "10", "--remove-orphans", timeout=180)


def test_every_image_imports_what_it_runs_as_its_own_user(stack: Stack) -> None:
    uid = "import os; assert os.getuid() == 10001, os.getuid(); "
    scenarios = ("import importlib, pkgutil, agent.scenarios as s; "
                 "[importlib.import_module(f'agent.scenarios.{m.name}')"
                 " for m in pkgutil.iter_modules(s.__path__)]; ")
    checks = {
        "lkrig-agent": [["python", "-c", uid + scenarios + "import agent.worker, lkrig_instrument.carry"]],
        "lkrig-agent-providers": [["python", "-c", uid + "import agent.worker; "
                                   "from livekit.plugins import openai, deepgram, cartesia, silero"]],
        "lkrig-loadgen": [
            ["python", "-c", uid + "import loadgen.driver, loadgen.caller, loadgen.cli"],
            ["locust", "-f", "loadgen/locustfile.py", "--list"],
            ["sh", "-c", "head -c 32000 /dev/zero | lkmedia segment"]],
    }
    # The bring-your-own runner, on the agent image, with a user's agent mounted where
    # docker-compose.byo.yml mounts it.
    checks["lkrig-agent"].append(["env", "PYTHONPATH=/byo:/app", "python", "-c",
                                  uid + "import lkrig_instrument.run, hotel_desk.agent"])
    for image, commands in checks.items():
        for cmd in commands:
            out = stack.client.containers.run(
                image, cmd, remove=True, network_mode="none", stderr=True,
                volumes={str(BYO): {"bind": "/byo", "mode": "ro"}})
            print(f"{image}: {' '.join(cmd)[:60]} -> {out.decode(errors='replace').strip()[-200:]}")
    locust_users = stack.client.containers.run("lkrig-loadgen", ["locust", "-f", "loadgen/locustfile.py",
                                                                 "--list"], remove=True, network_mode="none")
    assert b"Caller" in locust_users, locust_users


def _per_worker(stack: Stack, t0: float, t1: float) -> dict[str, dict[str, int]]:
    """Draining errors per agent container, from its log and from Prometheus, where the `worker`
    label is the container's name (each worker announces its own scrape target)."""
    out = {}
    for c in stack.containers("agent"):
        logged = reconcile.logged_errors_in(c.logs(since=int(t0)).decode(errors="replace").splitlines())
        out[c.name] = {"logs": logged.get("draining", 0)}
    errors = f'{names.SPEECH_SCHEDULING_ERRORS.name}{{kind="draining"}}'
    grown = stack.query(lambda p: p.counter_delta(errors, t0, t1, by="worker"))
    assert set(grown) == set(out), (grown, out)  # one series per container, by its name
    for name, row in out.items():
        row["prometheus"] = round(grown[name])
    return out


def _run(stack: Stack, name: str, *args: str) -> tuple[dict[str, Any], int]:
    out = stack.work / name
    proc = stack.rig("run", "--compose", PROJECT, "--users", "4", "--spawn-rate", "2", "--call-gap", "5",
                     "--profile", "fast", "--script", "seed", "--out", str(out), *args)
    return json.loads((out / "run.json").read_text()), proc.returncode


def test_seed_run_counts_draining_per_worker_in_logs_prometheus_and_callers(stack: Stack) -> None:
    run, rc = _run(stack, "seed", "--duration", "60s", "--scenario", "seed")
    assert not run["problems"], run["problems"]
    checks = {c["name"]: c for c in run["reconciliation"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert rc == 0
    per_worker = _per_worker(stack, run["run"]["t0"], run["run"]["t1"])
    print(f"draining per worker: {per_worker}")
    assert len(per_worker) == AGENTS
    for name, row in per_worker.items():
        assert row["logs"] == row["prometheus"], f"{name}: {row}"
    total = sum(r["logs"] for r in per_worker.values())
    # the seed says its filler while the AgentTask hand-off drains: one error per call that
    # reaches the tool, each told to its caller (Locust's `agent_error (draining)` turns)
    with open(stack.work / "seed" / "locust" / "locust_failures.csv", newline="") as f:
        told = [r for r in csv.DictReader(f) if r["Method"] == "turn"]
    told_draining = sum(int(r["Occurrences"]) for r in told if "agent_error (draining)" in r["Error"])
    assert total > 0 and total == told_draining, (per_worker, told)


def test_a_drained_agent_container_exits_within_its_grace_and_the_fix_passes_the_default_slo(
        stack: Stack) -> None:
    """drain-agent on the compose stack, as natively (tests/test_run_soak.py): SIGTERM through
    the container's init, the worker drains, exits on its own, and the container starts again.
    A drain that finishes in time cuts nothing, so the fix scenario's run still passes the default
    gate (no error, no dead air, no room without an agent)."""
    run, rc = _run(stack, "drain", "--duration", "45s", "--scenario", "fix_filler_in_on_enter",
                   "--fault", "drain-agent@12s:grace=60s", "--slo", str(REPO / "slo" / "default.yaml"))
    assert not run["problems"], run["problems"]
    assert run["slo"] and all(v["ok"] for v in run["slo"]), run["slo"]
    assert run["run"]["turns"] > 0
    victim = next(c for c in stack.containers("agent") if c.short_id in run["faults"][0]["detail"])
    said = clean_drain(run, victim.logs(since=int(run["run"]["t0"])).decode(errors="replace").splitlines())
    checks = {c["name"]: c for c in run["reconciliation"]}
    assert "turns: agent == Locust" in checks and all(c["ok"] for c in checks.values()), checks
    assert rc == 0
    print(f"compose drain: {victim.name} {said}")


def test_sweep_on_the_compose_stack_measures_each_cell(stack: Stack) -> None:
    """`rig sweep --compose`: the same grid as natively (tests/test_sweep.py), on the project."""
    out = stack.work / "sweep"
    proc = stack.rig("sweep", "--compose", PROJECT, "--scenarios", "seed,fix_filler_in_on_enter",
                     "--profiles", "fast", "--users", "3", "--duration", "25s", "--call-gap", "3",
                     "--out", str(out))
    _ok(proc, "rig sweep --compose")
    with open(out / "sweep.csv") as f:
        rows = {r["scenario"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"seed", "fix_filler_in_on_enter"}
    for r in rows.values():
        assert r["ok"] == "1" and not r["notes"], r
        assert int(r["turns_locust"]) >= 2 and float(r["turns_agent"]) == int(r["turns_locust"]), r
    assert int(rows["seed"]["errors_draining"]) > 0, rows["seed"]
    assert rows["fix_filler_in_on_enter"]["errors_total"] == "0", rows["fix_filler_in_on_enter"]
    data = json.loads((out / "sweep.json").read_text())
    assert data["params"]["compose_project"] == PROJECT and data["params"]["agents"] == AGENTS


def test_a_killed_agent_container_is_reconciled_and_keeps_its_count(stack: Stack) -> None:
    run, rc = _run(stack, "kill", "--duration", "75s", "--scenario", "fix_filler_in_on_enter",
                   "--fault", "kill-agent@40s", "--slo", str(REPO / "slo" / "faults.yaml"))
    assert not run["problems"], run["problems"]
    assert [f["name"] for f in run["faults"]] == ["kill-agent", "kill-agent:restarted"], run["faults"]
    assert all(c["ok"] for c in run["reconciliation"]), run["reconciliation"]
    assert all(v["ok"] for v in run["slo"]), run["slo"]
    assert rc == 0
    # The kill hits an agent that has counted (rig.faults.busiest) and says how much: its counter
    # must go on from there in its restarted container, with no reset in Prometheus.
    kill = run["faults"][0]
    m = re.search(r"^(\S+) \(\w+, [\d.]+ sessions, ([\d.]+) turns counted\)", kill["detail"])
    assert m, kill
    victim, at_kill = m.group(1), float(m.group(2))
    assert at_kill > 0, kill
    c = stack.client.containers.get(victim)
    ip = next(iter(c.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    now = run_in(stack.client.netns, lambda: promapi.total(
        promapi.scrape(f"http://{ip}:9100/metrics", timeout=5), names.TURNS.name))
    assert now >= at_kill, (victim, now, at_kill)
    window = f"{max(1, round(time.time() - run['run']['t0']))}s"
    resets = stack.query(lambda p: p.query(f"sum(resets({names.TURNS.name}[{window}]))", time.time()))
    assert [v for _, v in resets] in ([], [0.0]), resets
    # The kill and the restart reached the dashboard's annotation series, at the report's times
    # and under the container's name, which is also the victim's `worker` label.
    marks = stack.query(lambda p: p.query(
        f'max_over_time({names.FAULT_TIMESTAMP.name}{{fault="kill-agent"}}[{window}])', time.time()))
    got = {(labels["target"], labels["phase"]): v for labels, v in marks}
    assert got == {(victim, "start"): pytest.approx(kill["at"], abs=1e-3),
                   (victim, "end"): pytest.approx(run["faults"][1]["at"], abs=1e-3)}, (got, run["faults"])
    workers = stack.query(lambda p: p.query(f'count by (worker) ({names.TURNS.name})', time.time()))
    assert victim in {labels["worker"] for labels, _ in workers}, workers


def _reaches_livekit(c: Any) -> bool:
    probe = "import socket; socket.create_connection(('livekit', 7880), timeout=3).close()"
    return c.exec_run(["python", "-c", probe]).exit_code == 0


def test_partition_agent_cuts_one_agent_off_livekit_and_joins_it_again(stack: Stack) -> None:
    """The fault's primitives on the real stack: the busiest agent loses its link to livekit while
    it runs, gets it back with its network name, and registers again (its healthcheck)."""
    from rig import faultrun, faults
    from rig.backends.compose import ComposeBackend

    said: list[str] = []
    backend = ComposeBackend(PROJECT, stack.client, agent_services=("agent",))
    scheduler = faultrun.FaultScheduler(backend, said.append)
    started = {c.name: c.attrs["State"]["StartedAt"] for c in stack.containers("agent")}
    assert all(_reaches_livekit(c) for c in stack.containers("agent"))

    def cut_then_joined() -> tuple[str, bool, bool, bool]:
        scheduler.schedule([faults.parse("partition-agent@0s:for=8s")], time.monotonic())
        wait_until(lambda: scheduler.records or scheduler.errors, 30, "the partition")
        assert not scheduler.errors, scheduler.errors
        victim = scheduler.records[0]["detail"].split()[0]
        c = stack.client.containers.get(victim)
        others = [o for o in stack.containers("agent") if o.name != victim]
        cut = (not _reaches_livekit(c), all(_reaches_livekit(o) for o in others))
        scheduler.join(30.0)
        return victim, *cut, _reaches_livekit(stack.client.containers.get(victim))

    victim, cut_off, others_reach, back = run_in(stack.client.netns, cut_then_joined)
    print(f"partition: {said}")
    assert not scheduler.errors, scheduler.errors
    assert [r["name"] for r in scheduler.records] == ["partition-agent", "partition-agent:end"]
    assert cut_off and others_reach and back, (victim, cut_off, others_reach, back)
    c = stack.client.containers.get(victim)
    assert c.attrs["State"]["StartedAt"] == started[victim] and not backend.busy  # never restarted
    # Its network name resolves again: the next run's calls reach it (the worker re-registers).
    wait_until(lambda: stack.client.containers.get(victim).attrs["State"]["Health"]["Status"] == "healthy",
               120, f"{victim} healthy again", interval=2)


def test_multinode_profile_serves_a_caller_through_each_node(stack: Stack) -> None:
    multinode = {"COMPOSE_PROFILES": "multinode", "LIVEKIT_REDIS_HOST": "redis:6379"}
    _ok(stack.compose("up", "-d", "--wait", "--wait-timeout", "300", "--scale", f"agent={AGENTS}",
                      "--scale", f"locust-worker={WORKERS}", *UP, "redis", "livekit-2", env=multinode,
                      timeout=400), "docker compose up (multinode)")
    callers = {}
    for node in ("livekit", "livekit-2"):
        argv, env = compose_argv(
            stack.client, stack.env_file, "run", "--rm", "--no-deps", "-e", f"LIVEKIT_URL=ws://{node}:7880",
            "locust-worker", "python", "-m", "loadgen.cli", "--scenario", "fix_filler_in_on_enter",
            "--profile", "fast", "--room-prefix", f"multinode-{node}",
            "--say", "Hello, what programs do you offer?", env=multinode)
        callers[node] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         cwd=REPO, env=env)
    results = {}
    for node, p in callers.items():
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, f"caller through {node}: rc {p.returncode}\n{out[-2000:]}\n{err[-3000:]}"
        results[node] = json.loads(out[out.index("{"):])
    print(f"multinode: {({n: (r['room'], r['outcome']) for n, r in results.items()})}")
    assert all(r["outcome"] == "completed" for r in results.values()), results
    # Prometheus finds both nodes (DNS discovery, refreshed every 15 s) and scrapes them
    wait_until(lambda: [v for _, v in stack.query(
        lambda p: p.query('count(up{job="livekit"} == 1)', time.time()))] == [2.0],
        90, "Prometheus scraping both LiveKit nodes", interval=2)


def test_a_killed_livekit_node_is_counted_and_started_again(stack: Stack) -> None:
    """After the multinode test, so both nodes run. Four callers keep rooms open from the first
    seconds (a call's room outlives it by livekit.yaml's departure_timeout), so at 25 s the node
    the fault picks, the one hosting the most rooms, hosts at least one."""
    nodes = {c.name: c.attrs["State"]["StartedAt"] for svc in ("livekit", "livekit-2")
             for c in stack.containers(svc)}
    assert len(nodes) == 2, nodes
    agents = [metrics_url(c) for c in stack.containers("agent")]
    wait_until(lambda: run_in(stack.client.netns, reconcile.agent_totals, agents).sessions_active == 0,
               120, "the agents' sessions of the multinode test ended", interval=2)
    run, rc = _run(stack, "node-kill", "--duration", "60s", "--scenario", "fix_filler_in_on_enter",
                   "--fault", "kill-livekit-node@25s")
    assert not run["problems"], run["problems"]
    assert [f["name"] for f in run["faults"]] == ["kill-livekit-node", "kill-livekit-node:restarted"], \
        run["faults"]
    kill = run["faults"][0]
    m = re.search(r"^(\S+) \(\w+, ([\d.]+) rooms, ([\d.]+) participants\) SIGKILL", kill["detail"])
    assert m and m.group(1) in nodes, kill
    victim, rooms = m.group(1), float(m.group(2))
    assert rooms >= 1, kill
    # The cut calls are bounded, not lost: every count still reconciles.
    assert all(c["ok"] for c in run["reconciliation"]), run["reconciliation"]
    assert rc == 0
    c = stack.client.containers.get(victim)
    assert c.status == "running" and c.attrs["State"]["StartedAt"] != nodes[victim], c.attrs["State"]
    survivor = next(n for n in nodes if n != victim)
    assert stack.client.containers.get(survivor).attrs["State"]["StartedAt"] == nodes[survivor]
    # Both nodes are scraped again, and the kill reached the dashboard under the node's name.
    wait_until(lambda: [v for _, v in stack.query(
        lambda p: p.query('count(up{job="livekit"} == 1)', time.time()))] == [2.0],
        90, "Prometheus scraping both LiveKit nodes again", interval=2)
    window = f"{max(1, round(time.time() - run['run']['t0']))}s"
    marks = stack.query(lambda p: p.query(
        f'max_over_time({names.FAULT_TIMESTAMP.name}{{fault="kill-livekit-node"}}[{window}])', time.time()))
    assert {(labels["target"], labels["phase"]) for labels, _ in marks} == \
        {(victim, "start"), (victim, "end")}, marks


def test_compose_down_leaves_no_container_network_or_volume(stack: Stack) -> None:
    _ok(stack.compose("down", "-v", "-t", "10", "--remove-orphans", env={"COMPOSE_PROFILES": "multinode"},
                      timeout=180), "docker compose down -v")
    label = {"label": [f"{PROJECT_LABEL}={PROJECT}"]}
    left = ([c.name for c in stack.client.containers.list(all=True, filters=label)]
            + [n.name for n in stack.client.networks.list(filters=label)]
            + [v.name for v in stack.client.volumes.list(filters=label)])
    assert left == [], left
