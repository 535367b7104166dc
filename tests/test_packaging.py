"""The compose stack's files, validated by the real tools (no Docker engine, no Grafana here).

Every check runs on the shipped files and is also shown to fail on a broken copy, so a check
that silently passes everything cannot hide here. A missing tool is a failure naming how to
install it (scripts/setup), never a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lkrig_instrument import envnames

TOOLS = Path(__file__).resolve().parent / "tools"
sys.path.insert(0, str(TOOLS))

import check_panels_live  # noqa: E402
import compose_check  # noqa: E402
import dashboard_check  # noqa: E402
import dockerfile_check  # noqa: E402
import metric_names  # noqa: E402
import prom_check  # noqa: E402
import targets_check  # noqa: E402
from stackutil import synthetic_prometheus  # noqa: E402
from toolpaths import REPO, ToolMissing  # noqa: E402

COMPOSE = REPO / "docker-compose.yml"
DASHBOARD = REPO / "grafana" / "dashboards" / "speech-scheduling.json"
RULES = REPO / "prometheus" / "rules" / "speech-scheduling.yml"
RULE_TESTS = REPO / "prometheus" / "tests" / "speech-scheduling_test.yml"


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, f"test setup: {old!r} not found"
    return text.replace(old, new, 1)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The files the compose stack uses, copied with their layout, for breaking one at a time."""
    for rel in ("docker-compose.yml", ".dockerignore"):
        shutil.copy2(REPO / rel, tmp_path / rel)
    for rel in ("grafana", "prometheus", "compose", "livekit"):
        shutil.copytree(REPO / rel, tmp_path / rel)
    for rel in ("agent/Dockerfile", "loadgen/Dockerfile"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(_replace_once(path.read_text(), old, new))


# --- docker compose -------------------------------------------------------------------------------
def test_compose_config_is_valid_with_every_profile() -> None:
    assert compose_check.config_problems(COMPOSE) == []
    services = set(compose_check.resolved_model(COMPOSE)["services"])
    assert {
        "livekit",
        "agent",
        "locust-master",
        "locust-worker",
        "prometheus",
        "grafana",
        "agent-providers",
        "redis",
        "livekit-2",
    } <= services


def test_compose_follows_the_rigs_rules() -> None:
    assert compose_check.policy_problems(compose_check.resolved_model(COMPOSE)) == []


@pytest.mark.parametrize("var", ["GRAFANA_ADMIN_PASSWORD", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
def test_compose_requires_each_secret_from_env(var: str) -> None:
    env = {k: v for k, v in compose_check.DUMMY_ENV.items() if k != var}
    problems = compose_check.config_problems(COMPOSE, env=env)
    assert len(problems) == 1 and var in problems[0], problems
    # Set but empty (an unfilled .env.example) is refused too.
    problems = compose_check.config_problems(COMPOSE, env={**env, var: ""})
    assert len(problems) == 1 and var in problems[0], problems


def test_compose_takes_the_grafana_password_and_keys_from_env_only() -> None:
    model = compose_check.resolved_model(COMPOSE)
    grafana_env = model["services"]["grafana"]["environment"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"] == compose_check.DUMMY_ENV["GRAFANA_ADMIN_PASSWORD"]
    key, secret = compose_check.DUMMY_ENV["LIVEKIT_API_KEY"], compose_check.DUMMY_ENV["LIVEKIT_API_SECRET"]
    assert model["services"]["livekit"]["environment"]["LIVEKIT_KEYS"] == f"{key}: {secret}"
    for name in ("agent", "locust-master", "locust-worker"):
        env = model["services"][name]["environment"]
        assert (env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]) == (key, secret), name


def test_compose_keeps_the_version_pins_and_passes_them_as_build_args() -> None:
    text = COMPOSE.read_text()
    assert re.search(r"(?m)^    image: livekit/livekit-server:v\d+\.\d+\.\d+$", text)
    model = compose_check.resolved_model(COMPOSE)
    pins = model["x-versions"]
    assert set(pins) >= {"LIVEKIT_AGENTS_VERSION", "LOCUST_VERSION", "PROMETHEUS_CLIENT_VERSION"}
    for name in ("agent", "locust-master"):
        args = model["services"][name]["build"]["args"]
        assert {k: args[k] for k in pins} == pins, name
    # the workers run the image the master builds (one build, one image)
    assert model["services"]["locust-worker"]["image"] == model["services"]["locust-master"]["image"]
    assert "build" not in model["services"]["locust-worker"]
    assert dockerfile_check.build_arg_problems(model) == []


def test_compose_services_listen_where_prometheus_and_healthchecks_look() -> None:
    model = compose_check.resolved_model(COMPOSE)
    for name in ("agent", "agent-providers"):
        svc = model["services"][name]
        env = svc["environment"]
        assert env["AGENT_HOST"] == "0.0.0.0", name  # the worker's default is loopback
        ports = compose_check.service_ports(svc)
        assert {int(env["AGENT_HEALTH_PORT"]), int(env["AGENT_METRICS_PORT"])} <= ports, name
        assert f"127.0.0.1:{env['AGENT_HEALTH_PORT']}/" in " ".join(svc["healthcheck"]["test"]), name
    master = model["services"]["locust-master"]
    assert int(master["environment"]["LOADGEN_METRICS_PORT"]) in compose_check.service_ports(master)


BROKEN_COMPOSE = {
    "misspelt key": (("    stop_grace_period: 60s\n", "    stop_grace_periodd: 60s\n"), "stop_grace_periodd"),
    "depends on an unknown service in a profile service": (
        (
            "    depends_on:\n      redis:\n        condition: service_healthy\n\nvolumes:",
            "    depends_on:\n      rediss:\n        condition: service_healthy\n\nvolumes:",
        ),
        "rediss",
    ),
    "bad condition": (
        ("condition: service_healthy", "condition: service_helthy"),
        "condition value must be one of",
    ),
    "undefined named volume": (
        ("      - grafana-data:/var/lib/grafana", "      - grafana-dat:/var/lib/grafana"),
        "grafana-dat",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_COMPOSE))
def test_compose_config_fails_on_a_broken_copy(repo_copy: Path, case: str) -> None:
    (old, new), expected = BROKEN_COMPOSE[case]
    assert compose_check.config_problems(repo_copy / "docker-compose.yml") == []
    _edit(repo_copy / "docker-compose.yml", old, new)
    problems = compose_check.config_problems(repo_copy / "docker-compose.yml")
    assert len(problems) == 1 and expected in problems[0], problems


BROKEN_POLICY = {
    "port on all interfaces": (('"127.0.0.1:8089:8089"', '"8089:8089"'), "published on all interfaces"),
    "no healthcheck": (
        (
            '      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3000/api/health"]',
            "      disable: true",
        ),
        "service grafana: no healthcheck",
    ),
    "depends_on without health": (
        (
            "      livekit:\n        condition: service_healthy",
            "      livekit:\n        condition: service_started",
        ),
        "service agent: depends_on livekit with condition 'service_started'",
    ),
    "fixed name on a scalable service": (
        ("  agent:\n    build:", "  agent:\n    container_name: agent\n    build:"),
        "service agent: container_name",
    ),
    "host port on a scalable service": (
        (
            '    expose: ["8081", "9100"]\n    healthcheck: *agent-healthcheck\n',
            '    ports: ["127.0.0.1:9100:9100"]\n    healthcheck: *agent-healthcheck\n',
        ),
        "service agent: published host ports prevent --scale",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_POLICY))
def test_compose_rules_fail_on_a_broken_copy(repo_copy: Path, case: str) -> None:
    (old, new), expected = BROKEN_POLICY[case]
    _edit(repo_copy / "docker-compose.yml", old, new)
    problems = compose_check.check(repo_copy / "docker-compose.yml")
    assert any(expected in p for p in problems), problems


# --- Dockerfiles ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", dockerfile_check.DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    assert dockerfile_check.hadolint_problems(dockerfile) == []


BROKEN_DOCKERFILE = {
    "unpinned pip package": (("WORKDIR /app\n", "WORKDIR /app\nRUN pip install requests\n"), "DL3013"),
    "floating base image": (("FROM python:3.11.13-slim-bookworm", "FROM python:latest"), "DL3007"),
    "syntax error": (("WORKDIR /app\n", "WORKDIR /app\nRUNN echo hi\n"), "missing whitespace"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_DOCKERFILE))
def test_hadolint_fails_on_a_broken_copy(repo_copy: Path, case: str) -> None:
    (old, new), expected = BROKEN_DOCKERFILE[case]
    path = repo_copy / "agent" / "Dockerfile"
    _edit(path, old, new)
    problems = dockerfile_check.hadolint_problems(path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_dockerfile_arg_compose_does_not_pass_is_named(repo_copy: Path) -> None:
    path = repo_copy / "loadgen" / "Dockerfile"
    _edit(path, "ARG LOCUST_VERSION\n", "ARG LOCUST_VERSION\nARG GEVENT_VERSION\n")
    model = compose_check.resolved_model(repo_copy / "docker-compose.yml")
    problems = dockerfile_check.build_arg_problems(model, (repo_copy / "agent" / "Dockerfile", path))
    # one image for the master and the workers: only locust-master builds it
    assert problems == [f"service locust-master: builds {path} without build arg GEVENT_VERSION"], problems


def test_the_go_image_names_the_release_go_mod_needs(repo_copy: Path) -> None:
    dockerfile, gomod = REPO / "loadgen" / "Dockerfile", REPO / "loadgen" / "lkmedia" / "go.mod"
    assert dockerfile_check.go_image_problems(dockerfile, gomod) == []
    wants = next(line.split()[1] for line in gomod.read_text().splitlines() if line.startswith("go "))
    minor = ".".join(wants.split(".")[:2])
    copy = repo_copy / "loadgen" / "Dockerfile"
    _edit(copy, "FROM golang:", f"FROM golang:{minor}-bookworm AS old\nFROM golang:")
    problems = dockerfile_check.go_image_problems(copy, gomod)
    assert len(problems) == 1 and f"golang:{minor} is not a whole Go release" in problems[0], problems


# --- Prometheus -------------------------------------------------------------------------------------
def test_promtool_accepts_configs_rules_and_rule_tests() -> None:
    configs = prom_check.config_files()
    assert REPO / "prometheus" / "prometheus.yml" in configs
    for c in configs:
        assert prom_check.check_config(c) == [], c
    assert prom_check.check_rules(prom_check.rule_files()) == []
    assert prom_check.test_rules(prom_check.test_files()) == []


def test_promtool_check_config_fails_on_a_misspelt_key(repo_copy: Path) -> None:
    path = repo_copy / "prometheus" / "prometheus.yml"
    _edit(path, "  scrape_interval: 5s", "  scrape_intervall: 5s")
    problems = prom_check.check_config(path)
    assert len(problems) == 1 and "scrape_intervall" in problems[0], problems


def test_promtool_check_rules_fails_on_a_bad_expression(repo_copy: Path) -> None:
    path = repo_copy / "prometheus" / "rules" / RULES.name
    _edit(path, "(rate(lkrig_agent_turns_total[5m]))", "(rate(lkrig_agent_turns_total[5m])")
    problems = prom_check.check_rules([path])
    assert len(problems) == 1 and "parse error" in problems[0], problems


BROKEN_RULES = {
    # The unit tests must notice when a rule's meaning changes, not only when a name does.
    "rising factor": (
        (RULES, "> 1.5 * scenario_profile_version_kind", "> 3 * scenario_profile_version_kind"),
        "SpeechSchedulingErrorsRising",
    ),
    "dead-air threshold": ((RULES, "          > 0.01\n", "          > 0.05\n"), "CallerDeadAir"),
    "per-1k factor": ((RULES, "          * 1000\n", "          * 100\n"), "per_1k_turns"),
    "stuck window": (
        (RULES, "(increase(lkrig_agent_stuck_sessions_total[10m]))",
         "(increase(lkrig_agent_stuck_sessions_total[2m]))"),
        "AgentStuckSessions",
    ),
    "new-series branch": (
        (
            RULES,
            "lkrig_caller_rooms_without_agent_total unless lkrig_caller_rooms_without_agent_total offset 5m",
            "lkrig_caller_rooms_without_agent_total unless lkrig_caller_rooms_without_agent_total",
        ),
        "RoomsWithoutAgent",
    ),
    "expected value": ((RULE_TESTS, "            value: 50\n", "            value: 51\n"), "per_1k_turns"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RULES))
def test_promtool_rule_tests_fail_when_a_rule_or_expectation_changes(repo_copy: Path, case: str) -> None:
    (original, old, new), expected = BROKEN_RULES[case]
    _edit(repo_copy / "prometheus" / original.parent.name / original.name, old, new)
    problems = prom_check.test_rules(prom_check.test_files(repo_copy / "prometheus"))
    assert len(problems) == 1 and "FAILED" in problems[0] and expected in problems[0], problems


# --- metric names ----------------------------------------------------------------------------------
def _rule_name_problems(rule_files: list[Path]) -> list[str]:
    exprs, recorded, problems = metric_names.rule_exprs(rule_files)
    problems += metric_names.recorded_name_problems(recorded, metric_names.metric_bases())
    return problems + metric_names.name_problems(exprs, metric_names.allowed_names() | recorded)


def test_rules_use_only_names_from_names_py() -> None:
    exprs, recorded, _ = metric_names.rule_exprs(prom_check.rule_files())
    assert len(exprs) >= 10 and recorded
    assert _rule_name_problems(prom_check.rule_files()) == []


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            "(rate(lkrig_agent_turns_total[5m]))",
            "(rate(agent_turn_total[5m]))",
            "'agent_turn_total' is not defined",
        ),
        (
            "- record: scenario_profile_version:lkrig_agent_turns:rate5m",
            "- record: agent_turns_rate5m",
            "does not follow level:metric:operations",
        ),
        (
            "- record: scenario_profile_version:lkrig_agent_turns:rate5m",
            "- record: scenario_profile_version:agent_tunrs:rate5m",
            "is not built on a metric of names.py",
        ),
        (
            "(increase(lkrig_caller_rooms_without_agent_total[5m]))",
            '(increase({__name__=~"caller_rooms.*"}[5m]))',
            "name it explicitly",
        ),
    ],
)
def test_rule_name_check_fails_on_a_broken_copy(repo_copy: Path, old: str, new: str, expected: str) -> None:
    path = repo_copy / "prometheus" / "rules" / RULES.name
    _edit(path, old, new)
    problems = _rule_name_problems([path])
    assert any(expected in p for p in problems), problems


def test_names_check_covers_every_sample_of_names_py() -> None:
    names = metric_names.load_names()
    allowed = metric_names.allowed_names(names)
    assert "lkrig_caller_turn_latency_seconds_bucket" in allowed and "livekit_room_total" in allowed
    assert "lkrig_caller_turn_latency_seconds" not in allowed  # a histogram has no bare series
    assert {m.name for m in names.ALL if m.type != "histogram"} <= allowed


# --- Grafana dashboards ----------------------------------------------------------------------------
def _panel(d: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in metric_names.iter_panels(d["panels"]) if p.get("title") == title)


def _variable(d: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in d["templating"]["list"] if v["name"] == name)


def test_dashboards_pass_the_static_checks() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["title"] == "Speech scheduling under load"
    assert {v["name"] for v in d["templating"]["list"]} == {
        "datasource", "scenario", "profile", "network", "agents_version", "worker"
    }
    assert _variable(d, "datasource")["type"] == "datasource"
    assert _variable(d, "worker")["query"] == "label_values(lk_agents_worker_load, worker)"
    # the rarely read rows start collapsed, holding their panels
    rows = {p["title"]: p for p in d["panels"] if p["type"] == "row"}
    assert {t for t, r in rows.items() if r["collapsed"]} == {"LiveKit server", "Soak"}
    assert all(rows[t]["panels"] for t in ("LiveKit server", "Soak"))
    # annotations from Prometheus: faults, the load's start and stop, firing alerts
    exprs = {a["name"]: a["target"]["expr"] for a in d["annotations"]["list"] if not a.get("builtIn")}
    assert exprs["Faults"] == 'lkrig_fault_timestamp_seconds{phase="start"} * 1000'
    assert exprs["Load start and stop"] == "lkrig_run_timestamp_seconds * 1000"
    assert exprs["Firing alerts"] == 'ALERTS{alertstate="firing"}'
    assert {lk["url"] for lk in d["links"]} >= {"http://127.0.0.1:8089", "http://127.0.0.1:9090/alerts"}
    # the recording rules feed the panels they were made for
    for title, recorded in (
        ("Errors per 1k turns by scenario, profile and version (recorded, 5 min)",
         "scenario_profile_version_kind:lkrig_speech_scheduling_errors_per_1k_turns:ratio_rate5m"),
        ("Caller turn latency (p50 / p95 / p99)",
         "scenario_profile_network:lkrig_caller_turn_latency_seconds:quantile_rate5m"),
        ("Agent turn timings, p95 by stage",
         "scenario_profile_version_stage:lkrig_agent_turn_seconds:quantile_rate5m"),
    ):
        assert all(t["expr"].startswith(recorded) for t in _panel(d, title)["targets"]), title
    assert _panel(d, "Worker load")["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 0.7
    assert dashboard_check.check() == []


def _mutate_dashboard(d: dict[str, Any], case: str) -> None:
    panel = next(p for p in d["panels"] if p["type"] != "row")
    target = panel["targets"][0]
    match case:
        case "misspelt panel key":
            panel["tagets"] = panel.pop("targets")
        case "wrong type":
            panel["gridPos"] = "big"
        case "missing panel type":
            del panel["type"]
        case "misspelt dashboard key":
            d["titel"] = d.pop("title")
        case "bad enum value":
            next(p for p in d["panels"] if "thresholds" in p.get("fieldConfig", {}).get("defaults", {}))[
                "fieldConfig"
            ]["defaults"]["thresholds"]["mode"] = "absolut"
        case "misspelt expr key":
            target["exprr"] = target.pop("expr")
        case "misspelt legendFormat key":
            target["legendFromat"] = target.pop("legendFormat")
        case "misspelt annotation key":
            d["annotations"]["list"][1]["titleFromat"] = d["annotations"]["list"][1].pop("titleFormat")
        case "unknown metric":
            target["expr"] = target["expr"].replace(
                "lkrig_speech_scheduling_errors_total", "speech_scheduling_error_total"
            )
        case "unknown metric in an annotation":
            d["annotations"]["list"][1]["target"]["expr"] = 'lkrig_fault_timestamp{phase="start"} * 1000'
        case "PromQL syntax error":
            target["expr"] = "sum(rate(lkrig_agent_turns_total[5m])"
        case "undefined variable":
            target["expr"] = target["expr"].replace("$scenario", "$scenaro")
        case "unknown metric in a variable":
            _variable(d, "scenario")["query"] = "label_values(agent_turn_total, scenario)"
        case "fixed datasource uid":
            target["datasource"] = {"type": "prometheus", "uid": "prom"}
        case "fixed datasource uid in a variable":
            _variable(d, "worker")["datasource"] = {"type": "prometheus", "uid": "prometheus"}
        case "no datasource variable":
            d["templating"]["list"] = [v for v in d["templating"]["list"] if v["type"] != "datasource"]
        case "duplicate refId":
            panel["targets"].append(dict(target))
        case "variable not applied":
            target["expr"] = target["expr"].replace(', worker=~"$worker"', "")
        case "not filtered by a variable it uses":
            panel["description"] += "\nNot filtered by: $worker (no reason)"
        case "malformed not-filtered line":
            panel["description"] += "\nNot filtered by: worker"
        case "instance in a legend":
            _panel(d, "Worker load")["targets"][0]["legendFormat"] = "{{instance}}"
        case "instance in the worker variable":
            _variable(d, "worker")["query"] = "label_values(lk_agents_worker_load, instance)"
        case "latency threshold off the SLO":
            latency = _panel(d, "Caller turn latency (p50 / p95 / p99)")["fieldConfig"]["defaults"]
            latency["thresholds"]["steps"][1]["value"] = 2.5
        case "latency threshold not drawn":
            latency = _panel(d, "Caller turn latency (p50 / p95 / p99)")["fieldConfig"]["defaults"]
            del latency["custom"]["thresholdsStyle"]
        case "editable against provisioning":
            d["editable"] = True
        case "zoom-dependent count":
            stuck = _panel(d, "Stuck sessions per minute")["targets"][0]
            stuck["expr"] = stuck["expr"].replace("(rate(", "(increase(").replace(" * 60", "")
        case "collapsed row without its panels":
            row = next(p for p in d["panels"] if p.get("title") == "Soak")
            row["collapsed"], row["panels"] = True, []
        case "doc anchor that does not exist":
            p = _panel(d, "draining (selected range)")
            p["description"] = p["description"].replace("#2-why-a-filler", "#2-why-the-filler")
        case "error-kind panel without docs":
            _panel(d, "closing (selected range)")["description"] = "AgentSession is closing."


BROKEN_DASHBOARD = {
    "misspelt panel key": "'\"tagets\"' does not exist",
    "wrong type": "Type 'string' is not assignable",
    "missing panel type": "Property 'type' is missing",
    "misspelt dashboard key": "'\"titel\"' does not exist",
    "bad enum value": "Type '\"absolut\"' is not assignable",
    "misspelt expr key": "no 'expr'",
    "misspelt legendFormat key": "'\"legendFromat\"' does not exist",
    "misspelt annotation key": "'\"titleFromat\"' does not exist",
    "unknown metric": "'speech_scheduling_error_total' is not defined",
    "unknown metric in an annotation": "annotation 'Faults': metric 'lkrig_fault_timestamp' is not defined",
    "PromQL syntax error": "PromQL does not parse",
    "undefined variable": "uses $scenaro",
    "unknown metric in a variable": "variable $scenario: metric 'agent_turn_total' is not defined",
    "fixed datasource uid": "datasource uid 'prom' is fixed",
    "fixed datasource uid in a variable": "variable $worker: datasource uid 'prometheus' is fixed",
    "no datasource variable": "needs exactly one variable of type 'datasource'",
    "duplicate refId": "refIds must be present and unique",
    "variable not applied": "target A: does not filter by $worker",
    "not filtered by a variable it uses": "says 'Not filtered by: $worker', but every query uses $worker",
    "malformed not-filtered line": "is not 'Not filtered by: $a, $b (why)'",
    "instance in a legend": "legendFormat '{{instance}}': name workers by the scrape's `worker` label",
    "instance in the worker variable":
        "variable $worker: query 'label_values(lk_agents_worker_load, instance)'",
    "latency threshold off the SLO": "threshold [2.5] is not the SLO's turn_latency_p95_seconds [3]",
    "latency threshold not drawn": "does not draw the SLO line",
    "editable against provisioning": "editable is True, but the provisioning's allowUiUpdates is False",
    "zoom-dependent count": "increase(...[$__rate_interval]) is a count whose window follows the zoom",
    "collapsed row without its panels": "a collapsed row holds its panels in its own 'panels'",
    "doc anchor that does not exist":
        "docs/speech-scheduling.md has no heading for the anchor #2-why-the-filler",
    "error-kind panel without docs": "a panel of errors by kind links docs/speech-scheduling.md#<section>",
}


def test_the_latency_threshold_follows_the_slo_file(tmp_path: Path) -> None:
    """One fact: the dashboard's SLO line is slo/default.yaml's, not a copy that can drift."""
    slo = tmp_path / "default.yaml"
    slo.write_text((REPO / "slo" / "default.yaml").read_text().replace(
        "turn_latency_p95_seconds: 3.0", "turn_latency_p95_seconds: 2.0"))
    problems = dashboard_check.threshold_problems(json.loads(DASHBOARD.read_text()), DASHBOARD.name, slo)
    assert any("is not the SLO's turn_latency_p95_seconds [2]" in p for p in problems), problems


@pytest.mark.parametrize("case", sorted(BROKEN_DASHBOARD))
def test_dashboard_checks_fail_on_a_broken_copy(tmp_path: Path, case: str) -> None:
    d = json.loads(DASHBOARD.read_text())
    _mutate_dashboard(d, case)
    path = tmp_path / DASHBOARD.name
    path.write_text(json.dumps(d, indent=2))
    problems = dashboard_check.check([path])
    assert any(BROKEN_DASHBOARD[case] in p for p in problems), problems


# --- Grafana and Prometheus against compose ---------------------------------------------------------
def test_datasource_and_scrape_targets_match_compose_services() -> None:
    assert targets_check.check() == []


BROKEN_TARGETS = {
    "datasource port": (
        (
            "grafana/provisioning/datasources/prometheus.yml",
            "http://prometheus:9090",
            "http://prometheus:9091",
        ),
        "port 9091 is not among service prometheus's ports",
    ),
    "datasource host": (
        ("grafana/provisioning/datasources/prometheus.yml", "http://prometheus:9090", "http://prom:9090"),
        "host 'prom' is not a compose service",
    ),
    "datasource key typo": (
        ("grafana/provisioning/datasources/prometheus.yml", "    isDefault: true", "    isDefualt: true"),
        "unknown keys ['isDefualt']",
    ),
    "provider path": (
        (
            "grafana/provisioning/dashboards/lkrig.yml",
            "path: /etc/grafana/dashboards",
            "path: /var/lib/grafana/dashboards",
        ),
        "is not a bind mount of service grafana",
    ),
    "static target host": (
        ("prometheus/prometheus.yml", '"locust-master:9646"', '"locust-mastr:9646"'),
        "host 'locust-mastr' is not a compose service",
    ),
    "static target port": (
        ("prometheus/prometheus.yml", '"locust-master:9646"', '"locust-master:9645"'),
        "port 9645 is not among service locust-master's ports",
    ),
    "DNS SD port": (
        ("prometheus/prometheus.yml", "        port: 6789", "        port: 6790"),
        "port 6790 is not among service livekit's ports",
    ),
    "DNS SD name": (
        ("prometheus/prometheus.yml", '["livekit", "livekit-2"]', '["livekt", "livekit-2"]'),
        "host 'livekt' is not a compose service",
    ),
    "file SD folder": (
        ("prometheus/prometheus.yml", '"/etc/prometheus/targets/*.json"', '"/etc/prometheus/target/*.json"'),
        "/etc/prometheus/target is not a named volume mounted into service prometheus",
    ),
    "file SD writer path": (
        ("docker-compose.yml", "  LKRIG_SCRAPE_TARGETS: /var/lib/lkrig/targets",
         "  LKRIG_SCRAPE_TARGETS: /tmp/targets"),
        "service agent mounts volume scrape-targets at /var/lib/lkrig/targets but its "
        "LKRIG_SCRAPE_TARGETS is '/tmp/targets'",
    ),
    "file SD no writer": (
        ("docker-compose.yml", "  - scrape-targets:/var/lib/lkrig/targets\n", "  []\n"),
        "no service but prometheus mounts volume scrape-targets",
    ),
    "rules not mounted": (
        ("docker-compose.yml", "      - ./prometheus/rules:/etc/prometheus/rules:ro\n", ""),
        "rule_files 'rules/*.yml' needs",
    ),
    "compose port gone": (
        ("docker-compose.yml", '    expose: ["5557", "9646"]', '    expose: ["5557"]'),
        "port 9646 is not among service locust-master's ports",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_TARGETS))
def test_target_check_fails_on_a_broken_copy(repo_copy: Path, case: str) -> None:
    (rel, old, new), expected = BROKEN_TARGETS[case]
    assert (
        targets_check.check(
            repo_copy / "docker-compose.yml",
            repo_copy / "grafana",
            repo_copy / "prometheus" / "prometheus.yml",
        )
        == []
    )
    _edit(repo_copy / rel, old, new)
    problems = targets_check.check(
        repo_copy / "docker-compose.yml", repo_copy / "grafana", repo_copy / "prometheus" / "prometheus.yml"
    )
    assert any(expected in p for p in problems), problems


# --- the livekit container config ---------------------------------------------------------------------
DROPPED = {("rtc", "node_ip"), ("rtc", "ips"), ("rtc", "enable_loopback_candidate")}


def _container_config(tmp_path: Path, source: Path, server: str = "true", *args: str) -> tuple[Path, str]:
    out = tmp_path / "container-livekit.yaml"
    r = subprocess.run(
        ["sh", str(REPO / "compose" / "livekit-entrypoint.sh"), str(source), *args],
        env={**os.environ, "LIVEKIT_SERVER_BIN": server, "LKRIG_CONTAINER_CONFIG": str(out)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_livekit_entrypoint_drops_only_the_loopback_ice_settings(tmp_path: Path) -> None:
    source = REPO / "livekit" / "livekit.yaml"
    out, _ = _container_config(tmp_path, source)
    original, container = yaml.safe_load(source.read_text()), yaml.safe_load(out.read_text())
    expected = json.loads(json.dumps(original))
    for section, key in DROPPED:
        expected.get(section, {}).pop(key, None)
    assert container == expected
    # It follows the file's structure, not its line order: a reordered, re-indented copy too.
    moved = tmp_path / "moved.yaml"
    moved.write_text(
        yaml.safe_dump(
            {
                "rtc": {
                    "ips": {"includes": ["10.0.0.0/8"]},
                    "node_ip": "10.1.1.1",
                    "tcp_port": 0,
                    "udp_port": 7000,
                },
                "prometheus": {"port": 6789},
                "node_ip": "stays",
            },
            indent=4,
        )
    )
    out, _ = _container_config(tmp_path, moved)
    assert yaml.safe_load(out.read_text()) == {
        "rtc": {"tcp_port": 0, "udp_port": 7000},
        "prometheus": {"port": 6789},
        "node_ip": "stays",
    }


def _livekit_server_bin() -> Path:
    if os.environ.get("LIVEKIT_SERVER_BIN"):
        return Path(os.environ["LIVEKIT_SERVER_BIN"])
    version = re.search(r"(?m)^ *image: *livekit/livekit-server:(v[0-9.]+) *$", COMPOSE.read_text())[1]
    cache = Path(envnames.get("LKRIG_CACHE") or Path.home() / ".cache" / "lkrig")
    binary = cache / "livekit-server" / version / "livekit-server"
    if not binary.is_file():
        raise ToolMissing(f"livekit-server {version} is not built at {binary}: run `bash scripts/setup`")
    return binary


def test_livekit_server_accepts_the_container_config_with_the_compose_overrides(tmp_path: Path) -> None:
    env = compose_check.resolved_model(COMPOSE)["services"]["livekit"]["environment"]
    out = tmp_path / "container-livekit.yaml"
    r = subprocess.run(
        [
            "sh",
            str(REPO / "compose" / "livekit-entrypoint.sh"),
            str(REPO / "livekit" / "livekit.yaml"),
            "--bind",
            "0.0.0.0",
            "ports",
        ],
        env={
            "PATH": os.environ["PATH"],
            "LIVEKIT_SERVER_BIN": str(_livekit_server_bin()),
            "LKRIG_CONTAINER_CONFIG": str(out),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # The server parsed the file strictly and took the UDP mux port from the environment.
    # (v1.13.5 prints the port as "%!s(int=7882)", a formatting slip of its own.)
    assert re.search(rf"(?m)^\S*\b{env['UDP_PORT']}\b\S* - ICE/UDP$", r.stdout), r.stdout


# --- live panel check (real Prometheus, synthetic exporter) --------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping an exporter of every names.py metric, with the rig's rules."""
    with synthetic_prometheus(tmp_path_factory.mktemp("live-prometheus"), _free_port(), _free_port()) as url:
        yield url


def _wait(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except check_panels_live.PrometheusUnreachable:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_every_panel_returns_data_from_a_live_prometheus(live_prometheus: str) -> None:
    report = _wait(
        lambda: (r := check_panels_live.check_panels_live(live_prometheus)).ok and r, 60
    ) or check_panels_live.check_panels_live(live_prometheus)
    assert report.ok, "\n".join(report.failures)
    n_targets = sum(
        len(p.get("targets") or [])
        for p in metric_names.iter_panels(json.loads(DASHBOARD.read_text())["panels"])
    )
    assert len(report.results) == n_targets
    assert report.variables[DASHBOARD.name]["scenario"] == ".*"  # "All", as Grafana opens it
    assert report.variables[DASHBOARD.name]["datasource"] == live_prometheus
    assert report.variables[DASHBOARD.name]["worker"] == ".*"
    # the annotations' queries run too (they may be empty: no fault, no alert)
    annotations = json.loads(DASHBOARD.read_text())["annotations"]["list"]
    names = {a["name"] for a in annotations if not a.get("builtIn")}
    assert {r.panel for r in report.annotations} == {f"annotation {n!r}" for n in names}
    assert all(r.error is None for r in report.annotations), [r.line() for r in report.annotations]
    # Pinned to live values, too.
    pinned = check_panels_live.check_panels_live(
        live_prometheus, variables={"scenario": ["seed"], "profile": ["fast"]}
    )
    assert pinned.ok, "\n".join(pinned.failures)


def test_live_panel_check_fails_on_broken_queries_and_variables(live_prometheus: str, tmp_path: Path) -> None:
    assert _wait(lambda: check_panels_live.check_panels_live(live_prometheus).ok, 60)
    d = json.loads(DASHBOARD.read_text())
    panels = [p for p in d["panels"] if p["type"] != "row"]
    panels[0]["targets"][0]["expr"] = panels[0]["targets"][0]["expr"].replace(
        "lkrig_speech_scheduling_errors_total", "speech_scheduling_error_total"
    )
    panels[1]["targets"][0]["expr"] = "sum(rate(lkrig_agent_turns_total[5m])"
    panels[2]["targets"][0]["exprr"] = panels[2]["targets"][0].pop("expr")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(d))
    report = check_panels_live.check_panels_live(live_prometheus, [broken])
    failed = {(r.panel, r.error or "no data") for r in report.results if not r.ok}
    assert len(failed) == 3, report.failures
    assert any(p.startswith(f"panel {panels[0]['id']} ") and e == "no data" for p, e in failed)
    assert any(p.startswith(f"panel {panels[1]['id']} ") and "parse error" in e for p, e in failed)
    assert any(p.startswith(f"panel {panels[2]['id']} ") and "no 'expr'" in e for p, e in failed)

    pinned = check_panels_live.check_panels_live(
        live_prometheus, variables={"scenario": ["no_such_scenario"]}
    )
    assert not pinned.ok
    assert any("pinned ['no_such_scenario'] not among live values ['seed']" in p for p in pinned.problems)

    with pytest.raises(check_panels_live.PrometheusUnreachable):
        check_panels_live.check_panels_live(f"http://127.0.0.1:{_free_port()}")


def test_live_panel_check_fails_on_a_foreign_datasource_and_a_broken_annotation(
    live_prometheus: str, tmp_path: Path
) -> None:
    assert _wait(lambda: check_panels_live.check_panels_live(live_prometheus).ok, 60)
    d = json.loads(DASHBOARD.read_text())
    panel = _panel(d, "Worker load")
    panel["targets"][0]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    faults = next(a for a in d["annotations"]["list"] if a["name"] == "Faults")
    faults["target"]["expr"] = "lkrig_fault_timestamp_seconds{phase=} * 1000"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(d))
    report = check_panels_live.check_panels_live(live_prometheus, [broken])
    assert not report.ok
    failed = [r for r in report.results if not r.ok]
    assert [r.panel for r in failed] == [f"panel {panel['id']} 'Worker load'"], report.failures
    assert "not the dashboard's Prometheus variable" in (failed[0].error or "")
    (anno,) = [r for r in report.annotations if not r.ok]
    assert anno.panel == "annotation 'Faults'" and "parse error" in (anno.error or ""), anno.line()


def test_live_panel_check_cli_exit_codes(live_prometheus: str, tmp_path: Path) -> None:
    assert _wait(lambda: check_panels_live.check_panels_live(live_prometheus).ok, 60)
    cli = [sys.executable, str(TOOLS / "check_panels_live.py"), "--prometheus", live_prometheus]
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"(?m)^\d+ passed, 0 failed$", ok.stdout)
    d = json.loads(DASHBOARD.read_text())
    next(p for p in d["panels"] if p["type"] != "row")["targets"][0]["expr"] = "nonexistent_metric_total"
    (tmp_path / "d.json").write_text(json.dumps(d))
    bad = subprocess.run([*cli, str(tmp_path / "d.json")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "FAIL" in bad.stdout, bad.stdout + bad.stderr
    down = subprocess.run(
        [*cli[:-1], f"http://127.0.0.1:{_free_port()}"], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 2 and "check_panels_live:" in down.stderr, down.stderr
