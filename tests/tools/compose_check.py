"""Validate docker-compose.yml with the real Docker Compose v2 (no engine needed for `config`).

    python tests/tools/compose_check.py [docker-compose.yml]

Runs `config -q` with every profile enabled, then checks the rig's own rules on the resolved
model: every service has a healthcheck, every depends_on waits for service_healthy, every
published port is bound to 127.0.0.1, and the scalable services have no fixed name or host port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from toolpaths import REPO, compose_bin

# Values for the variables the compose file requires (`${VAR:?...}`); only shapes matter here.
DUMMY_ENV = {
    "LIVEKIT_API_KEY": "dummy-key",
    "LIVEKIT_API_SECRET": "dummy-secret-dummy-secret-dummy-secret",
    "GRAFANA_ADMIN_PASSWORD": "dummy-password",
}
# `docker compose up --scale NAME=N` must work for these.
SCALABLE = ("agent", "agent-providers", "locust-worker")
LOOPBACK = "127.0.0.1"


def run_compose(
    compose_file: Path, args: list[str], env: dict[str, str] | None = None, profiles: str | None = "*"
) -> subprocess.CompletedProcess[str]:
    """Run the compose binary on `compose_file`.

    The environment is exactly `env` (plus PATH/HOME) and an empty --env-file, so neither the
    caller's shell nor a developer's .env can supply a variable the test means to leave unset.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty_env:
        cmd = [
            str(compose_bin()),
            "-f",
            str(compose_file),
            "--project-directory",
            str(compose_file.parent),
            "--env-file",
            empty_env.name,
        ]
        if profiles:
            cmd += ["--profile", profiles]
        base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        return subprocess.run(
            cmd + args,
            env={**base, **(DUMMY_ENV if env is None else env)},
            capture_output=True,
            text=True,
            timeout=60,
        )


def config_problems(compose_file: Path, env: dict[str, str] | None = None) -> list[str]:
    """`config -q` with all profiles; its error output if it fails."""
    r = run_compose(compose_file, ["config", "-q"], env=env)
    if r.returncode != 0:
        return [f"{compose_file}: docker compose config failed (rc={r.returncode}): {r.stderr.strip()}"]
    return []


def resolved_model(compose_file: Path) -> dict[str, Any]:
    """The fully resolved compose model (all profiles) as `config --format json` prints it."""
    r = run_compose(compose_file, ["config", "--format", "json"])
    if r.returncode != 0:
        raise ValueError(f"{compose_file}: docker compose config failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def service_ports(service: dict[str, Any]) -> set[int]:
    """Container ports a service listens on, from `ports` (targets) and `expose`."""
    ports = {int(p["target"]) for p in service.get("ports") or []}
    for e in service.get("expose") or []:
        ports.add(int(str(e).split("/")[0]))
    return ports


def policy_problems(model: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in sorted(model.get("services", {}).items()):
        hc = svc.get("healthcheck")
        if not hc or hc.get("disable") or not hc.get("test"):
            problems.append(f"service {name}: no healthcheck")
        for dep, spec in (svc.get("depends_on") or {}).items():
            if spec.get("condition") != "service_healthy":
                problems.append(
                    f"service {name}: depends_on {dep} with condition "
                    f"{spec.get('condition')!r}, expected service_healthy"
                )
        for p in svc.get("ports") or []:
            if p.get("host_ip") != LOOPBACK:
                problems.append(
                    f"service {name}: port {p.get('published')}:{p.get('target')} is published on "
                    f"{p.get('host_ip') or 'all interfaces'}, expected {LOOPBACK}"
                )
        if name in SCALABLE:
            if svc.get("container_name"):
                problems.append(f"service {name}: container_name {svc['container_name']!r} prevents --scale")
            if svc.get("ports"):
                problems.append(f"service {name}: published host ports prevent --scale")
    for name in SCALABLE:
        if name not in model.get("services", {}):
            problems.append(f"service {name}: missing (it must exist and be scalable)")
    return problems


def check(compose_file: Path) -> list[str]:
    problems = config_problems(compose_file)
    if problems:
        return problems
    return policy_problems(resolved_model(compose_file))


def main(argv: list[str]) -> int:
    compose_file = Path(argv[0]) if argv else REPO / "docker-compose.yml"
    problems = check(compose_file.resolve())
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print(f"OK   {compose_file}: docker compose config (all profiles) and the rig's compose rules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
