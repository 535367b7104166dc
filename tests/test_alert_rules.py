"""Facts the alert rules share with the rest of the repository, kept as one fact each.

promtool's unit tests (prometheus/tests/, run by tests/test_packaging.py) check what each rule
does; these check that a rule's number or list is the one the SLO file, the scenario files and
livekit-agents use, and that every alert has a severity, a summary, a description and promtool
cases where it fires and where it stays quiet. Each check is also shown to fail on a broken copy.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rig import pins
from rig.binaries import agents_venv_python

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "prometheus" / "rules" / "speech-scheduling.yml"
RULE_TESTS = REPO / "prometheus" / "tests"
SLO_DEFAULT = REPO / "slo" / "default.yaml"
SCENARIOS = REPO / "agent" / "scenarios"

LATENCY_ALERT = "CallerTurnLatencyAboveSLO"
CLEAN_ALERT = "SpeechSchedulingErrorInCleanScenario"
LOAD_ALERT = "AgentWorkerAtAdmissionThreshold"
SEVERITIES = {"warning", "critical"}

# `... > 3.0` at the end of the latency rule; `... >= 0.7` at the end of the load rule.
LATENCY_THRESHOLD = re.compile(r'\{quantile="0\.95"\}\s*>\s*(?P<limit>[0-9.]+)\s*$')
LOAD_THRESHOLD = re.compile(r"\(lk_agents_worker_load\)\s*>=\s*(?P<limit>[0-9.]+)\s*$")
SCENARIO_REGEX = re.compile(r'scenario=~"(?P<names>[^"]*)"')


def alerts(rules: Path = RULES) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(rules.read_text()) or {}
    return {r["alert"]: r for g in doc.get("groups") or [] for r in g.get("rules") or [] if "alert" in r}


def _alert(rules: Path, name: str) -> dict[str, Any] | None:
    return alerts(rules).get(name)


# --- CallerTurnLatencyAboveSLO: the limit is slo/default.yaml's -------------------------------------
def latency_threshold_problems(rules: Path = RULES, slo: Path = SLO_DEFAULT) -> list[str]:
    rule = _alert(rules, LATENCY_ALERT)
    if rule is None:
        return [f"{rules.name}: no alert {LATENCY_ALERT}"]
    m = LATENCY_THRESHOLD.search(str(rule["expr"]).strip())
    if not m:
        return [f'{rules.name}: {LATENCY_ALERT} is not `...{{quantile="0.95"}} > LIMIT`: {rule["expr"]!r}']
    limit = (yaml.safe_load(slo.read_text()) or {}).get("turn_latency_p95_seconds")
    if not isinstance(limit, (int, float)):
        return [f"{slo.name}: no number turn_latency_p95_seconds"]
    if float(m["limit"]) != float(limit):
        return [
            f"{rules.name}: {LATENCY_ALERT} fires above {m['limit']} s but {slo.name} "
            f"turn_latency_p95_seconds is {limit}: change both"
        ]
    # the annotations name the limit too ("the SLO's 3 s", "allows 3 s")
    said = f"{float(limit):g} s"
    return [
        f"{rules.name}: {LATENCY_ALERT}'s {key} does not say the limit ({said!r})"
        for key in ("summary", "description")
        if said not in str(rule["annotations"][key])
    ]


# --- SpeechSchedulingErrorInCleanScenario: exactly the fix scenarios ---------------------------------
def fix_scenarios(scenarios: Path = SCENARIOS) -> set[str]:
    return {p.stem for p in scenarios.glob("fix_*.py")}


def clean_scenario_problems(rules: Path = RULES, scenarios: Path = SCENARIOS) -> list[str]:
    rule = _alert(rules, CLEAN_ALERT)
    if rule is None:
        return [f"{rules.name}: no alert {CLEAN_ALERT}"]
    lists = SCENARIO_REGEX.findall(str(rule["expr"]))
    if not lists:
        return [f'{rules.name}: {CLEAN_ALERT} has no scenario=~"..." matcher']
    want = fix_scenarios(scenarios)
    problems = []
    for names in lists:
        got = set(names.split("|"))
        if got != want:
            problems.append(
                f"{rules.name}: {CLEAN_ALERT} matches scenarios {sorted(got)}, but "
                f"agent/scenarios/fix_*.py are {sorted(want)}"
            )
    return problems


# --- AgentWorkerAtAdmissionThreshold: livekit-agents' production default -----------------------------
def load_threshold_problems(rules: Path = RULES, defaults: dict[str, float] | None = None) -> list[str]:
    rule = _alert(rules, LOAD_ALERT)
    if rule is None:
        return [f"{rules.name}: no alert {LOAD_ALERT}"]
    m = LOAD_THRESHOLD.search(str(rule["expr"]).strip())
    if not m:
        return [f"{rules.name}: {LOAD_ALERT} is not `...(lk_agents_worker_load) >= LIMIT`: {rule['expr']!r}"]
    problems = []
    if f"threshold of {m['limit']} " not in rule["annotations"]["description"]:
        problems.append(f"{rules.name}: {LOAD_ALERT}'s description does not say its threshold {m['limit']}")
    for version, default in (defaults or {}).items():
        if float(m["limit"]) != default:
            problems.append(
                f"{rules.name}: {LOAD_ALERT} fires at {m['limit']} but livekit-agents {version}'s "
                f"production load_threshold is {default}"
            )
    return problems


def livekit_agents_load_threshold(python: Path) -> float:
    code = "from livekit.agents import worker; print(worker._default_load_threshold.prod_default)"
    r = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{python}: {r.stderr.strip()}"
    return float(r.stdout.strip())


# --- every alert ----------------------------------------------------------------------------------
def promtool_cases(test_dir: Path = RULE_TESTS) -> dict[str, list[list[Any]]]:
    """alertname -> the exp_alerts of every alert_rule_test naming it."""
    cases: dict[str, list[list[Any]]] = {}
    for path in sorted(test_dir.glob("*.yml")):
        for test in (yaml.safe_load(path.read_text()) or {}).get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    return cases


def alert_shape_problems(rules: Path = RULES, test_dir: Path = RULE_TESTS) -> list[str]:
    problems = []
    cases = promtool_cases(test_dir)
    for name, rule in alerts(rules).items():
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r}, expected one of {sorted(SEVERITIES)}")
        for key in ("summary", "description"):
            if not str((rule.get("annotations") or {}).get(key) or "").strip():
                problems.append(f"{name}: no {key} annotation")
        mine = cases.get(name, [])
        if not any(mine):
            problems.append(f"{name}: no promtool case where it fires")
        if all(mine):
            problems.append(f"{name}: no promtool case where it stays quiet (exp_alerts: [])")
    return problems


# --- tests ----------------------------------------------------------------------------------------
def _copy(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    rules = tmp_path / RULES.name
    rules.write_text(RULES.read_text())
    slo = tmp_path / SLO_DEFAULT.name
    slo.write_text(SLO_DEFAULT.read_text())
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    for p in SCENARIOS.glob("*.py"):
        (scenarios / p.name).write_text(p.read_text())
    tests = tmp_path / "tests"
    tests.mkdir()
    for p in RULE_TESTS.glob("*.yml"):
        (tests / p.name).write_text(p.read_text())
    return rules, slo, scenarios, tests


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_latency_alert_fires_above_the_default_slo_limit() -> None:
    assert latency_threshold_problems() == []


def test_latency_check_fails_when_the_slo_limit_moves(tmp_path: Path) -> None:
    rules, slo, _, _ = _copy(tmp_path)
    _edit(slo, "turn_latency_p95_seconds: 3.0", "turn_latency_p95_seconds: 2.5")
    problems = latency_threshold_problems(rules, slo)
    assert len(problems) == 1 and "fires above 3.0 s" in problems[0] and "is 2.5" in problems[0], problems


def test_latency_check_fails_when_the_rule_moves(tmp_path: Path) -> None:
    rules, slo, _, _ = _copy(tmp_path)
    _edit(rules, '{quantile="0.95"} > 3.0', '{quantile="0.95"} > 4')
    problems = latency_threshold_problems(rules, slo)
    assert len(problems) == 1 and "fires above 4 s" in problems[0], problems


def test_latency_check_fails_when_the_annotations_keep_an_old_limit(tmp_path: Path) -> None:
    rules, slo, _, _ = _copy(tmp_path)
    _edit(rules, '{quantile="0.95"} > 3.0', '{quantile="0.95"} > 2.5')
    _edit(slo, "turn_latency_p95_seconds: 3.0", "turn_latency_p95_seconds: 2.5")
    problems = latency_threshold_problems(rules, slo)
    assert [p.split("'s ")[1].split()[0] for p in problems] == ["summary", "description"], problems


def test_clean_scenario_alert_names_exactly_the_fix_scenarios() -> None:
    assert fix_scenarios() == {"fix_filler_in_on_enter", "fix_say_before_handoff"}
    assert clean_scenario_problems() == []


@pytest.mark.parametrize("case", ["new fix scenario", "fix scenario removed"])
def test_clean_scenario_check_fails_when_the_list_drifts(tmp_path: Path, case: str) -> None:
    rules, _, scenarios, _ = _copy(tmp_path)
    if case == "new fix scenario":
        (scenarios / "fix_await_outside_the_tool.py").write_text('"""a new fix."""\n')
        expected = "fix_await_outside_the_tool"
    else:
        (scenarios / "fix_say_before_handoff.py").unlink()
        expected = "'fix_filler_in_on_enter', 'fix_say_before_handoff']"
    problems = clean_scenario_problems(rules, scenarios)
    # the rule names the list twice (the increase and the appeared-at-non-zero halves)
    assert len(problems) == 2 and all(expected in p for p in problems), problems


def test_load_alert_uses_livekit_agents_production_threshold_on_both_pins() -> None:
    p = pins.load()
    defaults = {
        p["LIVEKIT_AGENTS_VERSION"]: livekit_agents_load_threshold(Path(sys.executable)),
        p["LIVEKIT_AGENTS_LEGACY_VERSION"]: livekit_agents_load_threshold(
            agents_venv_python(p["LIVEKIT_AGENTS_LEGACY_VERSION"])
        ),
    }
    assert load_threshold_problems(defaults=defaults) == []


def test_load_check_fails_when_rule_and_framework_differ(tmp_path: Path) -> None:
    rules, _, _, _ = _copy(tmp_path)
    problems = load_threshold_problems(rules, {"9.9.9": 0.8})
    assert problems == [
        f"{RULES.name}: {LOAD_ALERT} fires at 0.7 but livekit-agents 9.9.9's production load_threshold is 0.8"
    ]
    _edit(rules, "(lk_agents_worker_load) >= 0.7", "(lk_agents_worker_load) >= 0.8")
    problems = load_threshold_problems(rules, {"9.9.9": 0.8})
    assert problems == [f"{RULES.name}: {LOAD_ALERT}'s description does not say its threshold 0.8"]


def test_every_alert_has_severity_annotations_and_promtool_cases_both_ways() -> None:
    assert len(alerts()) >= 13
    assert alert_shape_problems() == []


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no severity", "ScrapeTargetDown: severity None"),
        ("no quiet case", "SpeechHandlesUnfinished: no promtool case where it stays quiet"),
        ("no firing case", "ScrapeTargetDown: no promtool case where it fires"),
    ],
)
def test_alert_shape_check_fails_on_a_broken_copy(tmp_path: Path, case: str, expected: str) -> None:
    rules, _, _, tests = _copy(tmp_path)
    test_file = tests / "speech-scheduling_test.yml"
    if case == "no severity":
        _edit(
            rules,
            "expr: up == 0\n        for: 1m\n        labels:\n          severity: critical\n",
            "expr: up == 0\n        for: 1m\n",
        )
    else:
        # every case of one kind renamed to another alert
        name = "SpeechHandlesUnfinished" if case == "no quiet case" else "ScrapeTargetDown"
        kind = "exp_alerts: []\n" if case == "no quiet case" else "exp_alerts:\n          - "
        old = f"alertname: {name}\n        {kind}"
        text = test_file.read_text()
        assert old in text, f"test setup: {old!r} not in {test_file.name}"
        test_file.write_text(text.replace(old, f"alertname: {name}X\n        {kind}"))
    problems = alert_shape_problems(rules, tests)
    assert any(expected in p for p in problems), problems
