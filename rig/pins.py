"""Version pins, read from docker-compose.yml (the one place they are written), and the pip
constraints and requirement lists every install takes from them and from pyproject.toml.

Stdlib only: scripts/setup runs this with the system Python before any venv exists
(`python3 rig/pins.py --shell`), and the images' builds run it with only this file and
pyproject.toml in their context (`python pins.py --env-only --constraints`,
`python pins.py --requirements agent`). The file is parsed as text rather than YAML because the
pins are `${NAME:-default}` interpolations, and only Compose gives those their meaning;
we reproduce Compose's rule (a set, non-empty environment variable wins) when asked to.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

# Every pin the native install needs; a missing one is an error, not a silent default.
REQUIRED = (
    "LIVEKIT_AGENTS_VERSION",
    "LIVEKIT_AGENTS_LEGACY_VERSION",
    "LIVEKIT_AGENTS_MIDDLE_VERSION",
    "LIVEKIT_RTC_VERSION",
    "LIVEKIT_API_VERSION",
    "LOCUST_VERSION",
    "PROMETHEUS_CLIENT_VERSION",
)
# The older livekit-agents pins, each in a venv of its own (scripts/setup; rig.binaries).
OLDER_AGENTS = ("LIVEKIT_AGENTS_LEGACY_VERSION", "LIVEKIT_AGENTS_MIDDLE_VERSION")
SERVER_KEY = "LIVEKIT_SERVER_VERSION"  # reported alongside, from the image tag
# The Python packages each pin fixes (the older agents pins and the server are installed otherwise).
PACKAGES = {
    "LIVEKIT_AGENTS_VERSION": ("livekit-agents", "livekit-plugins-silero"),
    "LIVEKIT_RTC_VERSION": ("livekit",),
    "LIVEKIT_API_VERSION": ("livekit-api",),
    "LOCUST_VERSION": ("locust",),
    "PROMETHEUS_CLIENT_VERSION": ("prometheus-client",),
}
PYPROJECT = REPO_ROOT / "pyproject.toml"

_PIN_LINE = re.compile(r'^\s+([A-Z][A-Z0-9_]*):\s*"?\$\{\1:-([^}]+)\}"?\s*(?:#.*)?$')
_PLAIN_LINE = re.compile(r'^\s+([A-Z][A-Z0-9_]*):\s*"?([^"\s$]+)"?\s*(?:#.*)?$')
_IMAGE_LINE = re.compile(
    r'^\s+image:\s*"?livekit/livekit-server:(?:\$\{([A-Z0-9_]+):-)?(v[0-9][0-9A-Za-z.\-]*)\}?"?\s*$'
)
_VERSION = re.compile(r"^v?[0-9]+(\.[0-9]+)*([A-Za-z0-9.\-+]*)$")


class PinError(ValueError):
    """docker-compose.yml does not carry the pins in the expected form."""


@dataclass(frozen=True)
class Pins:
    versions: dict[str, str]
    source: Path

    def __getitem__(self, key: str) -> str:
        return self.versions[key]

    @property
    def livekit_server(self) -> str:
        return self.versions[SERVER_KEY]


def _override(name: str, default: str, environ: Mapping[str, str] | None) -> str:
    if environ is None:
        return default
    value = environ.get(name, "")
    return value if value else default


def load(path: Path = COMPOSE_FILE, environ: Mapping[str, str] | None = None) -> Pins:
    """Parse the `x-versions` block and the livekit-server image tag.

    With `environ`, a set and non-empty NAME overrides its default, as Compose does.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PinError(f"{path}: cannot read ({exc.strerror})") from exc
    versions: dict[str, str] = {}
    in_block = False
    for number, line in enumerate(lines, start=1):
        if re.match(r"^x-versions:", line):
            in_block = True
            continue
        if in_block and line and not line[0].isspace() and not line.startswith("#"):
            in_block = False
        if in_block and line.strip() and not line.strip().startswith("#"):
            m = _PIN_LINE.match(line) or _PLAIN_LINE.match(line)
            if not m:
                raise PinError(
                    f'{path}:{number}: expected `NAME: "${{NAME:-version}}"` in x-versions,'
                    f" got {line.strip()!r}"
                )
            versions[m.group(1)] = _override(m.group(1), m.group(2), environ)
        image = _IMAGE_LINE.match(line)
        if image and SERVER_KEY not in versions:
            # A literal tag is not interpolated by Compose, so only `${NAME:-vX}` can be overridden.
            name = image.group(1)
            versions[SERVER_KEY] = _override(name, image.group(2), environ) if name else image.group(2)
    missing = [k for k in (*REQUIRED, SERVER_KEY) if k not in versions]
    if missing:
        what = ", ".join("image: livekit/livekit-server:vX.Y.Z" if k == SERVER_KEY else k for k in missing)
        raise PinError(f"{path}: missing pin(s): {what}")
    for key, value in versions.items():
        if not _VERSION.match(value):
            raise PinError(f"{path}: {key}={value!r} is not a version")
    return Pins(versions=versions, source=path)


def from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The pins set in `environ` (an image build's args), validated."""
    versions = {k: environ[k] for k in PACKAGES if environ.get(k)}
    for key, value in versions.items():
        if not _VERSION.match(value):
            raise PinError(f"environment: {key}={value!r} is not a version")
    return versions


def constraints(versions: Mapping[str, str]) -> list[str]:
    """pip constraint lines (`name==version`) for the pins in `versions`."""
    return [f"{pkg}=={versions[key]}" for key, pkgs in PACKAGES.items() if key in versions for pkg in pkgs]


def requirements(extra: str, pyproject: Path = PYPROJECT) -> list[str]:
    """The requirement lines of one of pyproject.toml's optional-dependency groups."""
    import tomllib

    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise PinError(f"{pyproject}: no [project] table to read ({exc})") from exc
    groups = project.get("optional-dependencies", {})
    if extra not in groups:
        raise PinError(f"{pyproject}: no optional-dependencies group {extra!r} (it has {', '.join(groups)})")
    return list(groups[extra])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rig.pins", description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=COMPOSE_FILE, help="compose file to read")
    parser.add_argument("--shell", action="store_true", help="print NAME=value lines for `eval`")
    parser.add_argument(
        "--no-env", action="store_true", help="ignore NAME=... overrides from the environment"
    )
    parser.add_argument("--env-only", action="store_true",
                        help="the pins from the environment alone (an image build, without the compose file)")
    parser.add_argument("--constraints", action="store_true", help="print pip constraint lines")
    parser.add_argument("--requirements", metavar="EXTRA",
                        help="print the requirement lines of pyproject.toml's optional dependencies EXTRA")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT, help="with --requirements")
    args = parser.parse_args(argv)
    try:
        if args.requirements:
            lines = requirements(args.requirements, args.pyproject)
        elif args.env_only:
            lines = constraints(from_env(os.environ))
        else:
            versions = load(args.file, None if args.no_env else os.environ).versions
            if args.constraints:
                lines = constraints(versions)
            else:
                lines = [f"{k}={v}" if args.shell else f"{k}: {v}" for k, v in versions.items()]
    except PinError as exc:
        print(f"rig.pins: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
