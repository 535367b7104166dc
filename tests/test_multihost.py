"""Past one machine: each role of the rig on a host of its own, the hosts being network namespaces
on one bridge (tests/tools/netns.py), each started with `rig up --native --only ROLES --bind ADDR`
and told where the rest is. Nothing runs on loopback across hosts: ICE, metrics and Prometheus
discovery (--sd-dir, file_sd) all use the hosts' addresses.

    lk-a       livekit-server node a (region a) and Redis      lk-b       livekit-server node b
    agents-a   one agent worker, joined to node b              agents-b   one agent worker, node a
    master     the Locust master and Prometheus
    loadgen-1  a Locust worker whose callers join node a       loadgen-2  one joining node b

The two nodes share rooms through Redis, with the region-aware node selector: a room is created on
the node its first caller joined, so each Locust worker's rooms are on its own node, and every
agent serves rooms on the node it did not join. Which worker LiveKit dispatches a job to is its
choice, so the run has two phases: only agents-a is up in the first, only agents-b in the second.
Both phases are reconciled as one run, as `rig run` does: Locust == agent counters == agent logs
== Prometheus, exactly, with the draining errors of the seed scenario on both agent hosts.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from lkrig_instrument import names
from stackutil import RIG, rig_env, wait_until

from rig import headless, locust_web, placement, ports, procs, reconcile, services
from rig.backends.base import LoadSpec
from rig.paths import LIVEKIT_CONFIG, REPO
from rig.promapi import Prometheus
from rig.run_cmd import SCRAPE_WAIT_S

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))
from netns import Hosts

pytestmark = pytest.mark.timeout(900)

HOSTS = ["lk-a", "lk-b", "agents-a", "agents-b", "master", "loadgen-1", "loadgen-2"]
RUN_S = 40.0  # per phase; one conversation of the seed script takes ~10 s
REDIS_PORT = 6379


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def livekit_config(folder: Path, region: str) -> Path:
    cfg = yaml.safe_load(LIVEKIT_CONFIG.read_text())
    cfg["region"] = region
    cfg["node_selector"] = {"kind": "regionaware", "regions": [
        {"name": "a", "lat": 0.0, "lon": 0.0}, {"name": "b", "lat": 0.0, "lon": 90.0}]}
    path = folder / f"livekit-{region}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Topology:
    def __init__(self, hosts: Hosts, tmp: Path) -> None:
        self.hosts, self.tmp = hosts, tmp
        self.sd = tmp / "sd"
        self.sd.mkdir()
        self.up: list[str] = []

    def addr(self, host: str) -> str:
        return self.hosts.addr[host]

    def url(self, host: str, port: int, scheme: str = "http") -> str:
        return f"{scheme}://{self.addr(host)}:{port}"

    def rig_up(self, host: str, roles: str, *extra: str) -> None:
        done = self.hosts.run(host, [str(RIG), "up", "--native", "--detach", "--only", roles,
                                     "--bind", self.addr(host), "--run-dir", str(self.tmp / host),
                                     "--env-file", str(self.tmp / ".env"), "--sd-dir", str(self.sd), *extra],
                              env=rig_env(), cwd=REPO)
        assert done.returncode == 0, f"rig up on {host}:\n{done.stdout}\n{done.stderr}"
        self.up.append(host)

    def rig_down(self, host: str) -> None:
        done = subprocess.run([str(RIG), "down", "--run-dir", str(self.tmp / host)], capture_output=True,
                              text=True, timeout=120, env=rig_env(), cwd=REPO)
        assert done.returncode == 0, f"rig down on {host}:\n{done.stdout}\n{done.stderr}"
        self.up.remove(host)


def phase(topo: Topology, p: ports.Ports, agents_host: str, out: Path) -> tuple[headless.Result, Any]:
    """One run of the seed scenario from the master's host, served by `agents_host`'s worker."""
    locust = topo.url("master", p.locust_web)
    status = f"{locust}/stats/requests"

    def workers() -> int:
        got = procs.http_get(status)
        return len(json.loads(got[1]).get("workers", [])) if got and got[0] == 200 else 0

    wait_until(lambda: topo.hosts.inside("master", workers) == 2, locust_web.WORKER_WAIT_S,
               "both Locust workers listed by the master")
    spec = LoadSpec(2, 2.0, RUN_S, "seed", "fast", "seed", call_gap=0.0)
    metrics = f"{topo.url(agents_host, p.agent_metrics[0])}/metrics"

    def run() -> tuple[headless.Result, Any]:
        load = locust_web.WebLocust(locust, out, spec.users, spec.spawn_rate, f"{RUN_S:g}s", spec.params(),
                                    metrics_url=f"{topo.url('master', p.loadgen_metrics)}/metrics")
        load.start()
        while load.running():
            load.poll()
            time.sleep(0.5)
        return load.result(), reconcile.settle([metrics])

    return topo.hosts.inside("master", run)


def joined(a: headless.Result, b: headless.Result) -> headless.Result:
    caller = dict(a.caller_metrics)
    for k, v in b.caller_metrics.items():
        caller[k] = caller.get(k, 0.0) + v
    return headless.Result(0, a.stats + b.stats, a.failures + b.failures, caller, set(), "")


def test_a_seed_run_across_seven_hosts_and_two_livekit_nodes_reconciles_exactly(tmp_path: Path) -> None:
    p = ports.compute_ports(0, 1)
    with Hosts(HOSTS) as hosts:
        topo = Topology(hosts, tmp_path)
        redis = subprocess.Popen(hosts.argv("lk-a", ["redis-server", "--bind", topo.addr("lk-a"), "--port",
                                                     str(REDIS_PORT), "--save", "", "--appendonly", "no",
                                                     # reachable from lk-b, in a namespace nothing else joins
                                                     "--protected-mode", "no"]),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            redis_at = f"{topo.addr('lk-a')}:{REDIS_PORT}"
            wait_until(lambda: hosts.inside("lk-b", lambda: reachable(topo.addr("lk-a"), REDIS_PORT)), 30,
                       "Redis answering on lk-a")
            node = {n: topo.url(f"lk-{n}", p.livekit, "ws") for n in "ab"}
            for n in "ab":
                topo.rig_up(f"lk-{n}", "livekit", "--redis", redis_at,
                            "--livekit-config", str(livekit_config(tmp_path, n)))
            topo.rig_up("master", "locust-master,prometheus", "--livekit-url", node["a"])
            for i, n in ((1, "a"), (2, "b")):
                topo.rig_up(f"loadgen-{i}", "locust-workers", "--livekit-url", node[n],
                            "--master-host", topo.addr("master"))
            topo.rig_up("agents-a", "agents", "--agents", "1", "--livekit-url", node["b"])
            t0 = time.time()
            first, on_a = phase(topo, p, "agents-a", tmp_path / "phase-1")
            topo.rig_up("agents-b", "agents", "--agents", "1", "--livekit-url", node["a"])
            topo.rig_down("agents-a")  # its last counts are in Prometheus: settle() waited them out
            second, on_b = phase(topo, p, "agents-b", tmp_path / "phase-2")
            time.sleep(SCRAPE_WAIT_S)
            t1 = time.time()
            logs = [tmp_path / h / "logs" / "agent-0.log" for h in ("agents-a", "agents-b")]

            def measured() -> dict[str, Any]:
                prom = Prometheus(topo.url("master", p.prometheus))
                window = f"{round(t1 - t0)}s"
                per_node = {what: {r["instance"]: v for r, v in prom.query(
                    f"max by (instance) (max_over_time(livekit_{what}_total[{window}]))", t1)}
                    for what in ("room", "participant")}
                errors = {k: on_a.errors.get(k, 0.0) + on_b.errors.get(k, 0.0)
                          for k in {*on_a.errors, *on_b.errors}}
                both = reconcile.AgentTotals(on_a.turns + on_b.turns, errors, on_b.sessions_active)
                return {
                    "checks": reconcile.reconcile(joined(first, second), both, reconcile.logged_errors(logs),
                                                  prom, t0, t1),
                    "errors": prom.counter_delta(names.SPEECH_SCHEDULING_ERRORS.name, t0, t1, by="worker"),
                    "turns": prom.counter_delta(names.TURNS.name, t0, t1, by="worker"), **per_node}

            got = hosts.inside("master", measured)
        finally:
            for host in reversed(list(topo.up)):
                topo.rig_down(host)
            redis.terminate()
            redis.wait(timeout=30)

    failed = [c for c in got["checks"] if not c.ok]
    assert not failed, failed
    worker = {h: f"agent-0@{hosts.addr[h]}" for h in ("agents-a", "agents-b")}
    # Each agent host counted its own phase, and Prometheus found it through --sd-dir.
    for host, settled, run in (("agents-a", on_a, first), ("agents-b", on_b, second)):
        assert run.requests("conversation")[0] >= 2, (host, run.stats)
        assert settled.turns == run.requests("turn")[0], (host, settled)
        # The seed's refusal, counted by the agent and told to its caller: each failed turn is one.
        draining = settled.errors.get("draining", 0)
        assert draining > 0 and run.failure_counts("turn") == {"agent_error": draining}, (host, run.failures)
        assert got["errors"].get(worker[host]) == sum(settled.errors.values()), (host, got["errors"])
        assert got["turns"].get(worker[host]) == settled.turns, (host, got["turns"])
    assert set(got["errors"]) <= set(worker.values()), got["errors"]
    # Rooms on both nodes, each with callers and an agent that joined through the other node.
    nodes = {f"{hosts.addr[f'lk-{n}']}:{p.livekit_metrics}" for n in "ab"}
    assert {i for i, v in got["room"].items() if v > 0} == nodes, got["room"]
    assert all(got["participant"].get(i, 0) >= 2 for i in nodes), got["participant"]
    assert not list((tmp_path / "sd").rglob("*.json")), "rig down left scrape targets behind"


# --- the options, without a stack -----------------------------------------------------------------------


@pytest.mark.parametrize(("args", "says"), [
    (["--only", "livekit,nope"], "--only livekit,nope: unknown role nope"),
    (["--only", "agents"], "give --livekit-url"),
    (["--only", "agents", "--livekit-url", "http://10.0.0.2:7880"], "must start with ws:// or wss://"),
    (["--only", "locust-workers", "--livekit-url", "ws://10.0.0.2:7880"], "give --master-host"),
    (["--bind", "10.255.255.254"], "--bind 10.255.255.254: not an address of this host"),
    (["--bind", "localhost"], "--bind localhost: not an IPv4 address"),
    (["--redis", "10.0.0.2"], "--redis 10.0.0.2: must be HOST:PORT"),
    (["--only", "agents", "--livekit-url", "ws://10.0.0.2:7880", "--redis", "10.0.0.2:6379"],
     "add livekit to --only"),
    (["--sd-dir", "/nonexistent/sd"], "--sd-dir /nonexistent/sd: no such folder"),
])
def test_rig_up_refuses_a_placement_that_cannot_work_before_starting_anything(
        tmp_path: Path, args: list[str], says: str) -> None:
    done = subprocess.run([str(RIG), "up", "--native", "--run-dir", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, timeout=60, env=rig_env(), cwd=REPO)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "run").exists()  # nothing half-started


def test_the_livekit_config_for_a_host_listens_and_advertises_only_its_address(tmp_path: Path) -> None:
    where = placement.Placement(roles=frozenset({"livekit"}), bind="127.0.0.1", redis="10.0.0.2:6379")
    cfg = yaml.safe_load(placement.write_livekit_config(where, tmp_path / "lk.yaml").read_text())
    base = yaml.safe_load(LIVEKIT_CONFIG.read_text())
    assert cfg["redis"] == {"address": "10.0.0.2:6379"}
    assert {k: v for k, v in cfg.items() if k != "redis"} == base  # loopback: the rest as it was
    # On one machine nothing is generated: livekit-server runs the file itself.
    assert placement.write_livekit_config(placement.Placement(), tmp_path / "x.yaml") == LIVEKIT_CONFIG


def test_prometheus_reads_every_hosts_targets_from_the_sd_folder(tmp_path: Path) -> None:
    where = placement.Placement(roles=frozenset({"prometheus", "agents"}), sd_dir=tmp_path,
                                livekit_url="ws://10.0.0.2:7880")
    at = services.Layout(ports.compute_ports(0, 2), tmp_path, tmp_path, "key", "secret", where)
    out = tmp_path / "prometheus.yml"
    services.write_prometheus_config(out, at, agents=2, locust=False)
    check = subprocess.run(["promtool", "check", "config", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {j["job_name"]: j for j in yaml.safe_load(out.read_text())["scrape_configs"]}
    sd = {name: [f for c in j.get("file_sd_configs", []) for f in c["files"]] for name, j in jobs.items()}
    assert sd == {"prometheus": [], **{job: [f"{tmp_path}/{job}/*.json"] for job in placement.SD_JOBS}}
    files = placement.sd_files(where, 0)
    placement.write_targets(files, at.targets(2, locust=False))
    agents = json.loads(files["agent"].read_text())
    assert [g["labels"]["worker"] for g in agents] == ["agent-0", "agent-1"]
    assert json.loads(files["livekit"].read_text()) == []  # no livekit-server on this host
