"""All static packaging checks in one command (what tests/test_packaging.py runs, for humans).

    .venv/bin/python tests/tools/check_packaging.py

Compose (config -q, all profiles, the rig's rules), Dockerfiles (hadolint, build args),
Prometheus (promtool check config / check rules / test rules), dashboards (@grafana/schema types,
targets, metric names), rule metric names, and Grafana/Prometheus targets against compose.
The live dashboard check needs a running stack: check_panels_live.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import compose_check
import dashboard_check
import dockerfile_check
import metric_names
import prom_check
import targets_check
from toolpaths import REPO, ToolMissing


def rule_name_problems() -> list[str]:
    rule_files = prom_check.rule_files()
    exprs, recorded, problems = metric_names.rule_exprs(rule_files)
    problems += metric_names.recorded_name_problems(recorded, metric_names.metric_bases())
    return problems + metric_names.name_problems(exprs, metric_names.allowed_names() | recorded)


CHECKS: dict[str, Callable[[], list[str]]] = {
    "compose": lambda: compose_check.check(REPO / "docker-compose.yml"),
    "dockerfiles": dockerfile_check.check,
    "prometheus": prom_check.check,
    "rule metric names": rule_name_problems,
    "dashboards": dashboard_check.check,
    "targets vs compose": targets_check.check,
}


def main() -> int:
    failed = 0
    for name, fn in CHECKS.items():
        try:
            problems = fn()
        except ToolMissing as e:
            problems = [str(e)]
        for p in problems:
            print(f"FAIL [{name}] {p}")
        if not problems:
            print(f"OK   [{name}]")
        failed += bool(problems)
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
