"""promtool checks for the rig's Prometheus files.

    python tests/tools/prom_check.py

check config (prometheus/prometheus.yml and, if present, prometheus/prometheus.native.yml; this
also checks the rule files they load), check rules (prometheus/rules/*.yml) and test rules
(prometheus/tests/*.yml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from toolpaths import REPO, promtool_bin

PROM_DIR = REPO / "prometheus"


def _promtool(*args: str | Path, cwd: Path | None = None) -> list[str]:
    r = subprocess.run(
        [str(promtool_bin()), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    if r.returncode != 0:
        out = (r.stdout + r.stderr).strip()
        return [f"promtool {' '.join(map(str, args))} failed (rc={r.returncode}):\n{out}"]
    return []


def config_files(prom_dir: Path = PROM_DIR) -> list[Path]:
    return [p for p in (prom_dir / "prometheus.yml", prom_dir / "prometheus.native.yml") if p.exists()]


def rule_files(prom_dir: Path = PROM_DIR) -> list[Path]:
    return sorted((prom_dir / "rules").glob("*.yml"))


def test_files(prom_dir: Path = PROM_DIR) -> list[Path]:
    return sorted((prom_dir / "tests").glob("*.yml"))


def check_config(path: Path) -> list[str]:
    return _promtool("check", "config", path)


def check_rules(paths: list[Path]) -> list[str]:
    if not paths:
        return ["no rule files found"]
    return _promtool("check", "rules", *paths)


def test_rules(paths: list[Path]) -> list[str]:
    if not paths:
        return ["no promtool unit test files found"]
    # Test files name their rule files relative to themselves.
    return _promtool("test", "rules", *[p.name for p in paths], cwd=paths[0].parent)


def check(prom_dir: Path = PROM_DIR) -> list[str]:
    problems: list[str] = []
    if not (prom_dir / "prometheus.yml").exists():
        problems.append(f"{prom_dir / 'prometheus.yml'} is missing")
    for c in config_files(prom_dir):
        problems += check_config(c)
    problems += check_rules(rule_files(prom_dir))
    problems += test_rules(test_files(prom_dir))
    return problems


def main(argv: list[str]) -> int:
    prom_dir = Path(argv[0]) if argv else PROM_DIR
    problems = check(prom_dir)
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print(f"OK   {prom_dir}: promtool check config, check rules, test rules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
