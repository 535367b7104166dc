"""The native stack supervisor (`rig up --native` / `rig down`), its inputs, and the version pins.

Everything here runs the real thing: the pinned livekit-server binary, Debian's Prometheus and
promtool, the `rig` console script. Each test that starts a stack uses its own run folder and its
own port offset, so tests neither share state nor collide with the session's `native_stack`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from stackutil import (
    REPO,
    RIG,
    alive,
    listening,
    prom_query,
    rig_env,
    run_rig,
    socket_addresses,
    wait_until,
)

from rig import binaries, envfile, native, pins, ports, procs, services

LIVEKIT_BASE = ports.livekit_base_ports()


def _up_args(run_dir: Path, offset: int, *extra: str) -> list[str]:
    return [
        "up",
        "--native",
        "--agents",
        "0",
        "--loadgen-workers",
        "0",
        "--run-dir",
        str(run_dir),
        "--port-offset",
        str(offset),
        "--env-file",
        str(run_dir / ".env"),
        *extra,
    ]


def _started_pids(stdout: str) -> dict[str, int]:
    """{service: pid} from rig up's 'started NAME (pid N)' lines."""
    pids = {}
    for line in stdout.splitlines():
        if line.startswith("rig up: started "):
            name, rest = line.removeprefix("rig up: started ").split(" (pid ", 1)
            pids[name] = int(rest.split(")", 1)[0])
    return pids


def _assert_nothing_left(pids: dict[str, int], ports: list[int]) -> None:
    wait_until(lambda: not [n for n, p in pids.items() if alive(p)], 15, f"{pids} to exit")
    for name, pid in pids.items():
        assert not procs.session_members(pid), f"{name}'s session {pid} still has processes"
    busy = [p for p in ports if listening(p)]
    assert not busy, f"ports still listening after stop: {busy}"


def _all_logs(run_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (run_dir / "logs").glob("*.log"))


# --- rig up --native --detach / rig down --------------------------------------------------------------


def test_rig_up_detached_serves_livekit_scraped_by_prometheus_and_rig_down_leaves_nothing(
    tmp_path: Path,
) -> None:
    offset = 2000
    t0 = time.monotonic()
    up = run_rig(*_up_args(tmp_path, offset, "--detach"))
    elapsed = time.monotonic() - t0
    assert up.returncode == 0, up.stderr
    pids = _started_pids(up.stdout)
    assert set(pids) == {"livekit-server", "prometheus"}, up.stdout
    state = json.loads((tmp_path / "state.json").read_text())
    info = state["info"]
    print(
        f"\nrig up --native --agents 0: all healthy in {info['startup_seconds']} s"
        f" ({elapsed:.1f} s with the CLI's own start)"
    )

    # .env did not exist: it was generated, with valid credentials, readable only by us.
    env_file = tmp_path / ".env"
    assert f"created {env_file}" in up.stdout
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = envfile.parse(env_file)
    key, secret = envfile.livekit_credentials(values, env_file)
    assert len(values["GRAFANA_ADMIN_PASSWORD"]) >= 32  # the compose stack's Grafana has no default password

    try:
        lk_port = LIVEKIT_BASE["port"] + offset
        assert info["livekit_url"] == f"ws://127.0.0.1:{lk_port}"
        got = procs.http_get(f"http://127.0.0.1:{lk_port}/")
        assert got is not None and got[0] == 200, got

        # Prometheus, started by the rig, scrapes the real livekit-server exporter and itself.
        prom = info["prometheus_url"]
        assert prom == f"http://127.0.0.1:{ports.PROMETHEUS_PORT + offset}"
        for job in ("livekit", "prometheus"):
            wait_until(
                lambda job=job: any(r["value"][1] == "1" for r in prom_query(prom, f'up{{job="{job}"}}')),
                60,
                f'Prometheus to report up{{job="{job}"}} == 1',
            )
        # ... and stores livekit-server's own series, not only `up`.
        wait_until(lambda: prom_query(prom, 'go_goroutines{job="livekit"}'), 30, "livekit-server series")

        # Loopback only: every socket of every service is bound to 127.0.0.1.
        for name, pid in pids.items():
            addresses = socket_addresses(pid)
            assert addresses, f"{name} holds no sockets?"
            outside = [a for a in addresses if a[1] != "127.0.0.1"]
            assert not outside, f"{name} binds beyond loopback: {outside}"

        # The secret is in no output and no log.
        for value in (secret, values["GRAFANA_ADMIN_PASSWORD"]):
            assert value not in up.stdout + up.stderr
            assert value not in _all_logs(tmp_path)
        assert key  # the key is not secret, but it must exist
    finally:
        down = run_rig("down", "--run-dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert "no process of the stack is left" in down.stdout
    _assert_nothing_left(
        pids, [lk_port, ports.PROMETHEUS_PORT + offset, LIVEKIT_BASE["prometheus"] + offset]
    )
    assert not (tmp_path / "state.json").exists()
    # A second `rig down` has nothing to do and says so.
    again = run_rig("down", "--run-dir", str(tmp_path))
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_rig_up_refuses_a_second_stack_in_the_same_run_dir(tmp_path: Path) -> None:
    up = run_rig(*_up_args(tmp_path, 2100, "--detach"))
    assert up.returncode == 0, up.stderr
    pids = _started_pids(up.stdout)
    try:
        second = run_rig(*_up_args(tmp_path, 2200, "--detach"))
        assert second.returncode == 1
        assert "already running" in second.stderr and "rig down" in second.stderr
        assert not _started_pids(second.stdout)
    finally:
        assert run_rig("down", "--run-dir", str(tmp_path)).returncode == 0
    _assert_nothing_left(pids, [LIVEKIT_BASE["port"] + 2100])


# --- foreground mode ----------------------------------------------------------------------------------


def _start_foreground(run_dir: Path, offset: int) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [str(RIG), *_up_args(run_dir, offset)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=rig_env(),
        cwd=REPO,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "rig up: running;" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("foreground rig up never reported running:\n" + "\n".join(lines))


@pytest.mark.parametrize("how", ["rig down", "ctrl-c", "supervisor killed"])
def test_foreground_rig_up_stops_everything(tmp_path: Path, how: str) -> None:
    offset = {"rig down": 2300, "ctrl-c": 2400, "supervisor killed": 2500}[how]
    proc, lines = _start_foreground(tmp_path, offset)
    pids = _started_pids("\n".join(lines))
    assert set(pids) == {"livekit-server", "prometheus"}
    assert all(alive(p) for p in pids.values())
    if how == "rig down":
        down = run_rig("down", "--run-dir", str(tmp_path))
        assert down.returncode == 0, down.stderr
        assert "livekit-server" in down.stdout  # it says what it stopped
        assert proc.wait(timeout=60) == 0
    elif how == "ctrl-c":
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        rest = proc.stdout.read() if proc.stdout else ""
        assert "no process of the stack is left" in rest
    else:
        # SIGKILL gives the supervisor no chance to clean up: the services must still go (PDEATHSIG).
        proc.kill()
        proc.wait(timeout=10)
    _assert_nothing_left(pids, [LIVEKIT_BASE["port"] + offset, ports.PROMETHEUS_PORT + offset])


def test_foreground_rig_up_stops_all_when_a_service_dies(tmp_path: Path) -> None:
    proc, lines = _start_foreground(tmp_path, 2600)
    pids = _started_pids("\n".join(lines))
    os.kill(pids["livekit-server"], signal.SIGKILL)
    assert proc.wait(timeout=60) == 1
    rest = proc.stdout.read() if proc.stdout else ""
    assert "livekit-server exited with code -9" in rest and "livekit-server.log" in rest
    _assert_nothing_left(pids, [ports.PROMETHEUS_PORT + 2600])


# --- bad input: one clear error, non-zero exit, nothing left running ---------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "LIVEKIT_API_KEY=APIabc\nLIVEKIT_API_SECRET=tooShortSecretValue\n",
            "LIVEKIT_API_SECRET is 19 characters long",
        ),
        ("LIVEKIT_API_SECRET=" + "s" * 40 + "\n", "LIVEKIT_API_KEY is missing or empty"),
        ("LIVEKIT_API_KEY=APIabc\nthis line has no equals sign\n", ":2: expected NAME=value"),
        (
            "LIVEKIT_API_KEY=APIabc\nLIVEKIT_API_SECRET=has:colon" + "x" * 40 + "\n",
            "LIVEKIT_API_SECRET may contain only",
        ),
    ],
    ids=["short-secret", "missing-key", "malformed-line", "bad-characters"],
)
def test_bad_env_file_is_one_clear_error_and_starts_nothing(
    tmp_path: Path, content: str, expected: str
) -> None:
    (tmp_path / ".env").write_text(content)
    up = run_rig(*_up_args(tmp_path, 2700))
    assert up.returncode == 1
    assert expected in up.stderr and str(tmp_path / ".env") in up.stderr, up.stderr
    for value in ("tooShortSecretValue", "s" * 40, "has:colon"):
        assert value not in up.stderr + up.stdout  # secrets are never echoed
    assert not _started_pids(up.stdout)
    assert not (tmp_path / "state.json").exists()
    assert not listening(LIVEKIT_BASE["port"] + 2700)


def test_occupied_port_is_named_and_nothing_starts(tmp_path: Path) -> None:
    offset = 2800
    port = LIVEKIT_BASE["port"] + offset
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        up = run_rig(*_up_args(tmp_path, offset))
    assert up.returncode == 1
    assert f"127.0.0.1:{port} (livekit-server HTTP/WebSocket)" in up.stderr, up.stderr
    assert f"held by pid {os.getpid()}" in up.stderr
    assert "--port-offset" in up.stderr
    assert not _started_pids(up.stdout)
    assert not listening(ports.PROMETHEUS_PORT + offset)


def test_missing_server_binary_is_named_with_the_fix(tmp_path: Path) -> None:
    version = pins.load().livekit_server
    env = rig_env(LKRIG_CACHE=str(tmp_path / "empty-cache"))
    up = run_rig(*_up_args(tmp_path, 2900), env=env)
    assert up.returncode == 1
    assert f"livekit-server {version}" in up.stderr and "is not installed" in up.stderr, up.stderr
    assert "scripts/setup" in up.stderr
    assert not _started_pids(up.stdout)

    env = rig_env(LIVEKIT_SERVER_BIN=str(tmp_path / "nope" / "livekit-server"))
    up = run_rig(*_up_args(tmp_path, 2900), env=env)
    assert up.returncode == 1
    assert "LIVEKIT_SERVER_BIN=" in up.stderr and "is not an executable file" in up.stderr, up.stderr


def test_a_service_failing_at_start_tears_down_what_was_started(tmp_path: Path) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\necho 'fake prometheus: refusing to start' >&2\nsleep 1\nexit 3\n")
    fake.chmod(0o755)
    up = run_rig(*_up_args(tmp_path, 3000), env=rig_env(PROMETHEUS_BIN=str(fake)))
    assert up.returncode == 1
    assert "prometheus exited with code 3 while starting" in up.stderr, up.stderr
    assert str(tmp_path / "logs" / "prometheus.log") in up.stderr
    assert "fake prometheus: refusing to start" in up.stderr  # the log's tail comes with the error
    pids = _started_pids(up.stdout)
    assert "livekit-server" in pids  # it had started, so it had to be stopped
    _assert_nothing_left(pids, [LIVEKIT_BASE["port"] + 3000])
    assert not (tmp_path / "state.json").exists()


def test_a_service_that_never_gets_healthy_times_out_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hang = tmp_path / "prometheus"
    hang.write_text("#!/bin/sh\nsleep 600 &\nwait\n")  # a child too: the whole session must go
    hang.chmod(0o755)
    said: list[str] = []
    opts = native.NativeOptions(
        agents=0,
        loadgen_workers=0,
        run_dir=tmp_path,
        port_offset=3100,
        env_file=tmp_path / ".env",
        prometheus_timeout=2.0,
        say=said.append,
    )
    stack = native.NativeStack(opts)
    monkeypatch.setenv("PROMETHEUS_BIN", str(hang))
    with pytest.raises(native.StackError, match=r"prometheus did not become healthy within 2 s") as err:
        stack.start()
    assert "/-/ready" in str(err.value)
    pids = _started_pids("\n".join(said))
    _assert_nothing_left(pids, [LIVEKIT_BASE["port"] + 3100])


# --- the session fixture (what other tests use) -----------------------------------------------------------


def test_native_stack_fixture_media_stays_on_loopback(native_stack: native.StackInfo) -> None:
    """A real participant publishes audio; the server's media sockets are loopback only."""
    from livekit import api, rtc

    server_pid = native_stack.pids["livekit-server"]

    async def publish_and_inspect() -> list[tuple[str, str, int]]:
        token = (
            api.AccessToken(native_stack.api_key, native_stack.api_secret)
            .with_identity("loopback-probe")
            .with_grants(api.VideoGrants(room_join=True, room="loopback-probe"))
            .to_jwt()
        )
        room = rtc.Room()
        await room.connect(native_stack.livekit_url, token)
        try:
            source = rtc.AudioSource(48000, 1)
            track = rtc.LocalAudioTrack.create_audio_track("probe", source)
            await room.local_participant.publish_track(track)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                udp = [a for a in socket_addresses(server_pid) if a[0].startswith("udp")]
                if udp:
                    return socket_addresses(server_pid)
                await asyncio.sleep(0.1)
            raise AssertionError("livekit-server opened no UDP socket for the participant")
        finally:
            await room.disconnect()

    addresses = asyncio.run(publish_and_inspect())
    p = native_stack.ports
    udp_ports = [port for proto, _, port in addresses if proto.startswith("udp")]
    assert all(p.rtc_udp_start <= port <= p.rtc_udp_end for port in udp_ports), udp_ports
    assert {ip for _, ip, _ in addresses} == {"127.0.0.1"}, addresses


# --- configs and pins -----------------------------------------------------------------------------------


def test_native_prometheus_config_passes_promtool_with_agents_and_loadgen(tmp_path: Path) -> None:
    plan = ports.compute_ports(500, agents=2)
    at = services.Layout(plan, tmp_path, tmp_path, "key", "secret")
    out = tmp_path / "prometheus.yml"
    services.write_prometheus_config(out, at, agents=2, locust=True)
    check = subprocess.run(["promtool", "check", "config", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {j["job_name"]: j["static_configs"] for j in yaml.safe_load(out.read_text())["scrape_configs"]}
    assert jobs["agent"] == [
        {"targets": [f"127.0.0.1:{ports.AGENT_METRICS_BASE + 500 + i}"], "labels": {"worker": f"agent-{i}"}}
        for i in range(2)
    ]
    assert jobs["loadgen"] == [{"targets": [f"127.0.0.1:{ports.LOADGEN_METRICS_PORT + 500}"]}]
    # Without agents or Locust those jobs are left out rather than scraped in vain.
    services.write_prometheus_config(out, at, agents=0, locust=False)
    assert {j["job_name"] for j in yaml.safe_load(out.read_text())["scrape_configs"]} == {
        "prometheus",
        "livekit",
    }


def test_livekit_config_keeps_tcp_ice_off_and_ports_in_one_place() -> None:
    cfg = yaml.safe_load((REPO / "livekit" / "livekit.yaml").read_text())
    assert cfg["bind_addresses"] == ["127.0.0.1"] and cfg["rtc"]["node_ip"] == "127.0.0.1"
    bad = dict(cfg, rtc={**cfg["rtc"], "tcp_port": 7881})
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lk-bad-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(bad))
    try:
        with pytest.raises(native.StackError, match=r"rtc\.tcp_port must be 0"):
            ports.livekit_base_ports(path)
    finally:
        path.unlink()


def test_version_bump_in_compose_changes_the_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = pins.load()
    text = (REPO / "docker-compose.yml").read_text()
    old_agents = original["LIVEKIT_AGENTS_VERSION"]
    old_server = original.livekit_server
    bumped = tmp_path / "docker-compose.yml"
    bumped.write_text(
        text.replace(f"LIVEKIT_AGENTS_VERSION:-{old_agents}}}", "LIVEKIT_AGENTS_VERSION:-9.9.9}").replace(
            f"livekit/livekit-server:{old_server}", "livekit/livekit-server:v9.8.7"
        )
    )
    new = pins.load(bumped)
    assert new["LIVEKIT_AGENTS_VERSION"] == "9.9.9" and new.livekit_server == "v9.8.7"
    assert {
        k: v for k, v in new.versions.items() if k not in ("LIVEKIT_AGENTS_VERSION", "LIVEKIT_SERVER_VERSION")
    } == {
        k: v
        for k, v in original.versions.items()
        if k not in ("LIVEKIT_AGENTS_VERSION", "LIVEKIT_SERVER_VERSION")
    }
    # Compose's rule: a set, non-empty variable overrides the default; an empty one does not.
    assert pins.load(bumped, {"LIVEKIT_AGENTS_VERSION": "1.2.3"})["LIVEKIT_AGENTS_VERSION"] == "1.2.3"
    assert pins.load(bumped, {"LIVEKIT_AGENTS_VERSION": ""})["LIVEKIT_AGENTS_VERSION"] == "9.9.9"

    # scripts/setup reads the pins with the system Python before any venv exists.
    python = shutil.which("python3") or sys.executable
    shell = subprocess.run(
        [python, str(REPO / "rig" / "pins.py"), "--file", str(bumped), "--shell", "--no-env"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "LIVEKIT_AGENTS_VERSION=9.9.9" in shell.stdout.splitlines()
    assert "LIVEKIT_SERVER_VERSION=v9.8.7" in shell.stdout.splitlines()

    # And the native stack then looks for the bumped server, naming it when it is not built.
    monkeypatch.setenv("LKRIG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LIVEKIT_SERVER_BIN", raising=False)
    with pytest.raises(native.StackError, match=r"livekit-server v9\.8\.7 .* is not installed"):
        binaries.resolve_livekit_server(new.livekit_server, bumped)


def test_malformed_pin_line_is_named(tmp_path: Path) -> None:
    text = (REPO / "docker-compose.yml").read_text().replace('"${LOCUST_VERSION:-', '"${LOCUST_VERSION-', 1)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "LOCUST_VERSION-" in t)
    with pytest.raises(pins.PinError, match=rf"docker-compose.yml:{line}: expected"):
        pins.load(broken)


# --- agents and Locust, with stand-ins until agent/worker.py and loadgen/locustfile.py exist ------------

STANDINS = Path(__file__).resolve().parent / "native_standins"


def test_agents_and_locust_get_their_own_ports_and_are_scraped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(STANDINS))
    stale = tmp_path / "multiproc" / "agent-0" / "counter_123.db"
    stale.parent.mkdir(parents=True)
    stale.write_text("left over from an earlier run")
    opts = native.NativeOptions(
        agents=2,
        loadgen_workers=2,
        run_dir=tmp_path,
        port_offset=3300,
        env_file=tmp_path / ".env",
        agent_name="standin-agent",
        agent_module="lkrig_standin_agent",
        locustfile=STANDINS / "standin_locustfile.py",
        say=lambda _msg: None,
    )
    stack = native.NativeStack(opts)
    info = stack.start()
    try:
        print(f"\nagents 2 (stand-in) + Locust master and 2 workers: all healthy in {info.startup_seconds} s")
        health = {a.health_url for a in info.agents}
        metrics = {a.metrics_url for a in info.agents}
        assert len(health) == len(metrics) == 2
        assert {a.multiproc_dir for a in info.agents} == {
            str(tmp_path / "multiproc" / "agent-0"),
            str(tmp_path / "multiproc" / "agent-1"),
        }
        assert info.locust_url == f"http://127.0.0.1:{ports.LOCUST_WEB_PORT + 3300}"
        got = procs.http_get(info.locust_url + "/stats/requests")
        assert got is not None and len(json.loads(got[1])["workers"]) == 2

        prom = info.prometheus_url

        def up(job: str) -> dict[str, str]:
            return {
                r["metric"].get("worker", r["metric"]["instance"]): r["value"][1]
                for r in prom_query(prom, f'up{{job="{job}"}}')
            }

        wait_until(lambda: up("agent") == {"agent-0": "1", "agent-1": "1"}, 60, "both agents scraped")
        wait_until(lambda: set(up("loadgen").values()) == {"1"}, 60, "the Locust master's metrics scraped")
        # Each worker started with an empty multiproc dir: the stale file was cleared.
        stale_seen = wait_until(lambda: prom_query(prom, "standin_stale_files"), 30, "standin_stale_files")
        assert {r["value"][1] for r in stale_seen} == {"0"}
        children = [int((Path(a.multiproc_dir) / "standin-child.pid").read_text()) for a in info.agents]
        assert all(alive(c) for c in children)
    finally:
        left = stack.stop()
    assert not left
    # The agents' own children went too: the whole session is stopped, not just the worker.
    _assert_nothing_left(
        {**info.pids, **{f"child-{c}": c for c in children}}, [ports.LOCUST_WEB_PORT + 3300]
    )


def test_scripts_test_counts_no_tests_as_a_failure() -> None:
    """pytest exits 5 when it runs nothing; the test command must not turn that into success."""
    run = subprocess.run(
        # Only this file is collected, so other modules' import errors cannot change the exit code.
        ["bash", "scripts/test", "tests/test_setup_and_native.py", "-k", "no_test_is_called_this_zqx"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "collected no tests" in run.stderr
