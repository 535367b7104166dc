"""Lint the rig's Dockerfiles (no engine, no buildx here).

    python tests/tools/dockerfile_check.py

- hadolint at --failure-threshold warning (info-level notes do not fail);
- every ARG a Dockerfile needs (no default) is passed as a build arg by each compose service that
  builds it, so `docker compose build` cannot run with an empty version;
- the golang image names a whole Go release no older than loadgen/lkmedia/go.mod's go line (the
  image builds with GOTOOLCHAIN=local, so an older cached golang:1.26 would fail the build).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import compose_check
from toolpaths import REPO, hadolint_bin

DOCKERFILES = (REPO / "agent" / "Dockerfile", REPO / "loadgen" / "Dockerfile")


def _rel(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def hadolint_problems(path: Path) -> list[str]:
    r = subprocess.run(
        [str(hadolint_bin()), "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0:
        return [f"hadolint {path} (rc={r.returncode}):\n{(r.stdout + r.stderr).strip()}"]
    return []


def required_args(path: Path) -> set[str]:
    """ARGs declared without a default value."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return {m[1] for m in re.finditer(r"(?m)^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)\s*$", text)}


def build_arg_problems(model: dict[str, Any], dockerfiles: tuple[Path, ...] = DOCKERFILES) -> list[str]:
    problems = []
    for path in dockerfiles:
        needed = required_args(path)
        users = []
        for name, svc in sorted(model.get("services", {}).items()):
            build = svc.get("build")
            if not build:
                continue
            df = Path(build.get("context", ".")) / build.get("dockerfile", "Dockerfile")
            if df.resolve() != path.resolve():
                continue
            users.append(name)
            args = build.get("args") or {}
            for arg in sorted(needed):
                if not args.get(arg):
                    problems.append(f"service {name}: builds {_rel(path)} without build arg {arg}")
        if not users:
            problems.append(f"{_rel(path)}: no compose service builds it")
    return problems


def go_image_problems(dockerfile: Path, gomod: Path) -> list[str]:
    wants = re.search(r"(?m)^go (\S+)$", gomod.read_text())
    tags = re.findall(r"(?m)^FROM golang:(\S+?)-\S+", dockerfile.read_text())
    if not wants or not tags:
        return [f"{_rel(dockerfile)}: no `FROM golang:X.Y.Z-...` stage, or {_rel(gomod)} has no go line"]

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(x) for x in text.split("."))

    return [f"{_rel(dockerfile)}: golang:{tag} is not a whole Go release at least {_rel(gomod)}'s go"
            f" {wants[1]} (the build runs with GOTOOLCHAIN=local)"
            for tag in tags if tag.count(".") != 2 or version(tag) < version(wants[1])]


def check(
    compose_file: Path = REPO / "docker-compose.yml", dockerfiles: tuple[Path, ...] = DOCKERFILES
) -> list[str]:
    problems = []
    for d in dockerfiles:
        problems += hadolint_problems(d)
    problems += go_image_problems(REPO / "loadgen" / "Dockerfile", REPO / "loadgen" / "lkmedia" / "go.mod")
    return problems + build_arg_problems(compose_check.resolved_model(compose_file), dockerfiles)


def main(argv: list[str]) -> int:
    problems = check()
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print(f"OK   {', '.join(str(_rel(d)) for d in DOCKERFILES)}: hadolint, build args, Go image")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
