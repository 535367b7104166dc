"""`rig run --compose` end to end, on a real Docker engine: a compose project whose services are
the rig's real ones (livekit-server, two agent workers, Prometheus, a Locust master and worker)
in containers, a run with a worker kill, every count reconciled.

No image can be built here (no registry for the base images), so the containers run this
machine's own installation: an image of empty folders and the usual symlinks, with /usr, the
Python installation, the repository and the rig's cache bind-mounted read-only (the cache
read-write, for the speech it renders). Each service's command and environment is what the
native stack would run (`NativeStack.plan()`), on host networking (the private engine has no
bridge), so the published ports are the compose file's defaults (7880, 9090, 8089). The agents
keep their multiprocess folder where docker-compose.yml puts it, in the container's own layer,
so the kill checks that a killed container's counts survive its start.

What differs from `docker compose up` on a workstation: the images, the network mode, and the
agents' healthcheck interpreter. What is the same: the compose labels, the Docker SDK calls, the
Locust master's web API, the containers' logs, Prometheus, the SLO gate and the report.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dockerengine import import_image, private_engine
from stackutil import REPO, RIG, listening, rig_env

from rig import native
from rig.promapi import Prometheus

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))
import compose_check
import toolpaths

pytestmark = pytest.mark.timeout(600)

PROJECT = "lkrigcomposerun"
IMAGE = "lkrig-host:local"
# native service name -> compose service name (docker-compose.yml)
SERVICES = {"livekit-server": "livekit", "prometheus": "prometheus", "agent-0": "agent",
            "agent-1": "agent-providers", "locust-master": "locust-master",
            "locust-worker-0": "locust-worker"}


def _host_rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("usr", 0o755), ("tmp", 0o1777), ("etc", 0o755), ("root", 0o700),
                           ("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("run", 0o755),
                           ("var", 0o755), ("var/lib", 0o755), ("var/lib/lkrig", 0o755),
                           ("var/lib/lkrig/metrics", 0o777), ("sbin", 0o755)):  # /sbin/docker-init goes here
            d = tarfile.TarInfo(name)
            d.type, d.mode = tarfile.DIRTYPE, mode
            tar.addfile(d)
        for link in ("bin", "lib", "lib64"):  # as on Debian: into /usr
            target = f"usr/{link}"
            t = tarfile.TarInfo(link)
            t.type, t.linkname = tarfile.SYMTYPE, target
            tar.addfile(t)
        for f in ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf"):
            tar.add(f, f.lstrip("/"))
    return buf.getvalue()


def _mounts() -> list[str]:
    python_home = Path(os.path.realpath(sys.executable)).parent.parent
    cache = native.cache_dir()
    out = ["/usr:/usr:ro", "/etc/ssl:/etc/ssl:ro", f"{python_home}:{python_home}:ro", f"{REPO}:{REPO}:ro",
           f"{cache}:{cache}"]
    return list(dict.fromkeys(out))


def _compose_file(plan: list[list[native.Service]], run_dir: Path) -> dict[str, Any]:
    real = compose_check.resolved_model(REPO / "docker-compose.yml")["services"]["agent"]["environment"]
    services: dict[str, Any] = {}
    for svc in (s for stage in plan for s in stage):
        env = dict(svc.env)
        spec: dict[str, Any] = {
            "image": IMAGE, "pull_policy": "never", "network_mode": "host", "init": True,
            "working_dir": str(REPO), "command": svc.argv, "volumes": [*_mounts(), f"{run_dir}:{run_dir}"]}
        if svc.name.startswith("agent-"):
            # where docker-compose.yml keeps them: the container's layer, and the ready file
            for var in ("PROMETHEUS_MULTIPROC_DIR", "LKRIG_LATENCY_OVERRIDE", "AGENT_READY_FILE"):
                env[var] = real[var]
            spec["healthcheck"] = {
                "test": ["CMD", svc.argv[0], "-c",
                         "import os, urllib.request as u;"
                         f" u.urlopen('http://127.0.0.1:{env['AGENT_HEALTH_PORT']}/', timeout=2);"
                         f" assert os.path.exists({real['AGENT_READY_FILE']!r})"],
                "interval": "1s", "timeout": "3s", "retries": 120}
            spec["stop_grace_period"] = "60s"
        spec["environment"] = env
        services[SERVICES[svc.name]] = spec
    assert set(services) == set(SERVICES.values()), sorted(services)
    return {"name": PROJECT, "services": services}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    for port in (7880, 9090, 8089, 9646, 9100, 9101):
        assert not listening(port), f"port {port} is taken; this test publishes the compose defaults"
    work = tmp_path_factory.mktemp("compose-run")
    stack = native.NativeStack(native.NativeOptions(
        agents=2, loadgen_workers=1, scrape_loadgen=True, run_dir=work / "stack", env_file=work / ".env"))
    plan = stack.plan()
    compose_file = work / "compose.yaml"
    compose_file.write_text(json.dumps(_compose_file(plan, work / "stack")))
    with private_engine() as client:
        import_image(client, _host_rootfs(), IMAGE)
        env = {**os.environ, "DOCKER_HOST": f"unix://{client.sock}"}
        env.pop("COMPOSE_PROFILES", None)
        compose = [str(toolpaths.compose_bin()), "-f", str(compose_file), "--project-directory", str(work)]
        up = subprocess.run([*compose, "up", "-d", "--wait", "--wait-timeout", "240"], env=env,
                            capture_output=True, text=True, timeout=300)
        try:
            tails = "\n".join(f"--- {c.name}\n{c.logs(tail=30).decode(errors='replace')}"
                              for c in client.containers.list(all=True)) if up.returncode else ""
            assert up.returncode == 0, f"docker compose up failed:\n{up.stdout}\n{up.stderr}\n{tails}"
            yield client, work
        finally:
            subprocess.run([*compose, "down", "-t", "10"], env=env, capture_output=True, timeout=120)


def test_rig_run_compose_with_a_kill_reconciles_every_count_and_leaves_the_stack_up(project) -> None:
    client, work = project
    out = work / "run"
    proc = subprocess.run(
        [str(RIG), "run", "--compose", PROJECT, "--users", "4", "--spawn-rate", "2", "--duration", "75s",
         "--scenario", "fix_filler_in_on_enter", "--profile", "fast", "--script", "seed", "--call-gap", "5",
         "--fault", "kill-agent@40s", "--slo", str(REPO / "slo" / "faults.yaml"), "--out", str(out)],
        capture_output=True, text=True, timeout=480, env=rig_env(DOCKER_HOST=f"unix://{client.sock}"),
        cwd=REPO)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    run = json.loads((out / "run.json").read_text())
    assert not run["problems"], run["problems"]
    names = [f["name"] for f in run["faults"]]
    assert names == ["kill-agent", "kill-agent:restarted"], run["faults"]
    assert f"{PROJECT}-agent" in run["faults"][0]["detail"], run["faults"][0]
    checks = {c["name"]: c for c in run["reconciliation"]}
    assert all(c["ok"] for c in checks.values()), checks
    # the killed worker's counts came back with it: the agents' growth is the run's turns
    turn_check = next(c for name, c in checks.items() if name.startswith("turns: agent == Locust"))
    assert run["run"]["turns"] >= 8, run["run"]
    assert run["run"]["compose_project"] == PROJECT and run["run"]["agents"] == 2
    assert all(v["ok"] for v in run["slo"]), run["slo"]
    # The killed worker had counted before the kill, and its counter went on from there: no
    # reset in Prometheus (its folder outlived the container's kill, and the worker carried it).
    kill = run["faults"][0]
    victim = "agent-0" if f"{PROJECT}-agent-1 " in kill["detail"] else "agent-1"  # SERVICES
    prom = Prometheus("http://127.0.0.1:9090")
    series = prom.query_range(f'sum(agent_turns_total{{worker="{victim}"}})', run["run"]["t0"],
                              run["run"]["t1"], 2.0)
    values = [v for s in series for _, v in s.points if not math.isnan(v)]
    at_kill = [v for s in series for t, v in s.points if t <= kill["at"] and not math.isnan(v)]
    assert at_kill and at_kill[-1] > 0, f"{victim} had counted nothing before the kill: {values}"
    assert values == sorted(values), f"{victim}'s turn counter went down (a reset): {values}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "report.html").stat().st_size > 0 and (out / "locust" / "locust_stats_history.csv").exists()
    # the stack is the user's: still up, the killed agent running again
    running = {c.labels["com.docker.compose.service"] for c in client.containers.list()
               if c.labels.get("com.docker.compose.project") == PROJECT}
    assert running == set(SERVICES.values()), running
    print(f"compose run: {run['run']['turns']} turns; {turn_check['detail']}")
