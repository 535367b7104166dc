"""Cross-check the Grafana and Prometheus files against the compose services they point at.

    python tests/tools/targets_check.py

Against the resolved compose model (`docker compose config --format json`, all profiles):
- every provisioned Grafana datasource URL names a compose service and one of its ports, and the
  datasource files use only keys Grafana knows;
- every dashboard provider path is mounted into the grafana service from grafana/dashboards;
- every scrape target in prometheus/prometheus.yml (static targets and DNS service-discovery
  names) is a compose service listening on that port; `localhost` means Prometheus itself; a
  file-discovery folder is a volume that the services writing into it mount where they write;
- prometheus/prometheus.yml and the rules directory are mounted where the config expects them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import compose_check
import yaml
from toolpaths import REPO

GRAFANA_DIR = REPO / "grafana"
PROMETHEUS_YML = REPO / "prometheus" / "prometheus.yml"
PROMETHEUS_SERVICE = "prometheus"
GRAFANA_SERVICE = "grafana"
DATASOURCE_KEYS = {
    "name",
    "uid",
    "type",
    "access",
    "url",
    "isDefault",
    "jsonData",
    "secureJsonData",
    "orgId",
    "basicAuth",
    "basicAuthUser",
    "user",
    "database",
    "withCredentials",
    "version",
    "editable",
}
PROVIDER_KEYS = {
    "name",
    "orgId",
    "folder",
    "folderUid",
    "type",
    "disableDeletion",
    "updateIntervalSeconds",
    "allowUiUpdates",
    "options",
}


def _service_port_problem(
    model: dict[str, Any], where: str, host: str | None, port: int | None
) -> str | None:
    services = model.get("services", {})
    if host not in services:
        return f"{where}: host {host!r} is not a compose service ({', '.join(sorted(services))})"
    ports = compose_check.service_ports(services[host])
    if port not in ports:
        return f"{where}: port {port} is not among service {host}'s ports {sorted(ports)} (ports/expose)"
    return None


def _mounts(model: dict[str, Any], service: str) -> dict[str, str]:
    """{container path: host path} of a service's bind mounts."""
    out = {}
    for v in (model.get("services", {}).get(service) or {}).get("volumes") or []:
        if v.get("type") == "bind":
            out[v["target"].rstrip("/")] = v["source"]
    return out


def _yaml_files(d: Path) -> list[Path]:
    return sorted(list(d.glob("*.yml")) + list(d.glob("*.yaml")))


def grafana_problems(model: dict[str, Any], grafana_dir: Path = GRAFANA_DIR) -> list[str]:
    problems = []
    ds_files = _yaml_files(grafana_dir / "provisioning" / "datasources")
    if not ds_files:
        problems.append(f"no datasource files in {grafana_dir / 'provisioning' / 'datasources'}")
    for f in ds_files:
        doc = yaml.safe_load(f.read_text()) or {}
        if doc.get("apiVersion") != 1:
            problems.append(f"{f.name}: apiVersion must be 1, got {doc.get('apiVersion')!r}")
        seen = set()
        for i, ds in enumerate(doc.get("datasources") or []):
            where = f"{f.name}: datasources[{i}] {ds.get('name')!r}"
            for k in ("name", "type", "url"):
                if k not in ds:
                    problems.append(f"{where}: missing {k!r}")
            unknown = set(ds) - DATASOURCE_KEYS
            if unknown:
                problems.append(f"{where}: unknown keys {sorted(unknown)}")
            if ds.get("name") in seen:
                problems.append(f"{where}: duplicate name")
            seen.add(ds.get("name"))
            if "url" in ds:
                u = urlparse(ds["url"])
                p = _service_port_problem(model, f"{where} url {ds['url']}", u.hostname, u.port)
                if p:
                    problems.append(p)
    mounts = _mounts(model, GRAFANA_SERVICE)
    for f in _yaml_files(grafana_dir / "provisioning" / "dashboards"):
        doc = yaml.safe_load(f.read_text()) or {}
        if doc.get("apiVersion") != 1:
            problems.append(f"{f.name}: apiVersion must be 1, got {doc.get('apiVersion')!r}")
        for i, prov in enumerate(doc.get("providers") or []):
            where = f"{f.name}: providers[{i}] {prov.get('name')!r}"
            unknown = set(prov) - PROVIDER_KEYS
            if unknown:
                problems.append(f"{where}: unknown keys {sorted(unknown)}")
            path = str((prov.get("options") or {}).get("path", "")).rstrip("/")
            source = mounts.get(path)
            if source is None:
                problems.append(
                    f"{where}: options.path {path!r} is not a bind mount of service {GRAFANA_SERVICE} "
                    f"(mounts: {sorted(mounts)})"
                )
            elif Path(source).resolve() != (grafana_dir / "dashboards").resolve():
                problems.append(f"{where}: {path} is mounted from {source}, not {grafana_dir / 'dashboards'}")
    return problems


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """{named volume: container path} of a service's volume mounts."""
    return {v["source"]: v["target"].rstrip("/") for v in service.get("volumes") or []
            if v.get("type") == "volume"}


def file_sd_problems(model: dict[str, Any], where: str, folder: str) -> list[str]:
    """The folder Prometheus reads target files from is a named volume that the services writing
    them (lkrig_instrument/scrape_target.py) mount where their LKRIG_SCRAPE_TARGETS points, and
    those services serve /metrics on AGENT_METRICS_PORT."""
    services = model.get("services", {})
    volume = next((v for v, path in _volumes(services.get(PROMETHEUS_SERVICE) or {}).items()
                   if path == folder), None)
    if volume is None:
        return [f"{where}: {folder} is not a named volume mounted into service {PROMETHEUS_SERVICE}"]
    problems, writers = [], 0
    for name, svc in sorted(services.items()):
        path = _volumes(svc).get(volume)
        if name == PROMETHEUS_SERVICE or path is None:
            continue
        writers += 1
        env = svc.get("environment") or {}
        if env.get("LKRIG_SCRAPE_TARGETS") != path:
            problems.append(f"{where}: service {name} mounts volume {volume} at {path} but its "
                            f"LKRIG_SCRAPE_TARGETS is {env.get('LKRIG_SCRAPE_TARGETS')!r}")
        port = str(env.get("AGENT_METRICS_PORT", ""))
        if not port.isdigit() or int(port) not in compose_check.service_ports(svc):
            problems.append(f"{where}: service {name} writes targets but does not expose its "
                            f"AGENT_METRICS_PORT {port!r}")
    if not writers:
        problems.append(f"{where}: no service but {PROMETHEUS_SERVICE} mounts volume {volume}")
    return problems


def prometheus_problems(model: dict[str, Any], prometheus_yml: Path = PROMETHEUS_YML) -> list[str]:
    problems = []
    doc = yaml.safe_load(prometheus_yml.read_text()) or {}
    for job in doc.get("scrape_configs") or []:
        name = job.get("job_name")
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                host, _, port = target.rpartition(":")
                host = PROMETHEUS_SERVICE if host == "localhost" else host
                p = _service_port_problem(
                    model,
                    f"{prometheus_yml.name}: job {name} target {target}",
                    host,
                    int(port) if port.isdigit() else None,
                )
                if p:
                    problems.append(p)
        for sd in job.get("dns_sd_configs") or []:
            for dns_name in sd.get("names") or []:
                # tasks.<service> is Swarm's per-replica name for the same service.
                service = dns_name.removeprefix("tasks.")
                p = _service_port_problem(
                    model, f"{prometheus_yml.name}: job {name} DNS name {dns_name}", service, sd.get("port")
                )
                if p:
                    problems.append(p)
        for sd in job.get("file_sd_configs") or []:
            for pattern in sd.get("files") or []:
                problems += file_sd_problems(model, f"{prometheus_yml.name}: job {name} files {pattern}",
                                             str(Path(pattern).parent))
        for key in set(job) - {
            "job_name",
            "static_configs",
            "dns_sd_configs",
            "file_sd_configs",
            "relabel_configs",
            "metric_relabel_configs",
            "scrape_interval",
            "scrape_timeout",
            "metrics_path",
            "honor_labels",
        }:
            if key.endswith("_sd_configs"):
                problems.append(
                    f"{prometheus_yml.name}: job {name} uses {key}, which this check cannot verify"
                )
    # The config names its rule files relative to itself: they must be mounted beside it.
    mounts = _mounts(model, PROMETHEUS_SERVICE)
    config_target = next(
        (t for t, s in mounts.items() if Path(s).resolve() == prometheus_yml.resolve()), None
    )
    if config_target is None:
        problems.append(f"{prometheus_yml} is not mounted into service {PROMETHEUS_SERVICE}")
    else:
        for pattern in doc.get("rule_files") or []:
            rules_dir = str(Path(config_target).parent / Path(pattern).parent)
            source = mounts.get(rules_dir)
            if (
                source is None
                or Path(source).resolve() != (prometheus_yml.parent / Path(pattern).parent).resolve()
            ):
                problems.append(
                    f"{prometheus_yml.name}: rule_files {pattern!r} needs "
                    f"{prometheus_yml.parent / Path(pattern).parent} mounted at {rules_dir}"
                )
    return problems


def check(
    compose_file: Path = REPO / "docker-compose.yml",
    grafana_dir: Path = GRAFANA_DIR,
    prometheus_yml: Path = PROMETHEUS_YML,
) -> list[str]:
    model = compose_check.resolved_model(compose_file)
    return grafana_problems(model, grafana_dir) + prometheus_problems(model, prometheus_yml)


def main(argv: list[str]) -> int:
    problems = check()
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print("OK   Grafana datasources/providers and Prometheus scrape targets match the compose services")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
