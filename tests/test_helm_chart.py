"""deploy/helm/lkrig, linted and rendered by the real helm (scripts/setup.d/45-helm.sh builds it).

No cluster runs here or in CI, so the chart is never installed: these checks keep it honest. Its
containers must run what docker-compose.yml's services run (command, environment, ports, image),
read through compose's own resolution (tests/tools/compose_check.py). The lint and each part of
that comparison are shown to fail on a broken copy of the chart. A missing helm is a failure
naming its setup script, never a skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lkrig_instrument import names

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))
import compose_check
from toolpaths import REPO, helm_bin

CHART = REPO / "deploy" / "helm" / "lkrig"
DASHBOARD = REPO / "grafana" / "dashboards" / "speech-scheduling.json"
RELEASE = "soak"
# The chart's two required values (an install names the user's own), and everything optional on.
REQUIRED = {"livekit.url": "wss://livekit.example.test", "livekit.existingSecret": "lkrig-livekit"}
ALL_ON = {**REQUIRED, "metrics.serviceMonitor.enabled": "true"}
SERVICES = ("agent", "locust-master", "locust-worker")
# What compose sets that has no use on Kubernetes (deploy/helm/lkrig/README.md says the same):
# the worker's scrape-target file is for the file discovery of compose's Prometheus; here
# Prometheus finds the pods itself (annotations or a ServiceMonitor).
ONLY_IN_COMPOSE = {("agent", "LKRIG_SCRAPE_TARGETS")}
# Compose points these at its own LiveKit; the chart takes them from a value.
FROM_VALUES = {"LIVEKIT_URL": "livekit.url"}
CREDENTIALS = ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin()), *args], capture_output=True, text=True, timeout=30)


def _sets(values: dict[str, str]) -> list[str]:
    return [arg for k, v in values.items() for arg in ("--set", f"{k}={v}")]


def render(chart: Path, values: dict[str, str]) -> list[dict[str, Any]]:
    r = helm("template", RELEASE, str(chart), *_sets(values))
    assert r.returncode == 0, f"helm template failed:\n{r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def lint(chart: Path, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return helm("lint", "--strict", str(chart), *_sets(values))


def _component(doc: dict[str, Any]) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def _service_differences(
    model: dict[str, Any], name: str, container: dict[str, Any], hosts: dict[str, str], values: dict[str, str]
) -> Iterator[str]:
    svc = model["services"][name]
    # Compose's hosts are its service names; the chart's, the Service of the same component.
    want = [hosts.get(a, a) for a in (svc.get("entrypoint") or []) + svc["command"]]
    got = (container.get("command") or []) + (container.get("args") or [])
    if got != want:
        yield f"command {got} differs from compose's {want}"

    image = svc.get("image") or f"{model['name']}-{name}"  # compose's name for an image it builds
    image += "" if ":" in image.rsplit("/", 1)[-1] else ":latest"
    if container["image"] != image:
        yield f"image {container['image']} differs from compose's {image}"

    want_env = {k: v for k, v in svc["environment"].items() if (name, k) not in ONLY_IN_COMPOSE}
    got_env = {e["name"]: e for e in container.get("env") or []}
    for var in sorted(want_env.keys() - got_env.keys()):
        yield f"env {var} is set by compose but not by the chart"
    for var in sorted(got_env.keys() - want_env.keys()):
        yield f"env {var} is set by the chart but not by compose"
    for var in sorted(want_env.keys() & got_env.keys()):
        entry = got_env[var]
        if var in CREDENTIALS:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") != values["livekit.existingSecret"]:
                yield f"env {var} is not read from the Secret livekit.existingSecret names: {entry}"
        elif var in FROM_VALUES:
            if entry.get("value") != values[FROM_VALUES[var]]:
                yield f"env {var}={entry.get('value')!r} is not {FROM_VALUES[var]}"
        elif entry.get("value") != want_env[var]:
            yield f"env {var}={entry.get('value')!r} differs from compose's {want_env[var]!r}"

    want_ports = compose_check.service_ports(svc)
    got_ports = {p["containerPort"] for p in container.get("ports") or []}
    if got_ports != want_ports:
        yield f"ports {sorted(got_ports)} differ from compose's {sorted(want_ports)}"


def chart_vs_compose(model: dict[str, Any], docs: list[dict[str, Any]], values: dict[str, str]) -> list[str]:
    """Every difference between compose's services and the chart's containers of the same name,
    one line each, starting with the container's name."""
    hosts = {_component(d): d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    containers = {c["name"]: c for pod in pods for c in pod["containers"]}
    problems = []
    for name in SERVICES:
        if name not in containers:
            problems.append(f"{name}: the chart has no container of that name")
            continue
        differences = _service_differences(model, name, containers[name], hosts, values)
        problems += [f"{name}: {p}" for p in differences]
    return problems


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    return compose_check.resolved_model(REPO / "docker-compose.yml")


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(CHART, ALL_ON)


def _of(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and _component(d) == component]
    return found


# --- the chart as shipped -------------------------------------------------------------------------
def test_helm_lint_strict_passes() -> None:
    for values in (REQUIRED, ALL_ON):
        r = lint(CHART, values)
        assert r.returncode == 0, f"helm lint --strict {values}:\n{r.stdout}\n{r.stderr}"


def test_containers_run_what_compose_runs(model: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    assert chart_vs_compose(model, docs, ALL_ON) == []
    # The exceptions are still in compose: one that compose dropped would hide nothing here.
    for service, var in ONLY_IN_COMPOSE:
        assert var in model["services"][service]["environment"], (service, var)


def test_required_values_fail_by_name_and_no_secret_is_rendered(docs: list[dict[str, Any]]) -> None:
    for missing in REQUIRED:
        r = helm("template", RELEASE, str(CHART), *_sets({k: v for k, v in REQUIRED.items() if k != missing}))
        assert r.returncode != 0 and f"set {missing}" in r.stderr, r.stderr
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_agents_scale_on_their_load_and_are_scraped(docs: list[dict[str, Any]]) -> None:
    agents = _of(docs, "Deployment", "agent")
    hpa = _of(docs, "HorizontalPodAutoscaler", "agent")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": agents["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in names.EXTERNAL, metric
    assert "replicas" not in agents["spec"], "the HPA owns the replica count"
    off = render(CHART, {**REQUIRED, "agent.autoscaling.enabled": "false"})
    assert not [d for d in off if d["kind"] == "HorizontalPodAutoscaler"]
    assert _of(off, "Deployment", "agent")["spec"]["replicas"] == 1

    # The annotations and the ServiceMonitors name the port each pod serves /metrics on.
    for component in ("agent", "locust-master"):
        pod = _of(docs, "Deployment", component)["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"]), component
        service = _of(docs, "Service", component)
        (monitor,) = [m for m in docs if m["kind"] == "ServiceMonitor"
                      and m["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]]
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}, component


def test_dashboard_is_the_repo_file_for_the_grafana_sidecar(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    cm = _of(docs, "ConfigMap", "dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == {"speech-scheduling.json": DASHBOARD.read_text()}
    # helm package follows the chart's symlink: the archive holds the file itself.
    r = helm("package", str(CHART), "--destination", str(tmp_path))
    assert r.returncode == 0, r.stderr
    (archive,) = tmp_path.glob("lkrig-*.tgz")
    with tarfile.open(archive) as tar:
        member = tar.getmember("lkrig/dashboards/speech-scheduling.json")
        assert member.isfile()
        assert tar.extractfile(member).read() == DASHBOARD.read_bytes()  # type: ignore[union-attr]


# --- each check fails on a broken copy ------------------------------------------------------------
@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A copy of the chart to break (the dashboard's symlink copied as the file)."""
    return Path(shutil.copytree(CHART, tmp_path / "lkrig"))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"test setup: {old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("templates/agent-deployment.yaml", "name: AGENT_READY_FILE", "name: AGENT_READY_PATH",
         ["agent: env AGENT_READY_FILE is set by compose but not by the chart",
          "agent: env AGENT_READY_PATH is set by the chart but not by compose"]),
        ("templates/agent-deployment.yaml", 'value: "8081"', 'value: "8082"',
         ["agent: env AGENT_HEALTH_PORT='8082' differs from compose's '8081'"]),
        ("templates/_helpers.tpl", "name: {{ .Values.livekit.existingSecret }}", "name: other",
         [f"{s}: env LIVEKIT_API_SECRET is not read from the Secret" for s in SERVICES]),
        ("templates/locust-worker-deployment.yaml", '"--master-port", "5557"', '"--master-port", "5558"',
         ["locust-worker: command"]),
        ("templates/locust-master-deployment.yaml", "containerPort: 9646", "containerPort: 9647",
         ["locust-master: ports [5557, 8089, 9647] differ from compose's [5557, 8089, 9646]"]),
        ("values.yaml", "repository: lkrig-loadgen", "repository: lkrig-locust",
         ["locust-master: image lkrig-locust:latest", "locust-worker: image lkrig-locust:latest"]),
    ],
    ids=["env-name", "env-value", "credential", "command", "port", "image"],
)
def test_the_comparison_names_container_and_difference(
    model: dict[str, Any], broken: Path, file: str, old: str, new: str, expected: list[str]
) -> None:
    _edit(broken / file, old, new)
    problems = chart_vs_compose(model, render(broken, ALL_ON), ALL_ON)
    for line in expected:
        assert [p for p in problems if p.startswith(line)], f"{line!r} not reported in {problems}"
    assert len(problems) == len(expected), problems


def test_lint_fails_on_a_broken_chart_and_is_strict(broken: Path) -> None:
    _edit(broken / "Chart.yaml", "version: 0.1.0", "version: one")
    r = lint(broken, REQUIRED)
    assert r.returncode != 0 and "version" in r.stdout + r.stderr, r.stdout
    _edit(broken / "Chart.yaml", "version: one", "version: 0.1.0")
    # A misspelt Chart.yaml field is only a warning: --strict makes it fail.
    _edit(broken / "Chart.yaml", "keywords:", "keyword:")
    assert helm("lint", str(broken), *_sets(REQUIRED)).returncode == 0
    r = lint(broken, REQUIRED)
    assert r.returncode != 0 and 'unknown field "keyword"' in r.stdout, r.stdout
