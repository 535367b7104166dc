"""The `.env` file: LiveKit API credentials shared by every part of the rig.

Secrets live only in `.env` (mode 0600, gitignored) and in the environment of the processes
that need them. Nothing here puts a secret value into an exception message or a log line.

Stdlib only, so that a Docker-only user can make `.env` without installing the rig:

    python3 rig/envfile.py            # .env from .env.example, its empty secrets filled
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import string
import sys
from pathlib import Path

KEY_VAR = "LIVEKIT_API_KEY"
SECRET_VAR = "LIVEKIT_API_SECRET"
GRAFANA_PASSWORD_VAR = "GRAFANA_ADMIN_PASSWORD"  # the compose stack's Grafana; no default password
MIN_SECRET_LEN = 32  # livekit-server logs an error below this
# livekit-server reads its keys as the YAML map "key: secret", so both must be plain YAML scalars.
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ALPHABET = string.ascii_letters + string.digits


class EnvFileError(ValueError):
    """The .env file is missing, malformed or lacks valid LiveKit credentials."""


def parse(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments, blank lines, `export ` and quotes allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvFileError(f"{path}: cannot read ({exc.strerror})") from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            # Report the name only: the line may hold a secret.
            shown = name if _NAME.match(name) else "<unparseable>"
            raise EnvFileError(f"{path}:{number}: expected NAME=value, got a line starting {shown!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def livekit_credentials(values: dict[str, str], path: Path) -> tuple[str, str]:
    """Return (api key, api secret) or raise naming what is wrong, never the value."""
    key = values.get(KEY_VAR, "")
    secret = values.get(SECRET_VAR, "")
    for name, value in ((KEY_VAR, key), (SECRET_VAR, secret)):
        if not value:
            raise EnvFileError(f"{path}: {name} is missing or empty")
        if not _TOKEN.match(value):
            raise EnvFileError(
                f"{path}: {name} may contain only letters, digits, '-' and '_'"
                " (starting with a letter or digit)"
            )
    if len(secret) < MIN_SECRET_LEN:
        raise EnvFileError(
            f"{path}: {SECRET_VAR} is {len(secret)} characters long;"
            f" livekit-server needs at least {MIN_SECRET_LEN}"
        )
    return key, secret


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def create_from_example(path: Path, example: Path) -> list[str]:
    """Write `path` from `example`, filling its empty secrets with random values; return their names."""
    try:
        lines = example.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EnvFileError(f"{example}: cannot read ({exc.strerror}); it is the template for {path}") from exc
    fresh = {KEY_VAR: "API" + _random(12), SECRET_VAR: _random(48), GRAFANA_PASSWORD_VAR: _random(32)}
    out = []
    filled = []
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip() in fresh and not value.strip():
            line = f"{name.strip()}={fresh[name.strip()]}"
            filled.append(name.strip())
        out.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a .env someone wrote meanwhile; 0600: secrets are for this user only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    return filled


def load_credentials(path: Path, example: Path) -> tuple[str, str, list[str]]:
    """(key, secret, generated): creates `path` from `example` first if it does not exist, and
    then `generated` names the secrets it filled in."""
    generated: list[str] = []
    if not path.exists():
        generated = create_from_example(path, example)
    key, secret = livekit_credentials(parse(path), path)
    return key, secret, generated


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(prog="rig/envfile.py", description="Make .env from .env.example,"
                                     " filling its empty secrets with random values (never printed).")
    parser.add_argument("--env", type=Path, default=root / ".env",
                        help="the file to write (default: %(default)s)")
    parser.add_argument("--example", type=Path, default=root / ".env.example", help="the template")
    args = parser.parse_args(argv)
    try:
        if args.env.exists():
            livekit_credentials(parse(args.env), args.env)
            print(f"{args.env} exists and holds valid LiveKit credentials; left as it is")
            return 0
        filled = create_from_example(args.env, args.example)
        livekit_credentials(parse(args.env), args.env)
    except (EnvFileError, FileExistsError) as exc:
        print(f"envfile: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.env} (mode 0600); generated {', '.join(filled) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
