"""Bring your own agent: a user's agent (tests/byo_agent/hotel_desk: its own classes,
tools and words, none of the rig's scenarios) counted by lkrig_instrument through the one-line
swaps, on both pinned livekit-agents versions, offline and under the rig with real callers.

Every count is compared with what the framework itself logged for the same runs (its own error
texts in its own log records), never with a number written here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextvars
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lkrig_instrument import envnames, names
from stackutil import prom_query, wait_until

from rig import binaries, native, pins

REPO = Path(__file__).resolve().parent.parent
BYO = REPO / "tests" / "byo_agent"
SCRIPT = BYO / "hotel_desk" / "conversation.yaml"
REPLAY = BYO / "replay_hotel.py"
TOOLS = REPO / "tests" / "tools"
sys.path.insert(0, str(TOOLS))

import compose_check  # noqa: E402
import dockerfile_check  # noqa: E402
from toolpaths import compose_bin  # noqa: E402

PINS = pins.load()
MAIN, LEGACY = PINS["LIVEKIT_AGENTS_VERSION"], PINS["LIVEKIT_AGENTS_LEGACY_VERSION"]
BYO_COMPOSE = REPO / "docker-compose.byo.yml"
BYO_DOCKERFILE = REPO / "compose" / "byo-agent.Dockerfile"
E2E_PORT_OFFSET = 8500
CONVERSATION = ("Hi, I have a question about my bill.", "What is my balance?")
# The framework's own words for the kinds this agent provokes, as its log records carry them.
FRAMEWORK_TEXTS = {
    "draining": "cannot schedule new speech, the speech scheduling is draining/pausing",
    "circular_wait": "circular wait",
}
CAPABILITY_LINES = ("has no `tool_execution_updated`", "has no `RunContext.with_filler`",
                    "leaves a refused SpeechHandle pending")


STEERING = ("LKRIG_", *envnames.RENAMED, "AGENT_")  # the old RIG_ names steer until 0.3


def clean_env() -> dict[str, str]:
    """This process's environment without the variables that steer an agent's labels, providers
    or ports: a developer's shell must not change what these tests count."""
    return {k: v for k, v in os.environ.items() if not k.startswith(STEERING)}


def python_for(version: str) -> Path:
    """The venv python for a pinned livekit-agents version (a missing venv fails, naming setup)."""
    return binaries.resolve_agents_python(None if version == MAIN else version, PINS)


def sample(metrics: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            body = line[len(name) + 1: line.rindex("}")]
            pairs = dict(p.split("=", 1) for p in body.split(",") if "=" in p)
            if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


# --- offline, on both pinned versions --------------------------------------------------------------
@pytest.fixture(scope="module", params=[MAIN, LEGACY])
def replayed(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], str]:
    version = request.param
    done = subprocess.run([str(python_for(version)), str(REPLAY), "--runs", "2"], capture_output=True,
                          text=True, timeout=240, cwd=REPO, env={**clean_env(), "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    return version, json.loads(done.stdout), done.stderr


def test_replayed_counts_equal_what_the_framework_logged(replayed: tuple[str, dict[str, Any], str]) -> None:
    version, out, _ = replayed
    assert out["agents_version"] == version
    logged: collections.Counter[str] = collections.Counter()
    for run in out["runs"]:
        assert run["completed"] and not run["stuck"], run
        assert run["errors"] == run["framework_logged"], run
        logged.update(run["framework_logged"])
        # the handoff by a returned Agent, counted once (1.3.12 never emits it: from the history)
        assert run["handoffs"] == 1
    # the agent does provoke both mistakes, so the equality above is not between two zeros
    assert set(logged) == set(FRAMEWORK_TEXTS)
    for kind in names.ERROR_KINDS:
        assert sample(out["metrics"], "lkrig_speech_scheduling_errors_total", kind=kind, scenario="byo",
                      agents_version=version) == logged[kind], kind
    assert sample(out["metrics"], "lkrig_agent_handoffs_total", scenario="byo") == len(out["runs"])


def test_what_a_version_lacks_is_said_once(replayed: tuple[str, dict[str, Any], str]) -> None:
    version, _, stderr = replayed
    for line in CAPABILITY_LINES:
        said = [x for x in stderr.splitlines() if line in x]
        # two sessions in the process, one line: said once per process, and only where true
        assert len(said) == (1 if version == LEGACY else 0), (line, said)
        if said:
            assert version in said[0]


@pytest.mark.parametrize("version", [MAIN, LEGACY])
def test_server_options_build_a_server_on_both_versions(version: str, tmp_path: Path) -> None:
    code = (
        "import json, lkrig_instrument\n"
        "from livekit.agents import AgentServer, WorkerOptions\n"
        "opts = lkrig_instrument.server_options()\n"
        "AgentServer(**opts); WorkerOptions(entrypoint_fnc=lambda ctx: None, **opts)\n"
        "print(json.dumps({k: type(v).__name__ if k == 'load_fnc' else v for k, v in opts.items()}))\n"
    )
    env = {**os.environ, "AGENT_HEALTH_PORT": "18081", "AGENT_METRICS_PORT": "19100",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "AGENT_LOAD": "process",
           "AGENT_LOAD_THRESHOLD": "0.9", "PYTHONPATH": str(REPO / "instrument")}
    done = subprocess.run([str(python_for(version)), "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "port": 18081, "host": "127.0.0.1",
        "prometheus_multiproc_dir": str(tmp_path), "load_fnc": "ProcessTreeLoad", "load_threshold": 0.9}


def test_server_options_outside_the_rig_change_nothing_and_bad_values_are_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lkrig_instrument import server

    for var in ("AGENT_HEALTH_PORT", "AGENT_METRICS_PORT", "AGENT_HOST", "PROMETHEUS_MULTIPROC_DIR",
                "AGENT_LOAD", "AGENT_LOAD_THRESHOLD", "AGENT_READY_FILE"):
        monkeypatch.delenv(var, raising=False)
    assert server.server_options() == {}
    for var, value in (("AGENT_HEALTH_PORT", "80a"), ("AGENT_METRICS_PORT", "70000"),
                       ("AGENT_LOAD", "cpu"), ("AGENT_LOAD_THRESHOLD", "-1")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(server.ServerOptionError, match=f"^{var}="):
                server.server_options()


def test_metrics_are_served_for_a_server_built_without_server_options(tmp_path: Path) -> None:
    """lkrig_instrument.run's fallback: the counters of the multiprocess directory on
    AGENT_METRICS_PORT, from prometheus_client's own server, earlier processes' included."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import urllib.request\n"
        "from lkrig_instrument import names, prom, server\n"
        f"assert server.serve_metrics() == {port}\n"
        "prom.inc(names.HANDOFFS, {'scenario': 'byo', 'profile': 'none', 'agents_version': 'x'}, 3)\n"
        f"print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode())\n"
    )
    env = {**os.environ, "AGENT_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    # an earlier process's 2, set aside for the worker's start (lkrig_instrument.carry) but served
    earlier = ("from lkrig_instrument import names, prom\n"
               "prom.inc(names.HANDOFFS, {'scenario': 'byo', 'profile': 'none', 'agents_version': 'x'}, 2)\n")
    subprocess.run([sys.executable, "-c", earlier], check=True, timeout=60, env=env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert sample(done.stdout, "lkrig_agent_handoffs_total", scenario="byo") == 5
    assert list((tmp_path / "carried").glob("counter_*.db")), "the earlier count was not set aside"
    assert list(tmp_path.glob("counter_*.db")), "the count did not go through the multiprocess directory"


# --- the provider swap ---------------------------------------------------------------------------
class _Real:
    """Stands for a user's real provider instance."""


def _swap(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    from lkrig_instrument import providers_or, settings

    for var in (*envnames.RENAMED.values(), *envnames.RENAMED):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    real = _Real()

    def run() -> dict[str, Any]:
        got = providers_or(stt=_Real, llm=real, tts=lambda: "tts-factory-called")
        return {**got, "profile_label": settings.profile()}

    return contextvars.copy_context().run(run) | {"real": real}


def test_providers_stay_the_users_outside_the_rig(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _swap(monkeypatch)
    assert isinstance(got["stt"], _Real) and got["llm"] is got["real"]
    assert got["tts"] == "tts-factory-called" and got["profile_label"] == "none"


def test_scripted_providers_replace_the_users_with_a_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.providers.byo import ConversationLLM
    from agent.providers.scripted_stt import ScriptedSTT
    from agent.providers.scripted_tts import ScriptedTTS

    got = _swap(monkeypatch, LKRIG_PROVIDERS="scripted", LKRIG_LATENCY_PROFILE="slow",
                LKRIG_LLM_SCRIPT=str(SCRIPT))
    assert isinstance(got["stt"], ScriptedSTT) and isinstance(got["tts"], ScriptedTTS)
    assert isinstance(got["llm"], ConversationLLM)
    assert got["profile_label"] == "slow"
    # without a conversation script the rig cannot know the user's tools: their LLM stays
    got = _swap(monkeypatch, LKRIG_PROVIDERS="scripted")
    assert got["llm"] is got["real"] and isinstance(got["stt"], ScriptedSTT)
    assert got["profile_label"] == "typical"


def test_a_provider_swap_that_cannot_work_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from lkrig_instrument import providers, providers_or

    with pytest.raises(providers.ProviderSwapError, match="LKRIG_PROVIDERS='fake'"):
        _swap(monkeypatch, LKRIG_PROVIDERS="fake")
    with pytest.raises(providers.ProviderSwapError, match="cannot import no_such_module"):
        _swap(monkeypatch, LKRIG_PROVIDERS="scripted", LKRIG_PROVIDERS_FACTORY="no_such_module:build")
    with pytest.raises(TypeError, match="unknown provider 'ttss'"):
        providers_or(ttss=_Real)


@pytest.mark.parametrize("text, where", [
    ("steps:\n  - say: hi\n    usr: x\n", "steps[0]: unknown field 'usr'"),
    ("steps:\n  - user: '('\n    say: hi\n", "steps[0].user: not a valid regular expression"),
    ("steps:\n  - say: hi\n  - user: x\n", "steps[1]: give `say`, `call` or both"),
    ("steps:\n  - say: hi\n    error: true\n", "steps[0].error: only meaningful with after_tool"),
    ("steps: []\n", "expected a mapping with a non-empty list `steps`"),
])
def test_a_broken_conversation_script_is_named_by_file_and_step(
        tmp_path: Path, text: str, where: str) -> None:
    from agent.providers.byo import ScriptError, load_script

    path = tmp_path / "script.yaml"
    path.write_text(text)
    with pytest.raises(ScriptError) as e:
        load_script(path)
    assert str(e.value).startswith(f"{path}: ") and where in str(e.value)
    assert len(load_script(SCRIPT).steps) == 6  # the shipped one parses


@pytest.mark.parametrize("spec, error", [
    ("no_such_pkg.agent:server", "cannot import no_such_pkg.agent"),
    ("hotel_desk.agent:WELCOME", "hotel_desk.agent.WELCOME is str, not an AgentServer"),
])
def test_the_runner_names_a_module_it_cannot_run(spec: str, error: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lkrig_instrument.run", spec, "start"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(BYO)})
    assert done.returncode == 2 and error in done.stderr, done.stderr


# --- compose: docker-compose.byo.yml over docker-compose.yml ---------------------------------------
BYO_ENV = {"BYO_AGENT_DIR": str(BYO), "AGENT_MODULE": "hotel_desk.agent:server"}


def compose(*args: str, env: dict[str, str],
            byo_file: Path = BYO_COMPOSE) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        cmd = [str(compose_bin()), "-f", str(REPO / "docker-compose.yml"), "-f", str(byo_file),
               "--project-directory", str(REPO), "--env-file", empty.name, "--profile", "*", *args]
        base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        return subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_byo_compose_runs_the_users_module_in_the_agent_service() -> None:
    env = {**compose_check.DUMMY_ENV, **BYO_ENV}
    assert compose("config", "-q", env=env).returncode == 0
    model = json.loads(compose("config", "--format", "json", env=env).stdout)
    agent = model["services"]["agent"]
    assert Path(agent["build"]["context"]) / agent["build"]["dockerfile"] == BYO_DOCKERFILE
    assert agent["build"]["additional_contexts"]["byo"] == str(BYO)
    assert agent["command"] == ["python", "-m", "lkrig_instrument.run", "hotel_desk.agent:server", "start"]
    mount = next(v for v in agent["volumes"] if v["target"] == "/byo")
    assert (mount["source"], mount["type"], mount["read_only"]) == (str(BYO), "bind", True)
    # the rest of the stack is unchanged: same service name (Prometheus finds it by DNS), same
    # ports, health check, pins; and the rig's compose rules still hold for the merged model
    assert agent["environment"]["AGENT_METRICS_PORT"] == "9100" and "healthcheck" in agent
    assert compose_check.policy_problems(model) == []
    assert dockerfile_check.build_arg_problems(model, (BYO_DOCKERFILE,)) == []
    assert dockerfile_check.hadolint_problems(BYO_DOCKERFILE) == []


@pytest.mark.parametrize("missing", ["BYO_AGENT_DIR", "AGENT_MODULE"])
def test_byo_compose_names_a_missing_setting(missing: str) -> None:
    env = {**compose_check.DUMMY_ENV, **BYO_ENV}
    env.pop(missing)
    done = compose("config", "-q", env=env)
    assert done.returncode != 0 and f"set {missing} in .env" in done.stderr, done.stderr


def test_byo_checks_fail_on_broken_copies(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.byo.yml"
    broken.write_text(BYO_COMPOSE.read_text().replace("    command:", "    commandd:", 1))
    done = compose("config", "-q", env={**compose_check.DUMMY_ENV, **BYO_ENV}, byo_file=broken)
    assert done.returncode != 0 and "commandd" in done.stderr, done.stderr
    dockerfile = tmp_path / "byo-agent.Dockerfile"
    dockerfile.write_text(BYO_DOCKERFILE.read_text().replace("# hadolint ignore=DL3022\n", ""))
    problems = dockerfile_check.hadolint_problems(dockerfile)
    assert len(problems) == 1 and "DL3022" in problems[0], problems


# --- under the rig: native stack, the user's requirements venv, real callers ------------------------
@pytest.fixture(scope="module")
def byo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[native.StackInfo]:
    run_dir = tmp_path_factory.mktemp("byo-stack")
    env = {"LKRIG_PROVIDERS": "scripted", "LKRIG_LLM_SCRIPT": str(SCRIPT)}
    steering = [k for k in os.environ if k.startswith(STEERING)]
    saved = {k: os.environ.get(k) for k in [*env, *steering]}
    for k in steering:
        del os.environ[k]
    os.environ.update(env)
    opts = native.NativeOptions(
        agents=1, loadgen_workers=0, run_dir=run_dir, port_offset=E2E_PORT_OFFSET,
        env_file=run_dir / ".env", agent_name="hotel-desk", agent_path=BYO,
        agent_module="hotel_desk.agent:server", agent_requirements=BYO / "requirements.txt",
        agent_timeout=120.0)
    stack = native.NativeStack(opts)
    try:
        info = stack.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield info
    finally:
        left = stack.stop()
        assert not left, f"teardown left processes running: {left}"


def call(stack: native.StackInfo, seed: int) -> dict[str, Any]:
    env = {**os.environ, "LIVEKIT_URL": stack.livekit_url, "LIVEKIT_API_KEY": stack.api_key,
           "LIVEKIT_API_SECRET": stack.api_secret}
    cmd = [sys.executable, "-m", "loadgen.cli", "--agent-name", stack.agent_name, "--scenario", "byo",
           "--profile", "fast", "--seed", str(seed), "--listen-first", "--join-timeout", "30",
           # the handoff's gap (last hold message to billing's greeting) must not end the turn
           "--settle", "4"]
    for text in CONVERSATION:
        cmd += ["--say", text]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    # livekit rtc sometimes panics in a tokio thread at interpreter exit and aborts (SIGABRT),
    # after the caller printed its result; that exit is not what this test is about, a missing
    # or partial result is.
    exit_panic = done.returncode == -6 and "panic in a function that cannot unwind" in done.stderr
    assert done.returncode in (0, 1) or exit_panic, done.stderr
    return json.loads(done.stdout)


def framework_log(log: Path) -> tuple[str, dict[str, collections.Counter[str]]]:
    """(livekit-agents version the worker announced, error kinds per job) from the worker's log:
    the framework's own records (livekit.agents, asyncio), by the framework's own texts."""
    version, per_job = "", collections.defaultdict(collections.Counter)
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        name = str(rec.get("name", ""))
        if rec.get("message") == "starting worker" and name == "livekit.agents":
            version = str(rec.get("version"))
        if not (name == "asyncio" or name.startswith("livekit.agents")):
            continue
        text = f"{rec.get('message', '')}\n{rec.get('exc_info', '')}"
        for kind, needle in FRAMEWORK_TEXTS.items():
            if needle in text:
                per_job[str(rec.get("job_id"))][kind] += 1
    return version, per_job


def prom_total(stack: native.StackInfo, expr: str) -> float:
    return sum(float(r["value"][1]) for r in prom_query(stack.prometheus_url, expr))


def prom_by(stack: native.StackInfo, expr: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in prom_query(stack.prometheus_url, expr)}


@pytest.mark.timeout(600)
def test_two_concurrent_callers_errors_in_prometheus_equal_the_framework_log(
        byo_stack: native.StackInfo) -> None:
    stack = byo_stack
    # the workers run in the venv built from the user's requirements file, not in the rig's
    cmdline = Path(f"/proc/{stack.pids['agent-0']}/cmdline").read_bytes().split(b"\0")
    assert "byo-venvs" in cmdline[0].decode(), cmdline
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda seed: call(stack, seed), (1, 2)))
    assert [r["join"]["outcome"] for r in results] == ["ok", "ok"], [r["join"] for r in results]
    wait_until(lambda: prom_total(stack, 'sum(lkrig_agent_sessions_ended_total{scenario="byo"})') >= 2,
               90, "both sessions ended, in Prometheus")
    log = Path(stack.logs_dir) / "agent-0.log"
    version, per_job = framework_log(log)
    logged = sum(per_job.values(), collections.Counter())
    assert set(logged) == set(FRAMEWORK_TEXTS), per_job  # both mistakes happened, in the framework's words
    expr = 'sum by (kind) (lkrig_speech_scheduling_errors_total{scenario="byo"})'
    wait_until(lambda: {k: v for k, v in prom_by(stack, expr, "kind").items() if v} == dict(logged),
               60, f"Prometheus to show {dict(logged)}")
    counted = prom_by(stack, expr, "kind")
    assert set(counted) == set(names.ERROR_KINDS)  # every kind exported, the others at 0
    assert {k: v for k, v in counted.items() if v} == dict(logged)
    print(f"\nbyo, 2 concurrent callers: the framework logged {dict(logged)}; Prometheus counted "
          f"{ {k: v for k, v in counted.items() if v} } (livekit-agents {version}, stack up in "
          f"{stack.startup_seconds} s)")
    # labelled with the version the worker itself announced, the user's pin
    versions = prom_by(stack,
                       'sum by (agents_version) (lkrig_speech_scheduling_errors_total{scenario="byo"})',
                       "agents_version")
    assert set(versions) == {version} and version
    assert prom_total(stack, 'sum(lkrig_agent_handoffs_total{scenario="byo"})') == 2
    assert prom_total(stack, 'sum(lkrig_agent_sessions_ended_total{scenario="byo"})') == 2
    # each caller was told of the errors of its own session, in the turn they happened in
    for r in results:
        job = r["join"]["agent_identity"].removeprefix("agent-")
        told = collections.Counter(
            e["kind"] for t in r["turns"] for e in t["events"] if e.get("event") == "error")
        assert told == per_job[job], (job, told, per_job)
        # a turn with an error notice is the caller's agent_error, and only such a turn
        assert [t["outcome"] for t in r["turns"]] == [
            "agent_error" if any(e.get("event") == "error" for e in t["events"]) else "ok"
            for t in r["turns"]], r["turns"]
        # and of each user turn its session committed, by the id the caller announced
        for t in r["turns"][1:]:
            assert {"event": "turn", "turn": t["turn"]} in [
                {k: v for k, v in e.items() if k != "t"} for e in t["events"]], t
    # and the worker's own /metrics (what Prometheus scraped) agrees, kind by kind
    with urllib.request.urlopen(stack.agents[0].metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    for kind in names.ERROR_KINDS:
        assert sample(text, "lkrig_speech_scheduling_errors_total", kind=kind, scenario="byo") == logged[kind]
